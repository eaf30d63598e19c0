"""The no-cache baseline of bench_rollout.py and bench_runtime.py: every MaskGIT pass recomputes the
whole window of past frames (the new one included) with the full DynamicsModel forward, as an
implementation without a temporal KV cache would. Sampling is the library's (models/sampling.py), so
the two paths differ only in the cache. A benchmark baseline, not a code path anyone runs."""

from __future__ import annotations

import numpy as np
import torch

from genie_robot.models.sampling import cosine_schedule, reveal


@torch.no_grad()
def generate_next_uncached(dynamics, tokens_BTN: torch.Tensor, actions_BT1: torch.Tensor, action_B: torch.Tensor,
                           *, steps: int, rng: np.random.Generator, temperature: float | None = None,
                           order: str | None = None) -> torch.Tensor:
    """Past tokens (B, T, N), the actions between them (B, T-1) and the action of the new frame (B,) ->
    the new frame's tokens (B, N)."""
    cfg = dynamics.cfg
    temperature = cfg.temperature if temperature is None else temperature
    order = cfg.order if order is None else order
    B, T, N = tokens_BTN.shape
    keep = min(T, cfg.context - 1)  # past frames that fit in the window next to the new one
    past_BTN, acts_BT = tokens_BTN[:, T - keep:], torch.cat([actions_BT1, action_B[:, None]], 1)[:, T - keep:]
    tokens_BN = np.full((B, N), dynamics.mask_id, np.int64)
    masked_BN = np.ones((B, N), bool)
    n_masked = N
    for left in cosine_schedule(steps, N):
        seq_BTN = torch.cat([past_BTN, torch.from_numpy(tokens_BN)[:, None]], dim=1)
        logits_BNV = dynamics(seq_BTN, acts_BT)[:, -1].float().numpy()
        tokens_BN, masked_BN = reveal(logits_BNV, tokens_BN, masked_BN, n_masked - left, temperature, order, rng)
        n_masked = left
        if left == 0:
            break
    return torch.from_numpy(tokens_BN)
