"""Optical-flow moves (genie_robot/eval/motion.py): which way a latent action moves the picture."""

from __future__ import annotations

import numpy as np
import pytest

from genie_robot.eval import motion


def _scene(x: int, y: int, size: int = 64) -> np.ndarray:
    """A grey textured background and a bright textured 12x12 block ("the arm") at (x, y)."""
    rng = np.random.default_rng(0)
    frame = np.full((size, size, 3), 90, np.uint8)
    block = rng.integers(150, 256, (12, 12, 3), dtype=np.uint8)
    frame[y:y + 12, x:x + 12] = block
    return frame


@pytest.mark.parametrize("dx, dy", [(3, 0), (0, -2), (-2, 2)])
def test_a_moved_block_gives_its_move(dx, dy):
    move = motion.flow_vector(_scene(20, 24), _scene(20 + dx, 24 + dy))
    assert np.allclose(move, (dx, dy), atol=0.6), move
    assert motion.arrow(move) == {(3, 0): "→", (0, -2): "↑", (-2, 2): "↙"}[(dx, dy)]


def test_nothing_moves_no_move_and_bad_frames_are_refused():
    assert np.array_equal(motion.flow_vector(_scene(20, 24), _scene(20, 24)), np.zeros(2))
    with pytest.raises(ValueError, match="two \\(H, W, 3\\) frames of one size"):
        motion.flow_vector(_scene(20, 24), _scene(20, 24)[:32])


def test_consistency_is_one_for_one_way_and_small_for_any_way():
    assert motion.consistency([[2, 0], [5, 0.1], [0.5, 0]]) == pytest.approx(1.0, abs=1e-3)
    assert motion.consistency([[1, 0], [-1, 0], [0, 1], [0, -1]]) == pytest.approx(0.0, abs=1e-9)
    assert motion.consistency([[1, 0], [0, 0]]) == pytest.approx(0.5)  # no move: no direction
    angles = np.random.default_rng(1).uniform(0, 2 * np.pi, 400)
    assert motion.consistency(np.stack([np.cos(angles), np.sin(angles)], 1)) < 0.15


def test_action_motion_reads_each_action_against_the_real_video_labelled_with_it():
    """Three actions from four start frames: 0 moves the block right, 1 moves it up in one start
    frame and down in the others, 2 leaves it still. Real transitions: the LAM labels right moves 0,
    down moves 1 and still pairs 2."""
    starts = [(10, 10), (30, 12), (14, 36), (34, 34)]
    step = {0: (2, 0), 1: (0, 2), 2: (0, 0)}
    grid = np.zeros((4, 3, 3, 64, 64, 3), np.uint8)  # (B, K, depth + 1, H, W, 3)
    for b, (x, y) in enumerate(starts):
        for k, (dx, dy) in step.items():
            sy = -1 if (k == 1 and b == 0) else 1
            for t in range(3):
                grid[b, k, t] = _scene(x + t * dx, y + sy * t * dy)
    real = [motion.flow_vector(_scene(x, y), _scene(x + dx, y + dy))
            for (x, y) in starts for dx, dy in step.values()]
    groups = [k for _ in starts for k in step]
    moves = motion.grid_moves(grid)
    assert moves.shape == (4, 3, 2, 2)
    got = motion.action_motion(moves, np.array(real), np.array(groups))
    assert got["starts"] == 4 and got["steps"] == 2 and got["still"] == [2]
    assert got["consistency"][0] == pytest.approx(1.0, abs=0.02)
    assert got["agreement"][0] == pytest.approx(1.0, abs=0.02)
    assert got["consistency"][1] == pytest.approx(0.5, abs=0.05)  # 3 down, 1 up
    assert got["path_consistency"][1] == pytest.approx(0.5, abs=0.05)
    assert got["agreement"][1] == pytest.approx(1.0, abs=0.02)  # on average still down, like the real ones
    assert got["min_consistency"] == got["consistency"][1]  # the still action is left out
    assert got["imagined_px"][0] == pytest.approx(2.0, abs=0.4) and got["imagined_px"][2] == 0.0
    assert got["real_transitions"] == [4, 4, 4]
    assert got["real_move"][2] == [0.0, 0.0] and got["agreement"][2] is None  # no direction to agree with
    # an action imagined as no move where its real transitions move agrees with nothing
    frozen = moves.copy()
    frozen[:, 0] = 0.0
    got = motion.action_motion(frozen, np.array(real), np.array(groups))
    assert got["agreement"][0] == 0.0 and got["consistency"][0] == 0.0 and got["min_agreement"] == 0.0
