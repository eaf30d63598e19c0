"""Which way a latent action moves the picture, measured with optical flow (OpenCV's Farneback).

    move = flow_vector(frame_a_HW3, frame_b_HW3)   # (dx, dy): pixels at the frames' resolution, x right, y down

A move is the mean flow from frame a to frame b over the pixels that move (|flow| > `moving` px),
each weighted by how far it moves: what moved, and which way, with the still background left out;
(0, 0) when nothing moves. Frames are upscaled `upscale` times first, so that sub-pixel moves of a
64x64 frame register.

`action_motion` asks of each latent action rolled out from many start frames (evaluate.latent_action_grid):

    consistency   |mean of the unit moves| over the start frames (the mean resultant length): 1 when
                  the action moves the picture the same way from every start frame; about
                  sqrt(pi / 4N) for N moves in random directions (0.16 for 32)
    agreement     cosine between the action's mean imagined move and the mean real move of the
                  held-out transitions the LAM labels with it: 1 when imagination moves the way the
                  real video does for that action, 0 when it imagines no move at all
    imagined_move / real_move   the mean move (dx, dy) of a step; imagined_px / real_px: the mean
                  length of the moves, pixels per model step

Both are read on the first imagined step, the same span as a real transition; `path_consistency` is
the consistency of the summed moves of all `depth` steps (flow is measured step by step: a large
move in one go defeats it). An action whose real transitions hardly move (the mean of their moves
shorter than `still_px`) is the LAM's "still" action: which way it moves is noise, so it is left out
of the minima and reported by its size instead.
"""

from __future__ import annotations

import numpy as np


def flow_vector(a_HW3: np.ndarray, b_HW3: np.ndarray, *, upscale: int = 4, moving: float = 0.5) -> np.ndarray:
    """uint8 RGB frames a -> b (same size) -> (2,) float: the magnitude-weighted mean flow of the
    pixels that move more than `moving` px, in pixels of the frames' resolution; zeros if none do."""
    import cv2

    a, b = (np.ascontiguousarray(x) for x in (a_HW3, b_HW3))
    if a.shape != b.shape or a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"flow_vector wants two (H, W, 3) frames of one size, got {a.shape} and {b.shape}")
    g = [cv2.resize(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), None, fx=upscale, fy=upscale,
                    interpolation=cv2.INTER_LINEAR) for x in (a, b)]
    flow = cv2.calcOpticalFlowFarneback(g[0], g[1], None, pyr_scale=0.5, levels=3, winsize=15, iterations=3,
                                        poly_n=5, poly_sigma=1.2, flags=0) / upscale
    size = np.linalg.norm(flow, axis=-1)
    w = size * (size > moving)
    if w.sum() == 0:
        return np.zeros(2)
    return (flow * w[..., None]).sum((0, 1)) / w.sum()


def step_moves(frames_THW3: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) frames -> (T-1, 2) the move of each transition t -> t+1."""
    return np.array([flow_vector(frames_THW3[t], frames_THW3[t + 1]) for t in range(len(frames_THW3) - 1)]
                    ).reshape(-1, 2)


def consistency(moves_N2: np.ndarray) -> float:
    """Mean resultant length of the moves' directions: 1 = all the same way; a move of 0 counts as
    no direction (it pulls the mean towards 0)."""
    v = np.asarray(moves_N2, np.float64).reshape(-1, 2)
    if not len(v):
        return float("nan")
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return float(np.linalg.norm(np.where(n > 1e-9, v / np.maximum(n, 1e-9), 0.0).mean(0)))


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    """Cosine of the angle between two moves; NaN if either is 0."""
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    return float(u @ v / (nu * nv)) if nu > 1e-9 and nv > 1e-9 else float("nan")


def grid_moves(grid_BKTHW3: np.ndarray) -> np.ndarray:
    """uint8 (B, K, depth+1, H, W, 3), from B start frames `depth` steps of each of K actions (start
    frame first, as latent_action_grid) -> (B, K, depth, 2) the move of each step."""
    B, K = grid_BKTHW3.shape[:2]
    return np.stack([np.stack([step_moves(grid_BKTHW3[b, k]) for k in range(K)]) for b in range(B)])


def action_motion(moves_BKS2: np.ndarray, real_moves_N2: np.ndarray, real_groups_N: np.ndarray, *,
                  still_px: float = 1.0) -> dict:
    """moves_BKS2: grid_moves of B start frames x K actions x S steps; real_moves_N2: the moves of
    held-out real transitions (step_moves), real_groups_N: the action (0..K-1) the LAM gives each. ->
    metrics for metrics.json:
    per action lists (consistency, path_consistency, agreement, imagined_move and real_move (mean dx, dy
    of a step), imagined_px, real_px, real_transitions),
    the still actions, and the minima over the others (None where there is nothing to measure, e.g. an
    action no real transition has)."""
    steps_BKS2 = np.asarray(moves_BKS2, np.float64)
    B, K, S = steps_BKS2.shape[:3]
    first_BK2 = steps_BKS2[:, :, 0]
    real_groups_N = np.asarray(real_groups_N).reshape(-1)
    real_moves_N2 = np.asarray(real_moves_N2, np.float64).reshape(-1, 2)
    out: dict = {"consistency": [], "path_consistency": [], "agreement": [], "imagined_move": [], "real_move": [],
                 "imagined_px": [], "real_px": [], "real_transitions": [], "still": []}
    for k in range(K):
        real = real_moves_N2[real_groups_N == k]
        real_mean = real.mean(0) if len(real) else np.full(2, np.nan)
        real_px = float(np.linalg.norm(real, axis=1).mean()) if len(real) else float("nan")
        out["consistency"].append(consistency(first_BK2[:, k]))
        out["path_consistency"].append(consistency(steps_BKS2[:, k].sum(1)))
        imagined_mean = first_BK2[:, k].mean(0)
        real_goes = bool(len(real)) and np.linalg.norm(real_mean) > 1e-9
        agree = cosine(imagined_mean, real_mean) if real_goes else float("nan")  # nothing to agree with
        out["agreement"].append(0.0 if real_goes and np.isnan(agree) else agree)  # imagined no move: 0
        out["imagined_move"].append([float(x) for x in imagined_mean])
        out["real_move"].append([float(x) for x in real_mean])
        out["imagined_px"].append(float(np.linalg.norm(steps_BKS2[:, k], axis=-1).mean()))
        out["real_px"].append(real_px)
        out["real_transitions"].append(int(len(real)))
        if len(real) and np.linalg.norm(real_mean) < still_px:
            out["still"].append(k)
    moving = [k for k in range(K) if k not in out["still"] and out["real_transitions"][k] > 0]
    out["starts"], out["steps"] = int(B), int(S)
    out["min_consistency"] = min((out["consistency"][k] for k in moving), default=float("nan"))
    out["min_agreement"] = min((out["agreement"][k] for k in moving), default=float("nan"))
    return {key: _none_for_nan(v) for key, v in out.items()}


def arrow(move) -> str:
    """The nearest of 8 arrows to a move (dx, dy) in image axes (y down): (1, 0) -> '→', (0, -1) -> '↑'."""
    dx, dy = (float(x) for x in move)
    return "→↗↑↖←↙↓↘"[int(np.round(np.arctan2(-dy, dx) / (np.pi / 4))) % 8]


def _none_for_nan(v):
    if isinstance(v, list):
        return [_none_for_nan(x) for x in v]
    return None if isinstance(v, float) and np.isnan(v) else v
