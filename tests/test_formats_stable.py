"""Formats and numerics do not drift (issue #15): the run directory, bundle and shipped default model
recorded by tests/data/formats/record.py before the structural change must still load and produce the
very frames, LAM actions and tokens they produced then, on both backends. The tiny run is exported
afresh by today's `genie-robot export`, so its checkpoint format and the exporter are covered too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FORMATS = Path(__file__).parent / "data" / "formats"
SEED = 7  # record.py's


@pytest.fixture(scope="module")
def recorded():
    return dict(np.load(FORMATS / "frames.npz"))


@pytest.fixture(scope="module")
def fresh_export(tmp_path_factory):
    from genie_robot.cli import main

    out = tmp_path_factory.mktemp("formats") / "bundle"
    assert main(["export", "--dynamics", str(FORMATS / "tiny_run"), "--out", str(out)]) == 0
    return out


def _check(wm, recorded, name, backend):
    from genie_robot.runtime.world_model import WorldModel

    assert isinstance(wm, WorldModel)
    prompt, actions = recorded[f"{name}/prompt"], recorded[f"{name}/actions"]
    np.testing.assert_array_equal(wm.encode(prompt), recorded[f"{name}/{backend}/tokens"])
    np.testing.assert_array_equal(wm.infer_actions(prompt), recorded[f"{name}/{backend}/lam"])
    np.testing.assert_array_equal(wm.rollout(prompt, actions, seed=SEED), recorded[f"{name}/{backend}/frames"])


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_the_recorded_tiny_bundle_still_gives_its_frames(recorded, backend):
    from genie_robot.runtime.world_model import WorldModel

    _check(WorldModel.load(FORMATS / "tiny_bundle", backend=backend, threads=1), recorded, "tiny", backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_the_recorded_run_directory_exports_to_the_same_frames(recorded, fresh_export, backend):
    from genie_robot.runtime.world_model import WorldModel

    _check(WorldModel.load(fresh_export, backend=backend, threads=1), recorded, "tiny", backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_the_shipped_default_model_still_gives_its_frames(recorded, backend, tmp_path, monkeypatch):
    from genie_robot.runtime.world_model import WorldModel

    monkeypatch.setenv("GENIE_ROBOT_CACHE", str(tmp_path))  # the onnx graphs exported by today's code
    _check(WorldModel.load("default", backend=backend, threads=1), recorded, "default", backend)
