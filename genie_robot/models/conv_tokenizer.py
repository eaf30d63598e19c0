"""Conv tokenizer: each frame on its own -> conv encoder -> FSQ tokens on an (H/p, W/p) grid -> conv decoder.

The default tokenizer (TokenizerConfig.kind = "conv"). The paper's ST-ViViT (tokenizer.py) mixes time
into every token; at this project's compute a per-frame convolutional VQ-VAE with finite scalar
quantisation reconstructs far better (measured on held-out simulator frames: 30.3 dB after 1,500
steps, where the ST-ViViT stood at 25.9 dB after 2 h) and cannot suffer codebook collapse. The
dynamics model still sees time: it is the one that attends over frames.

  encoder: 3x3 conv -> [ResBlock, 4x4 stride-2 conv] x log2(p) -> ResBlock -> 1x1 conv to D = len(levels),
           on the whole frame or (local_encoder) on each p x p patch
  FSQ:     levels (8, 5, 5, 5) -> V = 1000 codes per token
  decoder: the mirror, 4x4 stride-2 transposed convs, 3x3 conv to RGB

With `local_encoder` (the `cpu` preset) each p x p patch goes through the encoder on its own, so a
token's code depends on its own pixels only. A frame-wide encoder (overlapping convs, GroupNorm over
the frame) lets the moving arm flip the codes of still background: on held-out simulator clips 66 % of
its tokens changed between consecutive frames where only 27 % of the 8x8 patches did, and the dynamics
model had to predict every flip. The local encoder changes 23 % of tokens for 0.8 dB less
reconstruction at equal steps (docs/default_model/README.md has the measurement). The decoder stays
frame-wide: seams between patches are its job.

It has the streaming interface of VideoTokenizer (`encode_step` / `decode_step` with a cache), with an
empty cache: frames do not depend on each other.
Shapes: B batch, T frames, H, W pixels, N = h*w tokens, D code dim, C channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .configs import TokenizerConfig
from .conv_blocks import ResBlock, group_norm
from .quantizer import FSQ
from .tokenizer import check_frames, psnr_from_mse, to_float, to_uint8


class ConvTokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        ch, D = list(cfg.channels), len(cfg.fsq_levels)
        enc: list[nn.Module] = [nn.Conv2d(3, ch[0], 3, padding=1)]
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            enc += [ResBlock(c_in, c_in), nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)]
        enc += [ResBlock(ch[-1], ch[-1]), group_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], D, 1)]
        self.encoder = nn.Sequential(*enc)
        self.fsq = FSQ(cfg.fsq_levels)
        dec: list[nn.Module] = [nn.Conv2d(D, ch[-1], 3, padding=1)]
        for c_in, c_out in zip(ch[::-1][:-1], ch[::-1][1:]):
            dec += [ResBlock(c_in, c_in), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]
        dec += [ResBlock(ch[0], ch[0]), group_norm(ch[0]), nn.SiLU(), nn.Conv2d(ch[0], 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    # -------------------------------------------------------------------------- frames <-> codes

    def _latents(self, frames_BTHW3: Tensor) -> Tensor:
        """-> continuous latents (B*T, h, w, D)."""
        if self.cfg.local_encoder:  # every p x p patch through the encoder on its own
            p, (h, w) = self.cfg.patch, self.cfg.grid
            x = rearrange(to_float(frames_BTHW3), "b t (h p) (w q) c -> (b t h w) c p q", p=p, q=p)
            return rearrange(self.encoder(x), "(l h w) d 1 1 -> l h w d", h=h, w=w)
        x = rearrange(to_float(frames_BTHW3), "b t h w c -> (b t) c h w")
        return rearrange(self.encoder(x), "l d h w -> l h w d")

    def _pixels(self, codes_LhwD: Tensor) -> Tensor:
        """Quantised code values (Z, h, w, D) in [-1, 1] -> float pixels (Z, H, W, 3) in about [-1, 1]."""
        return rearrange(self.decoder(rearrange(codes_LhwD, "l h w d -> l d h w")), "l c h w -> l h w c")

    def loss(self, frames_BTHW3: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Reconstruction MSE on [-1, 1] pixels. Metrics: mse, psnr, code usage / perplexity."""
        check_frames(frames_BTHW3, self.cfg.resolution, "ConvTokenizer.loss")
        z = self._latents(frames_BTHW3)
        zq, codes, _, q_metrics = self.fsq(z.reshape(-1, z.shape[-1]))
        recon = self._pixels(zq.view(z.shape))
        target = to_float(frames_BTHW3).flatten(0, 1)
        mse = F.mse_loss(recon.float(), target)
        value = mse.item()
        metrics = {"loss": value, "mse": value, "psnr": psnr_from_mse(value)}
        metrics.update({f"fsq/{k}": v for k, v in q_metrics.items()})
        return mse, metrics

    @torch.no_grad()
    def encode(self, frames_BTHW3: Tensor) -> Tensor:
        """uint8 (B, T, H, W, 3) -> tokens_BTN int64 in [0, V)."""
        check_frames(frames_BTHW3, self.cfg.resolution, "ConvTokenizer.encode")
        B, T = frames_BTHW3.shape[:2]
        return self.fsq.quantize(self._latents(frames_BTHW3)).reshape(B, T, -1)

    @torch.no_grad()
    def decode(self, tokens_BTN: Tensor) -> Tensor:
        """tokens_BTN -> uint8 frames (B, T, H, W, 3)."""
        B, T, N = tokens_BTN.shape
        h, w = self.cfg.grid
        codes = self.fsq.embeddings()[tokens_BTN.reshape(B * T, h, w)]
        return to_uint8(self._pixels(codes)).view(B, T, *self.cfg.resolution, 3)

    # ------------------------------------- streaming (VideoTokenizer's interface; frames are independent)

    def init_cache(self, batch: int, which: str = "decoder") -> Tensor:
        return torch.zeros(0, device=next(self.parameters()).device)

    @torch.no_grad()
    def encode_step(self, frames_BHW3: Tensor, kv: Tensor, pos: Tensor | int) -> tuple[Tensor, Tensor]:
        return self.encode(frames_BHW3[:, None])[:, 0], kv

    @torch.no_grad()
    def decode_step(self, tokens_BN: Tensor, kv: Tensor, pos: Tensor | int) -> tuple[Tensor, Tensor]:
        return self.decode(tokens_BN[:, None])[:, 0], kv
