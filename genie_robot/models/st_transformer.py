"""The one ST-Transformer (Genie, arXiv 2402.15391, section 2.1), reused by the tokenizer, the latent
action model and the dynamics model.

Each of the L blocks: spatial self-attention over the N tokens of one frame -> causal temporal
self-attention over the frames at one token position -> one feed-forward layer (none after the
spatial layer). Pre-norm, QK-norm. Positions are added once, at the input: a learned embedding per
token position plus a fixed sinusoid of the absolute frame index. Spatial attention is per frame and
temporal attention per position, so cost is linear in the number of frames.

Temporal attention sees at most `window` frames (itself and window - 1 past ones). Training clips
are at most `window` long, where this is plain causal attention; longer sequences get a banded causal
mask, which is exactly what the inference cache computes.

Inference cache, plain tensors so that a single-frame step exports to ONNX with the cache as
inputs/outputs:
    kv:  (L, 2, B*N, heads, window, head_dim)  keys and values of the last `window` frames, per layer
    pos: () int64                              absolute index of the frame being computed
`step` for frame `pos` writes its K/V into ring slot `pos % window` (overwriting frame pos - window,
which has just left the window) and attends to the slots `<= pos` (all of them once the window is
full). Slot order is irrelevant: attention is permutation invariant over keys and each key already
carries its frame's position. Calling `step` again with the same `pos` (MaskGIT refinement)
overwrites the same slot, so the past stays fixed and only the new frame is recomputed. Memory is
constant over arbitrarily long rollouts.

Why a periodic sinusoid for time: cached K/V keep the position they were computed with, so every
frame of an unbounded rollout needs a position, and no position may be one the model never saw. All
temporal frequencies are integer multiples of 2*pi/period, so the encoding of t equals that of
t mod period exactly (no jump at wrap-around), and training at a random absolute offset per clip
(`random_time_offset`) makes every position in-distribution: frame 1000 of a rollout looks like
frame 3 of a training clip, and the model can only use relative time.

Tokenizer ablation (Genie, Table 3): `attention` chooses what the second attention layer of each
block sees; everything else (parameters, positions, FFN) is shared, so the variants differ only in
that key set:
    "st"      (ST-ViViT, default) the same token position in this and earlier frames (STBlock)
    "spatial" (ViT)  the tokens of its own frame again: no information crosses frames (FrameBlock)
    "full"    (C-ViViT) every token of this and earlier frames, causal by frame (FrameBlock)
The variants stream with `step` too (a ViT needs no cache; C-ViViT reads all N tokens of each cached
frame, in the same cache tensor). The runtime's ONNX step graphs implement only "st".

Shapes: B batch, T frames, N tokens per frame, M width, S = B*N (or B*T) attention sequences,
H heads, C = window (cache slots), Dh head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .configs import TransformerConfig

TIME_PERIOD = 1024  # frames; the temporal encoding repeats exactly after this many
ATTENTIONS = ("st", "spatial", "full")  # ST-ViViT, ViT, C-ViViT


def init_weights(module: nn.Module) -> None:
    """GPT-2 style init, applied by each model to all its submodules."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


def attention(q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
    """F.scaled_dot_product_attention, in fp32 under CPU autocast: there torch's bf16 flash attention
    took 1.8 s of a 3.1 s dynamics training step (forward + backward, `cpu` preset, one thread) where
    fp32 takes 0.47 s, while the matmuls around it gain 3-5x from bf16."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


class Attention(nn.Module):
    """Multi-head self-attention with QK-norm, used for both the spatial and the temporal layer."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_norm = nn.LayerNorm(self.head_dim)
        self.k_norm = nn.LayerNorm(self.head_dim)
        self.out = nn.Linear(width, width, bias=False)

    def project(self, x_SLM: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(S, L, M) -> q, k, v each (S, H, L, Dh), q and k normalised."""
        S, L, _ = x_SLM.shape
        q, k, v = self.qkv(x_SLM).view(S, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return self.q_norm(q), self.k_norm(k), v

    def merge(self, y_SHLD: Tensor) -> Tensor:
        S, H, L, Dh = y_SHLD.shape
        return self.out(y_SHLD.transpose(1, 2).reshape(S, L, H * Dh))

    def forward(self, x_SLM: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
        q, k, v = self.project(x_SLM)
        return self.merge(attention(q, k, v, attn_mask=mask, is_causal=causal))


class STBlock(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        M = c.width
        self.norm_s, self.spatial = nn.LayerNorm(M), Attention(M, c.heads)
        self.norm_t, self.temporal = nn.LayerNorm(M), Attention(M, c.heads)
        self.norm_f = nn.LayerNorm(M)
        self.ffn = nn.Sequential(nn.Linear(M, c.ffn_width), nn.GELU(), nn.Linear(c.ffn_width, M))

    def forward(self, x_BTNM: Tensor, temporal_mask: Tensor | None) -> Tensor:
        B, T, N, M = x_BTNM.shape
        x = x_BTNM + self.spatial(self.norm_s(x_BTNM).reshape(B * T, N, M)).view(B, T, N, M)
        x_SLM = x.transpose(1, 2).reshape(B * N, T, M)  # one sequence per token position
        causal = temporal_mask is None
        x_SLM = x_SLM + self.temporal(self.norm_t(x_SLM), mask=temporal_mask, causal=causal)
        x = x_SLM.view(B, N, T, M).transpose(1, 2)
        return x + self.ffn(self.norm_f(x))

    def step(self, x_BNM: Tensor, kv_2SHCD: Tensor, slot: Tensor, valid_111C: Tensor,
             inplace: bool) -> tuple[Tensor, Tensor]:
        """One frame; writes its K/V into `slot` of this layer's cache and attends over the cache."""
        B, N, M = x_BNM.shape
        x = x_BNM + self.spatial(self.norm_s(x_BNM))
        q, k, v = self.temporal.project(self.norm_t(x).reshape(B * N, 1, M))
        new_2SH1D = torch.stack((k, v)).to(kv_2SHCD.dtype)
        if inplace:  # eager inference: no copy of the cache per step
            kv_2SHCD = kv_2SHCD.index_copy_(3, slot, new_2SH1D)
        else:  # functional, for tracing / ONNX export with the cache as input and output
            kv_2SHCD = kv_2SHCD.index_copy(3, slot, new_2SH1D)
        keys, values = kv_2SHCD[0].to(q.dtype), kv_2SHCD[1].to(q.dtype)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=valid_111C)
        x = x + self.temporal.merge(y).view(B, N, M)
        return x + self.ffn(self.norm_f(x)), kv_2SHCD


class FrameBlock(nn.Module):
    """The tokenizer-ablation block: spatial attention -> a second attention -> FFN, where the second
    attention sees the tokens of its own frame again (`attention="spatial"`, ViT) or every token of
    this and earlier frames (`attention="full"`, C-ViViT; causal by frame, full within a frame).
    Same parameters as STBlock; only the second layer's key set differs (`norm_2`, `attn_2`)."""

    def __init__(self, c: TransformerConfig, attention: str):
        super().__init__()
        if attention not in ("spatial", "full"):
            raise ValueError(f"FrameBlock attention must be 'spatial' or 'full', got {attention!r}")
        M = c.width
        self.attention = attention
        self.norm_s, self.spatial = nn.LayerNorm(M), Attention(M, c.heads)
        self.norm_2, self.attn_2 = nn.LayerNorm(M), Attention(M, c.heads)
        self.norm_f = nn.LayerNorm(M)
        self.ffn = nn.Sequential(nn.Linear(M, c.ffn_width), nn.GELU(), nn.Linear(c.ffn_width, M))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("temporal", "norm_t"):  # what the runtime's cached step (genie_robot/runtime) reads
                raise NotImplementedError(
                    f"this tokenizer uses attention={self.attention!r} "
                    f"({'ViT' if self.attention == 'spatial' else 'C-ViViT'}): the runtime's KV-cached step "
                    "graphs and ONNX export support only the ST-ViViT tokenizer (attention='st'); run this "
                    "variant with the torch modules (VideoTokenizer.encode_step/decode_step, genie.Rollout)"
                ) from None
            raise

    def forward(self, x_BTNM: Tensor, mask_LL: Tensor | None) -> Tensor:
        """`mask_LL`: (T*N, T*N) bool for "full" (see STTransformer.forward), unused for "spatial"."""
        B, T, N, M = x_BTNM.shape
        x = x_BTNM + self.spatial(self.norm_s(x_BTNM).reshape(B * T, N, M)).view(B, T, N, M)
        if self.attention == "spatial":
            x = x + self.attn_2(self.norm_2(x).reshape(B * T, N, M)).view(B, T, N, M)
        else:
            x = x + self.attn_2(self.norm_2(x).reshape(B, T * N, M), mask=mask_LL).view(B, T, N, M)
        return x + self.ffn(self.norm_f(x))

    def step(self, x_BNM: Tensor, kv_2SHCD: Tensor, slot: Tensor, valid_111C: Tensor,
             inplace: bool) -> tuple[Tensor, Tensor]:
        """One frame. "spatial" ignores the cache; "full" keeps the K/V of all N tokens per frame in the
        same (2, B*N, H, C, Dh) layout as STBlock and attends over all N*C of them."""
        B, N, M = x_BNM.shape
        x = x_BNM + self.spatial(self.norm_s(x_BNM))
        if self.attention == "spatial":
            x = x + self.attn_2(self.norm_2(x))
            return x + self.ffn(self.norm_f(x)), kv_2SHCD
        q_BHND, k, v = self.attn_2.project(self.norm_2(x))  # each (B, H, N, Dh)
        H, Dh = q_BHND.shape[1], q_BHND.shape[3]
        new_2SH1D = torch.stack((k, v)).transpose(2, 3).reshape(2, B * N, H, 1, Dh).to(kv_2SHCD.dtype)
        if inplace:
            kv_2SHCD = kv_2SHCD.index_copy_(3, slot, new_2SH1D)
        else:
            kv_2SHCD = kv_2SHCD.index_copy(3, slot, new_2SH1D)
        C = kv_2SHCD.shape[3]
        # (2, B*N, H, C, Dh) -> (2, B, H, C*N, Dh): key (c, n) is token n of the frame in slot c
        kv_2BHLD = kv_2SHCD.view(2, B, N, H, C, Dh).permute(0, 1, 3, 4, 2, 5).reshape(2, B, H, C * N, Dh)
        valid_111L = valid_111C[..., None].expand(1, 1, 1, C, N).reshape(1, 1, 1, C * N)
        y = F.scaled_dot_product_attention(q_BHND, kv_2BHLD[0].to(q_BHND.dtype), kv_2BHLD[1].to(q_BHND.dtype),
                                           attn_mask=valid_111L)
        x = x + self.attn_2.merge(y)
        return x + self.ffn(self.norm_f(x)), kv_2SHCD


class STTransformer(nn.Module):
    """x_BTNM (already embedded tokens) -> y_BTNM, causal in time, final LayerNorm applied."""

    def __init__(self, cfg: TransformerConfig, num_tokens: int, window: int,
                 random_time_offset: bool = True, time_period: int = TIME_PERIOD, attention: str = "st"):
        super().__init__()
        if cfg.width % 2:
            raise ValueError(f"ST-Transformer width must be even (sin/cos time encoding), got {cfg.width}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS} (ST-ViViT, ViT, C-ViViT), got {attention!r}")
        self.cfg, self.num_tokens, self.window, self.attention = cfg, num_tokens, window, attention
        # wide models get a longer period so that their M/2 frequencies stay distinct and un-aliased
        self.random_time_offset, self.time_period = random_time_offset, max(time_period, 2 * cfg.width)
        self.spatial_pos = nn.Parameter(torch.randn(num_tokens, cfg.width) * 0.02)
        self.register_buffer("time_freqs", _time_frequencies(cfg.width // 2, self.time_period), persistent=False)
        # learned per-channel gain on the fixed sinusoid; starts as small as the learned spatial
        # embedding, because unit-amplitude time features swamp the (small at init) content early on
        self.time_scale = nn.Parameter(torch.full((cfg.width,), 0.02))
        self.blocks = nn.ModuleList(STBlock(cfg) if attention == "st" else FrameBlock(cfg, attention)
                                    for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(cfg.width)

    def time_embedding(self, t: Tensor) -> Tensor:
        """Absolute frame indices (any shape, int64) -> (..., M) fp32, periodic in `time_period`."""
        angles = (t % self.time_period).to(torch.float32)[..., None] * self.time_freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1) * self.time_scale.float()

    def forward(self, x_BTNM: Tensor, t0_B: Tensor | None = None) -> Tensor:
        """`t0_B`: absolute index of each clip's first frame; default 0, or random while training."""
        B, T, N, M = x_BTNM.shape
        if N != self.num_tokens:
            raise ValueError(f"expected {self.num_tokens} tokens per frame, got {N}")
        device = x_BTNM.device
        if t0_B is None:
            if self.training and self.random_time_offset:
                t0_B = torch.randint(self.time_period, (B,), device=device)
            else:
                t0_B = torch.zeros(B, dtype=torch.long, device=device)
        t_BT = t0_B[:, None] + torch.arange(T, device=device)
        # the residual stream stays in the parameters' dtype (fp32 under autocast)
        dtype = self.spatial_pos.dtype
        x = x_BTNM.to(dtype) + self.spatial_pos + self.time_embedding(t_BT)[:, :, None, :].to(dtype)
        if self.attention == "st":
            mask = None if T <= self.window else _banded_causal_mask(T, self.window, device)
        elif self.attention == "full":  # token (t, n) attends (t', n') for t - window < t' <= t, any n'
            mask_TT = _banded_causal_mask(T, self.window, device)
            mask = mask_TT[:, None, :, None].expand(T, N, T, N).reshape(T * N, T * N)
        else:
            mask = None
        for block in self.blocks:
            x = block(x, mask)
        return self.norm_out(x)

    # ------------------------------------------------------------------ inference with the cache

    def init_cache(self, batch: int, device=None, dtype=None) -> Tensor:
        """Zeroed kv of shape (L, 2, batch*N, heads, window, head_dim)."""
        p = self.spatial_pos
        c = self.cfg
        return torch.zeros(c.depth, 2, batch * self.num_tokens, c.heads, self.window, c.width // c.heads,
                           device=device or p.device, dtype=dtype or p.dtype)

    def step(self, x_BNM: Tensor, kv: Tensor, pos: Tensor | int, inplace: bool = True) -> tuple[Tensor, Tensor]:
        """One frame at absolute index `pos`: returns (y_BNM, kv) with this frame's K/V in slot pos % window.

        With `inplace=True` the given `kv` is updated in place (and returned); with False a new
        tensor is returned and `kv` is untouched (for export). Equals `forward` on the whole
        sequence (banded to `window`) at frame `pos`, given the K/V of the frames before it.
        """
        device = x_BNM.device
        pos = torch.as_tensor(pos, dtype=torch.long, device=device)
        slot = (pos % self.window).reshape(1)
        valid_111C = (torch.arange(self.window, device=device) <= pos).view(1, 1, 1, self.window)
        dtype = self.spatial_pos.dtype
        x = x_BNM.to(dtype) + self.spatial_pos + self.time_embedding(pos).to(dtype)
        layers = []
        for l, block in enumerate(self.blocks):
            x, kv_l = block.step(x, kv[l], slot, valid_111C, inplace)
            layers.append(kv_l)
        if not inplace:
            kv = torch.stack(layers)
        return self.norm_out(x), kv


def _time_frequencies(n: int, period: int) -> Tensor:
    """n angular frequencies 2*pi*k/period with distinct integers k spread geometrically in [1, period/4]."""
    ks, k_prev = [], 0
    top = max(period // 4, n)
    for i in range(n):
        k = round(top ** (i / max(n - 1, 1)))
        k = max(k, k_prev + 1)
        ks.append(k)
        k_prev = k
    return (2 * torch.pi * torch.tensor(ks, dtype=torch.float64) / period).float()


def _banded_causal_mask(T: int, window: int, device) -> Tensor:
    """(T, T) bool: frame i attends to frames j with i - window < j <= i."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    return (j <= i) & (j > i - window)
