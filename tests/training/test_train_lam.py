"""`genie-robot train lam` and the stage-2 options built on it, with the real (tiny, conv) models:
the LAM trains on its own and logs its held-out monitors, stage 2 loads it frozen (`--lam`), refuses
a LAM of another config with a message, and the ground-truth-action control trains without a LAM.

One store, one tokenizer run and one LAM run are shared by the module (a few seconds each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genie_robot.artifacts import checkpoints as ckpt_io
from genie_robot.cli import main as cli

A = 4  # action dim of the store: xyz displacement + gripper, like the simulator's
CONV = ["--set", "model.tokenizer.kind=conv", "--set", "model.tokenizer.channels=[8,8,16]",
        "--set", "model.lam.kind=conv", "--set", "model.lam.channels=[16,32]",
        "--set", "model.lam.decoder_channels=[16,32]"]
SMALL = ["--set", "batch_size=4", "--set", "warmup_steps=1", "--set", "val_batches=1", "--set", "lr=1e-3"]
DIRS = {(0, 1): 0, (0, -1): 1, (1, 0): 2, (-1, 0): 3}  # (dx, dy) -> direction


def square_store(path: Path, episodes: int = 6, frames: int = 20) -> str:
    """16x16 clips of a 4x4 square that moves one pixel per frame in x or y; action[t] = (dx, dy, 0, 0)/2,
    the move from frame t to t+1 (as in the simulator: the action after frame t)."""
    from genie_robot.data.store import Episode, StoreWriter

    rng = np.random.default_rng(0)
    with StoreWriter(str(path), resolution=(16, 16), fps=10.0, source="squares", action_dim=A) as w:
        for _ in range(episodes):
            rgb = np.zeros((frames, 16, 16, 3), np.uint8)
            rgb[..., 2] = 40
            action = np.zeros((frames, A), np.float32)
            x, y = rng.integers(2, 10, size=2)
            for t in range(frames):
                rgb[t, y:y + 4, x:x + 4] = 230
                dx, dy = list(DIRS)[rng.integers(4)]
                if not (0 <= x + dx <= 12 and 0 <= y + dy <= 12):
                    dx, dy = -dx, -dy
                action[t, :2] = 0.5 * np.array([dx, dy])
                x, y = x + dx, y + dy
            w.add_episode(Episode(rgb=rgb, action=action))
    return str(path)


def _metric(client, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(root, client, {stage: run_id}): a store, `train tokenizer` and `train lam` in `root`."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("lam_runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("GENIE_NUM_THREADS", "1")
        threads = torch.get_num_threads()
        square_store(root / "sq.zarr")
        common = ["--store", "sq.zarr", "--preset", "tiny", *CONV, *SMALL]
        assert cli(["train", "tokenizer", *common, "--set", "max_steps=2", "--set", "val_every=2",
                    "--set", "ckpt_every=2", "--set", "sample_every=2"]) == 0
        assert cli(["train", "lam", *common, "--set", "max_steps=4", "--set", "val_every=2",
                    "--set", "ckpt_every=2", "--set", "sample_every=4", "--set", "ema_decay=0.5"]) == 0
        torch.set_num_threads(threads)
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("genie-robot").experiment_id
    ids = {r.data.tags["stage"]: r.info.run_id for r in client.search_runs([exp])}
    return root, client, ids


def test_train_lam_writes_checkpoints_and_logs_its_monitors(runs):
    root, client, ids = runs
    assert set(ids) == {"tokenizer", "lam"}
    run = client.get_run(ids["lam"])
    assert run.info.status == "FINISHED"
    ckpts = sorted(p.name for p in (root / "runs/lam/checkpoints").iterdir())
    assert ckpts == ["step_00000002", "step_00000004"]
    weights, config = ckpt_io.load_weights(root / "runs/lam", ema=True)
    assert config["stage"] == "lam" and config["model"]["lam"]["kind"] == "conv"
    assert any(k.startswith("decoder.") for k in weights) and not any(k.startswith("lam.") for k in weights)
    for key in ("monitor/nmi", "monitor/perplexity", "monitor/min_code_share", "monitor/codes_over_5pct"):
        values = _metric(client, ids["lam"], key)
        assert len(values) == 2 and all(np.isfinite(values)), (key, values)  # at steps 2 and 4
    assert all(0 <= v <= 1 for v in _metric(client, ids["lam"], "monitor/nmi"))
    assert all(1 <= v <= 8 for v in _metric(client, ids["lam"], "monitor/perplexity"))
    for key in ("train/loss", "train/fsq/perplexity", "train/var_floor_loss", "val/mse"):
        assert _metric(client, ids["lam"], key), key
    assert "samples/lam_00000004.png" in {a.path for a in client.list_artifacts(ids["lam"], "samples")}


def test_dynamics_with_a_frozen_lam_leaves_it_unchanged(runs, monkeypatch):
    from safetensors.torch import load_file

    root, client, _ = runs
    monkeypatch.chdir(root)
    assert cli(["train", "dynamics", "--store", "sq.zarr", "--preset", "tiny", *CONV, *SMALL,
                "--tokenizer", "runs/tokenizer", "--lam", "runs/lam", "--run-dir", "runs/dyn-lam",
                "--set", "max_steps=3", "--set", "val_every=3", "--set", "ckpt_every=3",
                "--set", "sample_every=3"]) == 0
    genie_sd = load_file(str(root / "runs/dyn-lam/checkpoints/step_00000003/model.safetensors"))
    lam_sd, _ = ckpt_io.load_weights(root / "runs/lam", ema=True)  # lam_weights=ema by default
    raw_sd, _ = ckpt_io.load_weights(root / "runs/lam", ema=False)
    assert any(not torch.equal(lam_sd[k], raw_sd[k]) for k in lam_sd)  # so picking EMA is visible
    assert lam_sd and all(torch.equal(genie_sd[f"lam.{k}"], v) for k, v in lam_sd.items())
    run = next(r for r in client.search_runs([client.get_experiment_by_name("genie-robot").experiment_id])
               if r.data.tags["stage"] == "dynamics" and r.info.artifact_uri and "dyn-lam" in str(r.data.params))
    keys = set(run.data.metrics)
    assert {"train/dynamics/loss", "monitor/delta_psnr_4", "monitor/gen_psnr_4", "monitor/perplexity"} <= keys
    assert not any(k.startswith(("train/lam/", "val/lam/")) for k in keys), keys  # the LAM did not train
    # the model records what one of its steps is: the run's frame stride and split, the store's fps
    _, config = ckpt_io.load_weights(root / "runs/dyn-lam")
    assert config["model"]["data"] == {"frame_stride": 1, "fps": 10.0, "val_fraction": 0.1}


def test_a_lam_of_another_config_is_refused_with_a_message(runs, monkeypatch, capsys):
    root, _, _ = runs
    monkeypatch.chdir(root)
    base = ["train", "dynamics", "--store", "sq.zarr", "--preset", "tiny", *CONV, *SMALL,
            "--tokenizer", "runs/tokenizer", "--run-dir", "runs/refused", "--set", "max_steps=1"]
    assert cli([*base, "--lam", "runs/lam", "--set", "model.lam.decoder_channels=[8,16]"]) == 2
    err = capsys.readouterr().err
    assert "another lam config" in err and "decoder_channels" in err and "Traceback" not in err
    assert cli([*base, "--lam", "runs/tokenizer"]) == 2
    assert "not a lam one" in capsys.readouterr().err
    assert cli([*base, "--lam", "runs/nope"]) == 2
    assert "lam checkpoint missing" in capsys.readouterr().err
    assert cli(base) == 2  # the conv LAM is not co-trained: it needs --lam
    assert "genie-robot train lam" in capsys.readouterr().err
    assert not (root / "runs/refused").exists()


def test_stage_2_reuses_a_bundles_tokenizer_and_lam_checked_by_hash(runs, monkeypatch, capsys):
    """--tokenizer/--lam BUNDLE ('default': the shipped model) freeze the bundle's parts; a bundle whose
    weights no longer match its manifest is refused before anything is loaded."""
    from safetensors.torch import load_file

    from genie_robot.runtime.export import export_bundle

    root, _, _ = runs
    monkeypatch.chdir(root)
    base = ["train", "dynamics", "--store", "sq.zarr", "--preset", "tiny", *CONV, *SMALL,
            "--set", "val_every=1", "--set", "sample_every=1", "--set", "ckpt_every=1"]
    assert cli([*base, "--tokenizer", "runs/tokenizer", "--lam", "runs/lam", "--run-dir", "runs/dyn-src",
                "--set", "max_steps=1"]) == 0
    # sampled with guidance 2 and 8 steps, as the shipped model is: settings that change no weight, so
    # runs with the preset's sampling take its parts and warm-start from it (docs/training.md's fine-tune)
    bundle, _, _ = export_bundle("runs/dyn-src", root / "bundle", onnx=False,
                                 sampling={"guidance": 2.0, "maskgit_steps": 8})
    source = load_file(str(Path(bundle) / "weights.safetensors"))
    assert cli([*base, "--tokenizer", str(bundle), "--lam", str(bundle), "--run-dir", "runs/dyn-bundle",
                "--set", "max_steps=1"]) == 0
    trained = load_file(str(root / "runs/dyn-bundle/checkpoints/step_00000001/model.safetensors"))
    for part in ("tokenizer.", "lam."):
        keys = [k for k in source if k.startswith(part)]
        assert keys and all(torch.equal(trained[k], source[k]) for k in keys), part
    assert cli([*base, "--tokenizer", str(bundle), "--lam", "runs/lam", "--run-dir", "runs/refused",
                "--set", "model.tokenizer.channels=[8,16,16]"]) == 2
    assert "another tokenizer config" in capsys.readouterr().err
    # --init: a warm start of the dynamics model from the bundle (lr 0: the weights stay the bundle's),
    # here with another training recipe (TRAINING_FIELDS change no weight either)
    assert cli([*base, "--tokenizer", str(bundle), "--lam", str(bundle), "--init", str(bundle), "--run-dir",
                "runs/dyn-init", "--set", "max_steps=1", "--set", "lr=0", "--set", "min_lr=0",
                "--set", "model.dynamics.mask_per=frame", "--set", "model.dynamics.context_noise=0.1"]) == 0
    warm = load_file(str(root / "runs/dyn-init/checkpoints/step_00000001/model.safetensors"))
    keys = [k for k in source if k.startswith("dynamics.")]
    assert keys and all(torch.equal(warm[k], source[k]) for k in keys)
    assert cli([*base, "--tokenizer", str(bundle), "--lam", str(bundle), "--run-dir", "runs/dyn-fresh",
                "--set", "max_steps=1", "--set", "lr=0", "--set", "min_lr=0"]) == 0  # the control: no --init
    fresh = load_file(str(root / "runs/dyn-fresh/checkpoints/step_00000001/model.safetensors"))
    assert not all(torch.equal(fresh[k], source[k]) for k in keys)
    assert cli([*base, "--tokenizer", str(bundle), "--lam", str(bundle), "--init", "runs/lam", "--run-dir",
                "runs/refused"]) == 2
    assert "not a dynamics one" in capsys.readouterr().err
    with open(Path(bundle) / "weights.safetensors", "r+b") as f:  # one byte changed: the hash no longer matches
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    assert cli([*base, "--tokenizer", str(bundle), "--lam", "runs/lam", "--run-dir", "runs/refused"]) == 2
    err = capsys.readouterr().err
    assert "weights.safetensors" in err and "Traceback" not in err
    assert not (root / "runs/refused").exists()


def test_ground_truth_actions_train_without_a_lam_and_log_delta_psnr(runs, monkeypatch):
    root, client, _ = runs
    monkeypatch.chdir(root)
    assert cli(["train", "dynamics", "--store", "sq.zarr", "--preset", "tiny", *CONV, *SMALL,
                "--tokenizer", "runs/tokenizer", "--run-dir", "runs/dyn-gt",
                "--set", "model.dynamics.action_source=ground_truth", "--set", f"model.dynamics.action_dim={A}",
                "--set", "max_steps=3", "--set", "val_every=3", "--set", "ckpt_every=3",
                "--set", "sample_every=3"]) == 0
    _, config = ckpt_io.load_weights(root / "runs/dyn-gt")
    dyn = config["model"]["dynamics"]
    assert dyn["action_source"] == "ground_truth" and dyn["action_dim"] == A
    run_id = next(r.info.run_id for r in client.search_runs([client.get_experiment_by_name("genie-robot").experiment_id])
                  if r.data.params.get("model.dynamics.action_source") == "ground_truth")
    assert len(_metric(client, run_id, "monitor/delta_psnr_4")) == 1
    assert np.isfinite(_metric(client, run_id, "monitor/gen_psnr_4")[0])
    assert _metric(client, run_id, "val/dynamics/loss")
    keys = set(client.get_run(run_id).data.metrics)
    assert not any(k.startswith(("train/lam/", "monitor/perplexity")) for k in keys), keys


def test_ground_truth_needs_store_actions_of_the_model_dim(runs, tiny_store, monkeypatch, capsys):
    """Refused before training starts (no MLflow run), not a KeyError / shape error mid-run."""
    root, client, _ = runs
    monkeypatch.chdir(root)
    exp = client.get_experiment_by_name("genie-robot").experiment_id
    n_runs = len(client.search_runs([exp]))
    gt = ["train", "dynamics", "--preset", "tiny", *CONV, *SMALL, "--tokenizer", "runs/tokenizer",
          "--run-dir", "runs/gt-refused", "--set", "max_steps=1", "--set", "window=4",
          "--set", "model.dynamics.action_source=ground_truth", "--set", f"model.dynamics.action_dim={A}"]
    assert cli([*gt, "--store", tiny_store(action_dim=None)]) == 2
    err = capsys.readouterr().err
    assert "ground_truth" in err and "has no actions" in err and "Traceback" not in err
    assert cli([*gt, "--store", tiny_store(action_dim=2)]) == 2
    err = capsys.readouterr().err
    assert "has 2-dim actions" in err and f"action_dim {A}" in err and "model.dynamics.action_dim=2" in err
    assert len(client.search_runs([exp])) == n_runs and not (root / "runs/gt-refused").exists()


def test_train_lam_on_a_store_whose_actions_are_not_xyz(tiny_store, tmp_path, monkeypatch):
    """2-dim actions (e.g. a planar pusher): no NMI (it reads an xyz displacement), the rest is logged."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    store = tiny_store(episodes=4, length=8, action_dim=2)
    assert cli(["train", "lam", "--store", store, "--preset", "tiny", *CONV, *SMALL, "--set", "max_steps=2",
                "--set", "val_every=2", "--set", "ckpt_every=2", "--set", "sample_every=2"]) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("genie-robot").experiment_id])
    assert "monitor/perplexity" in run.data.metrics and "monitor/nmi" not in run.data.metrics


def test_model_overrides_link_the_conv_kinds():
    from training.configs import TrainConfig
    from training.train import resolve_model_config

    conv = {"tokenizer": {"kind": "conv", "channels": [8, 8, 16], "fsq_levels": [4, 4]},
            "lam": {"kind": "conv", "channels": [16, 32], "fsq_levels": [2, 2, 2, 2]}}
    m = resolve_model_config(TrainConfig(preset="tiny", model=conv))
    assert m.tokenizer.channels == (8, 8, 16) and m.tokenizer.fsq_levels == (4, 4)
    assert (m.dynamics.vocab_size, m.dynamics.num_actions, m.dynamics.action_dim) == (16, 16, 4)
    gt = resolve_model_config(TrainConfig(preset="tiny", model={
        **conv, "dynamics": {"action_source": "ground_truth", "action_dim": 7}}))
    assert gt.dynamics.action_dim == 7 and gt.dynamics.vocab_size == 16  # the control keeps its own actions
    tokens = resolve_model_config(TrainConfig(preset="tiny", model={
        "tokenizer": conv["tokenizer"], "lam": {"input": "tokens"}}))
    assert tokens.lam.token_vocab == 16 and tokens.lam.patch == 4  # the token-input LAM follows the tokenizer


def test_stage_2_token_cache_logs_its_hits_and_a_resume_repeats_the_losses(runs, monkeypatch):
    """The conv tokenizer's tokens come from training/token_cache.py after a frame's first visit; a run
    resumed with an empty cache logs the same losses as the run that filled it."""
    root, client, _ = runs
    monkeypatch.chdir(root)
    args = ["train", "dynamics", "--store", "sq.zarr", "--preset", "tiny", *CONV, *SMALL, "--tokenizer",
            "runs/tokenizer", "--lam", "runs/lam", "--set", "max_steps=6", "--set", "val_every=3",
            "--set", "ckpt_every=3", "--set", "sample_every=6", "--set", "run_name=cached"]
    assert cli([*args, "--run-dir", "runs/dyn-cache"]) == 0
    assert cli([*args, "--run-dir", "runs/dyn-cache-resumed", "--resume", "runs/dyn-cache/checkpoints/step_00000003"]) == 0
    run = next(r for r in client.search_runs([client.get_experiment_by_name("genie-robot").experiment_id])
               if r.data.tags.get("mlflow.runName") == "cached")
    hits = _metric(client, run.info.run_id, "train/token_cache_hit_rate")
    assert hits and 0 < hits[-1] <= 1, hits  # 6 episodes x 20 frames: windows of 16 soon meet known frames
    for key in ("train/loss", "train/dynamics/loss"):
        hist: dict[int, list[float]] = {}
        for m in client.get_metric_history(run.info.run_id, key):
            hist.setdefault(m.step, []).append(m.value)
        assert all(len(hist[s]) == 2 and hist[s][0] == hist[s][1] for s in (4, 5, 6)), (key, hist)
