"""Training configuration: one typed dataclass with working defaults, overridable from YAML and `--set`.

A run is described by a `TrainConfig`: which stage, which model preset (plus overrides of its fields),
which stores, and the optimisation knobs. Values come, in order, from the defaults below, an optional
YAML file (`--config`), then `--set key=value` pairs from the command line:

    --set lr=3e-4 --set batch_size=16          # fields of TrainConfig
    --set model.dynamics.depth=4               # fields of the model preset (GenieConfig.to_dict())

Model overrides are kept as a nested dict in `TrainConfig.model` and applied to the preset by
`resolve_model_config`, so the saved config records both the preset name and what was changed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STAGES = ("tokenizer", "lam", "dynamics")


@dataclass
class TrainConfig:
    # what to train
    # "tokenizer" (stage 1) | "lam" (the latent action model alone) | "dynamics" (stage 2: dynamics on the
    # frozen tokenizer, with the frozen LAM of `lam`, or co-training the LAM when `lam` is None: the paper)
    stage: str = "tokenizer"
    preset: str = "cpu"  # genie_robot.models.configs.preset(name): "tiny" | "cpu" | "paper"
    model: dict = field(default_factory=dict)  # overrides of the preset, e.g. {"dynamics": {"depth": 4}}
    tokenizer: str | None = None  # stage 2: tokenizer checkpoint dir, or a stage-1 run dir (latest checkpoint)
    tokenizer_weights: str = "ema"  # stage 2: "ema" (the tokenizer's EMA weights when saved) or "raw"
    lam: str | None = None  # stage 2: a `train lam` checkpoint or run dir, frozen; None: LAM trains jointly
    lam_weights: str = "ema"  # stage 2 with `lam`: "ema" or "raw"
    # warm start: the trained model of this stage from a bundle ("default": the shipped model) or a run/checkpoint
    # of the same stage and model config (EMA weights where kept); optimizer and schedule start fresh. Fine-tuning
    # the shipped dynamics on your own robot's video: --init default --tokenizer default --lam default
    init: str | None = None

    # data
    stores: list[str] = field(default_factory=list)  # Zarr episode stores (paths or fsspec URLs)
    store_weights: list[float] | None = None  # sampling weight per store; None: proportional to size
    window: int | None = None  # frames per training sample; None: the model's frame count
    frame_stride: int = 1  # take every n-th frame of an episode
    val_fraction: float = 0.1  # fraction of episodes held out for validation
    num_workers: int | None = None  # DataLoader workers; None: 0 on CPU, 4 per process on CUDA

    # optimisation (AdamW, linear warmup then cosine decay to min_lr)
    batch_size: int = 8  # global batch: split across DDP processes
    max_steps: int = 5000
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 200
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    ema_decay: float = 0.0  # exponential moving average of the weights; 0 disables, 0.999 is typical
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1"
    compile: bool = False  # torch.compile the model (helps on GPU; needs a C++ compiler on CPU)
    # "auto": bf16 autocast where the hardware multiplies bf16 natively (CUDA with bf16, CPUs with
    # AVX512-BF16 or AMX), else fp32; "bf16" / "fp32" force it (genie_robot/device.py says why)
    precision: str = "auto"

    # bookkeeping
    run_dir: str | None = None  # checkpoints and local artifacts; None: runs/<stage>
    log_every: int = 10  # progress bar refresh and MLflow flush, in steps (every step is logged)
    val_every: int = 250  # validation on held-out episodes, in steps
    val_batches: int = 4  # batches per validation (the same windows each time)
    sample_every: int = 500  # reconstruction grids / rollout GIFs as MLflow artifacts, in steps; 0: never
    ckpt_every: int = 500  # checkpoint interval in steps (a final checkpoint is always written)
    keep_last: int = 3  # checkpoints kept in <run_dir>/checkpoints
    tracking_uri: str | None = None  # MLflow; None: sqlite:///<cwd>/mlflow.db, artifacts in <cwd>/mlruns
    experiment: str = "genie-robot"
    run_name: str | None = None  # None: "<stage>-<preset>"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        if self.store_weights is not None and len(self.store_weights) != len(self.stores):
            raise ValueError(
                f"{len(self.store_weights)} store weights for {len(self.stores)} stores: "
                "give one weight per store (or none)"
            )
        for name in ("batch_size", "max_steps", "log_every", "val_every", "ckpt_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("tokenizer_weights", "lam_weights"):
            if getattr(self, name) not in ("ema", "raw"):
                raise ValueError(f"{name} must be 'ema' or 'raw', got {getattr(self, name)!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) is above lr ({self.lr})")
        if self.store_weights is not None:
            w = self.store_weights
            if not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
                raise ValueError(
                    f"store weights must be finite numbers >= 0, at least one of them positive, got {w}; "
                    "give each store a positive weight (--store PATH:WEIGHT, e.g. --store sim.zarr:2), or "
                    "leave the weight off to sample stores by size"
                )

    @property
    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir or f"runs/{self.stage}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        cfg = cls.__new__(cls)  # fill defaults, then coerce each given value; validate once at the end
        for f in dataclasses.fields(cls):
            setattr(cfg, f.name, f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        for key, value in d.items():
            _set_field(cfg, key, value)
        cfg.validate()
        return cfg


# Fields a resumed run may change freely: bookkeeping, where things run, and the frozen models'
# paths (a stage-2 checkpoint holds their weights). Any other change (lr, max_steps, seed, window,
# stores, ...) makes the resumed run another run, refused unless asked for (`resume_changes`).
# stage, preset, model and batch_size are checked on their own (training.train._model_check).
RESUME_SAFE_FIELDS = frozenset({
    "val_every", "log_every", "ckpt_every", "sample_every", "keep_last", "val_batches", "tracking_uri",
    "experiment", "run_name", "run_dir", "num_workers", "device", "compile", "precision",
    "tokenizer", "tokenizer_weights", "lam", "lam_weights",
})


def resume_changes(saved: dict, cfg: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """{field: (saved value, value now)} for the fields outside RESUME_SAFE_FIELDS that differ
    between a checkpoint's saved train config and `cfg` (saved configs predating a field count as
    having its default)."""
    hints = _field_types()
    try:
        old = TrainConfig.from_dict({k: v for k, v in saved.items() if k in hints}).to_dict()
    except ValueError:
        old = {**TrainConfig().to_dict(), **saved}
    now = cfg.to_dict()
    skip = RESUME_SAFE_FIELDS | {"stage", "preset", "model", "batch_size"}
    return {k: (old.get(k), now[k]) for k in now if k not in skip and old.get(k) != now[k]}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce a YAML/CLI value to the annotated type, with an error that names the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], key)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):  # "a,b,c" from the command line
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, item, key) for v in value]
    if tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a mapping, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if tp is str:
        return str(value)
    if tp in (int, float):
        try:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise ValueError
            if tp is int and not float(number).is_integer():
                raise ValueError
            return tp(number)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be {tp.__name__}, got {value!r}") from None
    return value


def _set_field(cfg: TrainConfig, key: str, value: Any) -> None:
    if key == "model" or key.startswith("model."):
        path = key.split(".")[1:]
        if not path:
            _merge(cfg.model, _coerce(value, dict, key))
            return
        node = cfg.model
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
        return
    hints = _field_types()
    if key not in hints:
        close = [_ALIASES[key]] if key in _ALIASES else difflib.get_close_matches(key, list(hints), n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; known keys: {', '.join(hints)}"
        raise ValueError(f"unknown training config key {key!r}{hint}")
    setattr(cfg, key, _coerce(value, hints[key], key))


# Names other trainers use for a field, which spelling similarity alone would not suggest.
_ALIASES = {
    "learning_rate": "lr", "min_learning_rate": "min_lr", "steps": "max_steps", "num_steps": "max_steps",
    "total_steps": "max_steps", "train_steps": "max_steps", "warmup": "warmup_steps", "wd": "weight_decay",
    "ema": "ema_decay", "clip_grad": "grad_clip", "max_grad_norm": "grad_clip", "bs": "batch_size",
}


def _merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


def parse_set(pairs: list[str]) -> list[tuple[str, Any]]:
    """`["lr=3e-4", "model.dynamics.depth=4"]` -> [("lr", 0.0003), ("model.dynamics.depth", 4)].

    Values are parsed as YAML scalars (numbers, true/false, null, [lists]); types are checked later
    against the field they set.
    """
    out = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value (e.g. --set lr=3e-4), got {pair!r}")
        value = yaml.safe_load(raw) if raw.strip() else ""
        if isinstance(value, str):
            try:  # YAML 1.1 reads "3e-4" as a string; numbers are what people mean
                value = int(value) if value.lstrip("-").isdigit() else float(value)
            except ValueError:
                pass
        out.append((key.strip(), value))
    return out


def load_config(
    yaml_path: str | None = None, overrides: list[str] | None = None, **fields: Any
) -> TrainConfig:
    """Defaults <- YAML file <- explicit `fields` (CLI flags) <- `--set` overrides."""
    merged: dict[str, Any] = {}
    if yaml_path:
        path = Path(yaml_path)
        if not path.exists():
            raise FileNotFoundError(f"config file {yaml_path} not found")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{yaml_path} must hold a mapping of config keys, got {type(data).__name__}")
        merged.update(data)
    cfg = TrainConfig.from_dict(merged)
    for key, value in fields.items():
        if value is not None:
            _set_field(cfg, key, value)
    for key, value in parse_set(overrides or []):
        _set_field(cfg, key, value)
    cfg.validate()
    return cfg


def apply_model_overrides(base: dict, overrides: dict, prefix: str = "model") -> dict:
    """Apply nested `overrides` onto the preset dict `base` (a copy), checking every key exists.

    A key that is not in a group but names exactly one field of its sub-groups is that field:
    `model.dynamics.depth` is `model.dynamics.transformer.depth`; `model.tokenizer.depth` is ambiguous
    (encoder or decoder) and an error. Numbers are coerced to the type of the value they replace.
    """
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in overrides.items():
        name = f"{prefix}.{key}"
        if key not in out:
            paths = _find_nested(out, key)
            if len(paths) == 1:  # shorthand for the one nested field of that name
                nested: Any = value
                for part in reversed(paths[0][1:]):
                    nested = {part: nested}
                out = apply_model_overrides(out, {paths[0][0]: nested}, prefix)
                continue
            if paths:
                options = " or ".join(".".join([prefix, *p]) for p in paths)
                raise ValueError(f"model config key {name!r} is ambiguous: use {options}")
            close = difflib.get_close_matches(key, list(out), n=3)
            hint = (f"did you mean {' or '.join(f'{prefix}.{c}' for c in close)}?" if close
                    else f"known: {', '.join(f'{prefix}.{k}' for k in out)}")
            raise ValueError(f"unknown model config key {name!r}; {hint}")
        current = out[key]
        if isinstance(current, dict):
            if not isinstance(value, dict):
                raise ValueError(f"{name} is a group of settings; set one of its fields, e.g. {name}.<field>=...")
            out[key] = apply_model_overrides(current, value, name)
        elif isinstance(current, bool):
            out[key] = _coerce(value, bool, name)
        elif isinstance(current, (int, float)) and not isinstance(value, bool):
            out[key] = _coerce(value, type(current), name)
        elif isinstance(current, (list, tuple)):
            if not isinstance(value, (list, tuple)):
                example = ",".join(str(value) for _ in current) if current else str(value)
                raise ValueError(f"{name} is a list (now {list(current)}), got the single value {value!r}; "
                                 f"give the list in brackets, e.g. --set {name}=[{example}]")
            out[key] = type(current)(value)
        else:
            out[key] = value
    return out


def _find_nested(d: dict, key: str) -> list[list[str]]:
    """Paths (below `d`'s own level) to fields named `key`."""
    found = []
    for k, v in d.items():
        if isinstance(v, dict):
            if key in v:
                found.append([k, key])
            found += [[k, *p] for p in _find_nested(v, key)]
    return found


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
