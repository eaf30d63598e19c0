"""The shipped default model and ONNX graphs made on demand for weight-only bundles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genie_robot.models.configs import preset
from genie_robot.runtime import bundle, default_model
from genie_robot.runtime.world_model import WorldModel


@pytest.mark.slow
def test_a_weight_only_bundle_gets_its_graphs_exported_once_into_the_cache(tiny_export, tmp_path, monkeypatch):
    from genie_robot.cli import main

    src, ckpt, _ = tiny_export
    light = tmp_path / "light"
    assert main(["export", "--dynamics", str(ckpt), "--out", str(light), "--no-onnx"]) == 0
    assert not list(light.glob("*.onnx"))
    monkeypatch.setenv("GENIE_ROBOT_CACHE", str(tmp_path / "cache"))

    wm = WorldModel.load(light, backend="onnx", threads=1)
    cached = default_model.onnx_bundle(light)
    assert cached.parent.parent == tmp_path / "cache" and sorted(p.name for p in cached.glob("*.onnx")) == sorted(bundle.ONNX_FILES)
    stamps = {p.name: p.stat().st_mtime_ns for p in cached.iterdir()}
    assert default_model.onnx_bundle(light) == cached  # reused, not exported again
    assert {p.name: p.stat().st_mtime_ns for p in cached.iterdir()} == stamps

    reference = WorldModel.load(src, backend="onnx", threads=1)  # the graphs `genie-robot export` wrote
    prompt = np.random.default_rng(0).integers(0, 256, (2, *wm.resolution, 3), dtype=np.uint8)
    actions = np.array([[0, 1, 2], [3, 0, 1]])
    np.testing.assert_array_equal(wm.rollout(prompt, actions, seed=5), reference.rollout(prompt, actions, seed=5))


@pytest.mark.slow
@pytest.mark.sim
def test_a_first_rollout_of_a_weight_only_bundle_prints_a_few_lines(tiny_export, tmp_path):
    """Issue #14 item 5: the first `rollout --model default` printed ~1,100 lines (the exporter's warnings
    while the graphs went into the cache). The whole command, in a child process so every line of C++
    logging is counted too, on a weight-only bundle with an empty cache: the same path, a tiny model."""
    import os
    import subprocess
    import sys

    from genie_robot.cli import main

    light = tmp_path / "light"
    assert main(["export", "--dynamics", str(tiny_export[1]), "--out", str(light), "--no-onnx"]) == 0
    env = dict(os.environ, GENIE_ROBOT_CACHE=str(tmp_path / "cache"), GENIE_NUM_THREADS="1", OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "genie_robot.cli", "rollout", "--model", str(light), "--frames", "4",
                          "--out", str(tmp_path / "r.gif")], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert list((tmp_path / "cache").rglob("*.onnx")), "the graphs were not exported: not a first use"
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    # the command's own 4 lines (model, actions, PSNR, files written) and 2 about the one-time export
    assert 1 <= len(lines) <= 6 and not any("warn" in line.lower() for line in lines), "\n".join(lines[:40])
    assert (tmp_path / "r.gif").stat().st_size > 0


def test_a_bundle_that_lost_a_graph_is_not_silently_re_exported(tiny_export, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("GENIE_ROBOT_CACHE", str(tmp_path / "cache"))
    partial = tmp_path / "partial"
    shutil.copytree(tiny_export[0], partial)
    (partial / "lam_encoder.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"no lam_encoder\.onnx"):
        WorldModel.load(partial)
    assert not (tmp_path / "cache").exists()


def test_the_shipped_default_model_is_the_cpu_preset_and_rolls_out():
    d = default_model.resolve("default")
    assert d == default_model.ASSET_DIR
    cfg = bundle.read_config(d)
    assert cfg.name == "cpu" and cfg.tokenizer.resolution == (64, 64) and cfg.dynamics.num_actions == 64
    cpu = preset("cpu")  # the preset builds the shipped architecture: fine-tuning it needs no overrides
    assert (cfg.tokenizer, cfg.lam, cfg.dynamics.transformer) == (cpu.tokenizer, cpu.lam, cpu.dynamics.transformer)
    manifest = json.loads((d / bundle.MANIFEST).read_text())
    assert manifest["files"][bundle.WEIGHTS] == bundle.sha256(d / bundle.WEIGHTS)  # the committed file is intact
    size = sum(p.stat().st_size for p in d.iterdir())
    assert size <= 50 * 2**20  # the budget for shipped weights
    wm = WorldModel.load("default", backend="torch", steps=2)
    prompt = np.zeros((64, 64, 3), np.uint8)
    frames = wm.rollout(prompt, np.array([[0, 7]]), seed=0)
    assert frames.shape == (1, 2, 64, 64, 3) and frames.dtype == np.uint8
