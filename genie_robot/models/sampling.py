"""MaskGIT sampling in numpy (Chang et al. 2022; Genie: 25 steps, random unmasking): the schedule of
how many tokens stay masked after each pass, and the rule that samples the logits and fixes some
still-masked positions. `WorldModel.step` (genie_robot/runtime) runs it over either backend's
`dynamics_step`, so a seeded rollout gives the same tokens on torch and onnxruntime, and training-time
rollouts and eval (`WorldModel.from_genie`) sample the same way. torch is never imported here: the
onnxruntime path must run without it.

Shapes: B batch, N tokens per frame, V vocabulary.
"""

from __future__ import annotations

import math

import numpy as np


def cosine_schedule(steps: int, num_tokens: int) -> list[int]:
    """Tokens still masked after each of the `steps` passes: N*cos(pi/2 * s/steps), >= 1 fewer per pass,
    ending at 0."""
    if steps < 1:
        raise ValueError(f"MaskGIT needs at least 1 step, got {steps}")
    left, out = num_tokens, []
    for s in range(1, steps + 1):
        target = math.floor(num_tokens * math.cos(math.pi / 2 * s / steps))
        left = max(0, min(left - 1, target)) if s < steps else 0
        out.append(left)
    return out


def sample_frame(logits_fn, batch: int, num_tokens: int, mask_id: int, *, steps: int, temperature: float,
                 order: str, guidance: float, rng: np.random.Generator) -> np.ndarray:
    """One frame by MaskGIT: start all-[MASK], then `steps` passes of `reveal` -> tokens (B, N) int64.

    `logits_fn(tokens_BN, conditions)` -> one logits array (B, N, V) of the dynamics model per entry of
    `conditions`, for the frame with these (partly masked) tokens: True with its action, False with none.
    Guidance w != 1 is classifier-free guidance: each pass samples from uncond + w * (cond - uncond), at
    the price of a second pass (the model must have been trained with action dropout); both are asked
    for in one call, so a backend can run them side by side (`WorldModel` on two cores does)."""
    tokens_BN = np.full((batch, num_tokens), mask_id, np.int64)
    masked_BN = np.ones((batch, num_tokens), bool)
    n_masked = num_tokens
    for left in cosine_schedule(steps, num_tokens):
        if guidance != 1.0:
            logits_BNV, uncond_BNV = logits_fn(tokens_BN, (True, False))
            logits_BNV = uncond_BNV + guidance * (logits_BNV - uncond_BNV)
        else:
            (logits_BNV,) = logits_fn(tokens_BN, (True,))
        tokens_BN, masked_BN = reveal(logits_BNV, tokens_BN, masked_BN, n_masked - left, temperature, order, rng)
        n_masked = left
        if left == 0:
            break
    return tokens_BN


def reveal(logits_BNV: np.ndarray, tokens_BN: np.ndarray, masked_BN: np.ndarray, n_reveal: int,
           temperature: float, order: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample every position (inverse CDF at `temperature`, argmax at 0), then
    fix `n_reveal` still-masked positions, chosen at random or by confidence."""
    B, N, V = logits_BNV.shape
    logits = logits_BNV.astype(np.float32, copy=False)
    if temperature > 0:
        z = logits / np.float32(temperature)
        z -= z.max(-1, keepdims=True)
        cdf_BNV = np.cumsum(np.exp(z), axis=-1)
        u_BN1 = rng.random((B, N, 1), dtype=np.float32) * cdf_BNV[..., -1:]
        sampled_BN = np.minimum((cdf_BNV < u_BN1).sum(-1), V - 1)
        probs = None if order == "random" else np.take_along_axis(np.diff(cdf_BNV, axis=-1, prepend=0), sampled_BN[..., None], -1)[..., 0] / cdf_BNV[..., -1]
    else:
        sampled_BN = logits.argmax(-1)
        if order != "random":
            z = logits - logits.max(-1, keepdims=True)
            probs = 1.0 / np.exp(z).sum(-1)  # softmax at the argmax
    if order == "random":
        score_BN = rng.random((B, N), dtype=np.float32)
    elif order == "confidence":
        score_BN = probs.astype(np.float32)
    else:
        raise ValueError(f"unknown MaskGIT order {order!r}: use 'random' or 'confidence'")
    score_BN = np.where(masked_BN, score_BN, np.float32(-1.0))
    idx_BK = np.argsort(-score_BN, axis=1, kind="stable")[:, :n_reveal]
    rows = np.arange(B)[:, None]
    tokens_BN = tokens_BN.copy()
    masked_BN = masked_BN.copy()
    tokens_BN[rows, idx_BK] = sampled_BN[rows, idx_BK]
    masked_BN[rows, idx_BK] = False
    return tokens_BN, masked_BN
