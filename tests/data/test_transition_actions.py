"""WindowDataset "transition_actions": the store's actions summed over each stride, i.e. what moved
the robot from returned frame t to returned frame t+1 (action[t] acts after frame t)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genie_robot.data.store import EpisodeStore
from genie_robot.data.windows import WindowDataset


@pytest.mark.parametrize("window,stride", [(4, 1), (3, 2), (4, 3), (2, 5)])
def test_transition_actions_sum_the_store_actions_of_each_stride(tiny_store, window, stride):
    path = tiny_store(episodes=[9, 16, 12], action_dim=3)  # action[t] = (episode, t, random)
    ds = WindowDataset(path, split="all", window=window, stride=stride, length=60)
    store = EpisodeStore.open(path)
    every = store.read("action", 0, store.num_frames, 1)
    for i in range(60):
        item = ds[i]
        e, start = item["episode"], item["start"]
        first = store.episode_bounds(e)[0] + start
        ta = item["transition_actions"]
        assert ta.dtype == torch.float32 and ta.shape == (window - 1, 3)
        for t in range(window - 1):
            frames_in_t = np.arange(first + t * stride, first + (t + 1) * stride)  # store frames t*s .. (t+1)*s - 1
            np.testing.assert_allclose(ta[t].numpy(), every[frames_in_t].sum(0), rtol=1e-6, atol=1e-6)
            # markers: dim 0 sums the episode index s times, dim 1 the in-episode frame indices
            assert ta[t, 0].item() == pytest.approx(stride * e)
            k = start + t * stride
            assert ta[t, 1].item() == pytest.approx(sum(range(k, k + stride)))
        # "actions" stay those of the returned frames, not sums
        np.testing.assert_array_equal(item["actions"].numpy(), every[first: first + ds.span: stride])


def test_stride_one_transitions_are_the_frames_own_actions(tiny_store):
    path = tiny_store(episodes=3, length=10, action_dim=2)
    ds = WindowDataset(path, split="all", window=5, length=10)
    for i in range(10):
        item = ds[i]
        torch.testing.assert_close(item["transition_actions"], item["actions"][:-1], rtol=0, atol=0)


def test_single_frame_windows_and_stores_without_actions(tiny_store):
    with_actions = tiny_store(episodes=2, length=6, action_dim=4)
    item = WindowDataset(with_actions, split="all", window=1, stride=3)[0]
    assert item["transition_actions"].shape == (0, 4)  # a frame on its own has no transition
    batch = torch.utils.data.default_collate([item, item])
    assert batch["transition_actions"].shape == (2, 0, 4)
    without = tiny_store(episodes=2, length=6, action_dim=None)
    item = WindowDataset(without, split="all", window=3)[0]
    assert "transition_actions" not in item and "actions" not in item
