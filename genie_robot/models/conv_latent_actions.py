"""Conv latent action model: discrete actions (64 in the `cpu` preset: FSQ (4, 4, 4)) from pairs of frames,
built so that it cannot collapse.

The default LAM (LatentActionConfig.kind = "conv"); the paper's ST-Transformer VQ-VAE is
latent_actions.py. Each transition x_t -> x_t+1 (frames `frame_stride` store frames apart) on its own:

  encoder  4 stride-2 3x3 convs (GroupNorm, SiLU) on concat(x_t, x_t+1, x_t+1 - x_t) -> linear -> D
           values -> FSQ, `fsq_levels[d]` levels per dim (straight-through): |A| = their product
           ((4, 4, 4): 64 actions, each dim a direction and how far; (2,) * D: the signs, 2^D actions);
           a variance floor keeps every dim in use (var_weight * relu(var_floor - batch variance));
  decoder  a conv U-Net on x_t ALONE, the action entering every residual block by FiLM, predicting
           x_t+1 - x_t (added to x_t). Without x_t+1 the decoder can only explain motion through the
           action, and the few-bit bottleneck keeps appearance out of it.

Why (../shared/FINDINGS.md, docs/latent_actions.md): with plain VQ the same network kept one code
(NMI 0.00); with binary FSQ and the floor it used 6-7 of 8 codes, NMI 0.41 with the ground-truth
motion, on this project's simulator at stride 3. 8 actions (D = 3, the paper's number) leave 22 % of a
step's motion unsaid; 64 lift generation by ~1.2 dB, and 64 with 4 levels a dim say more than 64 signs
(docs/latent_actions.md).

Convention (shared with the dynamics model): actions_BTm1[:, t] labels x_t -> x_t+1.
Shapes: B batch, T frames, Tm1 = T-1 transitions, Z = B*(T-1) transitions flattened, H, W pixels, D action dims.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .configs import LatentActionConfig
from .conv_blocks import ResBlock, group_norm
from .quantizer import FSQ
from .tokenizer import check_frames, to_float


def _pairs(frames_BTHW3: Tensor) -> tuple[Tensor, Tensor]:
    """uint8 (B, T, H, W, 3) -> (x_t, x_t+1) as float (Z, 3, H, W) each, Z = B*(T-1)."""
    x = rearrange(to_float(frames_BTHW3), "b t h w c -> b t c h w")
    return x[:, :-1].flatten(0, 1), x[:, 1:].flatten(0, 1)


class ActionEncoder(nn.Module):
    def __init__(self, cfg: LatentActionConfig):
        super().__init__()
        layers, c_in = [], 9
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), group_norm(c), nn.SiLU()]
            c_in = c
        self.convs = nn.Sequential(*layers)
        H, W = cfg.resolution
        s = 2 ** len(cfg.channels)
        self.to_latent = nn.Linear(c_in * (H // s) * (W // s), len(cfg.fsq_levels))

    def forward(self, x_t: Tensor, x_next: Tensor) -> Tensor:
        """(Z, 3, H, W) twice -> continuous latents (Z, D)."""
        h = self.convs(torch.cat([x_t, x_next, x_next - x_t], dim=1))
        return self.to_latent(h.flatten(1))


class FiLMUNet(nn.Module):
    """x_t and an action vector -> predicted x_t+1 - x_t. One ResBlock per level down and up."""

    def __init__(self, cfg: LatentActionConfig):
        super().__init__()
        ch, D = list(cfg.decoder_channels), len(cfg.fsq_levels)
        self.inp = nn.Conv2d(3, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        for i, c in enumerate(ch):
            self.down.append(ResBlock(ch[max(i - 1, 0)] if i else ch[0], c, D))
            if i < len(ch) - 1:
                self.pool.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = ResBlock(ch[-1], ch[-1], D)
        self.up = nn.ModuleList()
        for i in range(len(ch) - 2, -1, -1):
            self.up.append(ResBlock(ch[i + 1] + ch[i], ch[i], D))
        self.out = nn.Sequential(group_norm(ch[0]), nn.SiLU(), nn.Conv2d(ch[0], 3, 3, padding=1))

    def forward(self, x_t: Tensor, a_ZD: Tensor) -> Tensor:
        h, skips = self.inp(x_t), []
        for i, block in enumerate(self.down):
            h = block(h, a_ZD)
            if i < len(self.pool):
                skips.append(h)
                h = self.pool[i](h)
        h = self.mid(h, a_ZD)
        for block in self.up:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = block(torch.cat([h, skips.pop()], dim=1), a_ZD)
        return self.out(h)


class ConvLatentActionModel(nn.Module):
    def __init__(self, cfg: LatentActionConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = ActionEncoder(cfg)
        self.fsq = FSQ(cfg.fsq_levels, var_floor=cfg.var_floor)
        self.decoder = FiLMUNet(cfg)

    def forward(self, frames_BTHW3: Tensor, tokens_BTN: Tensor | None = None) -> tuple[Tensor, dict[str, float], Tensor]:
        """-> (loss, metrics, actions_BTm1). `tokens_BTN` is ignored (pixels only)."""
        check_frames(frames_BTHW3, self.cfg.resolution, "ConvLatentActionModel", min_frames=2)
        B, T = frames_BTHW3.shape[:2]
        x_t, x_next = _pairs(frames_BTHW3)
        a_ZD, actions_Z, floor_loss, q_metrics = self.fsq(self.encoder(x_t, x_next))
        delta = x_next - x_t
        mse = F.mse_loss(self.decoder(x_t, a_ZD).float(), delta)
        loss = mse + floor_loss
        metrics = {"loss": loss.item(), "mse": mse.item(), "var_floor_loss": floor_loss.item()}
        metrics.update({f"fsq/{k}": v for k, v in q_metrics.items()})
        if self.cfg.monitor_action_sensitivity and a_ZD.shape[0] > 1:
            with torch.no_grad():  # same frames, the batch's actions rolled by one
                mse_shuffled = F.mse_loss(self.decoder(x_t, a_ZD.detach().roll(1, 0)).float(), delta)
            metrics["action_sensitivity"] = mse_shuffled.item() / max(mse.item(), 1e-12)
        return loss, metrics, actions_Z.view(B, T - 1)

    def loss(self, frames_BTHW3: Tensor, tokens_BTN: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        loss, metrics, _ = self(frames_BTHW3)
        return loss, metrics

    @torch.no_grad()
    def infer_actions(self, frames_BTHW3: Tensor, tokens_BTN: Tensor | None = None) -> Tensor:
        """uint8 (B, T, H, W, 3) -> actions (B, T-1) int64 in [0, |A|); [:, t] labels x_t -> x_t+1."""
        check_frames(frames_BTHW3, self.cfg.resolution, "ConvLatentActionModel.infer_actions", min_frames=2)
        B, T = frames_BTHW3.shape[:2]
        return self.fsq.quantize(self.encoder(*_pairs(frames_BTHW3))).view(B, T - 1)

    @torch.no_grad()
    def predict_next(self, frames_BHW3: Tensor, actions_B: Tensor) -> Tensor:
        """The decoder's next frame for each start frame and action (uint8, B, H, W, 3): what an action
        means to the LAM itself, for the latent-action grid."""
        from .tokenizer import to_uint8

        x_t = rearrange(to_float(frames_BHW3), "b h w c -> b c h w")
        a = self.fsq.embeddings()[actions_B]
        return to_uint8(rearrange(x_t + self.decoder(x_t, a), "b c h w -> b h w c"))

    def action_embeddings(self) -> Tensor:
        """(|A|, D) the FSQ code values in [-1, 1]: the dynamics model's action table."""
        return self.fsq.embeddings().detach()
