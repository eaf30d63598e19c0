"""Resuming safely (issue #14): a damaged newest checkpoint falls back to the one before it (item 10);
a resume that changes what is trained is refused unless --allow-changes, which records the change in
MLflow (item 11); bad --store weights and list-valued --set overrides are one-line errors (item 12);
`--set learning_rate=...` suggests lr as docs/training.md says (item 15)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import tiny_run  # noqa: E402

from genie_robot.artifacts import checkpoints as ckpt_io  # noqa: E402
from genie_robot.cli import main as cli  # noqa: E402
from training.train import ConfigError, train  # noqa: E402


def _save(run_dir: Path, step: int) -> Path:
    return ckpt_io.save_checkpoint(run_dir, step, weights={"w": torch.full((64,), float(step))},
                                   config={"stage": "t", "train": {}}, state={"step": step}, keep_last=5)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "model.safetensors truncated": lambda p: _truncate(p / "model.safetensors"),
    "state.pt truncated": lambda p: _truncate(p / "state.pt"),
    "config.json garbage": lambda p: (p / "config.json").write_text("{not json"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_newest_checkpoint_is_skipped_with_a_warning(tmp_path, damage, capsys):
    for step in (1, 2, 3):
        _save(tmp_path, step)
    DAMAGE[damage](tmp_path / "checkpoints" / "step_00000003")
    assert ckpt_io.latest_checkpoint(tmp_path).name == "step_00000002"
    assert "warning: checkpoint" in capsys.readouterr().err
    ck = ckpt_io.load_checkpoint(tmp_path)  # a run dir: the newest intact checkpoint
    assert ck.step == 2 and ck.state == {"step": 2} and torch.equal(ck.weights["w"], torch.full((64,), 2.0))
    # Named explicitly, the damaged one is an error that names its file.
    name = damage.split()[0]
    with pytest.raises(ckpt_io.CheckpointError, match=rf"step_00000003 is damaged: .*{name}"):
        ckpt_io.load_checkpoint(tmp_path / "checkpoints" / "step_00000003")


def test_state_pt_is_not_needed_for_weights(tmp_path):
    _save(tmp_path, 1)
    _truncate(tmp_path / "checkpoints" / "step_00000001" / "state.pt")
    weights, config = ckpt_io.load_weights(tmp_path)  # eval and stage-2 tokenizers read weights only
    assert torch.equal(weights["w"], torch.full((64,), 1.0)) and config["stage"] == "t"


def test_resume_falls_back_then_names_the_files_when_none_is_intact(tmp_path, capsys):
    cfg = tiny_run.tiny_config(tmp_path / "run", max_steps=8, ckpt_every=4,
                               tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    train(cfg, tiny_run.tiny_stage(), tiny_run.SyntheticWindows(), tiny_run.SyntheticWindows(seed=99))
    ckpts = tmp_path / "run" / "checkpoints"
    _truncate(ckpts / "step_00000008" / "model.safetensors")
    capsys.readouterr()
    final = train(cfg, tiny_run.tiny_stage(), tiny_run.SyntheticWindows(), tiny_run.SyntheticWindows(seed=99),
                  resume="auto")
    out = capsys.readouterr()
    assert "step_00000008 is damaged" in out.err and "resuming from" in out.out and "step_00000004" in out.out
    assert final.name == "step_00000008" and not ckpt_io.checkpoint_problems(final)  # written again, whole

    for step in ("00000004", "00000008"):
        (ckpts / f"step_{step}" / "config.json").write_text("garbage")
    with pytest.raises(ConfigError, match=r"every checkpoint of .* is damaged .*step_00000008/config.json.*"
                                          r"step_00000004/config.json"):
        train(cfg, tiny_run.tiny_stage(), tiny_run.SyntheticWindows(), None, resume="auto")


def test_resume_refuses_run_changing_edits_unless_allowed_and_records_them(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = tiny_run.tiny_config(tmp_path / "run", max_steps=4, ckpt_every=4, tracking_uri=uri)
    train(cfg, tiny_run.tiny_stage(), tiny_run.SyntheticWindows(), tiny_run.SyntheticWindows(seed=99))

    def resume(allow=False, **changes):
        new = tiny_run.tiny_config(tmp_path / "run", **{"max_steps": 4, "ckpt_every": 4, "tracking_uri": uri, **changes})
        return train(new, tiny_run.tiny_stage(), tiny_run.SyntheticWindows(), tiny_run.SyntheticWindows(seed=99),
                     resume="auto", allow_changes=allow)

    with pytest.raises(ConfigError, match=r"changed config \(lr 0.01 -> 0.02, seed 0 -> 3; saved -> now\).*"
                                          r"--allow-changes"):
        resume(lr=0.02, seed=3)
    with pytest.raises(ConfigError, match=r"max_steps 4 -> 8"):
        resume(max_steps=8)
    # Bookkeeping may change silently.
    resume(val_every=2, log_every=1, ckpt_every=2, sample_every=0, keep_last=5, num_workers=0, device="cpu")
    final = resume(allow=True, max_steps=6, lr=0.02)
    assert final.name == "step_00000006"

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    params = run.data.params
    assert params["train.lr"] == "0.01" and params["train.max_steps"] == "4"  # the original record stays
    assert params["resume.step_00000004.train.lr"] == "0.02"
    assert params["resume.step_00000004.train.max_steps"] == "6"
    assert run.data.tags["resume.changed"] == "max_steps: 4 -> 6 from step 4; lr: 0.01 -> 0.02 from step 4"


def _store(path: Path) -> str:
    from genie_robot.data.store import Episode, StoreWriter

    rng = np.random.default_rng(0)
    with StoreWriter(str(path), resolution=(16, 16), fps=10.0, source="test") as w:
        for _ in range(3):
            w.add_episode(Episode(rgb=rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)))
    return str(path)


def test_cli_one_line_errors_and_allow_changes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    store = _store(tmp_path / "s.zarr")

    def fails(*args: str) -> str:
        assert cli(["train", "tokenizer", "--preset", "tiny", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        return err

    for weight in ("0", "nan", "inf", "-1"):
        assert "store weights must be finite numbers >= 0" in fails("--store", f"{store}:{weight}")
    err = fails("--store", store, "--set", "model.tokenizer.resolution=64")
    assert "model.tokenizer.resolution is a list" in err and "--set model.tokenizer.resolution=[64,64]" in err
    assert "unknown training config key 'learning_rate'; did you mean lr?" in fails("--store", store, "--set",
                                                                                    "learning_rate=1e-3")

    common = ["--store", store, "--preset", "tiny", "--set", "window=4", "--set", "batch_size=2",
              "--set", "val_batches=1", "--set", "sample_every=0", "--set", "max_steps=2"]
    assert cli(["train", "tokenizer", *common]) == 0
    capsys.readouterr()
    err = fails("--store", store, "--set", "window=4", "--set", "batch_size=2", "--set", "val_batches=1",
                "--set", "sample_every=0", "--set", "max_steps=2", "--resume", "--set", "lr=1e-2")
    assert "lr 0.0003 -> 0.01" in err and "--allow-changes" in err
    assert cli(["train", "tokenizer", *common, "--resume", "--set", "lr=1e-2", "--set", "min_lr=1e-3",
                "--allow-changes"]) == 0
