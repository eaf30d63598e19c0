"""Typed configs for the three Genie models, the presets `tiny` / `cpu` / `paper`, and `model_cost`.

A `GenieConfig` is plain data: it round-trips through JSON (`to_dict` / `from_dict`) so checkpoints
and MLflow runs carry the exact architecture. `model_cost(cfg)` counts parameters and forward matmul
FLOPs analytically (no model is built, so it works for the 10B `paper` preset too); a test checks the
counts against the built models and `torch.utils.flop_counter.FlopCounterMode`.

Shape letters: B batch, T frames, N tokens per frame, M width, D code dim, V codebook size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TransformerConfig:
    """One ST-Transformer (see st_transformer.py)."""

    width: int = 64  # M
    depth: int = 2  # L blocks (spatial attention -> causal temporal attention -> FFN)
    heads: int = 2
    ffn_width: int = 256  # hidden width of the one feed-forward layer per block

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")


@dataclass
class QuantizerConfig:
    """Straight-through VQ on l2-normalised codes in a low-dimensional space (see quantizer.py)."""

    num_codes: int = 64  # V
    code_dim: int = 16  # D
    beta: float = 0.25  # commitment weight
    usage_decay: float = 0.99  # EMA decay of per-code usage counters (logged)
    dead_after: int = 100  # a code unused for this many training steps is re-seeded from encoder outputs


@dataclass
class TokenizerConfig:
    """ST-ViViT VQ-VAE: patches -> causal ST-Transformer encoder -> VQ -> causal ST-Transformer decoder."""

    resolution: tuple[int, int] = (16, 16)  # (H, W) pixels
    patch: int = 4
    context: int = 16  # temporal attention window in frames (training windows should be <= this)
    encoder: TransformerConfig = field(default_factory=TransformerConfig)
    decoder: TransformerConfig = field(default_factory=TransformerConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    random_time_offset: bool = True  # train at random absolute frame positions (see st_transformer.py)
    # What the second attention of each block sees (the paper's Table 3 ablation, same parameters):
    # "st" ST-ViViT (same position, earlier frames; the default), "spatial" ViT (own frame only),
    # "full" C-ViViT (all tokens of this and earlier frames). The runtime / ONNX export needs "st".
    # Blocks: st_transformer.BLOCKS, the ablation's in models/variants/frame_attention.py.
    attention: str = "st"
    # Which tokenizer: "st_vivit" (the paper's, fields above; tokenizer.py) or "conv" (per frame: a conv
    # encoder/decoder with FSQ, conv_tokenizer.py; measured 30.3 dB in 1,500 steps where ST-ViViT stood
    # at 25.9 dB after 2 h, see docs/default_model). For "conv", `patch` is the downsampling factor
    # 2 ** (len(channels) - 1) and `channels` the widths from the input conv to the token grid.
    kind: str = "st_vivit"
    channels: tuple[int, ...] = (32, 32, 64, 64)
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)  # conv: FSQ levels per code dim; V = their product
    # conv: encode each p x p patch on its own, so a token changes only when its own pixels do (a
    # frame-wide encoder lets the moving arm flip the codes of still background; see conv_tokenizer.py)
    local_encoder: bool = False

    @property
    def grid(self) -> tuple[int, int]:  # (h, w) tokens
        return (self.resolution[0] // self.patch, self.resolution[1] // self.patch)

    @property
    def num_codes(self) -> int:  # V
        return _prod(self.fsq_levels) if self.kind == "conv" else self.quantizer.num_codes

    @property
    def num_tokens(self) -> int:  # N
        return self.grid[0] * self.grid[1]

    def __post_init__(self):
        _check_patch(self.resolution, self.patch, "tokenizer")
        if self.attention not in ("st", "spatial", "full"):
            raise ValueError(f"TokenizerConfig.attention must be 'st' (ST-ViViT), 'spatial' (ViT) or 'full' "
                             f"(C-ViViT), got {self.attention!r}")
        if self.kind not in ("st_vivit", "conv"):
            raise ValueError(f"TokenizerConfig.kind must be 'st_vivit' or 'conv', got {self.kind!r}")
        if self.kind == "conv" and 2 ** (len(self.channels) - 1) != self.patch:
            raise ValueError(f"conv tokenizer: {len(self.channels)} channel widths downsample by "
                             f"{2 ** (len(self.channels) - 1)}, but patch is {self.patch}; give "
                             f"log2(patch) + 1 widths")


@dataclass
class LatentActionConfig:
    """Latent action model: VQ-VAE over frame transitions, |A| codes."""

    resolution: tuple[int, int] = (16, 16)
    patch: int = 8
    # "pixels" (the paper's choice) | "tokens" (ablation, Table 2: the LAM embeds the frozen tokenizer's
    # token ids on the tokenizer's grid, so `patch` = tokenizer patch, and still predicts pixels).
    # This and decoder_frames, latent_norm, decoder_residual below choose variants of the paper's LAM:
    # subclasses in models/variants/lam_variants.py (latent_actions.LAM_VARIANTS).
    input: str = "pixels"
    context: int = 16
    encoder: TransformerConfig = field(default_factory=TransformerConfig)
    decoder: TransformerConfig = field(default_factory=TransformerConfig)
    quantizer: QuantizerConfig = field(
        default_factory=lambda: QuantizerConfig(num_codes=8, code_dim=16, dead_after=50)
    )
    random_time_offset: bool = True
    # Log how much worse the decoder does with the batch's actions shuffled; ~1.0 means the decoder
    # ignores the action (the LAM has collapsed into a next-frame predictor / image compressor).
    monitor_action_sensitivity: bool = True
    token_vocab: int = 0  # input="tokens": the tokenizer's codebook size V (unused for pixels)
    # Frames the decoder sees to predict x_{t+1}: 0 = x_1..x_t (the paper), 1 = x_t only. On smooth
    # scripted robot motion the history already predicts the next frame (constant velocity), the
    # decoder ignores the action and the codes collapse to one (measured on the simulator at 8.3 fps:
    # perplexity 1.0, action_sensitivity 1.00 for 150 steps); with x_t only, the motion must go
    # through the action (as in LAPO-style forward models).
    decoder_frames: int = 0
    # "batch": standardise the continuous latents per dimension (BatchNorm without affine, running
    # statistics at inference) before the l2-normalised lookup. A fresh encoder's latents all point the
    # same way (measured: cosine 0.9997 to their mean), so every transition lands on one code and the
    # codes' embeddings barely differ; centred latents spread over the sphere from the first step.
    latent_norm: str = "none"
    # True: the decoder predicts the change x_{t+1} - x_t, added to x_t's pixels. Its width-M bottleneck
    # then spends nothing on re-drawing the static scene, so the loss is about what moved -- the part
    # only the action can explain (needs pixel targets; with input="tokens" x_t's pixels are added).
    decoder_residual: bool = False
    # Which LAM: "st_transformer" (the paper's, fields above; latent_actions.py and its variants) or "conv"
    # (conv_latent_actions.py): a conv encoder on (x_t, x_t+1, x_t+1 - x_t) -> FSQ on `fsq_levels`
    # (|A| = their product) and a variance floor, and a conv U-Net decoder that sees x_t only,
    # the action entering every block by FiLM. Measured: NMI 0.41 where VQ collapsed to one code.
    kind: str = "st_transformer"
    channels: tuple[int, ...] = (32, 64, 64, 64)  # conv encoder, one stride-2 conv each
    decoder_channels: tuple[int, ...] = (32, 64, 128)  # conv U-Net levels
    fsq_levels: tuple[int, ...] = (2, 2, 2)
    var_floor: float = 0.01  # per-dim floor on the batch variance of the bounded latent (x100 in the loss)

    @property
    def grid(self) -> tuple[int, int]:
        return (self.resolution[0] // self.patch, self.resolution[1] // self.patch)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_actions(self) -> int:  # |A|
        return _prod(self.fsq_levels) if self.kind == "conv" else self.quantizer.num_codes

    @property
    def action_dim(self) -> int:  # D of an action's embedding vector (the dynamics model's action table)
        return len(self.fsq_levels) if self.kind == "conv" else self.quantizer.code_dim

    def __post_init__(self):
        _check_patch(self.resolution, self.patch, "latent action model")
        if self.input not in ("pixels", "tokens"):
            raise ValueError(f"LatentActionConfig.input must be 'pixels' or 'tokens', got {self.input!r}")
        if self.kind not in ("st_transformer", "conv"):
            raise ValueError(f"LatentActionConfig.kind must be 'st_transformer' or 'conv', got {self.kind!r}")
        if self.latent_norm not in ("none", "batch"):
            raise ValueError(f"LatentActionConfig.latent_norm must be 'none' or 'batch', got {self.latent_norm!r}")
        if self.decoder_frames not in (0, 1):
            raise ValueError(f"LatentActionConfig.decoder_frames must be 0 (all past frames) or 1 (x_t only), "
                             f"got {self.decoder_frames}")
        if self.input == "tokens" and self.token_vocab < 1:
            raise ValueError("LatentActionConfig.input='tokens' needs token_vocab = the tokenizer's num_codes "
                             "(training/train.py links it when left at 0 in a run's model overrides)")


# DynamicsConfig fields that only set how frames are sampled: they change no weight, a bundle sets them
# at export (`genie-robot export --guidance ...`), and runs that differ in them share weights.
SAMPLING_FIELDS = ("maskgit_steps", "temperature", "order", "guidance")
# Dynamics fields that change only how it is trained, not its weights: a run may warm-start (`--init`)
# from a checkpoint trained with other values.
TRAINING_FIELDS = ("mask_rate", "mask_per", "context_noise", "self_context", "action_dropout", "random_time_offset")


@dataclass
class DynamicsConfig:
    """MaskGIT dynamics over tokenizer tokens, conditioned on latent actions (additive embeddings)."""

    # Inside a GenieConfig these follow the tokenizer and the LAM (derived there, never set by hand):
    # vocab_size, grid and, for latent actions, num_actions and action_dim. They are fields so that a
    # DynamicsModel can be built from its own config.
    vocab_size: int = 64  # V, = tokenizer codebook size
    grid: tuple[int, int] = (4, 4)  # (h, w) token grid, = tokenizer grid
    num_actions: int = 8  # K, = the LAM's number of latent actions
    action_dim: int = 16  # D of an action vector: the LAM's code dim, or the store's action dim (ground truth)
    context: int = 16  # frames of temporal context (KV-cache window)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    mask_rate: tuple[float, float] = (0.5, 1.0)  # Bernoulli mask rate ~ U(lo, hi)
    # "sample": one mask rate for all frames of a training sample (Genie); "frame": a rate per frame, so
    # a frame is also predicted from nearly unmasked past frames, as in sampling (training only)
    mask_per: str = "sample"
    # Up to this share of the unmasked tokens of frames 1.. is replaced by random codes in training (a
    # rate per frame ~ U(0, context_noise)), and the model is trained to restore them: imagined
    # frames it reads back are never exactly right (training only)
    context_noise: float = 0.0
    # This share of training samples has its visible past replaced by the model's own guess of it (one
    # pass without gradient over the frames masked at a rate ~ U(0.3, 1) each, argmax), and the model is
    # trained to restore the real tokens: the errors it reads back are then its own (training only)
    self_context: float = 0.0
    random_time_offset: bool = True
    # sampling defaults (WorldModel arguments override them)
    maskgit_steps: int = 25
    temperature: float = 2.0
    order: str = "random"  # "random" | "confidence"
    # Probability that a training sample's actions are all dropped ("none"): lets sampling use
    # classifier-free guidance (`guidance` > 1 pushes frames towards what the action changes).
    action_dropout: float = 0.0
    guidance: float = 1.0  # sampling: logits = uncond + guidance * (cond - uncond); 1 = plain conditioning
    # "latent": the LAM's actions (the default); "ground_truth": the store's actions summed over each
    # transition, `action_dim` of them (the control experiment; needs no LAM).
    action_source: str = "latent"

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def __post_init__(self):
        lo, hi = self.mask_rate
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"DynamicsConfig.mask_rate must satisfy 0 <= lo <= hi <= 1, got {tuple(self.mask_rate)}")
        if self.mask_per not in ("sample", "frame"):
            raise ValueError(f"DynamicsConfig.mask_per must be 'sample' or 'frame', got {self.mask_per!r}")
        if not 0 <= self.context_noise < 1:
            raise ValueError(f"DynamicsConfig.context_noise must be in [0, 1), got {self.context_noise}")
        if not 0 <= self.self_context <= 1:
            raise ValueError(f"DynamicsConfig.self_context must be in [0, 1], got {self.self_context}")
        if self.order not in ("random", "confidence"):
            raise ValueError(f"DynamicsConfig.order must be 'random' or 'confidence', got {self.order!r}")
        if self.maskgit_steps < 1:
            raise ValueError(f"DynamicsConfig.maskgit_steps must be >= 1, got {self.maskgit_steps}")
        if self.action_source not in ("latent", "ground_truth"):
            raise ValueError(f"DynamicsConfig.action_source must be 'latent' or 'ground_truth', got {self.action_source!r}")
        if not 0 <= self.action_dropout < 1:
            raise ValueError(f"DynamicsConfig.action_dropout must be in [0, 1), got {self.action_dropout}")


@dataclass
class DataConfig:
    """Facts of the video a model was trained on, which everyone who runs it needs: one model step is
    `frame_stride` store frames of video recorded at `fps`, so imagined frames are `step_seconds` apart;
    the held-out episodes are the last `val_fraction` of every store (genie_robot.data.windows). The
    trainer records them; bundles and checkpoints made before they were recorded read them from their
    manifest or training config (artifacts.checkpoints.genie_config, runtime.bundle.read_config)."""

    frame_stride: int = 1
    fps: float = 0.0  # 0: not recorded
    val_fraction: float = 0.1

    def __post_init__(self):
        if self.frame_stride < 1 or self.fps < 0 or not 0 <= self.val_fraction < 1:
            raise ValueError(f"data: frame_stride must be >= 1, fps >= 0 (0 = unknown) and val_fraction in [0, 1), "
                             f"got {self.frame_stride}, {self.fps}, {self.val_fraction}")

    @property
    def step_seconds(self) -> float | None:
        """Seconds between consecutive model frames, None when the fps was not recorded."""
        return self.frame_stride / self.fps if self.fps > 0 else None


@dataclass
class GenieConfig:
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    lam: LatentActionConfig = field(default_factory=LatentActionConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    name: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self):
        t, a = self.tokenizer, self.lam
        # the dynamics fields that mirror the tokenizer and the LAM are computed here, the one place
        derived = derived_dynamics_fields(t, a, self.dynamics.action_source)
        if any(getattr(self.dynamics, k) != v for k, v in derived.items()):
            self.dynamics = dataclasses.replace(self.dynamics, **derived)
        problems = []
        if tuple(t.resolution) != tuple(a.resolution):
            problems.append(f"tokenizer resolution {t.resolution} != LAM resolution {a.resolution}")
        if a.input == "tokens" and a.patch != t.patch:
            problems.append(f"token-input LAM patch {a.patch} != tokenizer patch {t.patch} (it reads the tokenizer's grid)")
        if a.input == "tokens" and a.token_vocab != t.num_codes:
            problems.append(f"LAM token_vocab {a.token_vocab} != tokenizer codes {t.num_codes}")
        if problems:
            raise ValueError("inconsistent GenieConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "GenieConfig":
        return _from_dict(cls, d)


def derived_dynamics_fields(tokenizer: TokenizerConfig, lam: LatentActionConfig, action_source: str = "latent"
                            ) -> dict:
    """The DynamicsConfig fields a GenieConfig computes from its tokenizer and LAM: the vocabulary and
    grid, and for latent actions their number and dimension (the ground-truth control keeps its
    `action_dim`, the store's)."""
    derived = {"vocab_size": tokenizer.num_codes, "grid": tuple(tokenizer.grid)}
    if action_source == "latent":
        derived.update(num_actions=lam.num_actions, action_dim=lam.action_dim)
    return derived


# ---------------------------------------------------------------------------------------- presets


def preset(name: str) -> GenieConfig:
    """`tiny` (tests, seconds), `cpu` (the default: 64x64, ~10 M params, trains on 2 CPU cores),
    `paper` (Genie's component sizes, for GPUs)."""
    if name == "tiny":
        tok = TokenizerConfig(
            resolution=(16, 16), patch=4, context=8,
            encoder=TransformerConfig(32, 2, 2, 64), decoder=TransformerConfig(32, 2, 2, 64),
            quantizer=QuantizerConfig(num_codes=32, code_dim=8, dead_after=20),
        )
        lam = LatentActionConfig(
            resolution=(16, 16), patch=8, context=8,
            encoder=TransformerConfig(32, 2, 2, 64), decoder=TransformerConfig(32, 2, 2, 64),
            quantizer=QuantizerConfig(num_codes=4, code_dim=8, dead_after=20),
        )
        dyn = DynamicsConfig(context=8, transformer=TransformerConfig(32, 2, 2, 64), maskgit_steps=4)
        return GenieConfig(tok, lam, dyn, name="tiny")
    if name == "cpu":
        # 64x64 frames, 8x8 = 64 tokens per frame: the dynamics model runs (steps + 1) single-frame
        # passes per generated frame, so tokens per frame set the rollout speed.
        # Tokenizer: per-frame conv + FSQ (8, 5, 5, 5) = 1000 codes; LAM: conv + FSQ (4, 4, 4) = 64
        # actions (3 dims, 4 levels each: a direction and how far), trained on its own and frozen
        # (docs/latent_actions.md has the measurements behind both: 8 actions, the paper's number, hold
        # generation ~2 dB lower on this data; 64 sign-only codes (2,) * 6 say less than 64 with levels).
        # The transformer fields of the ST variants stay at their former `cpu` values for the ablations.
        tok = TokenizerConfig(
            resolution=(64, 64), patch=8, context=16,
            encoder=TransformerConfig(128, 4, 4, 512), decoder=TransformerConfig(192, 4, 6, 768),
            quantizer=QuantizerConfig(num_codes=1024, code_dim=32, dead_after=50),
            kind="conv", channels=(32, 48, 64, 96), fsq_levels=(8, 5, 5, 5), local_encoder=True,
        )
        lam = LatentActionConfig(
            resolution=(64, 64), patch=16, context=16,
            encoder=TransformerConfig(128, 4, 4, 512), decoder=TransformerConfig(128, 4, 4, 512),
            quantizer=QuantizerConfig(num_codes=8, code_dim=32, dead_after=100),
            kind="conv", channels=(32, 64, 64, 64), decoder_channels=(16, 32, 64), fsq_levels=(4, 4, 4),
            var_floor=0.01,
        )
        dyn = DynamicsConfig(context=16, transformer=TransformerConfig(192, 6, 6, 768),
                            maskgit_steps=8, temperature=0.5, action_dropout=0.1)
        return GenieConfig(tok, lam, dyn, name="cpu")
    if name == "paper":
        # The Genie paper's components (arXiv 2402.15391): tokenizer ~200M params, patch 4, 1024 codes
        # x 32 dims; LAM ~300M params, patch 16, |A| = 8 codes x 32 dims; dynamics 10.1B params;
        # 16-frame context; MaskGIT 25 steps at temperature 2, random unmasking. Widths and depths
        # below are chosen to land on those parameter counts with this repo's ST block (16 M^2 per
        # block), not copied from the paper's layer tables. 160x90 frames are padded to 160x96 here
        # (90 is not a multiple of the patch size 4).
        tok = TokenizerConfig(
            resolution=(96, 160), patch=4, context=16,
            encoder=TransformerConfig(512, 12, 8, 2048), decoder=TransformerConfig(768, 16, 12, 3072),
            quantizer=QuantizerConfig(num_codes=1024, code_dim=32, dead_after=1000),
        )
        lam = LatentActionConfig(
            resolution=(96, 160), patch=16, context=16,
            encoder=TransformerConfig(768, 16, 12, 3072), decoder=TransformerConfig(768, 16, 12, 3072),
            quantizer=QuantizerConfig(num_codes=8, code_dim=32, dead_after=1000),
        )
        dyn = DynamicsConfig(context=16, transformer=TransformerConfig(5120, 24, 40, 20480),
                            maskgit_steps=25, temperature=2.0)
        return GenieConfig(tok, lam, dyn, name="paper")
    raise ValueError(f"unknown preset {name!r}: use 'tiny', 'cpu' or 'paper'")


# ------------------------------------------------------------------------------------- model_cost
# Analytic counts that mirror the modules exactly (a test compares them with the built models).
# FLOPs = 2 * multiply-adds of matmuls (linear layers, attention scores and values, codebook lookup);
# norms, softmax and elementwise ops are left out.


def _st_params(c: TransformerConfig, num_tokens: int) -> int:
    M, F, hd = c.width, c.ffn_width, c.width // c.heads
    attn = 4 * M * M + 2 * 2 * hd  # qkv + out (no bias), q/k LayerNorm over head_dim
    block = 3 * 2 * M + 2 * attn + (M * F + F) + (F * M + M)  # 3 pre-norms, 2 attentions, FFN
    return num_tokens * M + M + c.depth * block + 2 * M  # spatial positions, time gain, blocks, final norm


def _st_flops(c: TransformerConfig, num_tokens: int, keys: int, attention: str = "st") -> int:
    """Forward FLOPs for one frame of `num_tokens` tokens whose temporal attention sees `keys` frames
    (`attention` "spatial": the second attention sees N keys; "full": N * keys)."""
    M, F, N = c.width, c.ffn_width, num_tokens
    linear = 2 * N * (4 * M * M + 4 * M * M + 2 * M * F)  # spatial qkv+out, temporal qkv+out, FFN
    second = {"st": keys, "spatial": N, "full": N * keys}[attention]  # keys of the second attention
    attn = 2 * 2 * N * N * M + 2 * 2 * N * second * M  # spatial scores+values, temporal scores+values
    return c.depth * (linear + attn)


def _vq_params(q: QuantizerConfig) -> int:
    return q.num_codes * q.code_dim


def _frames_flops(c: TransformerConfig, num_tokens: int, frames: int, window: int) -> int:
    """FLOPs of a full (training-style) forward over `frames` frames, per frame on average."""
    total = sum(_st_flops(c, num_tokens, min(t + 1, window)) for t in range(frames))
    return total // frames


def model_cost(cfg: GenieConfig, frames: int | None = None) -> dict[str, Any]:
    """Parameters and forward FLOPs per generated frame, per model.

    tokenizer: `decode_flops_per_frame` (one cached decoder step, as in a rollout) and
      `encode_flops_per_frame` (one cached encoder step);
    lam: `flops_per_frame` of `infer_actions` (encoder only, cached-step equivalent);
    dynamics: `flops_per_pass` (one cached single-frame pass) and `flops_per_frame` =
      (maskgit_steps + 1) passes (the +1 writes the final frame's K/V into the cache);
    total: params of all three; `flops_per_frame` = dynamics frame + tokenizer decode, i.e. the
      work of one generated RGB frame. `frames` (default: each model's context) sets how many cached
      frames the temporal attention reads; counts assume a full window.
    """
    t, a, d = cfg.tokenizer, cfg.lam, cfg.dynamics
    tq, aq = t.quantizer, a.quantizer
    pix_t, pix_a = t.patch * t.patch * 3, a.patch * a.patch * 3
    Nt, Na, Nd = t.num_tokens, a.num_tokens, d.num_tokens
    Me, Md = t.encoder.width, t.decoder.width

    tok_params = (
        pix_t * Me + Me + _st_params(t.encoder, Nt) + Me * tq.code_dim + tq.code_dim + _vq_params(tq)
        + tq.code_dim * Md + Md + _st_params(t.decoder, Nt) + Md * pix_t + pix_t
    )
    keys_t = min(frames or t.context, t.context)
    tok_enc = (2 * Nt * (pix_t * Me + Me * tq.code_dim + tq.code_dim * tq.num_codes)
               + _st_flops(t.encoder, Nt, keys_t, t.attention))
    tok_dec = 2 * Nt * (tq.code_dim * Md + Md * pix_t) + _st_flops(t.decoder, Nt, keys_t, t.attention)

    Mae, Mad = a.encoder.width, a.decoder.width
    pixels = a.input == "pixels"  # "tokens": embedding tables (V rows, no matmul) instead of patch linears
    enc_in = pix_a * Mae + Mae if pixels else a.token_vocab * Mae
    dec_in = pix_a * Mad + Mad if pixels else a.token_vocab * Mad
    lam_params = (
        enc_in + Mae + _st_params(a.encoder, Na + 1) + Mae * aq.code_dim + aq.code_dim
        + _vq_params(aq) + dec_in + aq.code_dim * Mad + Mad + _st_params(a.decoder, Na)
        + Mad * pix_a + pix_a
    )
    keys_a = min(frames or a.context, a.context)
    lam_enc = (2 * Na * pix_a * Mae * pixels + 2 * (Mae * aq.code_dim + aq.code_dim * aq.num_codes)
               + _st_flops(a.encoder, Na + 1, keys_a))
    lam_dec = 2 * Na * (pix_a * Mad * pixels + Mad * pix_a) + 2 * aq.code_dim * Mad + _st_flops(a.decoder, Na, keys_a)

    M = d.transformer.width
    dyn_params = (d.vocab_size + 1) * M + d.action_dim * M + M + _st_params(d.transformer, Nd) + M * d.vocab_size + d.vocab_size
    keys_d = min(frames or d.context, d.context)
    dyn_pass = 2 * d.action_dim * M + _st_flops(d.transformer, Nd, keys_d) + 2 * Nd * M * d.vocab_size
    dyn_frame = (d.maskgit_steps + 1) * dyn_pass

    if t.kind == "conv" or a.kind == "conv":  # conv kinds: counted on the built module (small, fast)
        conv = _conv_costs(t if t.kind == "conv" else None, a if a.kind == "conv" else None)
        if t.kind == "conv":
            tok_params, tok_enc, tok_dec = conv["tokenizer"]
        if a.kind == "conv":
            lam_params, lam_enc, lam_dec = conv["lam"]
    return {
        "tokenizer": {"params": tok_params, "encode_flops_per_frame": tok_enc, "decode_flops_per_frame": tok_dec},
        "lam": {"params": lam_params, "flops_per_frame": lam_enc, "decoder_flops_per_frame": lam_dec},
        "dynamics": {"params": dyn_params, "flops_per_pass": dyn_pass, "flops_per_frame": dyn_frame,
                     "maskgit_steps": d.maskgit_steps},
        "total": {"params": tok_params + lam_params + dyn_params, "flops_per_frame": dyn_frame + tok_dec},
    }


def _conv_costs(tok: TokenizerConfig | None, lam: LatentActionConfig | None) -> dict[str, tuple[int, int, int]]:
    """(params, encode FLOPs, decode FLOPs) per frame of the conv models, measured with torch's
    FlopCounterMode on one frame (a conv model's FLOPs do not depend on the frames before it)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def flops(fn, *args) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn(*args)
        return int(counter.get_total_flops())

    out = {}
    if tok is not None:
        from .conv_tokenizer import ConvTokenizer

        m = ConvTokenizer(tok)
        H, W = tok.resolution
        x = torch.zeros(1, 3, H, W)
        z = m.encoder(x)
        out["tokenizer"] = (sum(p.numel() for p in m.parameters()), flops(m.encoder, x), flops(m.decoder, z))
    if lam is not None:
        from .conv_latent_actions import ConvLatentActionModel

        m = ConvLatentActionModel(lam)
        H, W = lam.resolution
        x = torch.zeros(1, 3, H, W)
        a = torch.zeros(1, len(lam.fsq_levels))
        out["lam"] = (sum(p.numel() for p in m.parameters()), flops(m.encoder, x, x), flops(m.decoder, x, a))
    return out


# ------------------------------------------------------------------------------------ (de)serialise


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def _check_patch(resolution, patch, what):
    H, W = resolution
    if H % patch or W % patch:
        raise ValueError(f"{what}: resolution {tuple(resolution)} is not a multiple of patch {patch}")


def _to_jsonable(x):
    if isinstance(x, dict):
        return {k: _to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_jsonable(v) for v in x]
    return x


def config_from_dict(cls, d: dict):
    """A config dataclass (any of this module's) from its to_dict() form: nested configs built, lists
    back to tuples, fields missing from `d` (saved before they existed) at their defaults."""
    return _from_dict(cls, d)


def _from_dict(cls, d: dict):
    if not isinstance(d, dict):
        raise TypeError(f"expected a dict for {cls.__name__}, got {type(d).__name__}")
    kwargs = {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; known: {sorted(names)}")
    for name, value in d.items():
        f = names[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            value = _from_dict(type(default), value)
        elif isinstance(default, tuple):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


__all__ = [
    "TransformerConfig", "QuantizerConfig", "TokenizerConfig", "LatentActionConfig", "DynamicsConfig",
    "DataConfig", "GenieConfig", "config_from_dict", "derived_dynamics_fields", "preset", "model_cost",
]
