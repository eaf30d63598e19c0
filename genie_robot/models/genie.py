"""Genie: the video tokenizer, the latent action model and the dynamics model, composed.

Training happens in stages:
  1. `genie.tokenizer.loss(frames)` trains the tokenizer alone;
  1b. `genie.lam.loss(frames)` trains the latent action model alone (the default recipe: the conv
     LAM is trained on its own, then frozen);
  2. `genie.dynamics_loss(frames)` trains the dynamics model on the frozen tokenizer's tokens and
     the LAM's actions (stop-gradient). With a trainable LAM it is co-trained here (Genie section 2.2,
     the paper's recipe); with a frozen one only its actions are read. With
     `dynamics.action_source = "ground_truth"` the dynamics model is conditioned on the store's real
     actions instead (the control that says whether dynamics and sampler can express control at all).
`build_tokenizer` / `build_lam` pick the model class a config's `kind` names; the paper's kinds build the
ablation variants a config asks for from their registries (models/variants/).
Generation is the runtime's: `genie_robot.runtime.WorldModel.from_genie(genie)` runs this model's
cached single-frame steps with the one MaskGIT sampler (models/sampling.py), as it runs an exported
bundle.

Shapes: B batch, T frames, H, W pixels, N tokens per frame.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .configs import GenieConfig, LatentActionConfig, TokenizerConfig
from .conv_latent_actions import ConvLatentActionModel
from .conv_tokenizer import ConvTokenizer
from .dynamics import DynamicsModel
from .latent_actions import lam_class
from .tokenizer import VideoTokenizer


def build_tokenizer(cfg: TokenizerConfig) -> nn.Module:
    """The tokenizer `cfg.kind` names: "conv" (ConvTokenizer) or "st_vivit" (VideoTokenizer, the paper's)."""
    return ConvTokenizer(cfg) if cfg.kind == "conv" else VideoTokenizer(cfg)


def build_lam(cfg: LatentActionConfig) -> nn.Module:
    """The LAM `cfg.kind` names: "conv" (ConvLatentActionModel) or "st_transformer" (the paper's, or the
    registered variant of it that `cfg` asks for: latent_actions.lam_class)."""
    return ConvLatentActionModel(cfg) if cfg.kind == "conv" else lam_class(cfg)(cfg)


class Genie(nn.Module):
    def __init__(self, cfg: GenieConfig):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = build_tokenizer(cfg.tokenizer)
        self.lam = build_lam(cfg.lam)
        self.dynamics = DynamicsModel(cfg.dynamics)
        if hasattr(self.lam, "attach_tokenizer"):  # a LAM that reads the tokenizer's tokens (an ablation)
            self.lam.attach_tokenizer(self.tokenizer)

    def dynamics_loss(self, frames_BTHW3: Tensor, transition_actions: Tensor | None = None,
                      tokens_BTN: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """Stage 2: dynamics loss (+ the LAM's loss when the LAM trains too). The tokenizer is frozen.

        `transition_actions` (B, T-1, A) float: the store's actions summed over each transition, for
        `dynamics.action_source = "ground_truth"`. `tokens_BTN`: the frames' tokens when already known
        (the trainer's token cache), else the tokenizer encodes them. Metrics are prefixed "lam/" and
        "dynamics/".
        """
        if tokens_BTN is None:
            tokens_BTN = self.tokenizer.encode(frames_BTHW3)  # no_grad inside
        metrics: dict[str, float] = {}
        loss = tokens_BTN.new_zeros((), dtype=torch.float32)
        if self.cfg.dynamics.action_source == "ground_truth":
            if transition_actions is None:
                raise ValueError("dynamics.action_source='ground_truth' needs the windows' transition_actions "
                                 "(a store with data/action)")
            actions, table = transition_actions.float(), None
        elif any(p.requires_grad for p in self.lam.parameters()):  # the paper: LAM co-trained
            lam_loss, lam_metrics, actions = self.lam(frames_BTHW3, tokens_BTN)  # tokens: for a LAM that reads them
            loss = loss + lam_loss
            metrics.update({f"lam/{k}": v for k, v in lam_metrics.items()})
            table = self.lam.action_embeddings()
        else:  # a LAM trained on its own, frozen
            actions, table = self.lam.infer_actions(frames_BTHW3, tokens_BTN), self.lam.action_embeddings()
        dyn_loss, dyn_metrics = self.dynamics.loss(tokens_BTN, actions, table)
        loss = loss + dyn_loss
        metrics["loss"] = loss.item()
        metrics.update({f"dynamics/{k}": v for k, v in dyn_metrics.items()})
        return loss, metrics
