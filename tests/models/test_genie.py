"""Genie composition: stage-2 loss trains the LAM and the dynamics model, never the tokenizer."""

import torch

from genie_robot.models import Genie


def test_dynamics_loss_trains_lam_and_dynamics_only(cfg, make_video):
    genie = Genie(cfg).train()
    frames, _ = make_video(cfg, B=2, T=4)
    loss, metrics = genie.dynamics_loss(frames)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert all(p.grad is None for p in genie.tokenizer.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in genie.lam.encoder.parameters())
    assert genie.dynamics.head.weight.grad.abs().sum() > 0
    # stop-gradient: the dynamics loss does not reach the LAM codebook through the action table
    assert torch.equal(genie.dynamics.action_table, genie.lam.action_embeddings())
    assert {"loss", "lam/mse", "lam/vq/perplexity", "lam/action_sensitivity", "dynamics/loss"} <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())


def test_tokenizer_loss_reports_codebook_health(cfg, make_video):
    frames, _ = make_video(cfg, B=2, T=3)
    loss, metrics = Genie(cfg).tokenizer.loss(frames)
    assert {"mse", "psnr", "vq/perplexity", "vq/usage", "vq/stale_codes", "vq/codes_reset"} <= set(metrics)
