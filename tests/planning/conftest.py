"""Planning fixtures: one torch thread, a world model over the tiny bundle (tests/conftest.py: `tiny`-preset
bundles made through the real export path), and a prompt/goal pair.

A random-weight model is still a real model: rollouts depend on the actions, so a planner that finds
a sequence whose imagined end frame is closer to a goal than random sequences is doing its job."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def torch_wm(tiny_bundle):
    from genie_robot.runtime.world_model import WorldModel

    return WorldModel.load(tiny_bundle, backend="torch")


@pytest.fixture
def frame():
    """(16, 16, 3) uint8: a smooth pattern."""
    yy, xx = np.mgrid[0:16, 0:16]
    return np.stack([(xx * 16) % 256, (yy * 16) % 256, np.full_like(xx, 60)], -1).astype(np.uint8)
