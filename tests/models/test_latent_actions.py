"""Latent action model: shapes, causality, overfitting, and that it actually encodes actions."""

import pytest
import torch

from genie_robot.models import LatentActionModel

PALETTE = torch.tensor([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]], dtype=torch.uint8)


def colour_video(cfg, B, T, seed):
    """Each frame is one of 4 solid colours, drawn at random: x_{t+1} is unpredictable from the past,
    so the decoder can only get it right through the action. The true 'action' is the next colour."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 4, (B, T), generator=g)
    H, W = cfg.lam.resolution
    return PALETTE[idx][:, :, None, None, :].expand(B, T, H, W, 3).contiguous(), idx[:, 1:]


@pytest.fixture
def lam(cfg):
    return LatentActionModel(cfg.lam).eval()


def test_infer_actions_shape_dtype_range(cfg, lam, make_random_frames):
    actions = lam.infer_actions(make_random_frames(cfg, B=3, T=5))
    assert actions.shape == (3, 4) and actions.dtype == torch.int64
    assert 0 <= actions.min() and actions.max() < cfg.lam.num_actions
    assert lam.action_embeddings().shape == (cfg.lam.num_actions, cfg.lam.quantizer.code_dim)
    assert not lam.action_embeddings().requires_grad


@pytest.mark.parametrize("t", [0, 1, 2])
def test_action_t_depends_only_on_frames_up_to_t_plus_1(cfg, lam, make_random_frames, t):
    frames = make_random_frames(cfg, B=2, T=5)
    z = lam._latents(lam._inputs(frames))
    later = frames.clone()
    later[:, t + 2:] = make_random_frames(cfg, B=2, T=5, seed=3)[:, t + 2:]
    z_later = lam._latents(lam._inputs(later))
    torch.testing.assert_close(z_later[:, : t + 1], z[:, : t + 1], rtol=0, atol=0)
    assert not torch.allclose(z_later[:, t + 1:], z[:, t + 1:])


def test_decoder_prediction_of_frame_t_plus_1_ignores_later_frames_and_actions(cfg, lam, make_random_frames):
    frames = make_random_frames(cfg, B=2, T=5)
    x = lam._inputs(frames)
    actions = torch.nn.functional.normalize(torch.randn(2, 4, cfg.lam.quantizer.code_dim), dim=-1)
    pred = lam._predict_next(x, actions)
    x2, a2 = x.clone(), actions.clone()
    x2[:, 3:] = torch.rand_like(x2[:, 3:])
    a2[:, 2:] = torch.randn_like(a2[:, 2:])
    torch.testing.assert_close(lam._predict_next(x2, a2)[:, :2], pred[:, :2], rtol=0, atol=0)


def test_overfits_a_tiny_batch(cfg, make_video):
    """Loss falls at least 10x within 150 Adam steps (measured: ~50x)."""
    frames, _ = make_video(cfg, B=4, T=4)
    lam = LatentActionModel(cfg.lam).train()
    opt = torch.optim.Adam(lam.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss, metrics = lam.loss(frames)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10, (first, metrics)


def test_learns_to_encode_the_action_when_the_future_is_unpredictable(cfg):
    """Guard against the LAM collapsing into a next-frame predictor: on data where x_{t+1} can only be
    known through the action, the decoder must come to rely on it (action_sensitivity well above 1)
    and the codes must carry the true action (cluster purity well above chance, 0.25-0.3)."""
    lam = LatentActionModel(cfg.lam).train()
    opt = torch.optim.Adam(lam.parameters(), lr=3e-3)
    for i in range(250):
        frames, _ = colour_video(cfg, 8, 4, seed=1000 + i)
        loss, metrics = lam.loss(frames)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert metrics["action_sensitivity"] > 1.5, metrics
    lam.eval()
    frames, truth = colour_video(cfg, 64, 4, seed=1)
    codes = lam.infer_actions(frames).flatten()
    truth = truth.flatten()
    purity = sum(torch.bincount(truth[codes == c]).max().item() for c in codes.unique()) / len(truth)
    assert purity > 0.45, purity


def test_a_decoder_that_sees_only_x_t_ignores_earlier_frames():
    import dataclasses

    import torch

    from genie_robot.models import preset
    from genie_robot.models.genie import build_lam

    cfg = dataclasses.replace(preset("tiny").lam, decoder_frames=1, random_time_offset=False)
    lam = build_lam(cfg).eval()
    torch.manual_seed(0)
    x = lam._inputs(torch.randint(0, 256, (1, 5, 16, 16, 3), dtype=torch.uint8))
    a = torch.randn(1, 4, cfg.quantizer.code_dim)
    y = lam._predict_next(x, a)
    x2 = x.clone()
    x2[:, :2] = torch.randn_like(x2[:, :2])  # change frames 0 and 1
    y2 = lam._predict_next(x2, a)
    assert torch.allclose(y[:, 2:], y2[:, 2:], atol=1e-6)  # predictions of frames 3, 4 use x_2, x_3 only
    assert not torch.allclose(y[:, :2], y2[:, :2])
    with pytest.raises(ValueError, match="decoder_frames"):
        dataclasses.replace(cfg, decoder_frames=3)


def test_batch_normalised_latents_spread_over_the_codes_from_the_start():
    import dataclasses

    import torch

    from genie_robot.models import preset
    from genie_robot.models.genie import build_lam

    torch.manual_seed(0)
    frames = torch.randint(0, 256, (4, 6, 16, 16, 3), dtype=torch.uint8)
    used = {}
    for norm in ("none", "batch"):
        torch.manual_seed(1)
        cfg = dataclasses.replace(preset("tiny").lam, latent_norm=norm)
        lam = build_lam(cfg).train()
        _, metrics, _ = lam(frames)
        used[norm] = metrics["vq/perplexity"]
        lam.eval()  # running statistics at inference: deterministic, batch-independent labels
        a = lam.infer_actions(frames)
        assert torch.equal(lam.infer_actions(frames[:1]), a[:1])
    assert used["batch"] > used["none"]


def test_a_residual_decoder_starts_from_copying_x_t():
    import dataclasses

    import torch

    from genie_robot.models import preset
    from genie_robot.models.genie import build_lam

    cfg = dataclasses.replace(preset("tiny").lam, decoder_frames=1, decoder_residual=True)
    lam = build_lam(cfg)
    with torch.no_grad():
        lam.to_pixels.weight.zero_()
        lam.to_pixels.bias.zero_()
    x = lam._inputs(torch.randint(0, 256, (2, 4, 16, 16, 3), dtype=torch.uint8))
    a = torch.randn(2, 3, cfg.quantizer.code_dim)
    torch.testing.assert_close(lam._predict_next(x, a), x[:, :-1])  # zero change predicted: x_t itself
