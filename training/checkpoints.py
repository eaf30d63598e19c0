"""Checkpoints: the one on-disk format for trained weights and resumable training state.

A checkpoint is a directory `<run_dir>/checkpoints/step_00001000/` holding

    model.safetensors   the weights (safetensors: loading runs no code)
    ema.safetensors     EMA weights, when EMA is on (same keys as model.safetensors)
    config.json         {"train": TrainConfig.to_dict(), "model": GenieConfig.to_dict(), "stage": ...}
    state.pt            optimizer, LR-schedule position, RNG states, data position, MLflow run id;
                        torch.save of tensors and plain Python types only, read with weights_only=True

It is written into a hidden temporary directory next to its final place, every file fsynced, then
renamed into place with os.replace: a `step_*` directory is complete by construction, and a process
killed mid-write leaves only a `.tmp-*` directory that the next save removes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CKPT_DIRNAME = "checkpoints"
_STEP_RE = re.compile(r"^step_(\d+)$")
WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"
CONFIG = "config.json"
STATE = "state.pt"


@dataclass
class Checkpoint:
    path: Path
    step: int
    config: dict
    weights: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    state: dict | None  # None when only the weights were asked for


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cpu_tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied weights, views): give each its own copy.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / CKPT_DIRNAME


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first. Accepts a run dir or its checkpoints/ dir."""
    root = Path(run_dir)
    if root.name != CKPT_DIRNAME:
        root = checkpoint_root(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint dir as given, or the latest checkpoint of a run dir. Raises with a fix if neither."""
    p = Path(path)
    if (p / WEIGHTS).is_file() and (p / CONFIG).is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is not None:
        return latest
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist; pass a checkpoint dir (…/checkpoints/step_N) or a run dir")
    raise FileNotFoundError(
        f"{p} holds no checkpoint (no {WEIGHTS} + {CONFIG}, no {CKPT_DIRNAME}/step_* inside); "
        "pass a checkpoint dir (…/checkpoints/step_N) or the run dir of a finished run"
    )


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    weights: dict[str, torch.Tensor],
    config: dict,
    state: dict,
    ema: dict[str, torch.Tensor] | None = None,
    keep_last: int = 3,
) -> Path:
    """Write `<run_dir>/checkpoints/step_<step>/` atomically and keep only the newest `keep_last`."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # left by a process killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        save_file(_cpu_tensors(weights), str(tmp / WEIGHTS))
        if ema is not None:
            save_file(_cpu_tensors(ema), str(tmp / EMA_WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
        torch.save(state, tmp / STATE)
        for f in tmp.iterdir():
            _fsync_file(f)
        _fsync_dir(tmp)
        if final.exists():  # the same step saved again (e.g. the final step): swap, then drop the old one
            old = root / f".tmp-old-{final.name}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, *, with_state: bool = True, map_location: str = "cpu") -> Checkpoint:
    """Load a checkpoint dir (or the latest in a run dir). `state.pt` is read with weights_only=True."""
    p = resolve_checkpoint(path)
    m = _STEP_RE.match(p.name)
    config = json.loads((p / CONFIG).read_text())
    weights = load_file(str(p / WEIGHTS), device=map_location)
    ema = load_file(str(p / EMA_WEIGHTS), device=map_location) if (p / EMA_WEIGHTS).is_file() else None
    state = torch.load(p / STATE, map_location=map_location, weights_only=True) if with_state else None
    step = int(m.group(1)) if m else int((state or {}).get("step", 0))
    return Checkpoint(path=p, step=step, config=config, weights=weights, ema=ema, state=state)


def load_weights(path: str | Path, *, ema: bool = False, map_location: str = "cpu") -> tuple[dict, dict]:
    """(state_dict, config) of a checkpoint or run dir; `ema=True` picks the EMA weights when present."""
    ckpt = load_checkpoint(path, with_state=False, map_location=map_location)
    weights = ckpt.ema if (ema and ckpt.ema is not None) else ckpt.weights
    return weights, ckpt.config
