"""MaskGIT sampling: schedule, seeded batched sampling, cache == no cache, constant memory."""

import pytest
import torch

from genie_robot.models import Genie, Rollout, maskgit


def prompt(cfg, B=2, T=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = cfg.dynamics
    return (torch.randint(0, d.vocab_size, (B, T, d.num_tokens), generator=g),
            torch.randint(0, d.num_actions, (B, T - 1), generator=g))


@pytest.mark.parametrize("steps,N", [(25, 1024), (8, 64), (4, 16), (20, 16)])
def test_cosine_schedule(steps, N):
    left = maskgit.cosine_schedule(steps, N)
    assert len(left) == steps and left[-1] == 0
    assert all(a > b for a, b in zip([N] + left, left) if a > 0)  # at least one token per pass
    assert left[0] >= N * 0.9 or steps < 8  # cosine: few tokens early, most late


def test_generate_next_is_batched_seeded_and_valid(cfg, dyn):
    tokens, actions = prompt(cfg)
    action = torch.tensor([1, 2])

    def sample(seed):
        ctx = maskgit.start(dyn, tokens, actions)
        out, ctx2 = maskgit.generate_next(dyn, ctx, action, generator=torch.Generator().manual_seed(seed))
        return out, ctx2

    a, ctx = sample(0)
    b, _ = sample(0)
    c, _ = sample(1)
    assert a.shape == (2, cfg.dynamics.num_tokens) and a.dtype == torch.int64
    assert 0 <= a.min() and a.max() < cfg.dynamics.vocab_size  # no [MASK] left
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int(ctx.pos) == tokens.shape[1] + 1


@pytest.mark.parametrize("order", ["random", "confidence"])
def test_cached_and_uncached_sampling_agree(cfg, dyn, order):
    """Within the context window the cache changes nothing: same seed, same tokens, frame after frame."""
    tokens, actions = prompt(cfg)
    ctx = maskgit.start(dyn, tokens, actions)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    history, acts = tokens, actions
    for k in range(cfg.dynamics.context - tokens.shape[1] - 1):
        action = torch.tensor([k % 4, (k + 1) % 4])
        cached, ctx = maskgit.generate_next(dyn, ctx, action, order=order, generator=g1)
        uncached = maskgit.generate_next_uncached(dyn, history, acts, action, order=order, generator=g2)
        assert torch.equal(cached, uncached)
        history = torch.cat([history, cached[:, None]], 1)
        acts = torch.cat([acts, action[:, None]], 1)


def test_long_rollout_keeps_memory_constant(cfg, dyn):
    tokens, actions = prompt(cfg, B=1)
    ctx = maskgit.start(dyn, tokens, actions)
    kv = ctx.kv
    shape, ptr = kv.shape, kv.data_ptr()
    for k in range(3 * cfg.dynamics.context):
        out, ctx = maskgit.generate_next(dyn, ctx, torch.tensor([k % 4]), steps=2,
                                         generator=torch.Generator().manual_seed(k))
        assert ctx.kv.shape == shape and ctx.kv.data_ptr() == ptr
    assert int(ctx.pos) == tokens.shape[1] + 3 * cfg.dynamics.context


def test_greedy_is_deterministic_without_a_generator(cfg, dyn):
    tokens, actions = prompt(cfg)
    outs = []
    for _ in range(2):
        ctx = maskgit.start(dyn, tokens, actions)
        outs.append(maskgit.generate_next(dyn, ctx, torch.tensor([0, 1]), temperature=0.0, order="confidence")[0])
    assert torch.equal(*outs)
    with pytest.raises(ValueError, match="order"):
        maskgit.generate_next(dyn, maskgit.start(dyn, tokens, actions), torch.tensor([0, 1]), order="best")


def test_rollout_makes_frames_from_a_prompt(cfg, make_random_frames):
    genie = Genie(cfg).eval()
    frames = make_random_frames(cfg, B=2, T=2)
    rollout = Rollout(genie, frames, generator=torch.Generator().manual_seed(0))
    for k in range(cfg.dynamics.context + 2):
        out = rollout.step(torch.tensor([k % 4, 0]), steps=2)
    assert out.shape == (2, *cfg.tokenizer.resolution, 3) and out.dtype == torch.uint8


def test_sampling_follows_the_tempered_distribution():
    probs = torch.tensor([0.1, 0.6, 0.3])
    logits = (probs.log() * 2.0).expand(1, 20000, 3)  # at temperature 2 this is `probs` again
    tokens = torch.zeros(1, 20000, dtype=torch.long)
    masked = torch.ones(1, 20000, dtype=torch.bool)
    out, still = maskgit._reveal(logits, tokens, masked, 20000, 2.0, "random", torch.Generator().manual_seed(0))
    assert not still.any()
    freq = torch.bincount(out[0], minlength=3).float() / 20000
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)
