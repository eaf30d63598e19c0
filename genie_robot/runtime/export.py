"""`genie-robot export`: checkpoints -> model bundle (ONNX graphs + safetensors + manifest), optionally
logged to MLflow next to the run that trained the model.

The four ONNX graphs are the single-frame step modules of torch_backend.py, exported with
`torch.onnx.export(..., dynamo=True)` at opset >= 18 with a dynamic batch axis; caches are plain
inputs and the frame's new keys/values plain outputs, so the per-frame cost is constant and the
MaskGIT loop stays on the host (world_model.py).

    genie-robot export --dynamics runs/dynamics --out bundles/cpu
    genie-robot export --dynamics runs/dynamics --tokenizer runs/tokenizer --out bundles/cpu --mlflow
    genie-robot export --dynamics runs/dynamics --out bundles/cpu-int8 --precision int8
    genie-robot export --bundle default --out bundles/default-int8 --precision int8

`--precision int8` ships int8 versions of the graphs that gain from them on a CPU (quantize.py says
which and why) and records the precision in the manifest; `--bundle` makes such a bundle from an
existing fp32 one (the shipped default model has no checkpoints to export from).

The exporter and the onnxscript optimizer log hundreds of lines per graph ("Replaced initializer ...",
"Skipping constant folding ...", torchvision notes) that say nothing to a user: they are held back
(`quiet_exporter`) and shown only when the export fails, or with `--verbose` (logger
genie_robot.runtime.export at DEBUG).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import warnings
from pathlib import Path

from genie_robot.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
# loggers of torch.onnx's dynamo exporter and the ONNX optimizer it runs (onnxscript, onnx_ir)
EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")


class ExportError(InputError):
    """Checkpoints that cannot be exported together; the message says why and what to pass instead."""


def load_checkpoints(dynamics: str, tokenizer: str | None = None, *, ema: bool = True):
    """A Genie from a stage-2 checkpoint, optionally with the tokenizer of a stage-1 one
    (artifacts.checkpoints.load_genie) -> (genie, sources, mlflow_run_id).

    `sources`: {role: {"path", "step", "sha256": {file: hash}, "weights"}} for the manifest."""
    from genie_robot.artifacts import checkpoints as ckpt_io
    from genie_robot.runtime.bundle import sha256

    try:
        genie, used = ckpt_io.load_genie(dynamics, tokenizer, ema=ema)
    except ckpt_io.CheckpointError as exc:
        raise ExportError(str(exc)) from None
    sources = {}
    for role, ck in used.items():
        sources[role] = {"path": str(ck.path.resolve()), "step": ck.step,
                         "sha256": {f.name: sha256(f) for f in sorted(ck.path.glob("*.safetensors"))},
                         "weights": ckpt_io.EMA_WEIGHTS if (ema and ck.ema is not None) else ckpt_io.WEIGHTS}
    sources["dynamics"]["frame_stride"] = genie.cfg.data.frame_stride  # provenance; readers take config.json
    return genie, sources, (used["dynamics"].state or {}).get("mlflow_run_id")


@contextlib.contextmanager
def quiet_exporter(verbose: bool | None = None):
    """Hold back the exporter's log records and warnings; on failure, log the last warnings kept.

    verbose None: quiet unless this module's logger is at DEBUG (`--verbose`)."""
    if verbose is None:
        verbose = log.isEnabledFor(logging.DEBUG)
    if verbose:
        yield
        return
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    keep = Keep(logging.WARNING)
    saved = []
    for name in EXPORTER_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers, logger.propagate = [keep], False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        for record in kept[-20:]:
            log.warning("exporter: %s", record.getMessage())
        raise
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate


def export_onnx(genie, out_dir: str | Path, opset: int = DEFAULT_OPSET, *, verbose: bool | None = None) -> dict:
    """Write the four graphs into `out_dir`; returns {graph: {"inputs": {...}, "outputs": {...}}} shapes.

    verbose: show the exporter's own logging (see `quiet_exporter`)."""
    import torch

    from genie_robot.runtime.graphs import INPUTS, cache_shapes
    from genie_robot.runtime.torch_backend import layer_views, step_modules

    if opset < 18:
        raise ExportError(f"opset {opset} is too old: the dynamo exporter needs opset >= 18")
    cfg = genie.cfg
    B = 2  # example batch > 1, so the exporter does not specialise the batch axis to 1
    t, d = cfg.tokenizer, cfg.dynamics
    H, W = t.resolution
    pos = torch.tensor(3, dtype=torch.long)
    kvs = {g: layer_views(torch.zeros((s[0], s[1], B) + s[3:])) for g, s in cache_shapes(cfg).items()}
    frames = torch.randint(0, 256, (B, H, W, 3), dtype=torch.uint8)
    examples = {
        "tokenizer_encoder": (frames, kvs["tokenizer_encoder"], pos),
        "tokenizer_decoder": (torch.randint(0, d.vocab_size, (B, t.num_tokens)), kvs["tokenizer_decoder"], pos),
        "lam_encoder": (frames, kvs["lam_encoder"], pos),
        "dynamics_step": (torch.randint(0, d.vocab_size, (B, d.num_tokens)), torch.tensor([1, -1]),
                          kvs["dynamics_step"], pos),
    }
    outputs = {"tokenizer_encoder": "tokens", "tokenizer_decoder": "frames", "lam_encoder": "action",
               "dynamics_step": "logits"}
    batch = torch.export.Dim("batch", min=1, max=65536)
    shapes = {}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for graph, module in step_modules(genie).items():
        names = INPUTS[graph]
        layers = len(kvs[graph]) // 2
        dyn = {n: ([{0: batch}] * (2 * layers) if n == "kv" else None if n == "pos" else {0: batch}) for n in names}
        flat_names = [x for n in names for x in ([f"{kv}{l}" for l in range(layers) for kv in "kv"] if n == "kv" else [n])]
        # the exporter's argument names are the forward() parameter names
        params = list(module.forward.__code__.co_varnames[1:len(names) + 1])
        path = Path(out_dir) / f"{graph}.onnx"
        with quiet_exporter(verbose), torch.no_grad():
            program = torch.onnx.export(
                module, examples[graph], dynamo=True, opset_version=opset, verbose=False,
                input_names=flat_names, output_names=[outputs[graph], "new_kv"],
                dynamic_shapes={p: dyn[n] for p, n in zip(params, names)},
            )
            program.save(str(path))
        shapes[graph] = _io_shapes(path)
    return shapes


def _io_shapes(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    elem = {1: "float32", 2: "uint8", 7: "int64"}
    return {
        "inputs": {v.name: {"shape": dims(v), "dtype": elem.get(v.type.tensor_type.elem_type, "?")} for v in model.graph.input},
        "outputs": {v.name: {"shape": dims(v), "dtype": elem.get(v.type.tensor_type.elem_type, "?")} for v in model.graph.output},
    }


def export_bundle(dynamics: str, out: str | Path, *, tokenizer: str | None = None, opset: int = DEFAULT_OPSET,
                  ema: bool = True, onnx: bool = True, overwrite: bool = False,
                  sampling: dict | None = None, precision: str = "fp32") -> tuple[Path, dict, str | None]:
    """Checkpoints -> bundle dir (see bundle.py). Returns (bundle dir, manifest, the source MLflow run id).

    `sampling`: new MaskGIT defaults for the bundle ({"maskgit_steps", "temperature", "order"}); they
    change how frames are drawn, not the weights, and are recorded in the manifest.
    `precision`: of the ONNX graphs, "fp32" or "int8" (quantize.py); recorded in the manifest."""
    import dataclasses

    import onnx as onnx_lib
    import torch

    from genie_robot.models import model_cost
    from genie_robot.models.configs import SAMPLING_FIELDS
    from genie_robot.runtime import bundle, quantize

    _check_precision(precision, onnx)
    genie, sources, run_id = load_checkpoints(dynamics, tokenizer, ema=ema)
    sampling = {k: v for k, v in (sampling or {}).items() if v is not None}
    unknown = set(sampling) - set(SAMPLING_FIELDS)
    if unknown:
        raise ExportError(f"unknown sampling setting(s) {sorted(unknown)}: use {', '.join(SAMPLING_FIELDS)}")
    if sampling:
        try:
            genie.cfg.dynamics = dataclasses.replace(genie.cfg.dynamics, **sampling)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise ExportError(f"{out} already exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        cfg_dict = genie.cfg.to_dict()
        (tmp / bundle.CONFIG).write_text(json.dumps(cfg_dict, indent=2, sort_keys=True))
        bundle.save_weights({k: v.detach().contiguous() for k, v in genie.state_dict().items()}, tmp / bundle.WEIGHTS)
        shapes = export_onnx(genie, tmp, opset) if onnx else {}
        quantization = quantize.quantize_graphs(tmp, precision)
        shapes.update({Path(f).stem: _io_shapes(tmp / f) for f in quantization})
        cost = model_cost(genie.cfg)
        manifest = bundle.write_manifest(
            tmp, config=cfg_dict, preset=genie.cfg.name, opset=opset if onnx else None, graphs=shapes,
            precision=precision, **({"quantization": quantization} if quantization else {}),
            sampling_overrides=sampling,
            sources=sources, mlflow_run_id=run_id, torch_version=torch.__version__, onnx_version=onnx_lib.__version__,
            model_cost={"total_params": cost["total"]["params"], "flops_per_frame": cost["total"]["flops_per_frame"]},
        )
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, manifest, run_id


def export_from_bundle(source: str | Path, out: str | Path, *, precision: str = "int8",
                       overwrite: bool = False) -> tuple[Path, dict, str | None]:
    """An fp32 bundle ("default": the shipped model) -> a bundle with graphs at `precision`, for
    models whose checkpoints are not at hand. A weight-only source gets its fp32 graphs from the
    cache first (default_model.onnx_bundle). Returns (bundle dir, manifest, the source's MLflow run id)."""
    from genie_robot.runtime import bundle, default_model, quantize

    _check_precision(precision, onnx=True)
    src = default_model.resolve(source)
    src_precision = bundle.precision(bundle.read_manifest(src), src)
    if src_precision != "fp32":
        raise ExportError(f"{src} holds {src_precision} graphs already; make the {precision} bundle from an fp32 "
                          "bundle (or from the checkpoints with --dynamics)")
    graphs = default_model.onnx_bundle(src)  # every file checked against its manifest's sha256
    manifest = bundle.verify(graphs, bundle.ONNX_FILES + (bundle.CONFIG, bundle.WEIGHTS))
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise ExportError(f"{out} already exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name in bundle.ONNX_FILES + (bundle.CONFIG, bundle.WEIGHTS):
            shutil.copyfile(graphs / name, tmp / name)
        quantization = quantize.quantize_graphs(tmp, precision)
        keep = {k: v for k, v in manifest.items()
                if k not in ("files", "format_version", "graphs", "precision", "quantization", "exported_from")}
        written = bundle.write_manifest(
            tmp, **keep, graphs={Path(f).stem: _io_shapes(tmp / f) for f in bundle.ONNX_FILES}, precision=precision,
            **({"quantization": quantization} if quantization else {}),
            converted_from={"path": str(src.resolve()), "manifest_sha256": bundle.sha256(src / bundle.MANIFEST)},
        )
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, written, manifest.get("mlflow_run_id")


def _check_precision(precision: str, onnx: bool) -> None:
    from genie_robot.runtime import quantize

    try:
        quantize.check_precision(precision)
    except quantize.QuantizeError as exc:
        raise ExportError(str(exc)) from None
    if precision != "fp32" and not onnx:
        raise ExportError(f"--precision {precision} quantizes the ONNX graphs, and --no-onnx exports none: drop "
                          "--no-onnx, or use --precision fp32 for a torch-backend bundle")


def log_to_mlflow(bundle_dir: str | Path, run_id: str, tracking_uri: str | None = None) -> list[str]:
    """Log each ONNX graph (mlflow.onnx flavour) and the manifest into an existing MLflow run.
    Returns the model URIs."""
    import mlflow
    import onnx

    from genie_robot.artifacts.tracking import default_tracking_uri

    mlflow.set_tracking_uri(tracking_uri or default_tracking_uri())
    d = Path(bundle_dir)
    uris = []
    with mlflow.start_run(run_id=run_id):
        for f in sorted(d.glob("*.onnx")):
            info = mlflow.onnx.log_model(onnx.load(str(f)), name=f.stem)
            uris.append(info.model_uri)
        mlflow.log_artifact(str(d / "manifest.json"), artifact_path="onnx")
    return uris


def run(args: argparse.Namespace) -> int:
    from genie_robot.cli import setup_logging

    setup_logging(others=logging.INFO if args.verbose else logging.WARNING)
    if args.verbose:
        log.setLevel(logging.DEBUG)  # quiet_exporter lets the exporter's own logging through
        logging.getLogger("genie_robot.runtime.quantize").setLevel(logging.DEBUG)  # and the quantizer's

    sampling = {"maskgit_steps": args.maskgit_steps, "temperature": args.temperature, "order": args.order,
                "guidance": args.guidance}
    if args.bundle is not None:
        given = [flag for flag, value in (("--tokenizer", args.tokenizer), ("--no-ema", args.no_ema),
                                          ("--no-onnx", args.no_onnx), ("--opset", args.opset != DEFAULT_OPSET),
                                          *((f"--{k.replace('_', '-')}", v is not None) for k, v in sampling.items()))
                 if value]
        if given:
            raise ExportError(f"{', '.join(given)} change(s) what is exported from checkpoints: use them with "
                              "--dynamics; --bundle only converts a bundle's graphs to another --precision")
        out, manifest, run_id = export_from_bundle(args.bundle, args.out, precision=args.precision,
                                                   overwrite=args.overwrite)
    else:
        out, manifest, run_id = export_bundle(args.dynamics, args.out, tokenizer=args.tokenizer, opset=args.opset,
                                              ema=not args.no_ema, onnx=not args.no_onnx, overwrite=args.overwrite,
                                              sampling=sampling, precision=args.precision)
    print(f"bundle: {out} ({manifest['precision']}; {', '.join(sorted(manifest['files']))})")
    if args.mlflow or args.mlflow_run_id:
        target = args.mlflow_run_id or run_id
        if not target:
            raise ExportError("no MLflow run id stored in the checkpoint; pass --mlflow-run-id")
        for uri in log_to_mlflow(out, target, args.tracking_uri):
            print(f"logged {uri}")
    return 0


def run_cli(args: argparse.Namespace) -> int:
    from genie_robot.cli import run_reporting_errors

    return run_reporting_errors(run, args, "genie-robot export")


def register_cli(subparsers) -> None:
    from genie_robot import cli_flags as flags

    p = subparsers.add_parser("export", help="checkpoints -> model bundle (ONNX + safetensors + manifest)",
                              description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dynamics", help="stage-2 run dir or checkpoint dir (holds tokenizer, LAM, dynamics)")
    src.add_argument("--bundle", default=None,
                     help="an fp32 bundle (or 'default', the shipped model) to convert to --precision instead")
    p.add_argument("--tokenizer", default=None, help="stage-1 run dir or checkpoint: take the tokenizer weights from it")
    flags.add_out(p, "bundle directory to write")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= 18, default {DEFAULT_OPSET})")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights even where EMA weights exist")
    p.add_argument("--no-onnx", action="store_true", help="torch-backend bundle only (skip the ONNX graphs)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle dir")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                   help="precision of the ONNX graphs (default fp32). int8: the dynamics graph's weight MatMuls "
                        "in int8 for CPUs with VNNI, ~1.5x the frames/s (genie_robot/runtime/quantize.py); "
                        "GPUs: keep fp32")
    p.add_argument("--maskgit-steps", type=int, default=None, help="the bundle's default MaskGIT steps")
    p.add_argument("--temperature", type=float, default=None,
                   help="the bundle's default sampling temperature (a briefly trained model draws cleaner "
                        "frames below the paper's 2.0)")
    p.add_argument("--order", default=None, choices=["random", "confidence"], help="the bundle's reveal order")
    p.add_argument("--guidance", type=float, default=None,
                   help="the bundle's classifier-free guidance weight (1 = none; needs a model trained with "
                        "action_dropout; each MaskGIT step then costs two passes)")
    p.add_argument("--mlflow", action="store_true", help="log the ONNX models to the MLflow run stored in the checkpoint")
    p.add_argument("--mlflow-run-id", default=None, help="log the ONNX models to this MLflow run (implies --mlflow)")
    flags.add_mlflow(p, experiment=False)
    p.add_argument("--verbose", action="store_true",
                   help="show the ONNX exporter's and optimizer's own log (hundreds of lines per graph)")
    p.set_defaults(func=run_cli)
