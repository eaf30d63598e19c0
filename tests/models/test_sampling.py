"""MaskGIT sampling (models/sampling.py, the one sampler): schedule, seeded batched sampling, cache ==
no cache, the tempered distribution, and rollouts of a torch model through the runtime's path
(`WorldModel.from_genie`) with constant memory."""

import numpy as np
import pytest
import torch

from genie_robot.models import Genie
from genie_robot.models.sampling import cosine_schedule, reveal, sample_frame


def prompt(cfg, B=2, T=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = cfg.dynamics
    return (torch.randint(0, d.vocab_size, (B, T, d.num_tokens), generator=g),
            torch.randint(0, d.num_actions, (B, T - 1), generator=g))


@pytest.mark.parametrize("steps,N", [(25, 1024), (8, 64), (4, 16), (20, 16)])
def test_cosine_schedule(steps, N):
    left = cosine_schedule(steps, N)
    assert len(left) == steps and left[-1] == 0
    assert all(a > b for a, b in zip([N] + left, left) if a > 0)  # at least one token per pass
    assert left[0] >= N * 0.9 or steps < 8  # cosine: few tokens early, most late


def test_sampling_is_batched_seeded_and_valid(cfg, dyn, sample_next):
    tokens, actions = prompt(cfg)
    action = torch.tensor([1, 2])
    a, b, c = (sample_next(dyn, tokens, actions, action, steps=4, temperature=1.0, seed=s) for s in (0, 0, 1))
    assert a.shape == (2, cfg.dynamics.num_tokens) and a.dtype == torch.int64
    assert 0 <= a.min() and a.max() < cfg.dynamics.vocab_size  # no [MASK] left
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("order", ["random", "confidence"])
def test_cached_and_uncached_sampling_agree(cfg, dyn, sample_next, order):
    """Within the context window the cache changes nothing: the same seed gives the same tokens when
    every pass recomputes the whole window with the full forward instead."""
    tokens, actions = prompt(cfg)
    action = torch.tensor([3, 0])
    cached = sample_next(dyn, tokens, actions, action, steps=4, temperature=1.0, order=order, seed=7)
    acts = torch.cat([actions, action[:, None]], 1)

    def full_forward(tokens_BN, conditions):  # guidance 1: conditions == (True,)
        seq = torch.cat([tokens, torch.from_numpy(tokens_BN)[:, None]], 1)
        with torch.no_grad():
            return [dyn(seq, acts)[:, -1].float().numpy()]

    uncached = sample_frame(full_forward, 2, cfg.dynamics.num_tokens, dyn.mask_id, steps=4, temperature=1.0,
                            order=order, guidance=1.0, rng=np.random.default_rng(7))
    assert torch.equal(cached, torch.from_numpy(uncached))


def test_greedy_needs_no_random_numbers_and_a_bad_order_is_named(cfg, dyn, sample_next):
    tokens, actions = prompt(cfg)
    outs = [sample_next(dyn, tokens, actions, torch.tensor([0, 1]), steps=4, temperature=0.0, order="confidence",
                        seed=s) for s in (0, 1)]
    assert torch.equal(*outs)
    with pytest.raises(ValueError, match="order"):
        sample_next(dyn, tokens, actions, torch.tensor([0, 1]), steps=4, temperature=1.0, order="best")


def test_sampling_follows_the_tempered_distribution():
    probs = np.array([0.1, 0.6, 0.3])
    logits = np.broadcast_to(np.log(probs) * 2.0, (1, 20000, 3))  # at temperature 2 this is `probs` again
    out, still = reveal(logits, np.zeros((1, 20000), np.int64), np.ones((1, 20000), bool), 20000, 2.0, "random",
                        np.random.default_rng(0))
    assert not still.any()
    np.testing.assert_allclose(np.bincount(out[0], minlength=3) / 20000, probs, atol=0.015)


def test_a_torch_model_rolls_out_through_the_runtime_path_in_constant_memory(cfg, make_random_frames):
    from genie_robot.runtime.world_model import WorldModel

    wm = WorldModel.from_genie(Genie(cfg).eval(), steps=2, seed=0)
    state = wm.reset(make_random_frames(cfg, B=2, T=2).numpy())
    size = state.cache_nbytes()
    for k in range(cfg.dynamics.context + 2):
        out = wm.step(state, np.array([k % 4, 0]))
        assert state.cache_nbytes() == size
    assert out.shape == (2, *cfg.tokenizer.resolution, 3) and out.dtype == np.uint8
    assert state.pos == 2 + cfg.dynamics.context + 2
