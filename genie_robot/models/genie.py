"""Genie: the video tokenizer, the latent action model and the dynamics model, composed.

Training happens in two stages (Genie section 2.2):
  1. `genie.tokenizer.loss(frames)` trains the tokenizer alone;
  2. `genie.dynamics_loss(frames)` co-trains the LAM (on pixels) and the dynamics model (on the
     frozen tokenizer's tokens), feeding the LAM's actions and codebook to the dynamics model with
     stop-gradient.
Generation: `Rollout` prompts with frames, then makes one frame per latent action, with a constant
memory (KV caches of `context` frames for the dynamics model and the tokenizer decoder).

Shapes: B batch, T frames, H, W pixels, N tokens per frame.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import maskgit
from .configs import GenieConfig
from .dynamics import DynamicsModel
from .latent_actions import LatentActionModel
from .tokenizer import VideoTokenizer


class Genie(nn.Module):
    def __init__(self, cfg: GenieConfig):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = VideoTokenizer(cfg.tokenizer)
        self.lam = LatentActionModel(cfg.lam)
        self.dynamics = DynamicsModel(cfg.dynamics)
        if cfg.lam.input == "tokens":  # the token-input LAM ablation reads this tokenizer's tokens
            self.lam.attach_tokenizer(self.tokenizer)

    def dynamics_loss(self, frames_BTHW3: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Stage 2: LAM loss + dynamics loss. The tokenizer is frozen (its tokens carry no gradient).

        Metrics are prefixed "lam/" and "dynamics/"; "loss" is the sum.
        """
        tokens_BTN = self.tokenizer.encode(frames_BTHW3)  # no_grad inside
        lam_loss, lam_metrics, actions_BT1 = self.lam(frames_BTHW3, tokens_BTN)  # tokens: input="tokens" only
        dyn_loss, dyn_metrics = self.dynamics.loss(tokens_BTN, actions_BT1, self.lam.action_embeddings())
        loss = lam_loss + dyn_loss
        metrics = {"loss": loss.item()}
        metrics.update({f"lam/{k}": v for k, v in lam_metrics.items()})
        metrics.update({f"dynamics/{k}": v for k, v in dyn_metrics.items()})
        return loss, metrics


class Rollout:
    """Interactive generation: prompt once, then `step(action)` returns the next RGB frame.

    The reference for the runtime: dynamics and tokenizer-decoder KV caches advance together, one
    frame at a time; all sampling goes through `generator` (seeded => reproducible).
    """

    @torch.no_grad()
    def __init__(self, genie: Genie, prompt_BTHW3: Tensor, prompt_actions_BT1: Tensor | None = None,
                 generator: torch.Generator | None = None):
        self.genie, self.generator = genie, generator
        tokens_BTN = genie.tokenizer.encode(prompt_BTHW3)
        B, T, _ = tokens_BTN.shape
        if prompt_actions_BT1 is None and T > 1:
            prompt_actions_BT1 = genie.lam.infer_actions(prompt_BTHW3)
        self.ctx = maskgit.start(genie.dynamics, tokens_BTN, prompt_actions_BT1)
        self.dec_kv = genie.tokenizer.init_cache(B, "decoder")
        for t in range(T):  # warm the decoder cache with the prompt
            _, self.dec_kv = genie.tokenizer.decode_step(tokens_BTN[:, t], self.dec_kv, t)

    @torch.no_grad()
    def step(self, action_B: Tensor, **sampling) -> Tensor:
        """Latent actions (B,) int64 -> next frames uint8 (B, H, W, 3). `sampling`: steps, temperature, order."""
        pos = self.ctx.pos
        tokens_BN, self.ctx = maskgit.generate_next(self.genie.dynamics, self.ctx, action_B,
                                                    generator=self.generator, **sampling)
        frames_BHW3, self.dec_kv = self.genie.tokenizer.decode_step(tokens_BN, self.dec_kv, pos)
        return frames_BHW3
