"""Finite scalar quantisation: the implicit grid, index <-> value round trips, straight-through
gradients, the variance floor, and argument checks."""

import itertools
import math

import pytest
import torch

from genie_robot.models.quantizer import FSQ


def nearest_level(z_LD: torch.Tensor, levels) -> torch.Tensor:
    """Independent oracle: per dim, the nearest of `L` evenly spaced values in [-1, 1] to tanh(z)."""
    out = torch.empty_like(z_LD)
    for d, L in enumerate(levels):
        grid = torch.linspace(-1, 1, L)
        out[:, d] = grid[(torch.tanh(z_LD[:, d])[:, None] - grid).abs().argmin(-1)]
    return out


def mixed_radix(values_LD: torch.Tensor, levels) -> torch.Tensor:
    """Oracle index: digit k_d = position of the value among its L_d levels, first dim most significant."""
    index = torch.zeros(values_LD.shape[0], dtype=torch.long)
    for d, L in enumerate(levels):
        digit = ((values_LD[:, d] + 1) / 2 * (L - 1)).round().long()
        index = index * L + digit
    return index


@pytest.mark.parametrize("levels", [(2, 2, 2), (8, 5, 5, 5), (3, 4), (7,)])
def test_indices_and_values_round_trip_over_the_whole_grid(levels):
    fsq = FSQ(levels)
    V = math.prod(levels)
    assert fsq.num_codes == V
    emb = fsq.embeddings()
    assert emb.shape == (V, len(levels)) and emb.min() == -1 and emb.max() == 1
    # every grid point, listed once, in mixed-radix order
    expected = torch.tensor(list(itertools.product(*[torch.linspace(-1, 1, L).tolist() for L in levels])))
    torch.testing.assert_close(emb, expected)
    # grid values -> indices -> grid values (codes_to_indices takes unscaled values in [-half, half])
    half = (torch.tensor(levels, dtype=torch.float32) - 1) / 2
    assert torch.equal(fsq.codes_to_indices(emb * half), torch.arange(V))
    # a latent inside each cell quantises to that cell: every code is reachable
    assert torch.equal(fsq.quantize(torch.atanh(0.99 * emb)), torch.arange(V))


@pytest.mark.parametrize("levels", [(2, 2, 2), (8, 5, 5, 5), (3, 4)])
def test_quantize_and_forward_agree_with_the_rounded_bounded_value(levels):
    fsq = FSQ(levels)
    z = 2.0 * torch.randn(4096, len(levels), generator=torch.Generator().manual_seed(0))
    want = nearest_level(z, levels)
    codes = fsq.quantize(z)
    assert codes.dtype == torch.int64 and codes.shape == (4096,)
    torch.testing.assert_close(fsq.embeddings()[codes], want)
    assert torch.equal(codes, mixed_radix(want, levels))
    z_q, fwd_codes, loss, metrics = fsq(z)
    assert torch.equal(fwd_codes, codes)
    torch.testing.assert_close(z_q, want)  # the forward value is the code value in [-1, 1]
    assert loss.item() == 0.0  # no variance floor by default
    assert set(metrics) == {"perplexity", "usage"}
    assert metrics["usage"] == pytest.approx(codes.unique().numel() / fsq.num_codes)


def test_binary_levels_give_the_sign_of_each_dim_and_eight_distinct_codes():
    fsq = FSQ((2, 2, 2))
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=3)))  # all 8 sign patterns
    z = signs * torch.rand(8, 3).add(0.05) * 3  # magnitudes in (0.15, 3.15)
    codes = fsq.quantize(z)
    assert sorted(codes.tolist()) == list(range(8))
    torch.testing.assert_close(fsq.embeddings()[codes], signs)
    z = torch.randn(1000, 3)
    torch.testing.assert_close(fsq.embeddings()[fsq.quantize(z)], torch.sign(z))
    # all 8 codes equally often -> perplexity 8, usage 1
    _, _, _, metrics = fsq(signs.repeat(4, 1))
    assert metrics["perplexity"] == pytest.approx(8.0, rel=1e-5) and metrics["usage"] == 1.0


def test_image_levels_have_1000_codes_all_reached_by_random_latents():
    fsq = FSQ((8, 5, 5, 5))
    assert fsq.num_codes == 1000
    codes = fsq.quantize(2.0 * torch.randn(100_000, 4, generator=torch.Generator().manual_seed(1)))
    assert codes.min() >= 0 and codes.max() < 1000 and codes.unique().numel() == 1000


def test_straight_through_gradient_is_the_gradient_of_the_bound():
    fsq = FSQ((8, 5, 5, 5))
    z = torch.randn(64, 4, requires_grad=True)
    z_q, _, _, _ = fsq(z)
    w = torch.randn(64, 4)
    (z_q * w).sum().backward()
    assert z.grad is not None and (z.grad != 0).all()
    # rounding is skipped by the gradient: d z_q / d z = d tanh(z) / d z (the /half and *half cancel)
    torch.testing.assert_close(z.grad, w * (1 - torch.tanh(z.detach()) ** 2))


def test_variance_floor_penalises_a_dim_that_does_not_vary_over_the_batch():
    fsq = FSQ((2, 2, 2), var_floor=0.01, var_weight=100.0)
    spread = torch.tensor([[3.0, -3.0, 3.0], [-3.0, 3.0, -3.0]]).repeat(16, 1)  # every dim at both ends
    _, _, loss, _ = fsq(spread)
    assert loss.item() == 0.0
    stuck = spread.clone()
    stuck[:, 1] = 0.7  # dim 1 constant over the batch: variance 0, penalty 100 * 0.01
    _, _, loss, _ = fsq(stuck.requires_grad_())
    assert loss.item() == pytest.approx(1.0, rel=1e-5)
    assert loss.dtype == torch.float32 and loss.requires_grad
    two_stuck = spread.clone()
    two_stuck[:, 0], two_stuck[:, 2] = -2.0, 0.1
    assert fsq(two_stuck)[2].item() == pytest.approx(2.0, rel=1e-5)
    # a slightly spread dim gets a smaller, still positive penalty that pushes it apart
    nearly = spread.clone()
    nearly[:, 1] = 0.05 * torch.randn(32, generator=torch.Generator().manual_seed(0))
    z = nearly.requires_grad_()
    _, _, loss, _ = fsq(z)
    assert 0.0 < loss.item() < 1.0
    loss.backward()
    centred = z.detach()[:, 1] - z.detach()[:, 1].mean()
    assert (z.grad[:, 1] * centred <= 0).all()  # gradient descent moves values away from their mean
    # no floor, or a single sample (no variance to measure): no loss
    assert FSQ((2, 2, 2))(stuck)[2].item() == 0.0
    assert fsq(stuck[:1])[2].item() == 0.0


@pytest.mark.parametrize("levels", [(), (1, 2), (2, 0), (4, -3)])
def test_bad_levels_are_refused_by_name(levels):
    with pytest.raises(ValueError, match=r"FSQ levels must be integers >= 2"):
        FSQ(levels)
