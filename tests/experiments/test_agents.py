"""`genie-robot agents` (experiments/agents.py): the simulator harness (same start for every policy,
the scripted expert succeeds, holding the mean action of a model step retraces the expert), the
observation and training set of the policies, and the command end to end on a tiny model: report,
pictures, MLflow. The latent -> robot action map itself is tests/planning/test_action_map.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments.agents import VEC_DIM, _flatten, decision_transitions, observation_vector, random_shift
from genie_robot.planning.action_map import transition_actions


def test_observation_vector_has_the_goal_gripper_block_and_their_offsets():
    goal, grip, block = np.array([1.35, 0.8, 0.42]), np.array([1.2, 0.7, 0.5]), np.array([1.3, 0.75, 0.425])
    v = observation_vector(goal, grip, block)
    assert v.shape == (VEC_DIM,) == (13,) and v.dtype == np.float32
    np.testing.assert_allclose(v[8:11] * 0.1, block - grip, atol=1e-6)  # block - gripper, in units of 0.1 m
    np.testing.assert_allclose(v[11:13] * 0.1, goal[:2] - block[:2], atol=1e-6)  # goal - block
    np.testing.assert_allclose(v[5:8] - v[2:5], (block - grip) / np.array([0.2, 0.25, 0.1]), atol=1e-5)
    moved = observation_vector(goal, grip, block + [0.01, 0, 0])  # the block 1 cm further along x
    assert (moved[:5] == v[:5]).all() and moved[5] > v[5] and moved[8] > v[8] and moved[11] < v[11]


def test_random_shift_translates_each_frame_by_at_most_pad_pixels():
    import torch

    rng = np.random.default_rng(0)
    rgb = torch.from_numpy(rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8))
    assert random_shift(rgb, 0) is rgb
    out = random_shift(rgb, 2, torch.Generator().manual_seed(0))
    assert out.shape == rgb.shape and out.dtype == torch.uint8
    for x, y in zip(rgb.numpy(), out.numpy()):
        # some (dy, dx) in [-2, 2]^2 maps the frame onto its shifted copy (away from the repeated border)
        assert any((y[2:-2, 2:-2] == x[2 + dy:14 + dy, 2 + dx:14 + dx]).all()
                   for dy in range(-2, 3) for dx in range(-2, 3))


def test_training_transitions_are_the_experts_decisions_with_the_action_it_held():
    # stride 3: the expert decided at t = 0, 3, 6 and held; the training set is those transitions, each
    # with its frame, observation vector, held action and the LAM's label of t -> t + 3
    stride, T = 3, 10  # 10 frames, 9 actions
    held = np.arange(3 * 3, dtype=np.float32).reshape(3, 3)
    action = np.concatenate([np.repeat(held, stride, 0), np.zeros((9, 1), np.float32)], 1)
    rgb = np.arange(T, dtype=np.uint8)[:, None, None, None] * np.ones((T, 2, 2, 3), np.uint8)
    vec = np.arange(T, dtype=np.float32)[:, None] * np.ones((T, VEC_DIM), np.float32)
    latents = np.array([[10, 11, 12, 13, 14, 15, 16]])  # T - stride transitions, t -> t + 3
    dec = decision_transitions(latents, stride)
    np.testing.assert_array_equal(dec, [[10, 13, 16]])
    f_rgb, f_vec, f_action, f_latent = _flatten([{"rgb": rgb, "vec": vec, "action": action}], dec, stride)
    np.testing.assert_array_equal(f_rgb[:, 0, 0, 0], [0, 3, 6])
    np.testing.assert_array_equal(f_vec[:, 0], [0, 3, 6])
    np.testing.assert_allclose(f_action, held)
    np.testing.assert_array_equal(f_latent, [10, 13, 16])


@pytest.mark.sim
def test_the_expert_deciding_once_per_model_step_holds_its_action_and_still_pushes():
    pytest.importorskip("mujoco")
    from experiments.agents import run_episode

    ep = run_episode(106_000, 60, 16, decide_every=3)
    a = ep["action"].reshape(20, 3, 4)
    assert (a == a[:, :1]).all()  # one decision per model step, held
    assert ep["final_dist"] < 0.5 * ep["start_dist"]


@pytest.mark.sim
def test_episodes_start_alike_for_every_policy_and_the_expert_pushes_to_the_goal():
    pytest.importorskip("mujoco")
    from experiments.agents import run_episode

    expert = run_episode(106_000, 60, 16)
    still = run_episode(106_000, 60, 16, lambda f, g: np.zeros(3))
    assert expert["rgb"].shape == (61, 16, 16, 3) and expert["action"].shape == (60, 4)
    np.testing.assert_array_equal(expert["rgb"][0], still["rgb"][0])
    assert expert["start_dist"] == still["start_dist"] > 0.05
    assert still["final_dist"] == pytest.approx(still["start_dist"], abs=1e-3)  # nothing moved it
    assert expert["final_dist"] < 0.5 * expert["start_dist"]
    again = run_episode(106_000, 60, 16)
    np.testing.assert_array_equal(again["action"], expert["action"])


# ------------------------------------------------------------------------------ frame stride


@pytest.mark.sim
def test_holding_the_mean_action_for_a_model_step_reproduces_the_expert_transitions():
    # Fetch moves its gripper target by 0.05 m x action per step: holding the mean of a transition's
    # 3 actions for 3 steps retraces the expert's gripper path at every model step (xy; z meets the table)
    pytest.importorskip("mujoco")
    from experiments.agents import GRIP_SCALE, run_episode

    stride, steps = 3, 60
    expert = run_episode(106_000, steps, 16)
    means = transition_actions(expert["action"][:, :3], stride)
    err = {}
    for name, table in (("mean", means), ("sum", means * stride), ("first", expert["action"][:, :3])):
        asked = []

        def act(frame, vec, table=table, asked=asked):
            asked.append(frame)
            return table[min(stride * (len(asked) - 1), len(table) - 1)]

        ep = run_episode(106_000, steps, 16, act, keep_frames=False, decide_every=stride)
        assert len(asked) == steps // stride  # one decision per model step, held in between
        assert len(ep["action"]) == steps and (ep["action"][0] == ep["action"][stride - 1]).all()
        err[name] = float((np.abs(ep["vec"][::stride, 2:4] - expert["vec"][::stride, 2:4]) * GRIP_SCALE[:2]).max())
    assert err["mean"] < 0.005, err  # metres
    assert err["mean"] < 0.25 * min(err["sum"], err["first"]), err


@pytest.mark.sim
@pytest.mark.slow  # 8-60 s on the loaded 2-core machine
def test_agents_command_end_to_end(tiny_bundle, tmp_path):
    pytest.importorskip("mujoco")
    from mlflow.tracking import MlflowClient

    from genie_robot.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "agents"
    rc = main(["agents", "--model", tiny_bundle, "--backend", "torch", "--out", str(out), "--labels", "5,20",
               "--seeds", "1", "--expert-episodes", "3", "--eval-episodes", "2", "--steps", "20", "--epochs", "1",
               "--tracking-uri", uri])
    assert rc == 0
    for name in ("report.md", "metrics.json", "success.png", "distance.png", "latent_actions.png", "episodes.gif"):
        assert (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["summary"]) == {"random", "expert", "oracle BC", "latent table 5", "latent table 20",
                                 "latent mlp 5", "latent mlp 20"}
    for s in m["summary"].values():
        rate, lo, hi = s["success"]
        assert 0 <= lo <= rate <= hi <= 1
    for e in m["episodes"]["expert"]:
        assert e["progress"] == pytest.approx(1 - e["final_dist"] / e["start_dist"])
    assert np.isclose(sum(m["latent_usage"]), 1.0)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("genie-robot").experiment_id])
    assert "oracle_BC/success" in run.data.metrics and "latent_mlp_20/final_dist" in run.data.metrics
    assert main(["agents", "--model", tiny_bundle, "--out", str(tmp_path / "x"), "--labels", "5000",
                 "--expert-episodes", "2", "--steps", "10", "--no-mlflow"]) == 2


@pytest.mark.sim
@pytest.mark.slow
def test_agents_command_takes_the_stride_from_the_bundle(stride2_bundle, tmp_path):
    pytest.importorskip("mujoco")
    from genie_robot.cli import main

    out = tmp_path / "agents_stride2"
    assert main(["agents", "--model", stride2_bundle, "--backend", "torch", "--out", str(out), "--labels", "5",
                 "--maps", "table", "--seeds", "1", "--expert-episodes", "2", "--eval-episodes", "1", "--steps", "12",
                 "--epochs", "1", "--no-mlflow"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["params"]["stride"] == 2
    # one training episode, transitions t -> t + 2 at the expert's decisions t = 0, 2, .., 10
    assert m["labelled_pool"] == 1 * 6
    assert "one model step = 2 simulator steps" in (out / "report.md").read_text()
