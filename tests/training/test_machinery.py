"""The model-agnostic training machinery: configs, LR schedule, EMA, data order, checkpoints, and a
whole (tiny) training run read back through the MLflow client."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import tiny_run  # noqa: E402

from genie_robot.artifacts import checkpoints as ckpt_io  # noqa: E402
from training.configs import TrainConfig, apply_model_overrides, flatten, load_config, parse_set  # noqa: E402
from training.train import EMA, ConfigError, StreamSampler, lr_at, train  # noqa: E402

# -- configs -----------------------------------------------------------------------------------


def test_set_overrides_parse_and_type_check(tmp_path):
    assert parse_set(["lr=3e-4", "model.dynamics.depth=4", "stores=a,b"]) == [
        ("lr", 3e-4), ("model.dynamics.depth", 4), ("stores", "a,b")]
    cfg = load_config(None, ["lr=3e-4", "batch_size=16", "model.dynamics.depth=4", "stores=a,b", "ema_decay=0.99"])
    assert cfg.lr == 3e-4 and isinstance(cfg.lr, float) and cfg.batch_size == 16
    assert cfg.model == {"dynamics": {"depth": 4}} and cfg.stores == ["a", "b"] and cfg.ema_decay == 0.99

    y = tmp_path / "c.yaml"
    y.write_text(yaml.safe_dump({"stage": "dynamics", "lr": 1e-3, "model": {"dynamics": {"depth": 2, "heads": 2}}}))
    cfg = load_config(str(y), ["model.dynamics.depth=6"], preset="tiny")
    assert (cfg.stage, cfg.lr, cfg.preset) == ("dynamics", 1e-3, "tiny")
    assert cfg.model == {"dynamics": {"depth": 6, "heads": 2}}  # --set wins over YAML, siblings kept

    with pytest.raises(ValueError, match="did you mean batch_size"):
        load_config(None, ["batch_sise=3"])
    with pytest.raises(ValueError, match="batch_size must be int"):
        load_config(None, ["batch_size=2.5"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["lr"])
    with pytest.raises(ValueError, match="stage must be one of"):
        load_config(None, ["stage=policy"])


def test_model_overrides_check_keys_and_keep_types():
    base = {"num_frames": 16, "dynamics": {"depth": 8, "dropout": 0.0, "causal": True}}
    out = apply_model_overrides(base, {"dynamics": {"depth": 4, "dropout": 1}})
    assert out["dynamics"] == {"depth": 4, "dropout": 1.0, "causal": True} and isinstance(out["dynamics"]["dropout"], float)
    assert base["dynamics"]["depth"] == 8  # the preset is not modified
    with pytest.raises(ValueError, match="did you mean model.dynamics.depth"):
        apply_model_overrides(base, {"dynamics": {"depht": 4}})
    with pytest.raises(ValueError, match="group of settings"):
        apply_model_overrides(base, {"dynamics": 3})
    # a field name unique within a group is a shorthand for its nested path; an ambiguous one is an error
    nested = {"dynamics": {"transformer": {"depth": 8, "width": 64}, "context": 16},
              "tokenizer": {"encoder": {"depth": 2}, "decoder": {"depth": 2}}}
    out = apply_model_overrides(nested, {"dynamics": {"depth": 4}})
    assert out["dynamics"] == {"transformer": {"depth": 4, "width": 64}, "context": 16}
    with pytest.raises(ValueError, match="ambiguous: use model.tokenizer.encoder.depth or model.tokenizer.decoder.depth"):
        apply_model_overrides(nested, {"tokenizer": {"depth": 4}})
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": []}) == {"a.b": 1, "a.c.d": 2, "e": []}


def test_store_weights_from_the_command_line():
    from training.train import _split_store

    assert _split_store("data/a.zarr:3") == ("data/a.zarr", 3.0)
    assert _split_store("data/a.zarr") == ("data/a.zarr", None)
    assert _split_store("s3://bucket/a.zarr") == ("s3://bucket/a.zarr", None)
    assert _split_store("s3://bucket/a.zarr:0.5") == ("s3://bucket/a.zarr", 0.5)


def test_linked_model_fields_follow_the_tokenizer_and_lam():
    from training.train import resolve_model_config

    m = resolve_model_config(load_config(None, ["model.tokenizer.quantizer.num_codes=128",
                                                "model.tokenizer.resolution=[32,32]",
                                                "model.lam.quantizer.num_codes=6"], preset="tiny"))
    assert tuple(m.lam.resolution) == (32, 32) and m.dynamics.vocab_size == 128
    assert tuple(m.dynamics.grid) == (8, 8) and m.dynamics.num_actions == 6
    # set by hand: refused, naming what to set instead
    with pytest.raises(ConfigError, match="model.dynamics.vocab_size follows the tokenizer"):
        resolve_model_config(load_config(None, ["model.dynamics.vocab_size=7"], preset="tiny"))
    with pytest.raises(ConfigError, match="model.dynamics.num_actions follows the LAM"):
        resolve_model_config(load_config(None, ["model.dynamics.num_actions=16"], preset="tiny"))


def test_config_round_trips_through_dict():
    cfg = TrainConfig(stage="dynamics", lr=1e-3, stores=["x"], model={"dynamics": {"depth": 2}})
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# -- schedule, EMA, data order ---------------------------------------------------------------------


def test_lr_warmup_then_cosine():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    lrs = [lr_at(s, cfg) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))  # rising during warmup
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then falling
    assert lrs[60] == pytest.approx(0.55)  # half way: the mean of lr and min_lr
    assert lr_at(110, cfg) == pytest.approx(0.1) and lr_at(500, cfg) == pytest.approx(0.1)


def test_ema_tracks_trainable_weights_only():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    model[1].requires_grad_(False)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.add_(2.0)
    ema.update(model, step=1000)  # past the warm-up: the configured decay
    sd = ema.state_dict(model)
    assert torch.allclose(sd["0.weight"], model[0].weight - 1.0)  # half way to the new weights
    assert set(sd) == set(model.state_dict())  # a full, loadable state dict
    before = model[0].weight.clone()
    with ema.swapped_in(model):
        assert torch.allclose(model[0].weight, sd["0.weight"])
    assert torch.equal(model[0].weight, before)


def test_ema_decay_warms_up_so_short_runs_forget_the_initialisation():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for step in range(1, 501):
        ema.update(model, step)
    # a plain 0.999 EMA would still be 0.999**500 = 61 % initialisation here
    assert ema.state_dict(model)["weight"].item() > 0.99


def test_ranks_partition_each_global_batch():
    one = list(StreamSampler(6, first_batch=2, num_batches=4))
    assert one == [list(range(12, 18)), list(range(18, 24))]
    per_rank = [list(StreamSampler(6, 2, 4, rank=r, world=3)) for r in range(3)]
    for b in range(2):
        assert sorted(sum((per_rank[r][b] for r in range(3)), [])) == one[b]


# -- checkpoints ----------------------------------------------------------------------------------


def _save(run_dir, step, keep_last=2):
    w = {"a": torch.full((2, 2), float(step)), "b": torch.arange(3)}
    state = {"step": step, "rng": [{"torch": torch.get_rng_state(), "python": (3, (1, 2), None)}], "x": 1.5}
    return ckpt_io.save_checkpoint(run_dir, step, weights=w, config={"stage": "t", "n": step}, state=state,
                                   keep_last=keep_last)


def test_checkpoints_round_trip_keep_last_and_ignore_partial(tmp_path):
    for step in (10, 20, 30):
        _save(tmp_path, step)
    assert [p.name for p in ckpt_io.list_checkpoints(tmp_path)] == ["step_00000020", "step_00000030"]
    # A save killed half way leaves only a hidden temporary directory: never picked up, removed next time.
    partial = tmp_path / "checkpoints" / ".tmp-step_00000040-abc"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"garbage")
    assert ckpt_io.latest_checkpoint(tmp_path).name == "step_00000030"
    ck = ckpt_io.load_checkpoint(tmp_path)  # a run dir resolves to its latest checkpoint
    assert ck.step == 30 and ck.config == {"stage": "t", "n": 30} and ck.state["x"] == 1.5
    assert torch.equal(ck.weights["a"], torch.full((2, 2), 30.0))
    _save(tmp_path, 40)
    assert not partial.exists()
    # state.pt holds tensors and plain types only: it loads with weights_only=True (what load_checkpoint uses).
    torch.load(ckpt_io.latest_checkpoint(tmp_path) / "state.pt", weights_only=True)


def test_checkpoint_failing_mid_write_leaves_no_checkpoint(tmp_path, monkeypatch):
    _save(tmp_path, 1)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_io.torch, "save", boom)
    with pytest.raises(OSError):
        _save(tmp_path, 2)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000001"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_checkpoint_files_and_folder_have_the_permissions_of_any_new_file(tmp_path, umask):
    """Weights are not 0600 and the step folder is not 0700 (safetensors and mkdtemp alone make them so):
    another user (a ROS service account, a colleague) reads a run it can list. The umask still rules."""
    old = os.umask(umask)
    try:
        path = ckpt_io.save_checkpoint(tmp_path, 1, weights={"a": torch.zeros(2)}, config={"stage": "t"},
                                       state={"step": 1}, ema={"a": torch.ones(2)})
        (tmp_path / "plain.txt").write_text("x")
        os.mkdir(tmp_path / "plain_dir")
    finally:
        os.umask(old)
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == file_mode
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()}
    assert modes == {name: file_mode for name in ("model.safetensors", "ema.safetensors", "config.json", "state.pt")}
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "plain_dir").stat().st_mode) == dir_mode
    assert torch.equal(ckpt_io.load_checkpoint(path).ema["a"], torch.ones(2))


def test_missing_checkpoint_error_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ckpt_io.resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        ckpt_io.resolve_checkpoint(tmp_path)


# -- a whole run, read back through MLflow ---------------------------------------------------------


def test_tiny_run_logs_to_mlflow_and_checkpoints(tmp_path):
    from mlflow.tracking import MlflowClient
    from safetensors.torch import load_file

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = tiny_run.tiny_config(tmp_path / "run", tracking_uri=uri, ema_decay=0.9)
    stage = tiny_run.tiny_stage()
    final = train(cfg, stage, tiny_run.SyntheticWindows(), tiny_run.SyntheticWindows(seed=99))
    assert final.name == "step_00000012"
    assert [p.name for p in ckpt_io.list_checkpoints(tmp_path / "run")] == ["step_00000008", "step_00000012"]

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    rid = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.01" and run.data.params["model.tiny.dim"] == "16"
    assert run.data.tags["sys.torch"] == torch.__version__ and "sys.git_commit" in run.data.tags
    assert run.data.tags["sys.device"] == "cpu" and "sys.malloc" in run.data.tags
    losses = client.get_metric_history(rid, "train/loss")
    assert sorted(m.step for m in losses) == list(range(1, 13))  # every step
    assert [m.step for m in client.get_metric_history(rid, "val/loss")] == [5, 10, 12]
    for key in ("train/lr", "train/grad_norm", "train/codebook_usage", "perf/frames_per_s", "val/codebook_usage"):
        assert client.get_metric_history(rid, key), key
    assert {a.path for a in client.list_artifacts(rid, "final")} == {
        "final/model.safetensors", "final/ema.safetensors", "final/config.json"}
    assert {a.path for a in client.list_artifacts(rid, "samples")} == {"samples/recon_000006.npy", "samples/recon_000012.npy"}

    weights = load_file(client.download_artifacts(rid, "final/model.safetensors", str(tmp_path)))
    assert all(torch.equal(weights[k], v) for k, v in stage.model.state_dict().items())
    config = json.loads((final / "config.json").read_text())
    assert config["stage"] == "tokenizer" and config["train"]["max_steps"] == 12

    # Training again into the same run dir without --resume is refused with the fix in the message.
    with pytest.raises(ConfigError, match="pass --resume"):
        train(cfg, tiny_run.tiny_stage(), tiny_run.SyntheticWindows(), None)


def test_a_checkpoint_from_before_the_data_facts_gets_them_from_its_training_config():
    from genie_robot.models import preset
    from genie_robot.models.configs import DataConfig

    model = preset("tiny").to_dict()
    del model["data"]  # as the trainer wrote model configs before DataConfig
    cfg = ckpt_io.genie_config({"model": model, "train": {"frame_stride": 3, "val_fraction": 0.2}})
    assert cfg.data == DataConfig(frame_stride=3, fps=0.0, val_fraction=0.2) and cfg.data.step_seconds is None
    model["data"] = {"frame_stride": 2, "fps": 20.0, "val_fraction": 0.1}  # recorded: it wins
    assert ckpt_io.genie_config({"model": model, "train": {"frame_stride": 3}}).data.step_seconds == 0.1


def test_a_failing_monitor_keeps_the_steps_it_interrupts(tmp_path):
    """Nothing lost on a crash: an error in held-out validation (a monitor, a preview) ends the run, but
    only after a checkpoint of the step it interrupted, from which --resume goes on."""
    cfg = tiny_run.tiny_config(tmp_path / "run", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", ckpt_every=100)
    stage = tiny_run.tiny_stage()

    def broken_monitor(model, val_set, device):
        raise RuntimeError("monitor bug")

    stage.monitor = broken_monitor
    with pytest.raises(RuntimeError, match="monitor bug"):
        train(cfg, stage, tiny_run.SyntheticWindows(), tiny_run.SyntheticWindows(seed=99))
    assert [p.name for p in ckpt_io.list_checkpoints(tmp_path / "run")] == ["step_00000005"]  # val_every=5
    final = train(cfg, tiny_run.tiny_stage(), tiny_run.SyntheticWindows(), tiny_run.SyntheticWindows(seed=99),
                  resume="auto")
    assert final.name == "step_00000012"


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "training" / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_example_configs_load(path):
    from training.train import resolve_model_config

    cfg = load_config(str(path))
    resolve_model_config(cfg)  # the preset plus overrides is a valid GenieConfig


def test_checkpoints_saved_before_a_config_field_existed_still_match():
    from genie_robot.models import preset
    from training.train import _normalised

    current = preset("tiny").to_dict()
    old = json.loads(json.dumps(current))
    del old["tokenizer"]["attention"]  # a field added after the checkpoint was written
    del old["lam"]["token_vocab"]
    assert old != current and _normalised(old) == current
    changed = json.loads(json.dumps(old))
    changed["tokenizer"]["patch"] = 8
    assert _normalised(changed) != current
