"""PSNR/SSIM, ΔPSNR through the runtime path (WorldModel.from_genie), code usage and NMI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genie_robot.eval import latent_analysis as la
from genie_robot.eval import metrics


def test_psnr_and_ssim_per_frame():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)
    b = a.copy()
    b[0, 1] = np.clip(a[0, 1].astype(int) + 10, 0, 255).astype(np.uint8)
    p = metrics.psnr(a, b)
    assert p.shape == (2, 3) and p[1, 2] == metrics.PSNR_CAP
    mse = ((a[0, 1].astype(float) - b[0, 1]) ** 2).mean()
    assert p[0, 1] == pytest.approx(10 * np.log10(255**2 / mse))
    s = metrics.ssim(a, b)
    assert s.shape == (2, 3) and s[1, 2] == pytest.approx(1.0) and s[0, 1] < 1.0
    with pytest.raises(ValueError, match="uint8"):
        metrics.psnr(a.astype(np.float32), b)


def test_delta_psnr_runs_the_rollout_and_is_reproducible():
    from genie_robot.models.configs import preset
    from genie_robot.models.genie import Genie

    torch.manual_seed(0)
    genie = Genie(preset("tiny"))
    clips = torch.randint(0, 256, (2, 6, 16, 16, 3), dtype=torch.uint8)
    r1 = metrics.delta_psnr(genie, clips, seed=3)
    r2 = metrics.delta_psnr(genie, clips, seed=3)
    assert r1.psnr_inferred_BT.shape == (2, 6) and np.isnan(r1.psnr_inferred_BT[:, 0]).all()
    assert r1.frames_inferred_BTHW3.shape == (2, 6, 16, 16, 3) and r1.frames_inferred_BTHW3.dtype == np.uint8
    np.testing.assert_array_equal(r1.frames_inferred_BTHW3[:, 0], clips[:, 0].numpy())
    np.testing.assert_array_equal(r1.frames_random_BTHW3, r2.frames_random_BTHW3)
    np.testing.assert_array_equal(r1.actions_inferred_BT, genie.lam.infer_actions(clips).numpy())
    assert np.isfinite(r1.delta_T[1:]).all() and np.isnan(r1.delta_T[0])
    assert r1.at(4) == pytest.approx(r1.delta_T[4])
    with pytest.raises(ValueError, match="more than 6 frames"):
        r1.at(6)
    # With the random actions equal to the inferred ones, ΔPSNR is exactly 0 (shared sampling seed).
    same = metrics.DeltaPSNR(r1.psnr_inferred_BT, r1.psnr_inferred_BT.copy(), *[None] * 4)
    assert np.all(same.delta_T[1:] == 0)


def test_delta_psnr_averaged_over_seeds():
    """Several seeds' runs as one: PSNRs averaged per clip and step, frames and actions of the first."""
    rng = np.random.default_rng(0)
    runs = [metrics.DeltaPSNR(rng.normal(20, 2, (2, 5)), rng.normal(15, 2, (2, 5)), f"frames{k}", None, f"acts{k}", None)
            for k in range(3)]
    avg = metrics.DeltaPSNR.averaged(runs)
    np.testing.assert_allclose(avg.psnr_inferred_BT, np.mean([r.psnr_inferred_BT for r in runs], 0))
    np.testing.assert_allclose(avg.delta_T[1:], np.mean([r.delta_T[1:] for r in runs], 0))
    assert avg.at(4) == pytest.approx(np.mean([r.at(4) for r in runs]))
    assert (avg.frames_inferred_BTHW3, avg.actions_inferred_BT) == ("frames0", "acts0")
    np.testing.assert_array_equal(metrics.DeltaPSNR.averaged(runs[:1]).psnr_random_BT, runs[0].psnr_random_BT)
    with pytest.raises(ValueError, match="no runs"):
        metrics.DeltaPSNR.averaged([])


def test_code_usage_and_perplexity():
    u = la.code_usage(np.array([[0, 1], [1, 7]]), 8)
    np.testing.assert_allclose(u, [0.25, 0.5, 0, 0, 0, 0, 0, 0.25])
    assert la.perplexity(np.full(8, 1 / 8)) == pytest.approx(8)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        la.code_usage(np.array([8]), 8)


def test_fsq_actions_read_as_the_signs_of_their_dims():
    """Directions (latent_analysis) agree with the FSQ module's own code values: the sign of each dim,
    first dim most significant; each direction's corner code sits at +-1 in every dim."""
    from genie_robot.models.quantizer import FSQ

    for levels in [(4, 4, 4), (2, 6, 4)]:
        values_VD = FSQ(levels).embeddings().numpy()
        D = len(levels)
        expected = ((values_VD > 0) * (1 << np.arange(D)[::-1])).sum(1)
        np.testing.assert_array_equal(la.code_directions(values_VD), expected)
        corners = la.direction_corners(values_VD)
        assert len(corners) == 2**D
        np.testing.assert_array_equal(la.code_directions(values_VD)[corners], np.arange(2**D))
        assert np.all(np.abs(values_VD[corners]) == 1.0)
    assert la.direction_corners(FSQ((4, 4, 4)).embeddings().numpy()) == [0, 3, 12, 15, 48, 51, 60, 63]
    assert la.direction_name(0b101, 3) == "+-+" and la.direction_name(0, 2) == "--"
    assert la.has_directions((4, 4, 4)) and not la.has_directions((2, 2, 2)) and not la.has_directions((5, 4))
    assert not la.has_directions(None)
    with pytest.raises(ValueError, match="levels must all be even"):
        la.code_directions(FSQ((8, 5)).embeddings().numpy())


def test_discretise_actions():
    a = np.array([[0.0, 0.0, 0.0, 0.0], [0.5, -0.9, 0.1, 1.0], [0.05, 0.0, -0.02, -1.0], [0, 0, 0.3, 0]], np.float32)
    assert list(la.discretise_actions(a)) == ["still", "-y open", "still close", "+z"]


def test_nmi_matches_definition_and_limits():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 2000)
    assert la.normalized_mutual_information(labels, labels) == pytest.approx(1.0)
    relabelled = np.array(["a", "b", "c", "d", "e"])[labels]  # a permutation of names: still 1
    assert la.normalized_mutual_information(labels, relabelled) == pytest.approx(1.0)
    assert la.normalized_mutual_information(labels, rng.integers(0, 5, 2000)) < 0.02
    # A hand-computed case: codes [0,0,1,1], labels [0,1,1,1]: H(C)=ln2, H(G)=H(1/4,3/4), I = H(G) - H(G|C).
    c, g = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    hg = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    mi = hg - 0.5 * np.log(2)
    assert la.normalized_mutual_information(c, g) == pytest.approx(mi / ((np.log(2) + hg) / 2))
    assert la.normalized_mutual_information(np.zeros(4), g) == 0.0


def test_nmi_of_a_constant_labelling_is_zero():
    """A constant labelling agrees with nothing: 0, also when both are constant (sklearn says 1.0 there,
    which would score a LAM that collapsed to one code on a still robot as perfect)."""
    g = np.array([0, 1, 1, 1])
    assert la.normalized_mutual_information(np.zeros(4), np.zeros(4)) == 0.0
    assert la.normalized_mutual_information(np.full(4, 3), np.array(["still"] * 4)) == 0.0
    assert la.normalized_mutual_information(g, np.zeros(4)) == 0.0
    assert la.normalized_mutual_information(np.zeros(4), g) == 0.0
