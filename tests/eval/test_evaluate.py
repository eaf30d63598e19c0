"""The evaluation behind `genie-robot eval` (genie_robot/eval/evaluate.py) on inputs that used to give
misleading output (issue #14): ground-truth actions in one class no longer give NMI 1.000 (item 7),
and the short-episode error counts the model's frame stride and suggests only what would help
(item 12). What the report writes of it: tests/experiments/test_eval_report.py."""

from __future__ import annotations

import numpy as np
import pytest

from genie_robot.eval.evaluate import EvalError, evaluate_model, load_clips


def test_nmi_is_not_reported_against_a_single_ground_truth_class():
    import torch

    from genie_robot.models.configs import preset
    from genie_robot.models.genie import Genie

    torch.manual_seed(0)
    genie = Genie(preset("tiny")).eval().requires_grad_(False)
    T, (H, W) = genie.cfg.lam.context, genie.cfg.tokenizer.resolution
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (2, T, H, W, 3), dtype=np.uint8)
    still = [np.zeros((T, 4), np.float32) for _ in range(2)]  # every action "still": one class
    with torch.no_grad():
        ev = evaluate_model(genie, clips, episode_frames=list(clips), episode_actions=still, show=1, depth=1)
    m = ev.metrics
    assert "latent/nmi" not in m and "one class (still)" in m["latent/nmi_note"]
    assert ev.nmi_table is not None and ev.shown == 1 and ev.latent_grid.shape[:3] == (1, m["num_actions"], 2)


def test_short_episode_message_counts_the_stride_and_names_useful_fixes(tiny_store):
    path = tiny_store([6, 7, 9], resolution=(16, 16))
    kwargs = dict(resolution=(16, 16), episodes=4, val_fraction=0.1)
    # 5 frames at stride 2 need 9 store frames: only the 9-frame episode has them.
    assert list(load_clips(path, frames=5, split="all", stride=2, **kwargs)["episodes"]) == [2]
    with pytest.raises(EvalError) as err:
        load_clips(path, frames=6, split="all", stride=2, **kwargs)
    msg = str(err.value)
    assert "has the 11 frames a clip of 6 frames at stride 2 needs" in msg and "longest 9 frames" in msg
    assert "--frames 5 or fewer" in msg and "--stride" in msg and "--split all" not in msg  # it is already all
    with pytest.raises(EvalError, match=r"--frames \d+ or fewer, or --split all$"):
        load_clips(path, frames=9, split="val", stride=1, **kwargs)


def test_the_latent_action_grid_rolls_out_in_batches_of_whole_start_frames(monkeypatch):
    """More start frames x actions than one batch holds: batches of whole start frames, each start's
    rows the same as when it is rolled out alone (each batch is seeded alike); chosen actions only."""
    import torch

    from genie_robot.eval import evaluate
    from genie_robot.models.configs import preset
    from genie_robot.models.genie import Genie

    torch.manual_seed(0)
    genie = Genie(preset("tiny")).eval().requires_grad_(False)
    H, W = genie.cfg.tokenizer.resolution
    starts = np.random.default_rng(0).integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    A = genie.cfg.dynamics.num_actions
    monkeypatch.setattr(evaluate, "GRID_MAX_STREAMS", A)  # one start frame a batch
    with torch.no_grad():
        grid = evaluate.latent_action_grid(genie, starts, depth=2, seed=3)
        alone = evaluate.latent_action_grid(genie, starts[2:], depth=2, seed=3)
        picked = evaluate.latent_action_grid(genie, starts[:1], depth=2, seed=3, actions=[A - 1, 0])
    assert grid.shape == (3, A, 3, H, W, 3) and np.array_equal(grid[:, :, 0], np.repeat(starts[:, None], A, 1))
    assert np.array_equal(grid[2], alone[0])
    assert picked.shape == (1, 2, 3, H, W, 3)
