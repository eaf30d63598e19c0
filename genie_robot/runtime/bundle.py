"""Model bundle: the directory `genie-robot export` writes and `WorldModel.load` reads.

    manifest.json            format version, model config, opset, graph input/output shapes,
                             sha256 of the source checkpoints' safetensors files and of every bundle file
    config.json              GenieConfig.to_dict()
    weights.safetensors      Genie state dict (tokenizer + lam + dynamics): the torch backend
    tokenizer_encoder.onnx, tokenizer_decoder.onnx, lam_encoder.onnx, dynamics_step.onnx: the onnx backend

Readers check that files exist (naming the command that makes them) and that config, manifest and
weights agree, so a bundle assembled from mismatched parts fails at load, not mid-rollout.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "manifest.json"
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
FORMAT_VERSION = 1
ONNX_FILES = ("tokenizer_encoder.onnx", "tokenizer_decoder.onnx", "lam_encoder.onnx", "dynamics_step.onnx")
EXPORT_HINT = "genie-robot export --dynamics runs/dynamics --out {dir}"


class BundleError(ValueError):
    """A bundle that is incomplete or whose parts do not fit together."""


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def require(bundle_dir: str | Path, names: tuple[str, ...] | list[str]) -> None:
    d = Path(bundle_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"model bundle {d} does not exist; make one with `{EXPORT_HINT.format(dir=d)}`")
    for name in names:
        if not (d / name).is_file():
            extra = " (or `--no-onnx` was used: load with backend='torch')" if name.endswith(".onnx") else ""
            raise FileNotFoundError(
                f"model bundle {d} has no {name}{extra}; make a complete bundle with `{EXPORT_HINT.format(dir=d)}`"
            )


def read_config(bundle_dir: str | Path):
    """GenieConfig of a bundle, checked against the manifest's copy."""
    from genie_robot.models.configs import GenieConfig

    d = Path(bundle_dir)
    require(d, (MANIFEST, CONFIG))
    manifest = read_manifest(d)
    config = json.loads((d / CONFIG).read_text())
    if manifest.get("config") != config:
        raise BundleError(f"{d / CONFIG} differs from the config recorded in {d / MANIFEST}: the bundle was "
                          f"edited or assembled from two exports; re-export with `{EXPORT_HINT.format(dir=d)}`")
    try:
        return GenieConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{d / CONFIG} does not describe a model this code can build ({exc})") from None


def read_manifest(bundle_dir: str | Path) -> dict:
    d = Path(bundle_dir)
    require(d, (MANIFEST,))
    manifest = json.loads((d / MANIFEST).read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{d / MANIFEST} has format_version {manifest.get('format_version')!r}, this code reads "
                          f"{FORMAT_VERSION}; re-export with `{EXPORT_HINT.format(dir=d)}`")
    return manifest


def write_manifest(bundle_dir: str | Path, **fields) -> dict:
    d = Path(bundle_dir)
    files = sorted(p.name for p in d.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = {"format_version": FORMAT_VERSION, **fields, "files": {name: sha256(d / name) for name in files}}
    (d / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def load_genie(bundle_dir: str | Path):
    """The Genie model of a bundle (weights.safetensors), in eval mode, on the CPU."""
    from safetensors.torch import load_file

    from genie_robot.models.genie import Genie

    d = Path(bundle_dir)
    cfg = read_config(d)
    require(d, (WEIGHTS,))
    genie = Genie(cfg)
    try:
        genie.load_state_dict(load_file(str(d / WEIGHTS)))
    except RuntimeError as exc:
        raise BundleError(f"{d / WEIGHTS} does not fit the model in {d / CONFIG} (preset {cfg.name!r}): {exc}") from None
    return genie.eval()
