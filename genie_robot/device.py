"""The one place that picks where things run: torch device, autocast dtype, ONNX execution providers.

Everything else asks here, so that a GPU is used automatically when present and CPU-only machines
need no flags.
"""

from __future__ import annotations

import contextlib
import os

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """`requested` is "cuda", "cuda:1", "cpu" or None/"auto" (CUDA when available, else CPU)."""
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {requested!r} asked for but torch sees no CUDA GPU "
            f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch"
        )
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA GPUs that support it; None (plain fp32) elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device):
    """Context manager: bf16 autocast on CUDA, a no-op on CPU. Norms and losses stay fp32 under it."""
    dtype = autocast_dtype(device)
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
            raise RuntimeError(
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


def configure_cpu_threads(num_threads: int | None = None) -> int:
    """Use every core for intra-op work unless told otherwise (torch defaults can undercount in containers)."""
    n = num_threads or int(os.environ.get("GENIE_NUM_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n
