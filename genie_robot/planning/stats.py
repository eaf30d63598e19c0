"""Small statistics for experiment reports: means with bootstrap confidence intervals and Wilson
intervals for success rates. Plain numpy, seeded, so a report is reproducible."""

from __future__ import annotations

import math

import numpy as np


def mean_ci(x, *, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap interval of the mean; (nan, nan, nan) for no data."""
    x = np.asarray(x, np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (resamples, x.size))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(x.mean()), float(lo), float(hi)


def wilson(successes: int, n: int, *, z: float = 1.959964) -> tuple[float, float, float]:
    """(rate, low, high): Wilson score interval of a success rate (good at 0 and 1, small n)."""
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    p = successes / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return p, max(0.0, centre - half), min(1.0, centre + half)


def fmt_ci(m: tuple[float, float, float], digits: int = 4, scale: float = 1.0) -> str:
    """'0.0123 [0.0101, 0.0150]' for a (mean, low, high) triple."""
    if not np.isfinite(m[0]):
        return "n/a"
    return f"{m[0] * scale:.{digits}f} [{m[1] * scale:.{digits}f}, {m[2] * scale:.{digits}f}]"
