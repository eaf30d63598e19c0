"""MaskGIT sampling of the next frame's tokens (Chang et al. 2022; Genie uses 25 steps, temperature 2,
random unmasking), on top of the dynamics model's temporal KV cache.

A rollout keeps a `Context`: the cache of the last `context` frames' keys/values per layer and the
absolute index of the next frame. `generate_next` fills an all-[MASK] frame in `steps` passes; at each
pass the past frames' K/V are read from the cache (only the new frame is recomputed), tokens are
sampled at `temperature`, and a cosine schedule decides how many stay masked, chosen at random
(`order="random"`, the paper's choice) or by lowest confidence (`order="confidence"`, which is known
to copy the previous frame). One more pass with the final tokens writes the frame's K/V into the
cache. The cache is a ring of fixed size, so memory is constant over arbitrarily long rollouts: the
oldest frame leaves the window when a new one enters.

`generate_next_uncached` is the no-cache baseline: it recomputes the whole window at every pass.

Shapes: B batch, T frames, N tokens per frame, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .dynamics import DynamicsModel
from .sampling import cosine_schedule


@dataclass
class Context:
    """Rollout state, plain tensors. `kv` is updated in place by generate_next/append: clone() to branch."""

    kv: Tensor  # (L, 2, B, N, heads, context, head_dim)
    pos: Tensor  # () int64, absolute index of the next frame

    def clone(self) -> "Context":
        return Context(self.kv.clone(), self.pos.clone())


@torch.no_grad()
def start(dynamics: DynamicsModel, tokens_BTN: Tensor, actions_BT1: Tensor | None = None) -> Context:
    """A context holding the prompt frames (their K/V), ready for `generate_next`.

    `actions_BT1[:, t]` is the action between prompt frames t and t+1 (None: none known, all -1).
    """
    B, T, N = tokens_BTN.shape
    kv, pos = dynamics.init_cache(B)
    ctx = Context(kv, pos)
    if actions_BT1 is None:
        actions_BT1 = torch.full((B, max(T - 1, 0)), -1, dtype=torch.long, device=tokens_BTN.device)
    for t in range(T):
        action_B = actions_BT1[:, t - 1] if t > 0 else torch.full((B,), -1, dtype=torch.long, device=tokens_BTN.device)
        ctx = append(dynamics, ctx, tokens_BTN[:, t], action_B)
    return ctx


@torch.no_grad()
def append(dynamics: DynamicsModel, ctx: Context, tokens_BN: Tensor, action_B: Tensor) -> Context:
    """Write a known frame (produced by `action_B`) into the cache and advance."""
    _, new_kv = dynamics.step(tokens_BN, action_B, ctx.kv, ctx.pos)
    dynamics.transformer.write(ctx.kv, new_kv, ctx.pos)
    return Context(ctx.kv, ctx.pos + 1)


@torch.no_grad()
def generate_next(dynamics: DynamicsModel, ctx: Context, action_B: Tensor, *, steps: int | None = None,
                  temperature: float | None = None, order: str | None = None, guidance: float | None = None,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Context]:
    """Sample the tokens of the frame produced by `action_B` (B,) -> (tokens_BN, advanced context).

    steps / temperature / order / guidance default to the dynamics config (paper: 25, 2.0, "random",
    no guidance); temperature 0 means argmax. `guidance` w != 1 is classifier-free guidance (needs a
    model trained with action_dropout): each pass also runs without the action and samples from
    uncond + w * (cond - uncond), which costs a second pass. `generator` makes sampling reproducible.
    """
    cfg = dynamics.cfg
    steps = cfg.maskgit_steps if steps is None else steps
    temperature = cfg.temperature if temperature is None else temperature
    order = cfg.order if order is None else order
    guidance = getattr(cfg, "guidance", 1.0) if guidance is None else guidance
    B, N = ctx.kv.shape[2], cfg.num_tokens
    tokens_BN = torch.full((B, N), dynamics.mask_id, dtype=torch.long, device=ctx.kv.device)
    masked_BN = torch.ones(B, N, dtype=torch.bool, device=ctx.kv.device)
    n_masked = N
    for left in cosine_schedule(steps, N):
        if guidance != 1.0:  # classifier-free guidance: the action-free pass
            uncond_BNV, _ = dynamics.step(tokens_BN, dynamics.no_action(action_B), ctx.kv, ctx.pos)
        logits_BNV, _ = dynamics.step(tokens_BN, action_B, ctx.kv, ctx.pos)
        if guidance != 1.0:
            logits_BNV = uncond_BNV + guidance * (logits_BNV - uncond_BNV)
        tokens_BN, masked_BN = _reveal(logits_BNV, tokens_BN, masked_BN, n_masked - left, temperature, order, generator)
        n_masked = left
        if left == 0:
            break
    return tokens_BN, append(dynamics, ctx, tokens_BN, action_B)


@torch.no_grad()
def generate_next_uncached(dynamics: DynamicsModel, tokens_BTN: Tensor, actions_BT1: Tensor, action_B: Tensor,
                           *, t0: int = 0, steps: int | None = None, temperature: float | None = None,
                           order: str | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Baseline without cache: every pass recomputes the last `context` frames (the new one included).

    tokens_BTN: past frames, actions_BT1 (B, T-1) the actions between them, t0 the absolute index of
    tokens_BTN[:, 0]. Consumes `generator` exactly like `generate_next`.
    """
    cfg = dynamics.cfg
    steps = cfg.maskgit_steps if steps is None else steps
    temperature = cfg.temperature if temperature is None else temperature
    order = cfg.order if order is None else order
    B, T, N = tokens_BTN.shape
    keep = min(T, cfg.context - 1)  # past frames that fit in the window next to the new one
    past_BTN, acts_BT = tokens_BTN[:, T - keep:], torch.cat([actions_BT1, action_B[:, None]], 1)[:, T - keep:]
    t0_B = torch.full((B,), t0 + T - keep, dtype=torch.long, device=tokens_BTN.device)
    tokens_BN = torch.full((B, N), dynamics.mask_id, dtype=torch.long, device=tokens_BTN.device)
    masked_BN = torch.ones(B, N, dtype=torch.bool, device=tokens_BTN.device)
    n_masked = N
    for left in cosine_schedule(steps, N):
        seq_BTN = torch.cat([past_BTN, tokens_BN[:, None]], dim=1)
        logits_BNV = dynamics(seq_BTN, acts_BT, t0_B)[:, -1]
        tokens_BN, masked_BN = _reveal(logits_BNV, tokens_BN, masked_BN, n_masked - left, temperature, order, generator)
        n_masked = left
        if left == 0:
            break
    return tokens_BN


def _reveal(logits_BNV: Tensor, tokens_BN: Tensor, masked_BN: Tensor, n_reveal: int, temperature: float,
            order: str, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Sample every position, then fix `n_reveal` of the still-masked ones (same count in every sample)."""
    B, N, V = logits_BNV.shape
    logits = logits_BNV.float()
    if temperature > 0:
        probs_BNV = torch.softmax(logits / temperature, dim=-1)
        # inverse-CDF sampling: on CPU ~10x cheaper than torch.multinomial (which draws V exponentials)
        cdf_BNV = probs_BNV.cumsum(dim=-1)
        u_BN1 = torch.rand(B, N, 1, generator=generator, device=logits.device) * cdf_BNV[..., -1:]
        sampled_BN = torch.searchsorted(cdf_BNV, u_BN1)[..., 0].clamp(max=V - 1)
    else:
        probs_BNV = torch.softmax(logits, dim=-1)
        sampled_BN = logits.argmax(dim=-1)
    if order == "random":
        score_BN = torch.rand(B, N, generator=generator, device=logits.device)
    elif order == "confidence":
        score_BN = probs_BNV.gather(-1, sampled_BN[..., None])[..., 0]
    else:
        raise ValueError(f"unknown MaskGIT order {order!r}: use 'random' or 'confidence'")
    score_BN = score_BN.masked_fill(~masked_BN, -1.0)  # only still-masked positions compete
    idx_BK = score_BN.topk(n_reveal, dim=-1).indices
    tokens_BN = tokens_BN.scatter(1, idx_BK, sampled_BN.gather(1, idx_BK))
    masked_BN = masked_BN.scatter(1, idx_BK, False)
    return tokens_BN, masked_BN
