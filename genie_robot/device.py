"""The one place that picks where things run: torch device, autocast dtype, ONNX execution providers.

Everything else asks here, so that a GPU is used automatically when present and CPU-only machines
need no flags. torch is imported by the functions that use it: the onnxruntime runtime asks here for
its providers and must run where torch is not installed.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from genie_robot.errors import SetupError

if TYPE_CHECKING:
    import torch


def pick_device(requested: str | None = None) -> torch.device:
    """`requested` is "cuda", "cuda:1", "cpu" or None/"auto" (CUDA when available, else CPU)."""
    import torch

    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SetupError(
            f"device {requested!r} asked for but torch sees no CUDA GPU "
            f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch"
        )
    return device


def native_bf16(device: torch.device) -> bool:
    """Does `device` multiply bf16 matrices in hardware? CUDA GPUs with bf16; CPUs with AVX512-BF16 or
    AMX (where bf16 matmuls run 3-5x faster than fp32: 377 vs 64 GFLOP/s on one EPYC core)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for training on `device`: bf16 for "bf16", or for "auto" where the device
    multiplies bf16 natively; None (plain fp32) for "fp32" or elsewhere."""
    import torch

    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None


def autocast(device: torch.device, precision: str = "auto"):
    """Context manager: bf16 autocast per `autocast_dtype`, else a no-op. Under it the matmuls run in
    bf16 while norms, softmax and losses stay fp32; on CPU the attention kernel stays fp32 too
    (st_transformer.attention: bf16 flash attention's backward is slower there than fp32)."""
    import torch

    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def onnx_providers(requested: str | list[str] | None = None) -> list[str]:
    """ONNX Runtime execution providers to ask for, best first.

    `requested`: None/"auto" (CUDA when onnxruntime-gpu offers it, else CPU), "cpu", "cuda", or an
    explicit list of provider names.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if isinstance(requested, list):
        missing = [p for p in requested if p not in available]
        if missing:
            raise SetupError(
                f"ONNX Runtime providers {missing} not available (have {available}); "
                "install onnxruntime-gpu (pip install 'genie-robot[gpu]') for CUDAExecutionProvider"
            )
        return requested
    if requested in (None, "", "auto"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]
    if requested == "cpu":
        return ["CPUExecutionProvider"]
    if requested == "cuda":
        return onnx_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])
    raise ValueError(f"unknown provider choice {requested!r}: use auto, cpu, cuda or a list of names")


def cpu_threads(requested: int | None = None, *, share: int = 1) -> int:
    """The one rule for CPU threads, torch and onnxruntime alike: `requested` (a --threads flag, a node
    parameter) when > 0, else $GENIE_NUM_THREADS, else every core divided among `share` processes on
    this host (torch and onnxruntime defaults can undercount in containers)."""
    return (requested or 0) if (requested or 0) > 0 else (
        int(os.environ.get("GENIE_NUM_THREADS", "0")) or max(1, (os.cpu_count() or 1) // share))


def configure_cpu_threads(num_threads: int | None = None, *, share: int = 1) -> int:
    """Set torch's intra-op threads by `cpu_threads` -> the number set."""
    import torch

    n = cpu_threads(num_threads, share=share)
    torch.set_num_threads(n)
    return n
