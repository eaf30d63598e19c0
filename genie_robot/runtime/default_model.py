"""The default model that ships with the package, and ONNX graphs made on demand for weight-only bundles.

`genie_robot/assets/default_model/` is a torch-backend bundle (manifest.json, config.json,
weights.safetensors: the `cpu` preset trained on simulator video, see docs/default_model/report.md).
Its ONNX graphs are not committed (they would double the size): the first `WorldModel.load(...,
backend="onnx")` of a weight-only bundle exports them once into the cache, keyed by the weights'
sha256, and later loads reuse them once every cached file still matches the sha256 in the cache's
manifest (a corrupt cache is exported again, with a log line, instead of being served).

    WorldModel.load("default")                  # the shipped model, onnxruntime
    genie-robot play                            # --model default
    genie-world-model-node                      # -p model:=default

Cache: $GENIE_ROBOT_CACHE, else $XDG_CACHE_HOME/genie-robot, else ~/.cache/genie-robot.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from . import bundle

log = logging.getLogger(__name__)

NAME = "default"
ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "default_model"


def resolve(model: str | Path) -> Path:
    """A bundle directory: "default" is the shipped model, anything else a path."""
    if str(model) != NAME:
        return Path(model)
    if not (ASSET_DIR / bundle.WEIGHTS).is_file():
        raise FileNotFoundError(
            f"the default model is missing from this install ({ASSET_DIR / bundle.WEIGHTS}); reinstall genie-robot "
            "from a full checkout (the weights are committed under genie_robot/assets/default_model/), or pass "
            "a bundle of your own made with `genie-robot export`"
        )
    return ASSET_DIR


def cache_root() -> Path:
    if os.environ.get("GENIE_ROBOT_CACHE"):
        return Path(os.environ["GENIE_ROBOT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genie-robot"


def onnx_bundle(bundle_dir: str | Path) -> Path:
    """A bundle with ONNX graphs for the onnx backend, every file checked against its manifest's sha256:
    `bundle_dir` itself if it was exported with graphs; for a weight-only bundle (`--no-onnx`, the
    shipped default model) a bundle with graphs in the cache, exported on first use (about a minute
    for the `cpu` preset on 2 cores) and again if the cached copy is corrupt. A bundle that should
    have graphs but lost or changed one is not repaired: the error names the file."""
    d = Path(bundle_dir)
    manifest = bundle.read_manifest(d)
    if manifest.get("opset") is not None:
        bundle.verify(d, bundle.ONNX_FILES)
        return d
    bundle.require(d, (bundle.CONFIG, bundle.WEIGHTS))
    weights_sha = manifest["files"].get(bundle.WEIGHTS) or bundle.sha256(d / bundle.WEIGHTS)
    out = cache_root() / "onnx" / weights_sha[:16]
    if _complete(out, d):
        return out
    from genie_robot.runtime.export import DEFAULT_OPSET, export_onnx

    log.warning("%s has no ONNX graphs: exporting them once into %s (about a minute on a CPU)", d, out)
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for name in (bundle.CONFIG, bundle.WEIGHTS):
            shutil.copyfile(d / name, tmp / name)
        shapes = export_onnx(bundle.load_genie(d), tmp, DEFAULT_OPSET)
        fields = {k: v for k, v in manifest.items() if k not in ("files", "format_version")}
        fields.update(opset=DEFAULT_OPSET, graphs=shapes, exported_from=str(d.resolve()))
        bundle.write_manifest(tmp, **fields)
        if out.exists():  # another process finished first, or a stale incomplete one: replace it
            shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.warning("exported the ONNX graphs in %.0f s", time.perf_counter() - t0)
    return out


def _complete(out: Path, source: Path) -> bool:
    """An earlier export of the same weights and config, every file intact (sha256 as its manifest says)."""
    if not out.exists():
        return False
    try:
        manifest = bundle.verify(out, bundle.ONNX_FILES + (bundle.CONFIG, bundle.WEIGHTS))
    except (FileNotFoundError, bundle.BundleError, json.JSONDecodeError) as exc:
        log.warning("the ONNX cache %s is incomplete or corrupt (%s): exporting it again", out, exc)
        return False
    return json.loads((source / bundle.CONFIG).read_text()) == manifest.get("config")
