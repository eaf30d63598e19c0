"""Shared test fixtures. `tiny_store` writes a small random episode store and returns its path;
`tiny_bundle`, `tiny_onnx_bundle` and `stride2_bundle` are tiny model bundles (planning and experiments
use them; tests/ros and tests/runtime have their own).

Frames carry markers so tests can check where a frame came from: in every frame,
pixel [0, 0, 0] = episode index (mod 256) and pixel [0, 0, 1] = frame index within the episode
(mod 256). With actions, action[t, 0] = episode index and action[t, 1] = t (when A >= 2).

The environment scripts/env.sh gives `./scripts/test` is set here too (values already set win), so a
plain `pytest` in the venv runs the suite the same way: the MuJoCo backend (the library would probe
for one, but every subprocess would probe again), glibc malloc keeping memory (subprocess trainers),
ROS 2 discovery kept on this machine, and the venv's console scripts (`genie-robot`) on PATH for the
tests that run them as subprocesses.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import numpy as np
import pytest

for _key, _value in {
    "MUJOCO_GL": "egl",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
}.items():
    os.environ.setdefault(_key, _value)
_BIN = str(Path(sys.executable).parent)  # the venv's bin/ when pytest runs as .venv/bin/python -m pytest
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")


def make_episode(
    index: int, length: int, resolution=(16, 16), action_dim=2, state_dim=None, instruction=None, seed=0
):
    """One marked random Episode (see module docstring). Imported lazily so conftest needs no zarr."""
    from genie_robot.data.store import Episode

    rng = np.random.default_rng([seed, index])
    h, w = resolution
    rgb = rng.integers(0, 256, size=(length, h, w, 3), dtype=np.uint8)
    t = np.arange(length)
    rgb[:, 0, 0, 0] = index % 256
    rgb[:, 0, 0, 1] = t % 256
    action = state = None
    if action_dim:
        action = rng.normal(size=(length, action_dim)).astype(np.float32)
        action[:, 0] = index
        if action_dim >= 2:
            action[:, 1] = t
    if state_dim:
        state = rng.normal(size=(length, state_dim)).astype(np.float32)
    return Episode(rgb=rgb, action=action, state=state, instruction=instruction)


@pytest.fixture
def tiny_store(tmp_path):
    """Factory: tiny_store(episodes=4, length=12, ...) -> path of a complete store under tmp_path.

    episodes: number of episodes, or a list of per-episode lengths (then `length` is ignored).
    instructions: give every other episode an instruction ("task i"), the rest None.
    path: where to write (default: a fresh directory under tmp_path; any fsspec URL works).
    """
    counter = itertools.count()

    def make(
        episodes: int | list[int] = 4,
        *,
        length: int = 12,
        resolution: tuple[int, int] = (16, 16),
        action_dim: int | None = 2,
        state_dim: int | None = None,
        instructions: bool = True,
        fps: float = 10.0,
        source: str = "tiny",
        camera: str = "rgb",
        chunk_frames: int = 4,
        seed: int = 0,
        path: str | None = None,
    ) -> str:
        from genie_robot.data.store import StoreWriter

        lengths = [length] * episodes if isinstance(episodes, int) else list(episodes)
        path = str(path or tmp_path / f"tiny{next(counter)}.zarr")
        with StoreWriter(
            path,
            resolution=resolution,
            fps=fps,
            source=source,
            camera=camera,
            action_dim=action_dim,
            state_dim=state_dim,
            chunk_frames=chunk_frames,
        ) as writer:
            for i, n in enumerate(lengths):
                instruction = f"task {i}" if instructions and i % 2 == 0 else None
                writer.add_episode(make_episode(i, n, resolution, action_dim, state_dim, instruction, seed))
        return path

    return make


@pytest.fixture
def tiny_episode():
    """The marked-episode maker behind tiny_store: tiny_episode(index, length, resolution=(16, 16),
    action_dim=2, state_dim=None, instruction=None, seed=0) -> Episode."""
    return make_episode


def export_tiny(root, onnx: bool, seed: int = 0, frame_stride: int | None = None) -> str:
    """A tiny bundle through the real export; frame_stride: the training run's `train.frame_stride`
    (which the trainer also records in the model config's data), None = configs without either, as
    checkpoints from before strides."""
    import torch

    from genie_robot.artifacts import checkpoints
    from genie_robot.models import Genie, preset
    from genie_robot.runtime.export import export_bundle

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        genie = Genie(preset("tiny"))
        with torch.no_grad():
            genie.dynamics.action_table.copy_(genie.lam.action_embeddings())
        train, model = {"preset": "tiny", "model": {}}, genie.cfg.to_dict()
        if frame_stride is not None:
            train["frame_stride"] = model["data"]["frame_stride"] = frame_stride
        else:
            del model["data"]
        config = {"train": train, "model": model, "stage": "dynamics"}
        checkpoints.save_checkpoint(root / "dynamics", 1, weights=genie.state_dict(), config=config,
                                    state={"step": 1, "mlflow_run_id": None})
        out, _, _ = export_bundle(str(root / "dynamics"), root / "bundle", onnx=onnx)
    finally:
        torch.set_num_threads(threads)
    return str(out)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """Torch-backend bundle of the `tiny` preset (16x16 frames, 4 latent actions), ~1 s."""
    return export_tiny(tmp_path_factory.mktemp("tiny_bundle"), onnx=False)


@pytest.fixture(scope="session")
def tiny_onnx_bundle(tmp_path_factory):
    """The same with ONNX graphs (~20 s: the export)."""
    return export_tiny(tmp_path_factory.mktemp("tiny_onnx_bundle"), onnx=True)


@pytest.fixture(scope="session")
def stride2_bundle(tmp_path_factory):
    """The tiny torch bundle of a model trained on every 2nd frame (manifest frame_stride 2). Seed 2:
    a random LAM whose labels vary with the frames (seed 0's gives one latent for everything)."""
    return export_tiny(tmp_path_factory.mktemp("stride2_bundle"), onnx=False, seed=2, frame_stride=2)
