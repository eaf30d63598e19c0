"""What the latent actions mean: code usage and agreement with the robot's ground-truth actions.

Ground-truth actions are used here for evaluation only (the LAM never sees them). They are
discretised into motion classes so they can be compared with the LAM's discrete codes:

    xyz = action[:3] (end-effector displacement command, in [-1, 1] for the simulator's Fetch arm)
    motion = "still"                          if max |xyz| < still
           = "+x" / "-x" / "+y" / ... / "-z"  else: the dominant axis and its sign
    gripper = "open" (action[3] > grip), "close" (action[3] < -grip), "" otherwise
    class = motion + gripper                  (up to 7 x 3 = 21 classes)

ground-truth action[t] is applied after frame t, so it labels the transition x_t -> x_{t+1}, the
same transition as latent action [:, t].

NMI(codes, classes) = I(C; G) / mean(H(C), H(G)) (the arithmetic normalisation, sklearn's default):
0 when the codes say nothing about the robot's motion, 1 when they determine it and vice versa. A
constant labelling carries no information, so its NMI with anything is 0 (sklearn says 1.0 when both
are constant, which would score a collapsed LAM on a still robot as perfect).
"""

from __future__ import annotations

import numpy as np

AXES = "xyz"


def code_usage(actions: np.ndarray, num_actions: int) -> np.ndarray:
    """Latent actions (any shape, ints in [0, num_actions)) -> (num_actions,) fraction of each code."""
    a = np.asarray(actions).reshape(-1).astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= num_actions):
        raise ValueError(f"latent actions must lie in [0, {num_actions}), got [{a.min()}, {a.max()}]")
    counts = np.bincount(a, minlength=num_actions).astype(np.float64)
    return counts / max(a.size, 1)


def perplexity(usage: np.ndarray) -> float:
    """exp(entropy) of a usage distribution: the effective number of codes in use."""
    p = np.asarray(usage, np.float64)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum())) if p.size else 0.0


def discretise_actions(action_NA: np.ndarray, *, still: float = 0.1, grip: float = 0.1) -> np.ndarray:
    """Ground-truth actions (N, A>=3), A = 4 with a gripper command -> (N,) class names (see module doc)."""
    a = np.asarray(action_NA, np.float64)
    if a.ndim != 2 or a.shape[1] < 3:
        raise ValueError(f"expected ground-truth actions (N, A >= 3) with an xyz displacement first, got {a.shape}")
    xyz = a[:, :3]
    axis = np.abs(xyz).argmax(1)
    mag = np.abs(xyz).max(1)
    sign = np.where(xyz[np.arange(len(a)), axis] >= 0, "+", "-")
    motion = np.where(mag < still, "still", np.char.add(sign, np.array(list(AXES))[axis]))
    if a.shape[1] >= 4:
        g = a[:, 3]
        gripper = np.where(g > grip, " open", np.where(g < -grip, " close", ""))
        motion = np.char.add(motion, gripper)
    return motion.astype(str)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def contingency(codes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(table (C, G) of counts, code values (C,), label values (G,)) over paired samples."""
    codes, labels = np.asarray(codes).reshape(-1), np.asarray(labels).reshape(-1)
    if codes.shape != labels.shape:
        raise ValueError(f"codes and labels must pair up, got {codes.shape} and {labels.shape}")
    cv, ci = np.unique(codes, return_inverse=True)
    lv, li = np.unique(labels, return_inverse=True)
    table = np.zeros((len(cv), len(lv)), np.float64)
    np.add.at(table, (ci, li), 1)
    return table, cv, lv


def normalized_mutual_information(codes: np.ndarray, labels: np.ndarray) -> float:
    """NMI between two paired discrete labellings (any hashable values), arithmetic normalisation.
    0.0 when either labelling is constant (one value only): it can agree with nothing."""
    table, _, _ = contingency(codes, labels)
    n = table.sum()
    if n == 0:
        raise ValueError("NMI of no samples")
    h_c, h_g = _entropy(table.sum(1)), _entropy(table.sum(0))
    if h_c == 0 or h_g == 0:
        return 0.0
    pxy = table / n
    outer = np.outer(table.sum(1), table.sum(0)) / n**2
    nz = pxy > 0
    mi = float((pxy[nz] * np.log(pxy[nz] / outer[nz])).sum())
    return max(0.0, mi / ((h_c + h_g) / 2))


# ---------------------------------------------------------------- FSQ actions read as directions
# An FSQ code with an even number of levels per dim has no zero level: each dim says which way
# (the sign of its value) and how far. The signs alone are a direction: with levels (4, 4, 4), 64
# actions read as 2^3 = 8 directions, each with 2 x 2 x 2 magnitudes. Read from the code values
# themselves (the LAM's `action_embeddings()`, FSQ.embeddings: (V, D) in [-1, 1], in code order), so
# the code order is the quantizer's. Direction d sets bit D-1-i when dim i is positive.


def has_directions(levels) -> bool:
    """Whether FSQ `levels` read as directions: every dim has an even number of levels, and more than
    two somewhere (with levels of 2 only, each code already is a direction)."""
    levels = () if levels is None else tuple(int(n) for n in levels)
    return bool(levels) and all(n % 2 == 0 for n in levels) and max(levels) > 2


def code_directions(values_VD: np.ndarray) -> np.ndarray:
    """(V, D) code values, none zero -> (V,) direction of each code in [0, 2^D)."""
    v = np.asarray(values_VD, np.float64)
    if np.any(v == 0):
        raise ValueError("a code value of 0 has no sign: FSQ levels must all be even to read as directions")
    return ((v > 0) * (1 << np.arange(v.shape[1])[::-1])).sum(1)


def direction_corners(values_VD: np.ndarray) -> list[int]:
    """The code of each direction's corner (every dim at +-1, its extreme level), in direction order:
    the largest move the LAM can say in that direction."""
    v = np.asarray(values_VD, np.float64)
    corner = np.flatnonzero(np.all(np.abs(v) == 1.0, axis=1))
    return [int(c) for c in corner[np.argsort(code_directions(v[corner]))]]


def direction_name(direction: int, dims: int) -> str:
    """'+-+': the sign of each dim, first dim first."""
    return "".join("+" if (direction >> (dims - 1 - d)) & 1 else "-" for d in range(dims))
