"""The latent -> robot action map (genie_robot/planning/action_map.py): table and MLP maps on data where
the answer is known, the LAM's labels of one model step, and the robot action of a transition."""

from __future__ import annotations

import numpy as np
import pytest

from genie_robot.planning.action_map import LatentActionMap, label_latents, transition_actions


def test_table_map_is_the_mean_action_of_each_latent():
    latent = np.array([0, 0, 1, 1, 1, 3])
    action = np.array([[1, 0, 0], [0.5, 0, 0], [0, 1, 0], [0, 0.5, 0], [0, 0, 0], [0, 0, -1]], np.float32)
    m = LatentActionMap("table", 4).fit(latent, action)
    np.testing.assert_allclose(m(np.array([0, 1, 3])), [[0.75, 0, 0], [0, 0.5, 0], [0, 0, -1]])
    np.testing.assert_allclose(m(np.array([2])), [action.mean(0)])  # never labelled: the overall mean


def test_mlp_map_uses_the_observation_where_the_latent_alone_is_ambiguous():
    # the robot action depends on the latent AND the observation (e.g. the same "move" latent means
    # left or right depending on where the arm is): the MLP must beat the per-latent table
    rng = np.random.default_rng(0)
    n = 400
    latent = rng.integers(0, 4, n)
    feat = (3 * rng.normal(size=(n, 16))).astype(np.float32)  # one useful unit among 16, unscaled
    action = np.stack([np.tanh(feat[:, 0]) * (latent == 0), latent == 1, -(latent == 2).astype(float)], 1)
    action = action.astype(np.float32)
    test = slice(300, n)
    table = LatentActionMap("table", 4).fit(latent[:300], action[:300], feat[:300])
    mlp = LatentActionMap("mlp", 4, seed=0).fit(latent[:300], action[:300], feat[:300])
    err = {k: float(((m(latent[test], feat[test]) - action[test]) ** 2).mean()) for k, m in
           (("table", table), ("mlp", mlp))}
    assert err["mlp"] < 0.5 * err["table"], err


def test_map_errors_are_named():
    with pytest.raises(ValueError, match="unknown map 'linear'"):
        LatentActionMap("linear", 4)
    with pytest.raises(ValueError, match="need >= 1 labelled sample"):
        LatentActionMap("table", 4).fit(np.zeros(0, int), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="needs observation features"):
        LatentActionMap("mlp", 4).fit(np.zeros(3, int), np.zeros((3, 3)))


def test_lam_labels_transitions_of_one_model_step(stride2_bundle):
    # a stride-2 model knows frame t -> t + 2: interleave a clip V with noise frames; at stride 2 the
    # even transitions must be the LAM's labels of V itself, which the noise never enters
    from genie_robot.runtime.world_model import WorldModel

    wm = WorldModel.load(stride2_bundle, backend="torch")
    rng = np.random.default_rng(1)
    V = rng.integers(0, 256, (2, 8, 16, 16, 3), dtype=np.uint8)
    W = np.repeat(V, 2, 1)
    W[:, 1::2] = rng.integers(0, 256, V.shape, dtype=np.uint8)
    episodes = [{"rgb": w} for w in W]
    labels = label_latents(wm, episodes, stride=2)
    assert labels.shape == (2, 16 - 2)
    np.testing.assert_array_equal(labels[:, 0::2], wm.infer_actions(V))
    np.testing.assert_array_equal(labels[:, 1::2], wm.infer_actions(W[:, 1::2]))
    # stride 1 (as before strides) labels the single-frame transitions, which here are other ones
    single = label_latents(wm, episodes, stride=1)
    np.testing.assert_array_equal(single, wm.infer_actions(W))
    assert (single[:, :14:2] != labels[:, 0::2]).any()
    with pytest.raises(ValueError, match="needs episodes of more than 16 frames"):
        label_latents(wm, episodes, stride=16)


def test_transition_action_is_the_mean_of_its_simulator_actions():
    action = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.testing.assert_array_equal(transition_actions(action, 1), action)  # stride 1: unchanged
    got = transition_actions(action, 3)
    assert got.shape == (4, 2)
    np.testing.assert_allclose(got, [action[t:t + 3].mean(0) for t in range(4)])
