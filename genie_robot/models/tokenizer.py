"""Video tokenizer: an ST-ViViT VQ-VAE (Genie section 2.2) that turns frames into discrete tokens.

frames -> non-overlapping patches -> linear -> causal ST-Transformer encoder -> linear to D dims ->
VQ (V codes) -> linear -> causal ST-Transformer decoder -> linear -> patches -> frames.
Both transformers are causal in time, so the tokens of frame t depend only on frames 1..t, and the
pixels decoded for frame t only on tokens 1..t. That makes streaming possible: `encode_step` /
`decode_step` process one new frame with a KV cache (see st_transformer.py).

`TokenizerConfig.attention` swaps the ST-ViViT blocks for the ablation's ViT or C-ViViT blocks, with
the same parameters (models/variants/frame_attention.py).

Frames cross the boundary as uint8 RGB, channels last; inside, pixels are floats in [-1, 1].
Shapes: B batch, T frames, H, W pixels, N = (H/p)*(W/p) tokens per frame, P = p*p*3 pixel values
per patch, M width, D code dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .configs import TokenizerConfig
from .quantizer import VectorQuantizer
from .st_transformer import STTransformer, init_weights


# ---------------------------------------------------------------- pixel helpers (shared with the LAM)


def check_frames(frames: Tensor, resolution: tuple[int, int], what: str, min_frames: int = 1) -> None:
    """Raise a helpful error unless `frames` is uint8 (B, T, H, W, 3) at `resolution`."""
    H, W = resolution
    if frames.dtype != torch.uint8 or frames.ndim != 5 or tuple(frames.shape[2:]) != (H, W, 3):
        raise ValueError(
            f"{what} expects uint8 frames (B, T, {H}, {W}, 3), got {frames.dtype} {tuple(frames.shape)}; "
            "convert with frames.permute(...) to channels-last and resize to the model's resolution"
        )
    if frames.shape[1] < min_frames:
        raise ValueError(f"{what} needs at least {min_frames} frames, got {frames.shape[1]}")


def to_float(frames_uint8: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return frames_uint8.float() / 127.5 - 1.0


def to_uint8(frames_float: Tensor) -> Tensor:
    """float [-1, 1] -> uint8 [0, 255], clamped and rounded."""
    return ((frames_float.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def patchify(x_BTHWC: Tensor, p: int) -> Tensor:
    return rearrange(x_BTHWC, "b t (h p1) (w p2) c -> b t (h w) (p1 p2 c)", p1=p, p2=p)


def unpatchify(x_BTNP: Tensor, p: int, grid: tuple[int, int]) -> Tensor:
    return rearrange(x_BTNP, "b t (h w) (p1 p2 c) -> b t (h p1) (w p2) c", h=grid[0], w=grid[1], p1=p, p2=p)


def start_at_zero(x_BT) -> Tensor:
    """Inference paths (encode / decode / infer_actions) are deterministic: clips start at frame 0,
    in train mode too (stage 2 encodes with a tokenizer that may not have been put in eval mode)."""
    return torch.zeros(x_BT.shape[0], dtype=torch.long, device=x_BT.device)


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for an MSE measured on [-1, 1] pixels (peak-to-peak 2)."""
    return 10 * math.log10(4.0 / max(mse, 1e-12))


# --------------------------------------------------------------------------------------- the model


class VideoTokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        P, N = cfg.patch * cfg.patch * 3, cfg.num_tokens
        enc, dec, D = cfg.encoder, cfg.decoder, cfg.quantizer.code_dim
        self.patch_embed = nn.Linear(P, enc.width)
        self.encoder = STTransformer(enc, N, cfg.context, cfg.random_time_offset, attention=cfg.attention)
        self.to_code = nn.Linear(enc.width, D)
        self.vq = VectorQuantizer(cfg.quantizer)
        self.from_code = nn.Linear(D, dec.width)
        self.decoder = STTransformer(dec, N, cfg.context, cfg.random_time_offset, attention=cfg.attention)
        self.to_pixels = nn.Linear(dec.width, P)
        self.apply(init_weights)

    def loss(self, frames_BTHW3: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Reconstruction MSE (on [-1, 1] pixels) + VQ loss. Metrics: mse, psnr, vq_loss, codebook health."""
        check_frames(frames_BTHW3, self.cfg.resolution, "VideoTokenizer.loss")
        x_BTNP = patchify(to_float(frames_BTHW3), self.cfg.patch)
        B, T, N, _ = x_BTNP.shape
        # (in training mode each transformer starts the clip at its own random absolute frame index)
        z_BTND = self.to_code(self.encoder(self.patch_embed(x_BTNP)))
        zq_ZD, _, vq_loss, vq_metrics = self.vq(z_BTND.reshape(B * T * N, -1))
        recon_BTNP = self.to_pixels(self.decoder(self.from_code(zq_ZD.view(B, T, N, -1))))
        mse = F.mse_loss(recon_BTNP.float(), x_BTNP)
        loss = mse + vq_loss
        values = torch.stack([loss.detach(), mse.detach(), vq_loss.detach()]).tolist()  # one device sync
        metrics = dict(zip(["loss", "mse", "vq_loss"], values), psnr=psnr_from_mse(values[1]))
        metrics.update({f"vq/{k}": v for k, v in vq_metrics.items()})
        return loss, metrics

    @torch.no_grad()
    def encode(self, frames_BTHW3: Tensor) -> Tensor:
        """uint8 (B, T, H, W, 3) -> tokens_BTN int64 in [0, V). Token t depends on frames <= t only."""
        check_frames(frames_BTHW3, self.cfg.resolution, "VideoTokenizer.encode")
        x_BTNP = patchify(to_float(frames_BTHW3), self.cfg.patch)
        z_BTND = self.to_code(self.encoder(self.patch_embed(x_BTNP), start_at_zero(x_BTNP)))
        return self.vq.quantize(z_BTND)

    @torch.no_grad()
    def decode(self, tokens_BTN: Tensor) -> Tensor:
        """tokens_BTN -> uint8 frames (B, T, H, W, 3). Frame t depends on tokens <= t only."""
        recon_BTNP = self.to_pixels(self.decoder(self.from_code(self.vq.embeddings()[tokens_BTN]), start_at_zero(tokens_BTN)))
        return to_uint8(unpatchify(recon_BTNP, self.cfg.patch, self.cfg.grid))

    # ----------------------------------------------------------- streaming, one frame at a time

    def init_cache(self, batch: int, which: str = "decoder") -> Tensor:
        """Zeroed KV cache for `encode_step` (which="encoder") or `decode_step` (which="decoder")."""
        return {"encoder": self.encoder, "decoder": self.decoder}[which].init_cache(batch)

    @torch.no_grad()
    def encode_step(self, frames_BHW3: Tensor, kv: Tensor, pos: Tensor | int) -> tuple[Tensor, Tensor]:
        """One new frame at absolute index `pos` -> (tokens_BN, kv). kv is updated in place."""
        check_frames(frames_BHW3[:, None], self.cfg.resolution, "VideoTokenizer.encode_step")
        x_BNP = patchify(to_float(frames_BHW3)[:, None], self.cfg.patch)[:, 0]
        y_BNM, new_kv = self.encoder.step(self.patch_embed(x_BNP), kv, pos)
        return self.vq.quantize(self.to_code(y_BNM)), self.encoder.write(kv, new_kv, pos)

    @torch.no_grad()
    def decode_step(self, tokens_BN: Tensor, kv: Tensor, pos: Tensor | int) -> tuple[Tensor, Tensor]:
        """Tokens of one new frame at absolute index `pos` -> (uint8 frames (B, H, W, 3), kv). kv is updated
        in place."""
        y_BNM, new_kv = self.decoder.step(self.from_code(self.vq.embeddings()[tokens_BN]), kv, pos)
        recon_BNP = self.to_pixels(y_BNM)
        return to_uint8(unpatchify(recon_BNP[:, None], self.cfg.patch, self.cfg.grid)[:, 0]), \
            self.decoder.write(kv, new_kv, pos)
