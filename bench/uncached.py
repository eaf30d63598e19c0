"""The no-cache baseline of bench_rollout.py and bench_runtime.py: every MaskGIT pass recomputes the
whole window of past frames (the new one included) with the full DynamicsModel forward, as an
implementation without a temporal KV cache would. Sampling is the library's (models/sampling.py), so
the two paths differ only in the cache. A benchmark baseline, not a code path anyone runs."""

from __future__ import annotations

import numpy as np
import torch

from genie_robot.models.sampling import sample_frame


@torch.no_grad()
def generate_next_uncached(dynamics, tokens_BTN: torch.Tensor, actions_BTm1: torch.Tensor, action_B: torch.Tensor,
                           *, steps: int, rng: np.random.Generator, temperature: float | None = None,
                           order: str | None = None) -> torch.Tensor:
    """Past tokens (B, T, N), the actions between them (B, T-1) and the action of the new frame (B,) ->
    the new frame's tokens (B, N)."""
    cfg = dynamics.cfg
    B, T, N = tokens_BTN.shape
    keep = min(T, cfg.context - 1)  # past frames that fit in the window next to the new one
    past_BTN, acts_BT = tokens_BTN[:, T - keep:], torch.cat([actions_BTm1, action_B[:, None]], 1)[:, T - keep:]

    def full_forward(tokens_BN, conditions):  # guidance 1: conditions == (True,)
        seq_BTN = torch.cat([past_BTN, torch.from_numpy(tokens_BN)[:, None]], dim=1)
        return [dynamics(seq_BTN, acts_BT)[:, -1].float().numpy()]

    return torch.from_numpy(sample_frame(
        full_forward, B, N, dynamics.mask_id, steps=steps, rng=rng, guidance=1.0,
        temperature=cfg.temperature if temperature is None else temperature,
        order=cfg.order if order is None else order))
