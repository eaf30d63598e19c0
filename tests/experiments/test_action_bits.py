"""experiments/action_bits.py: K codes explain all of an action set with K distinct actions, fewer
codes less, on a real store."""

from __future__ import annotations

import numpy as np

from experiments.action_bits import explained, step_actions


def test_codes_explain_the_action_variance_they_can(tmp_path):
    from genie_robot.data.store import Episode, StoreWriter

    rng = np.random.default_rng(0)
    moves = np.array([[1, 0, 0, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]], np.float32)
    path = str(tmp_path / "s.zarr")
    with StoreWriter(path, resolution=(8, 8), fps=10.0, source="test", action_dim=4) as w:
        for _ in range(5):
            w.add_episode(Episode(rgb=np.zeros((31, 8, 8, 3), np.uint8), action=moves[rng.integers(4, size=31)]))
    now, before = step_actions(path, stride=1)
    assert now.shape == before.shape == (5 * 30, 4)
    np.testing.assert_array_equal(now[:29], before[1:30])  # step t's "before" is step t-1, within an episode
    assert explained(now, 4, now) > 0.999  # 4 codes, 4 distinct actions
    assert 0.2 < explained(now, 2, now) < 0.9  # 2 codes cannot say which of 4
    summed, _ = step_actions(path, stride=3)  # summed over 3 frames: 10 steps an episode, 9 with a step before
    assert summed.shape == (5 * 9, 4) and summed.sum(1).max() <= 6
