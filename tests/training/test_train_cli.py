"""`genie-robot train` with the real models: clear errors before training starts, and the tiny
end-to-end pipeline (simulate -> train tokenizer -> train dynamics) read back from MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genie_robot.artifacts import checkpoints as ckpt_io
from genie_robot.cli import main as cli
from training.configs import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def _store(path: Path, episodes: int = 4, frames: int = 12, res: int = 16) -> str:
    from genie_robot.data.store import Episode, StoreWriter

    rng = np.random.default_rng(0)
    with StoreWriter(str(path), resolution=(res, res), fps=10.0, source="test") as w:
        for _ in range(episodes):
            w.add_episode(Episode(rgb=rng.integers(0, 256, (frames, res, res, 3), dtype=np.uint8)))
    return str(path)


def _fails(args: list[str], capsys) -> str:
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert not Path("mlflow.db").exists(), "errors must come before an MLflow run is created"
    return err


def test_store_resolution_mismatch(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    store = _store(tmp_path / "s16.zarr", res=16)
    err = _fails(["train", "tokenizer", "--store", store, "--preset", "cpu"], capsys)
    assert "store resolution 16x16" in err and "64x64" in err and "--resolution 64" in err


def test_dataset_too_small_for_window(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    store = _store(tmp_path / "short.zarr", frames=6)
    err = _fails(["train", "tokenizer", "--store", store, "--preset", "tiny"], capsys)  # tiny: 8-frame windows
    assert "dataset too small for the window length" in err and "longest 6 frames" in err and "--set window=" in err
    assert cli(["train", "tokenizer", "--store", store, "--preset", "tiny", "--set", "window=4",
                "--set", "max_steps=1", "--set", "batch_size=2", "--set", "val_batches=1"]) == 0


def test_tokenizer_checkpoint_missing_or_of_another_config(tmp_path, monkeypatch, capsys):
    from genie_robot.models.configs import preset

    monkeypatch.chdir(tmp_path)
    store = _store(tmp_path / "s.zarr")
    err = _fails(["train", "dynamics", "--store", store, "--preset", "tiny", "--tokenizer", "runs/nope"], capsys)
    assert "tokenizer checkpoint missing" in err and "train tokenizer" in err
    err = _fails(["train", "dynamics", "--store", store, "--preset", "tiny"], capsys)
    assert "--tokenizer" in err

    other = preset("tiny").to_dict()
    other["tokenizer"]["encoder"]["depth"] = 1
    train_cfg = TrainConfig(preset="tiny", model={"tokenizer": {"encoder": {"depth": 1}}})
    ckpt_io.save_checkpoint(tmp_path / "tok", 5, weights={"x": torch.zeros(1)}, state={},
                            config={"stage": "tokenizer", "train": train_cfg.to_dict(), "model": other})
    err = _fails(["train", "dynamics", "--store", store, "--preset", "tiny", "--tokenizer", "tok"], capsys)
    assert "another tokenizer config" in err and "encoder.depth" in err and "(1, 2)" in err


def test_unknown_override_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = _fails(["train", "tokenizer", "--store", "x", "--set", "learning_rate=1"], capsys)
    assert "unknown training config key 'learning_rate'" in err
    err = _fails(["train", "tokenizer", "--store", "x", "--preset", "tiny", "--set", "model.tokenizer.patchh=2"], capsys)
    assert "model.tokenizer.patch" in err


@pytest.mark.slow
@pytest.mark.sim
def test_simulate_then_train_both_stages_end_to_end(tmp_path):
    """simulate -> train tokenizer -> train dynamics through the CLI, then read everything back."""
    from mlflow.tracking import MlflowClient
    from safetensors.torch import load_file

    from genie_robot.models.configs import preset
    from genie_robot.models.genie import Genie

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.setdefault("MUJOCO_GL", "egl")

    def run(*args):
        out = subprocess.run([sys.executable, "-m", "genie_robot.cli", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=400)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout + out.stderr

    run("simulate", "--episodes", "8", "--frames", "24", "--resolution", "16", "--out", "sim.zarr", "--workers", "1")
    common = ["--store", "sim.zarr", "--preset", "tiny", "--set", "batch_size=4", "--set", "warmup_steps=5",
              "--set", "val_batches=2"]
    run("train", "tokenizer", *common, "--set", "max_steps=60", "--set", "lr=3e-3", "--set", "val_every=20",
        "--set", "sample_every=30", "--set", "ckpt_every=30", "--set", "ema_decay=0.9")
    run("train", "dynamics", *common, "--tokenizer", "runs/tokenizer", "--set", "max_steps=6", "--set", "lr=1e-3",
        "--set", "val_every=3", "--set", "sample_every=6", "--set", "ckpt_every=3")

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = {r.data.tags["stage"]: r for r in client.search_runs([client.get_experiment_by_name("genie-robot").experiment_id])}
    assert set(runs) == {"tokenizer", "dynamics"} and all(r.info.status == "FINISHED" for r in runs.values())
    tok, dyn = runs["tokenizer"].info.run_id, runs["dynamics"].info.run_id

    mse = [m.value for m in sorted(client.get_metric_history(tok, "val/mse"), key=lambda m: m.step)]
    assert len(mse) == 3 and mse[-1] < mse[0], mse  # the tokenizer learns
    assert client.get_metric_history(tok, "train/vq/usage")
    assert {"samples/recon_00000030.png", "samples/recon_00000060.png"} <= {a.path for a in client.list_artifacts(tok, "samples")}
    assert {"samples/rollout_00000006.gif", "samples/rollout_00000006.png"} <= {a.path for a in client.list_artifacts(dyn, "samples")}
    for key in ("train/dynamics/masked_accuracy", "train/lam/vq/usage", "val/dynamics/loss", "train/loss"):
        assert len(client.get_metric_history(dyn, key)) >= 2, key
    assert runs["dynamics"].data.params["model.dynamics.transformer.width"] == "32"

    # The dynamics checkpoint is a whole Genie; its tokenizer is stage 1's EMA tokenizer, untouched by stage 2.
    genie_sd = load_file(client.download_artifacts(dyn, "final/model.safetensors", str(tmp_path)))
    Genie(preset("tiny")).load_state_dict(genie_sd)
    tok_sd = load_file(str(tmp_path / "runs/tokenizer/checkpoints/step_00000060/ema.safetensors"))
    assert all(torch.equal(genie_sd[f"tokenizer.{k}"], v) for k, v in tok_sd.items())

    # Exact resume of the real stage 2: continue from step 3 in another run dir; steps 4..6 are logged
    # again into the same MLflow run and must repeat exactly.
    out = run("train", "dynamics", *common, "--tokenizer", "runs/tokenizer", "--set", "max_steps=6", "--set", "lr=1e-3",
              "--set", "val_every=3", "--set", "sample_every=6", "--set", "ckpt_every=3",
              "--run-dir", "runs/dynamics-resumed", "--resume", "runs/dynamics/checkpoints/step_00000003")
    assert "at step 3" in out
    assert len(client.search_runs([runs["dynamics"].info.experiment_id])) == 2  # no new run
    for key in ("train/loss", "train/lam/loss", "train/dynamics/loss"):
        hist: dict[int, list[float]] = {}
        for m in client.get_metric_history(dyn, key):
            hist.setdefault(m.step, []).append(m.value)
        assert all(len(hist[s]) == 2 and hist[s][0] == hist[s][1] for s in (4, 5, 6)), (key, hist)
