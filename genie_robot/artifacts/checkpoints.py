"""Checkpoints: the one on-disk format for trained weights and resumable training state.

A checkpoint is a directory `<run_dir>/checkpoints/step_00001000/` holding

    model.safetensors   the weights (safetensors: loading runs no code)
    ema.safetensors     EMA weights, when EMA is on (same keys as model.safetensors)
    config.json         {"train": TrainConfig.to_dict(), "model": GenieConfig.to_dict(), "stage": ...}
    state.pt            optimizer, LR-schedule position, RNG states, data position, MLflow run id;
                        torch.save of tensors and plain Python types only, read with weights_only=True

It is written into a hidden temporary directory next to its final place, every file fsynced, then
renamed into place with os.replace: a `step_*` directory is complete by construction, and a process
killed mid-write leaves only a `.tmp-*` directory that the next save removes. Files and folders get
the permissions of any other new file (umask; the weights too, through the library's
`bundle.save_weights`), so another user can read a run it can list.

What happens to a checkpoint after it was written (a disk filling up during a copy, a truncated
upload, an edited config.json) is checked when it is picked: `checkpoint_problems` reads the JSON and
compares each file's size with what its header promises. A run dir resolves to its newest intact
checkpoint, with a warning for each damaged newer one; a damaged checkpoint named explicitly, or a
run dir with none intact, is a CheckpointError naming the files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from genie_robot.errors import InputError
from genie_robot.runtime.bundle import save_weights

CKPT_DIRNAME = "checkpoints"
_STEP_RE = re.compile(r"^step_(\d+)$")
WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"
CONFIG = "config.json"
STATE = "state.pt"


class CheckpointError(InputError):
    """A checkpoint whose files are damaged (truncated, not what they claim to be); names them."""


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


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is not whole, or None: its size must be 8 + header + the data the
    header's tensors span."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                return f"{path}: truncated ({size} bytes, its header alone claims {n + 8})"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except FileNotFoundError:
        return f"{path}: missing"
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
        return f"{path}: not a safetensors file ({type(exc).__name__}: {exc})"
    if size != 8 + n + end:
        return f"{path}: {size} bytes, its header promises {8 + n + end} (truncated or overwritten)"
    return None


def checkpoint_problems(path: str | Path, *, with_state: bool = True) -> list[str]:
    """What is wrong with the files of checkpoint dir `path` ([] when it looks intact): config.json
    must be a JSON object, each safetensors file as long as its header says, state.pt (when
    `with_state`) a whole torch.save archive. Cheap: no tensor is read."""
    p = Path(path)
    problems = []
    try:
        if not isinstance(json.loads((p / CONFIG).read_text()), dict):
            problems.append(f"{p / CONFIG}: not a JSON object")
    except FileNotFoundError:
        problems.append(f"{p / CONFIG}: missing")
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError
        problems.append(f"{p / CONFIG}: not valid JSON ({exc})")
    for name in (WEIGHTS, EMA_WEIGHTS):
        if name == WEIGHTS or (p / name).exists():
            problem = _safetensors_problem(p / name)
            if problem:
                problems.append(problem)
    if with_state:
        if not (p / STATE).is_file():
            problems.append(f"{p / STATE}: missing")
        elif not zipfile.is_zipfile(p / STATE):  # torch.save writes a zip; a cut one lacks its directory
            problems.append(f"{p / STATE}: not a whole torch.save archive (truncated?)")
    return problems


def latest_checkpoint(run_dir: str | Path, *, with_state: bool = True) -> Path | None:
    """The newest intact checkpoint of a run (None when it has none). A damaged newer one is skipped
    with a warning; when every one is damaged, CheckpointError names their files."""
    found = list_checkpoints(run_dir)
    damaged = []
    for p in reversed(found):
        problems = checkpoint_problems(p, with_state=with_state)
        if not problems:
            return p
        damaged.append(f"{p.name}: {'; '.join(problems)}")
        print(f"warning: checkpoint {p} is damaged ({'; '.join(problems)}); trying the one before it",
              file=sys.stderr)
    if damaged:
        raise CheckpointError(
            f"every checkpoint of {run_dir} is damaged ({' | '.join(damaged)}); restore one from a copy, "
            "or start again in a new run dir"
        )
    return None


def resolve_checkpoint(path: str | Path, *, with_state: bool = True) -> Path:
    """A checkpoint dir as given, or the newest intact checkpoint of a run dir. Raises with a fix if
    neither (CheckpointError for damaged files; `with_state=False`: state.pt is not needed)."""
    p = Path(path)
    if _STEP_RE.match(p.name) or ((p / WEIGHTS).is_file() and (p / CONFIG).is_file()):
        problems = checkpoint_problems(p, with_state=with_state) if p.is_dir() else []
        if problems:
            raise CheckpointError(
                f"checkpoint {p} is damaged: {'; '.join(problems)}; pass an older checkpoint, or the run dir "
                f"({p.parent.parent}), which resolves to its newest intact one"
            )
        if p.is_dir():
            return p
    latest = latest_checkpoint(p, with_state=with_state)
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
    # Not tempfile.mkdtemp: its 0700 would become the checkpoint's mode once renamed into place.
    tmp = root / f".tmp-{final.name}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        save_weights(_cpu_tensors(weights), tmp / WEIGHTS)
        if ema is not None:
            save_weights(_cpu_tensors(ema), tmp / EMA_WEIGHTS)
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


def _read(path: Path, load):
    """load() the file at `path`; any failure of the decoder (each raises its own types) is a
    CheckpointError naming the file."""
    try:
        return load()
    except Exception as exc:  # safetensors, torch.load (zip, unpickler) and json all raise their own
        raise CheckpointError(f"checkpoint file {path} cannot be read ({type(exc).__name__}: {exc}); "
                              "pass an older checkpoint, or restore this one from a copy") from None


def load_checkpoint(path: str | Path, *, with_state: bool = True, map_location: str = "cpu") -> Checkpoint:
    """Load a checkpoint dir (or the newest intact one of a run dir). `state.pt` is read with
    weights_only=True. Damaged files raise CheckpointError."""
    p = resolve_checkpoint(path, with_state=with_state)
    m = _STEP_RE.match(p.name)
    config = _read(p / CONFIG, lambda: json.loads((p / CONFIG).read_text()))
    weights = _read(p / WEIGHTS, lambda: load_file(str(p / WEIGHTS), device=map_location))
    ema = None
    if (p / EMA_WEIGHTS).is_file():
        ema = _read(p / EMA_WEIGHTS, lambda: load_file(str(p / EMA_WEIGHTS), device=map_location))
    state = None
    if with_state:
        state = _read(p / STATE, lambda: torch.load(p / STATE, map_location=map_location, weights_only=True))
    step = int(m.group(1)) if m else int((state or {}).get("step", 0))
    return Checkpoint(path=p, step=step, config=config, weights=weights, ema=ema, state=state)


def load_weights(path: str | Path, *, ema: bool = False, map_location: str = "cpu") -> tuple[dict, dict]:
    """(state_dict, config) of a checkpoint or run dir; `ema=True` picks the EMA weights when present."""
    ckpt = load_checkpoint(path, with_state=False, map_location=map_location)
    weights = ckpt.ema if (ema and ckpt.ema is not None) else ckpt.weights
    return weights, ckpt.config


def genie_config(config: dict):
    """The GenieConfig of a saved checkpoint config ({"model": ..., "train": ...}), the one way every
    reader builds it: a checkpoint written before the model recorded its data facts (`data`) gets them
    from its training config (frame_stride, val_fraction; fps unknown)."""
    from genie_robot.models.configs import GenieConfig

    model = dict(config["model"])
    if "data" not in model:
        train = config.get("train") or {}
        model["data"] = {"frame_stride": int(train.get("frame_stride", 1)),
                         "val_fraction": float(train.get("val_fraction", 0.1))}
    return GenieConfig.from_dict(model)


STAGE_COMMANDS = {"tokenizer": "genie-robot train tokenizer", "lam": "genie-robot train lam",
                  "dynamics": "genie-robot train dynamics"}


def load_stage(path: str | Path, stage: str, *, what: str | None = None, with_state: bool = False) -> Checkpoint:
    """The checkpoint of a `train <stage>` run (a run dir: its newest intact checkpoint, or a checkpoint
    dir). A missing one is a FileNotFoundError naming the command that makes it; one of another stage a
    CheckpointError. `what`: how the caller's user named it (a flag), for the messages."""
    what = what or f"{stage} checkpoint"
    try:
        ck = load_checkpoint(path, with_state=with_state)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{what}: {exc}; train one with `{STAGE_COMMANDS[stage]}`") from None
    if ck.config.get("stage") != stage:
        raise CheckpointError(f"{what}: {ck.path} is a {ck.config.get('stage')!r} checkpoint, not a {stage} one; "
                              f"pass a `{STAGE_COMMANDS[stage]}` run")
    return ck


def load_genie(dynamics: str | Path, tokenizer: str | Path | None = None, *, ema: bool = True):
    """The one loader of a Genie from training output: a stage-2 run or checkpoint (tokenizer + LAM +
    dynamics), its tokenizer optionally replaced by a stage-1 run's (same tokenizer config required).
    EMA weights where the checkpoints hold them and `ema`. -> (Genie in eval mode on the CPU,
    {"dynamics": Checkpoint, "tokenizer": Checkpoint}), the checkpoints for provenance.
    Bundles are loaded by genie_robot.runtime.bundle.load_genie."""
    from genie_robot.models.genie import Genie

    def pick(ck: Checkpoint) -> dict:
        return ck.ema if (ema and ck.ema is not None) else ck.weights

    ck = load_stage(dynamics, "dynamics", what="--dynamics", with_state=True)
    cfg = genie_config(ck.config)
    genie = Genie(cfg)
    try:
        genie.load_state_dict(pick(ck))
    except RuntimeError as exc:
        raise CheckpointError(f"{ck.path} does not fit this version of Genie ({exc}); retrain with this code") from None
    used = {"dynamics": ck}
    if tokenizer is not None:
        tck = load_stage(tokenizer, "tokenizer", what="--tokenizer")
        from genie_robot.models.configs import TokenizerConfig, config_from_dict

        theirs = config_from_dict(TokenizerConfig, tck.config["model"]["tokenizer"])
        if theirs != cfg.tokenizer:
            a, b = dataclasses.asdict(theirs), dataclasses.asdict(cfg.tokenizer)
            diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
            raise CheckpointError(f"tokenizer checkpoint {tck.path} has another tokenizer config than the dynamics "
                                  f"checkpoint {ck.path}; differing fields (tokenizer, dynamics): {diff}")
        genie.tokenizer.load_state_dict(pick(tck))
        used["tokenizer"] = tck
    return genie.eval(), used

