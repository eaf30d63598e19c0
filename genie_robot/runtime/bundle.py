"""Model bundle: the directory `genie-robot export` writes and `WorldModel.load` reads.

    manifest.json            format version, model config, opset, graph input/output shapes,
                             sha256 of the source checkpoints' safetensors files and of every bundle file,
                             precision of the ONNX graphs ("fp32" | "int8", see quantize.py; absent in
                             bundles made before it existed: fp32)
    config.json              GenieConfig.to_dict()
    weights.safetensors      Genie state dict (tokenizer + lam + dynamics): the torch backend
    tokenizer_encoder.onnx, tokenizer_decoder.onnx, lam_encoder.onnx, dynamics_step.onnx: the onnx backend

Readers check that files exist (naming the command that makes them), that every file the manifest
lists still has the sha256 recorded there (`verify`: a flipped bit, a graph copied in from another
export, weights of another model all fail at load, naming the file), and that config, manifest and
weights agree, so a bundle assembled from mismatched parts fails at load, not mid-rollout. Hashing
costs ~0.1 s per 40 MB, once per load.

Bundle files are written with the permissions of any other file (umask): `save_weights` (also the
trainer's checkpoint writer) undoes safetensors' private 0600, so another user (a ROS service
account) can load a bundle or checkpoint it can list.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from genie_robot.errors import InputError

MANIFEST = "manifest.json"
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
FORMAT_VERSION = 1
ONNX_FILES = ("tokenizer_encoder.onnx", "tokenizer_decoder.onnx", "lam_encoder.onnx", "dynamics_step.onnx")
EXPORT_HINT = "genie-robot export --dynamics runs/dynamics --out {dir}"
PRECISIONS = ("fp32", "int8")  # of the ONNX graphs; weights.safetensors is always fp32


class BundleError(InputError):
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


def verify(bundle_dir: str | Path, needed: tuple[str, ...] | list[str] = ()) -> dict:
    """Check every file the manifest lists against its recorded sha256 -> the manifest.

    `needed`: the files the caller is about to use. They must exist (FileNotFoundError naming the
    file) and be listed (a file the manifest does not know cannot be checked); a listed file the
    caller does not need may be absent (the torch backend loads a bundle without its graphs). Any
    listed file that is there and differs is a BundleError naming it and the command that re-exports."""
    d = Path(bundle_dir)
    manifest = read_manifest(d)
    files = manifest.get("files") or {}
    require(d, needed)
    fix = f"re-export the bundle with `{EXPORT_HINT.format(dir=d)}`"
    for name in needed:
        if name not in files:
            raise BundleError(f"{d / name} is not listed in {d / MANIFEST}, so it cannot be checked: the bundle "
                              f"was assembled by hand or from two exports; {fix}")
    for name, want in sorted(files.items()):
        if (d / name).is_file() and sha256(d / name) != want:
            raise BundleError(f"{d / name} does not match the sha256 recorded in {d / MANIFEST}: the file is "
                              f"corrupt, was edited, or comes from another export; {fix}")
    return manifest


def save_weights(tensors: dict, path: str | Path) -> None:
    """Tensors (CPU, contiguous, no shared storage) -> a safetensors file with the permissions of any
    other new file (0666 less the umask), where safetensors.torch.save_file alone makes it 0600. The
    one weight writer of bundles and training checkpoints; streams to disk (no copy in memory)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask sets it, for a moment,
    for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_config(bundle_dir: str | Path):
    """GenieConfig of a bundle, checked against the manifest's copy. A bundle exported before the model
    config recorded its data facts (`data`: frame stride, fps, split) gets its frame stride from the
    manifest, where exports of that time kept it (fps unknown, the trainer's default split)."""
    from genie_robot.models.configs import GenieConfig

    d = Path(bundle_dir)
    require(d, (MANIFEST, CONFIG))
    manifest = read_manifest(d)
    config = json.loads((d / CONFIG).read_text())
    if manifest.get("config") != config:
        raise BundleError(f"{d / CONFIG} differs from the config recorded in {d / MANIFEST}: the bundle was "
                          f"edited or assembled from two exports; re-export with `{EXPORT_HINT.format(dir=d)}`")
    if "data" not in config:
        config = {**config, "data": {"frame_stride": int(manifest.get("frame_stride", 1))}}
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


def precision(manifest: dict, bundle_dir: str | Path = "") -> str:
    """The precision of a bundle's ONNX graphs, from its manifest ("fp32" when not recorded)."""
    value = manifest.get("precision", "fp32")
    if value not in PRECISIONS:
        d = Path(bundle_dir)
        raise BundleError(f"{d / MANIFEST} records precision {value!r}, this code runs {', '.join(PRECISIONS)}; "
                          f"re-export with `{EXPORT_HINT.format(dir=d)} --precision fp32` (or int8)")
    return value


def write_manifest(bundle_dir: str | Path, **fields) -> dict:
    d = Path(bundle_dir)
    files = sorted(p.name for p in d.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = {"format_version": FORMAT_VERSION, **fields, "files": {name: sha256(d / name) for name in files}}
    (d / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def load_genie(bundle_dir: str | Path):
    """The Genie model of a bundle (weights.safetensors, checked against the manifest), in eval mode,
    on the CPU."""
    from safetensors.torch import load_file

    from genie_robot.models.genie import Genie

    d = Path(bundle_dir)
    cfg = read_config(d)
    require(d, (WEIGHTS,))
    verify(d, (CONFIG, WEIGHTS))
    genie = Genie(cfg)
    try:
        genie.load_state_dict(load_file(str(d / WEIGHTS)))
    except RuntimeError as exc:
        raise BundleError(f"{d / WEIGHTS} does not fit the model in {d / CONFIG} (preset {cfg.name!r}): {exc}") from None
    return genie.eval()
