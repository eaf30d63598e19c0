"""Planning fixtures: tiny `tiny`-preset bundles made through the real export path (random weights,
as tests/ros/conftest.py makes them), one torch thread, and a prompt/goal pair.

A random-weight model is still a real model: rollouts depend on the actions, so a planner that finds
a sequence whose imagined end frame is closer to a goal than random sequences is doing its job."""

from __future__ import annotations

import numpy as np
import pytest


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


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """Torch-backend bundle of the `tiny` preset (16x16 frames, 4 latent actions), ~1 s."""
    return export_tiny(tmp_path_factory.mktemp("plan_bundle"), onnx=False)


@pytest.fixture(scope="session")
def tiny_onnx_bundle(tmp_path_factory):
    """The same with ONNX graphs (~20 s: the export)."""
    return export_tiny(tmp_path_factory.mktemp("plan_onnx_bundle"), onnx=True)


@pytest.fixture(scope="session")
def stride2_bundle(tmp_path_factory):
    """The tiny torch bundle of a model trained on every 2nd frame (manifest frame_stride 2). Seed 2:
    a random LAM whose labels vary with the frames (seed 0's gives one latent for everything)."""
    return export_tiny(tmp_path_factory.mktemp("plan_stride2_bundle"), onnx=False, seed=2, frame_stride=2)


@pytest.fixture(scope="session")
def torch_wm(tiny_bundle):
    from genie_robot.runtime.world_model import WorldModel

    return WorldModel.load(tiny_bundle, backend="torch")


@pytest.fixture
def frame():
    """(16, 16, 3) uint8: a smooth pattern."""
    yy, xx = np.mgrid[0:16, 0:16]
    return np.stack([(xx * 16) % 256, (yy * 16) % 256, np.full_like(xx, 60)], -1).astype(np.uint8)
