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

Inference cache (`step`, the one cached step: the runtime's graphs, their ONNX export and the models'
streaming methods all run it), plain tensors so that a single-frame step exports to ONNX with the
cache as inputs:
    kv:     (L, 2, B, N, G, R, E)   keys and values of the last R = `window` frames, per layer; `step`
                                    takes it as per-layer views kv[l, 0], kv[l, 1] (B, N, G, R, E)
    new_kv: (L, 2, B, N, G, E)      what `step` returns: the frame's own keys and values
    pos:    () int64                absolute index of the frame being computed
`step` computes frame `pos` against a read-only cache and returns its K/V; the caller writes them
into ring slot `pos % window` (`write`) once the frame is final, overwriting frame pos - window, which
has just left the window. Until then the slot still holds that old frame, so `step` attends to the
slots j <= pos except pos % window, plus the frame itself. Slot order is irrelevant: attention is
permutation invariant over keys and each key already carries its frame's position. MaskGIT refines a
frame by calling `step` again with the same `pos`, never copying the cache (~300 MB at batch 64 for
the `cpu` dynamics). Memory is constant over arbitrarily long rollouts.

Why a periodic sinusoid for time: cached K/V keep the position they were computed with, so every
frame of an unbounded rollout needs a position, and no position may be one the model never saw. All
temporal frequencies are integer multiples of 2*pi/period, so the encoding of t equals that of
t mod period exactly (no jump at wrap-around), and training at a random absolute offset per clip
(`random_time_offset`) makes every position in-distribution: frame 1000 of a rollout looks like
frame 3 of a training clip, and the model can only use relative time.

Blocks are registered by name in `BLOCKS` ("st": STBlock, the paper's); the tokenizer ablation's
ViT and C-ViViT blocks (`TokenizerConfig.attention`) live in models/variants/frame_attention.py.

Shapes (docs/architecture.md has the one legend): B batch, T frames, N tokens per frame, M width,
Q attention sequences (B*N or B*T), J their length (keys), G heads, E head dim, R = window (cache
ring slots), L layers.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .configs import TransformerConfig

TIME_PERIOD = 1024  # frames; the temporal encoding repeats exactly after this many


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

    def project(self, x_QJM: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(Q, J, M) -> q, k, v each (Q, G, J, E), q and k normalised."""
        Q, J, _ = x_QJM.shape
        q, k, v = self.qkv(x_QJM).view(Q, J, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return self.q_norm(q), self.k_norm(k), v

    def merge(self, y_QGJE: Tensor) -> Tensor:
        Q, G, J, E = y_QGJE.shape
        return self.out(y_QGJE.transpose(1, 2).reshape(Q, J, G * E))

    def forward(self, x_QJM: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
        q, k, v = self.project(x_QJM)
        return self.merge(attention(q, k, v, attn_mask=mask, is_causal=causal))


class STBlock(nn.Module):
    """Spatial attention -> causal temporal attention -> FFN: the paper's block (`attention="st"`)."""

    def __init__(self, c: TransformerConfig):
        super().__init__()
        M = c.width
        self.norm_s, self.spatial = nn.LayerNorm(M), Attention(M, c.heads)
        self.norm_t, self.temporal = nn.LayerNorm(M), Attention(M, c.heads)
        self.norm_f = nn.LayerNorm(M)
        self.ffn = nn.Sequential(nn.Linear(M, c.ffn_width), nn.GELU(), nn.Linear(c.ffn_width, M))

    @staticmethod
    def mask(T: int, N: int, window: int, device) -> Tensor | None:
        """The mask `forward` takes for a clip of T frames: None (plain causal) within the window, else
        the (T, T) banded causal mask."""
        return None if T <= window else banded_causal_mask(T, window, device)

    def forward(self, x_BTNM: Tensor, temporal_mask: Tensor | None) -> Tensor:
        B, T, N, M = x_BTNM.shape
        x = x_BTNM + self.spatial(self.norm_s(x_BTNM).reshape(B * T, N, M)).view(B, T, N, M)
        x_QJM = x.transpose(1, 2).reshape(B * N, T, M)  # one sequence per token position
        causal = temporal_mask is None
        x_QJM = x_QJM + self.temporal(self.norm_t(x_QJM), mask=temporal_mask, causal=causal)
        x = x_QJM.view(B, N, T, M).transpose(1, 2)
        return x + self.ffn(self.norm_f(x))

    def step(self, x_BNM: Tensor, keys_BNGRE: Tensor, values_BNGRE: Tensor, bias_111R: Tensor
             ) -> tuple[Tensor, Tensor, Tensor]:
        """One frame against this layer's read-only cache (`STTransformer.step`) -> (x_BNM, this frame's
        keys and values (B*N, G, E) each)."""
        B, N, M = x_BNM.shape
        G = self.temporal.heads
        E, R = M // G, keys_BNGRE.shape[3]
        dtype = x_BNM.dtype
        x = x_BNM + self.spatial(self.norm_s(x_BNM))
        q, k, v = self.temporal.project(self.norm_t(x).reshape(B * N, 1, M))  # (Q, G, 1, E)
        keys_QGRE = keys_BNGRE.reshape(B * N, G, R, E).to(dtype)
        values_QGRE = values_BNGRE.reshape(B * N, G, R, E).to(dtype)
        # softmax over [cache slots, this frame] without concatenating the cache (no copy of it);
        # plain matmuls: onnxruntime runs them (transposed operand fused) far faster than Einsum
        scale = E ** -0.5
        s_cache = torch.matmul(q, keys_QGRE.transpose(-1, -2)) * scale + bias_111R  # (Q, G, 1, R)
        s_self = (q * k).sum(-1, keepdim=True) * scale  # (Q, G, 1, 1)
        s = torch.cat([s_cache, s_self], dim=-1).softmax(dim=-1)
        y_QG1E = torch.matmul(s[..., :R], values_QGRE) + s[..., R:] * v
        x = x + self.temporal.merge(y_QG1E).view(B, N, M)
        return x + self.ffn(self.norm_f(x)), k[:, :, 0], v[:, :, 0]


# attention name -> block class. Each class takes (TransformerConfig), has `forward(x_BTNM, mask)`, the
# cached `step` and a static `mask(T, N, window, device)` giving the mask its forward needs. The
# tokenizer ablation's blocks register themselves from models/variants/frame_attention.py.
BLOCKS: dict[str, type[nn.Module]] = {"st": STBlock}


def block_class(attention: str) -> type[nn.Module]:
    """The block registered for `attention`; other names are looked up after importing models/variants/
    (the ablations register there), so that every way of building a model sees them."""
    if attention not in BLOCKS:
        importlib.import_module(f"{__package__}.variants")
    if attention not in BLOCKS:
        raise ValueError(f"attention must be one of {tuple(BLOCKS)}, got {attention!r}")
    return BLOCKS[attention]


class STTransformer(nn.Module):
    """x_BTNM (already embedded tokens) -> y_BTNM, causal in time, final LayerNorm applied.
    `attention`: which block, by its name in BLOCKS ("st", the paper's STBlock, unless an ablation)."""

    def __init__(self, cfg: TransformerConfig, num_tokens: int, window: int,
                 random_time_offset: bool = True, time_period: int = TIME_PERIOD, attention: str = "st"):
        super().__init__()
        if cfg.width % 2:
            raise ValueError(f"ST-Transformer width must be even (sin/cos time encoding), got {cfg.width}")
        block = block_class(attention)
        self.cfg, self.num_tokens, self.window, self.attention = cfg, num_tokens, window, attention
        # wide models get a longer period so that their M/2 frequencies stay distinct and un-aliased
        self.random_time_offset, self.time_period = random_time_offset, max(time_period, 2 * cfg.width)
        self.spatial_pos = nn.Parameter(torch.randn(num_tokens, cfg.width) * 0.02)
        self.register_buffer("time_freqs", _time_frequencies(cfg.width // 2, self.time_period), persistent=False)
        # learned per-channel gain on the fixed sinusoid; starts as small as the learned spatial
        # embedding, because unit-amplitude time features swamp the (small at init) content early on
        self.time_scale = nn.Parameter(torch.full((cfg.width,), 0.02))
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg.depth))
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
        mask = self.blocks[0].mask(T, N, self.window, device)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm_out(x)

    # ------------------------------------------------------------------ inference with the cache

    def init_cache(self, batch: int, device=None, dtype=None) -> Tensor:
        """Zeroed kv of shape (L, 2, batch, N, heads, window, head_dim)."""
        p = self.spatial_pos
        c = self.cfg
        return torch.zeros(c.depth, 2, batch, self.num_tokens, c.heads, self.window, c.width // c.heads,
                           device=device or p.device, dtype=dtype or p.dtype)

    def step(self, x_BNM: Tensor, kv: Tensor | list[Tensor], pos: Tensor | int) -> tuple[Tensor, Tensor]:
        """One frame at absolute index `pos` against the read-only cache -> (y_BNM after the final norm,
        new_kv (L, 2, B, N, G, E): this frame's keys and values, for `write`).

        `kv`: the cache (L, 2, B, N, G, R, E), or its per-layer views [k0, v0, k1, v1, ...] (the
        exported graphs take them as separate inputs). Equals `forward` on the whole sequence (banded
        to `window`) at frame `pos`, given the K/V of the frames before it."""
        if isinstance(kv, Tensor):
            kv = list(kv.flatten(0, 1).unbind(0))
        B, N, M = x_BNM.shape
        R, G = self.window, self.cfg.heads
        pos = torch.as_tensor(pos, dtype=torch.long, device=x_BNM.device)
        dtype = self.spatial_pos.dtype
        x = x_BNM.to(dtype) + self.spatial_pos + self.time_embedding(pos).to(dtype)
        slots = torch.arange(R, device=x.device)
        valid_R = (slots <= pos) & (slots != pos % R)
        bias_111R = torch.zeros(R, dtype=dtype, device=x.device).masked_fill(~valid_R, float("-inf")).view(1, 1, 1, R)
        news = []
        for l, block in enumerate(self.blocks):
            x, k, v = block.step(x, kv[2 * l], kv[2 * l + 1], bias_111R)
            news.append(torch.stack((k, v)))  # (2, Q, G, E)
        new_kv = torch.stack(news).view(len(self.blocks), 2, B, N, G, M // G).to(kv[0].dtype)
        return self.norm_out(x), new_kv

    def write(self, kv: Tensor, new_kv: Tensor, pos: Tensor | int) -> Tensor:
        """Write a final frame's new_kv (from `step`) into its ring slot pos % window of `kv`, in place."""
        kv[:, :, :, :, :, int(pos) % self.window] = new_kv
        return kv


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


def banded_causal_mask(T: int, window: int, device) -> Tensor:
    """(T, T) bool: frame i attends to frames j with i - window < j <= i."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    return (j <= i) & (j > i - window)
