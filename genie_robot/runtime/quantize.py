"""Reduced-precision ONNX graphs for the CPU runtime: `genie-robot export --precision int8` (issue #16).

What an int8 bundle quantizes, and why (the shipped default model, one AMD EPYC thread with
AVX512-VNNI, batch 1, onnxruntime 1.32; bench/bench_int8.py measures speed and parity):

- `dynamics_step`: every MatMul with a constant weight -- the six blocks' attention projections and
  MLPs and the token head, 95 % of the graph's FLOPs -- through onnxruntime's dynamic quantisation:
  int8 weights, symmetric, one scale per output channel; uint8 activations quantized per tensor at
  run time (fused into DynamicQuantizeMatMul, VNNI u8 x s8 kernels). A MaskGIT pass runs 1.5-1.6x
  faster (6.2 -> 3.9 ms); a frame is 2 x steps + 1 such passes (guidance 2) plus the host's sampling
  and one decoder step, so frames/s rose 1.3-1.6x (on a 2-core machine shared with training runs).
  Per-channel scales: generation PSNR 0.02 dB from fp32 on 32 held-out clips, against 0.11 dB for
  one scale per tensor, at the same speed.
- The attention MatMuls between two activations (q.k, p.v) stay fp32: they are 5 % of the FLOPs,
  and quantizing both operands at run time would cost more than it saves.
- `tokenizer_decoder`, `tokenizer_encoder`, `lam_encoder` stay fp32. They are conv graphs, and
  onnxruntime's int8 convolutions are slower than its fp32 ones here: the decoder took 19 ms with int8
  weights and 4.0 ms with uint8 ones, against 3.3 ms in fp32. The encoders run once per real frame,
  outside the MaskGIT loop, so quantizing them would save nothing and would change the tokens and
  latent actions of real video (tokenizer PSNR is the fp32 one by construction).
- Not offered: bf16 graphs (onnxruntime's CPU provider has no x86 bf16 MatMul kernels; its bf16
  fast-math GEMM is for ARM64) and weight-only MatMulNBits (8-bit, accuracy level 4: 0.93x, slower).

int8 graphs are for the CPU provider: the CUDA provider has no kernel for DynamicQuantizeMatMul, so
onnxruntime would run those nodes on the CPU between GPU nodes. On a GPU, load an fp32 bundle
(onnx_backend warns when an int8 bundle meets the CUDA provider).

The bundle keeps the file names, so the loader needs nothing new: the manifest records `precision`
and, per quantized graph, how it was made (`quantization`); `files` holds the sha256 of the graphs
actually shipped. weights.safetensors stays fp32 (the torch backend runs fp32).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from genie_robot.errors import InputError

from . import bundle

log = logging.getLogger(__name__)

# graph -> the op types quantized in it; graphs not listed stay fp32 (see the module docstring)
INT8_GRAPHS = {"dynamics_step": ("MatMul",)}


class QuantizeError(InputError):
    """A precision this code cannot make, or a bundle that cannot be quantized; the message says what to do."""


def check_precision(precision: str) -> str:
    if precision not in bundle.PRECISIONS:
        raise QuantizeError(f"unknown precision {precision!r}: use one of {', '.join(bundle.PRECISIONS)}")
    return precision


def quantize_graph(src: str | Path, dst: str | Path, op_types: tuple[str, ...] = ("MatMul",)) -> dict:
    """An fp32 graph -> its int8 version at `dst` (onnxruntime.quantization.quantize_dynamic: int8
    symmetric per-channel weights, uint8 dynamic per-tensor activations, constant-weight MatMuls
    only). Returns the manifest record of how it was made."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_quantizer():
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=list(op_types), per_channel=True,
                         reduce_range=False, weight_type=QuantType.QInt8,
                         extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True})
    return {"method": "onnxruntime.quantization.quantize_dynamic", "onnxruntime": ort.__version__,
            "op_types": list(op_types), "weights": "int8, symmetric, per output channel",
            "activations": "uint8, per tensor, quantized at run time", "const_weight_only": True}


def quantize_graphs(bundle_dir: str | Path, precision: str) -> dict:
    """Replace the fp32 graphs of `bundle_dir` (freshly exported, before its manifest is written) by
    their `precision` versions, in place and under the same names. Returns the manifest's
    `quantization` record, {graph file: how it was made}; {} for fp32."""
    d = Path(bundle_dir)
    if check_precision(precision) == "fp32":
        return {}
    record = {}
    for graph, op_types in INT8_GRAPHS.items():
        path = d / f"{graph}.onnx"
        if not path.is_file():
            raise QuantizeError(f"{path} is missing: int8 quantizes the ONNX graphs, so export them too "
                                "(drop --no-onnx)")
        tmp = path.with_name(f".int8-{path.name}")
        try:
            record[path.name] = quantize_graph(path, tmp, op_types)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    log.debug("quantized %s to %s", ", ".join(record), precision)
    return record


@contextlib.contextmanager
def _quiet_quantizer():
    """quantize_dynamic logs one INFO line per tensor and a pre-processing hint on the root logger and
    on onnxruntime's: hold them back unless this module logs at DEBUG."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
