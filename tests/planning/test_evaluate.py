"""The planner's evaluation (genie_robot/planning/evaluate.py): the comparison itself on videos the model
can reproduce (the planner must end closer to the goal than random sequences), the held-out seed
guard, and episodes at the model's frame stride. The command and its report:
tests/experiments/test_plan_report.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genie_robot.planning.evaluate import check_held_out, evaluate_planner, store_episodes
from genie_robot.planning.scoring import pixel_distance


@pytest.fixture(scope="module")
def wm0(tiny_bundle):
    from genie_robot.runtime.world_model import WorldModel

    return WorldModel.load(tiny_bundle, backend="torch", temperature=0.0, order="confidence")


def test_planner_ends_closer_than_random_sequences(wm0, frame):
    # videos the model itself imagines from known actions: their later frames are reachable goals
    rng = np.random.default_rng(0)
    videos = [np.concatenate([frame[None], wm0.rollout(frame, rng.integers(0, 4, (1, 5)))[0]]) for _ in range(3)]
    res = evaluate_planner(wm0, videos, horizon=3, samples=16, iterations=2, elites=4, random=8, eval_rollouts=2,
                   progress=False)
    s = res["summary"]
    assert s["planner"]["pixel_mse"][0] < s["random"]["pixel_mse"][0]
    assert s["planner_beats_random"][0] == 1.0
    for rec, pic, video in zip(res["episodes"], res["pictures"], videos):
        assert rec["goal"] == rec["start"] + 3
        np.testing.assert_array_equal(pic["goal"], video[rec["goal"]])
        assert rec["start/pixel_mse"] == pytest.approx(pixel_distance(video[rec["start"]][None], pic["goal"])[0])
        # argmax sampling: the fresh imagining of the chosen sequence is the one the search scored
        assert rec["planner/pixel_mse"] == pytest.approx(rec["search_score"])
        assert len(rec["lam_actions"]) == 3 and all(0 <= a < 4 for a in rec["lam_actions"])
    lo, hi = s["random"]["pixel_mse"][1:]
    assert lo <= s["random"]["pixel_mse"][0] <= hi


def test_bad_settings_are_named(wm0, frame):
    with pytest.raises(ValueError, match="need at least prompt_frames \\+ horizon"):
        evaluate_planner(wm0, [np.stack([frame] * 3)], horizon=3, progress=False)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        evaluate_planner(wm0, [np.stack([frame] * 20)], horizon=8, prompt_frames=4, progress=False)
    with pytest.raises(ValueError, match="overlap the training seeds 1000..1599; pick --seed 1600"):
        check_held_out(1590, 20)
    check_held_out(1600, 20)
    check_held_out(980, 20)


# ------------------------------------------------------------------------------ frame stride


def test_model_stride_is_the_bundles_training_frame_stride(tiny_bundle, stride2_bundle, tmp_path):
    from genie_robot.planning.evaluate import model_stride
    from genie_robot.runtime.bundle import MANIFEST

    assert model_stride(stride2_bundle) == 2
    assert model_stride(tiny_bundle) == 1
    # bundles exported before the config recorded its data: the manifest's frame_stride, or every frame
    # for those from before strides
    from genie_robot.runtime.bundle import CONFIG

    config = json.loads((Path(tiny_bundle) / CONFIG).read_text())
    del config["data"]
    for key, want in ((None, 1), (3, 3)):
        old = tmp_path / f"old_bundle_{want}"
        old.mkdir()
        manifest = json.loads((Path(tiny_bundle) / MANIFEST).read_text())
        manifest["config"] = config
        if key is not None:
            manifest["frame_stride"] = key
        (old / CONFIG).write_text(json.dumps(config))
        (old / MANIFEST).write_text(json.dumps(manifest))
        assert model_stride(old) == want


def test_store_episodes_at_stride_put_the_goal_h_times_stride_frames_later(wm0, tiny_store):
    # store frames carry their index in pixel [0, 0, 1] (tests/conftest.py)
    store = tiny_store(episodes=2, length=11)
    videos = store_episodes(store, 2, stride=2)
    assert [v[:, 0, 0, 1].tolist() for v in videos] == [[0, 2, 4, 6, 8, 10]] * 2
    res = evaluate_planner(wm0, videos, horizon=3, samples=4, iterations=1, elites=1, random=2, eval_rollouts=1, stride=2,
                   progress=False)
    for rec, pic in zip(res["episodes"], res["pictures"]):
        assert rec["goal_frame"] == rec["start_frame"] + 3 * 2
        assert pic["start"][0, 0, 1] == rec["start_frame"] and pic["goal"][0, 0, 1] == rec["goal_frame"]
        assert pic["real_THW3"][:, 0, 0, 1].tolist() == [rec["start_frame"] + 2 * k for k in (1, 2, 3)]
    with pytest.raises(ValueError, match="--stride must be at least 1"):
        store_episodes(store, 1, stride=0)


@pytest.mark.sim
def test_simulated_episodes_at_stride_are_every_nth_simulator_frame():
    pytest.importorskip("mujoco")
    from genie_robot.data.sim.simulate import generate_episode
    from genie_robot.planning.evaluate import simulated_episodes

    (video,) = simulated_episodes(1, 4, 16, "push", 5000, progress=False, stride=3)
    full = generate_episode(5000, 10, 16, "push").rgb  # (4 - 1) * 3 + 1 simulator frames
    assert video.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(video, full[::3])
