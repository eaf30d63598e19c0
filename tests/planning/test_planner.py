"""The planner on a real tiny world model (random weights, argmax sampling in confidence order so rollouts are a pure
function of the actions): it finds sequences whose imagined end frame is close to a goal that one
action sequence really reaches, its outputs are what the model imagines, it is seeded, it rejects
bad input with messages that name the fix, and the receding-horizon loop closes in on a goal."""

from __future__ import annotations

import numpy as np
import pytest

from genie_robot.planning import RecedingHorizonPlanner, plan
from genie_robot.planning.scoring import pixel_distance, token_distance

TRUE_ACTIONS = np.array([1, 2, 3])


@pytest.fixture(scope="module")
def wm0(tiny_bundle):
    from genie_robot.runtime.world_model import WorldModel

    return WorldModel.load(tiny_bundle, backend="torch", temperature=0.0, order="confidence")


@pytest.fixture(scope="module")
def goal(wm0):
    yy, xx = np.mgrid[0:16, 0:16]
    frame = np.stack([(xx * 16) % 256, (yy * 16) % 256, np.full_like(xx, 60)], -1).astype(np.uint8)
    return wm0.rollout(frame, TRUE_ACTIONS[None])[0, -1]


def test_cem_gets_much_closer_than_random_sequences_and_concentrates(wm0, frame, goal):
    rng = np.random.default_rng(0)
    random_BH = rng.integers(0, wm0.num_actions, (32, 3))
    random_mean = pixel_distance(wm0.rollout(frame, random_BH)[:, -1], goal).mean()
    r = plan(wm0, frame, goal, 3, method="cem", samples=16, iterations=3, elites=4, seed=0)
    assert r.score < 0.25 * random_mean
    # the elites pull the distribution in: later iterations sample closer sequences on average
    assert r.mean_per_iteration[-1] < 0.5 * r.mean_per_iteration[0]
    assert r.best_per_iteration == sorted(r.best_per_iteration, reverse=True)
    assert r.candidates == 48 and r.probs_TK.shape == (3, wm0.num_actions)
    np.testing.assert_allclose(r.probs_TK.sum(1), 1.0)


@pytest.mark.parametrize("method", ["cem", "random"])
def test_a_warm_start_that_reaches_the_goal_is_kept(wm0, frame, goal, method):
    # the warm-start sequence is tried in iteration 1 and nothing later may replace a perfect score
    r = plan(wm0, frame, goal, 3, method=method, samples=8, iterations=3, elites=2, seed=1,
             init_actions_T=TRUE_ACTIONS)
    assert r.score == 0.0
    np.testing.assert_array_equal(r.actions_T, TRUE_ACTIONS)
    np.testing.assert_array_equal(r.frames_THW3[-1], goal)


@pytest.mark.parametrize("method", ["cem", "random"])
def test_result_is_what_the_model_imagines_for_the_returned_actions(wm0, frame, goal, method):
    r = plan(wm0, frame, goal, 3, method=method, samples=8, iterations=2, elites=2, batch=3, seed=2)
    assert r.actions_T.shape == (3,) and r.actions_T.dtype == np.int64
    assert r.frames_THW3.shape == (3, 16, 16, 3) and r.frames_THW3.dtype == np.uint8
    np.testing.assert_array_equal(r.frames_THW3, wm0.rollout(frame, r.actions_T[None])[0])
    assert r.score == pytest.approx(pixel_distance(r.frames_THW3[-1:], goal)[0])


def test_token_score_is_the_fraction_of_goal_tokens_missed(wm0, frame, goal):
    r = plan(wm0, frame, goal, 2, score="token", samples=8, iterations=1, elites=2)
    goal_N = wm0.encode(goal)[0, 0]
    state = wm0.reset(frame)
    for a in r.actions_T:
        wm0.step(state, np.array([a]))
    assert r.score == pytest.approx(token_distance(state.last_tokens_BN, goal_N)[0])
    assert 0.0 <= r.score <= 1.0


def test_seeded_and_sampled_rollouts_vary_with_the_seed(torch_wm, frame, goal):
    a = plan(torch_wm, frame, goal, 3, samples=8, iterations=2, elites=2, seed=3)
    b = plan(torch_wm, frame, goal, 3, samples=8, iterations=2, elites=2, seed=3)
    c = plan(torch_wm, frame, goal, 3, samples=8, iterations=2, elites=2, seed=4)
    np.testing.assert_array_equal(a.frames_THW3, b.frames_THW3)
    assert a.score == b.score and a.best_per_iteration == b.best_per_iteration
    assert a.mean_per_iteration != c.mean_per_iteration


def test_prompt_with_history(wm0, frame, goal):
    history = np.stack([frame, np.roll(frame, 1, axis=1), frame])
    r = plan(wm0, history, goal, 2, samples=4, iterations=1, elites=1)
    assert r.frames_THW3.shape == (2, 16, 16, 3)


@pytest.mark.parametrize("kwargs, message", [
    ({"horizon": 0}, "horizon must be an integer >= 1"),
    ({"samples": 0}, "samples must be an integer >= 1"),
    ({"elites": 9, "samples": 8}, "elites=9 must be at most samples=8"),
    ({"method": "mppi"}, "unknown method 'mppi'"),
    ({"score": "lpips"}, "unknown score 'lpips'"),
    ({"init_actions_T": np.array([0, 9, 0])}, "init_actions_T"),
])
def test_bad_arguments_are_named(wm0, frame, goal, kwargs, message):
    args = {"horizon": 3, "samples": 4, "iterations": 1, "elites": 2, **kwargs}
    h = args.pop("horizon")
    with pytest.raises(ValueError, match=message):
        plan(wm0, frame, goal, h, **args)


@pytest.mark.parametrize("bad_goal, message", [
    (lambda g: g.astype(np.float32) / 255, "goal: expected a uint8 RGB image .*scale floats"),
    (lambda g: g.transpose(2, 0, 1).copy(), "channels first"),
    (lambda g: np.zeros((32, 32, 3), np.uint8), "same camera at the same size"),
])
def test_bad_goals_are_named(wm0, frame, goal, bad_goal, message):
    with pytest.raises(ValueError, match=message):
        plan(wm0, frame, bad_goal(goal), 3, samples=4, iterations=1, elites=1)


def test_frames_of_another_size_than_the_model_are_resized(wm0, frame, goal):
    big = np.repeat(np.repeat(frame, 2, 0), 2, 1)
    r = plan(wm0, big, np.repeat(np.repeat(goal, 2, 0), 2, 1), 2, samples=4, iterations=1, elites=1)
    assert r.frames_THW3.shape == (2, 16, 16, 3)  # the model's resolution


@pytest.mark.slow  # the ONNX export of the fixture: 15-35 s on the loaded machine
def test_onnx_backend_plans_the_same(tiny_onnx_bundle, wm0, frame, goal):
    from genie_robot.runtime.world_model import WorldModel

    onnx0 = WorldModel.load(tiny_onnx_bundle, backend="onnx", temperature=0.0, order="confidence", threads=1)
    a = plan(wm0, frame, goal, 3, samples=16, iterations=2, elites=4, seed=5)
    b = plan(onnx0, frame, goal, 3, samples=16, iterations=2, elites=4, seed=5)
    np.testing.assert_array_equal(a.actions_T, b.actions_T)
    assert b.score == pytest.approx(a.score, abs=1e-4)


def test_receding_horizon_closes_in_on_the_goal(wm0, frame, goal):
    """The 'environment' is the model itself stepped from the current frame: re-planning every step
    from the newest frame must end closer to the goal than it started."""
    mpc = RecedingHorizonPlanner(wm0, goal, horizon=3, samples=16, iterations=2, elites=4)
    current = frame
    taken = []
    for _ in range(3):
        a = mpc.act(current)
        taken.append(a)
        assert 0 <= a < wm0.num_actions and mpc.last.actions_T[0] == a
        current = wm0.rollout(current, np.array([[a]]))[0, 0]
    start = pixel_distance(frame[None], goal)[0]
    end = pixel_distance(current[None], goal)[0]
    assert end < 0.25 * start, (taken, start, end)
    with pytest.raises(ValueError, match="same camera"):
        mpc.act(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="history"):
        RecedingHorizonPlanner(wm0, goal, horizon=2, history=99)
