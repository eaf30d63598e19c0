"""Distances between imagined frames and a goal image: what the planner minimises.

Two choices (docs/planning.md explains when to pick which):

- "pixel": mean squared error of RGB in [0, 1] over the whole frame. Dense and smooth: a gripper a
  few pixels closer to where it is in the goal lowers it, so CEM gets a gradient-like signal. Large
  parts (the arm) weigh more than small ones (the block is ~5 px wide at 64x64).
- "token": the fraction of the N tokenizer tokens of the imagined frame that differ from the goal's
  tokens (Hamming distance in token space). It compares what the dynamics model actually predicts (no
  decoder blur), but it is all-or-nothing per token: two visually close codes count as different.

Both are distances: lower is closer, 0 is the goal itself. Shapes: B batch, N tokens, H, W pixels.
"""

from __future__ import annotations

import numpy as np

SCORES = ("pixel", "token")


def check_image(image, what: str, like: np.ndarray | None = None) -> np.ndarray:
    """A single uint8 RGB image (H, W, 3); `like` (another image) fixes the expected size.

    Errors name the problem and the fix (dtype, layout, size)."""
    x = np.asarray(image)
    if x.dtype != np.uint8:
        hint = "; scale floats in [0, 1] with (x * 255).round().astype(np.uint8)" \
            if np.issubdtype(x.dtype, np.floating) else ""
        raise ValueError(f"{what}: expected a uint8 RGB image (H, W, 3), got {x.dtype} {x.shape}{hint}")
    if x.ndim != 3 or x.shape[-1] != 3:
        hint = "; channels first? use x.transpose(1, 2, 0)" if x.ndim == 3 and x.shape[0] == 3 else ""
        raise ValueError(f"{what}: expected a uint8 RGB image (H, W, 3), got shape {x.shape}{hint}")
    if like is not None and x.shape != like.shape:
        raise ValueError(f"{what}: size {x.shape[1]}x{x.shape[0]} differs from the current frame's "
                         f"{like.shape[1]}x{like.shape[0]}; goal and current frame must come from the same "
                         "camera at the same size (resize the goal to the frame's size)")
    return np.ascontiguousarray(x)


def pixel_distance(frames_BHW3: np.ndarray, goal_HW3: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8, (H, W, 3) uint8 -> (B,) float64 mean squared error of RGB in [0, 1]."""
    d = frames_BHW3.astype(np.float32) / 255.0 - goal_HW3.astype(np.float32)[None] / 255.0
    return (d * d).reshape(len(frames_BHW3), -1).mean(1).astype(np.float64)


def token_distance(tokens_BN: np.ndarray, goal_N: np.ndarray) -> np.ndarray:
    """(B, N) int, (N,) int -> (B,) float64 fraction of tokens that differ."""
    return (np.asarray(tokens_BN) != np.asarray(goal_N)[None]).mean(1).astype(np.float64)


def psnr(frames_BHW3: np.ndarray, goal_HW3: np.ndarray) -> np.ndarray:
    """(B,) PSNR in dB of each frame against the goal (for reports: higher is closer)."""
    mse = np.maximum(pixel_distance(frames_BHW3, goal_HW3), 1e-10)
    return 10.0 * np.log10(1.0 / mse)


class GoalScorer:
    """One goal, prepared once for a world model: `scorer(frames_BHW3, tokens_BN) -> (B,)` distances.

    The goal is brought to the model's resolution the way the runtime brings prompts
    (`WorldModel.prepare_frames`: the largest centred crop with the model's aspect, then resized, by
    the converters' `center_crop_resize`); for "token" it is encoded once with the model's tokenizer
    (encoded alone, as frame 0)."""

    def __init__(self, world_model, goal_HW3: np.ndarray, score: str = "pixel"):
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}: use one of {', '.join(SCORES)} (docs/planning.md)")
        self.score = score
        self.goal_HW3 = world_model.prepare_frames(goal_HW3, "goal")[0, 0]
        self.goal_N = world_model.encode(self.goal_HW3)[0, 0] if score == "token" else None

    def __call__(self, frames_BHW3: np.ndarray, tokens_BN: np.ndarray) -> np.ndarray:
        if self.score == "pixel":
            return pixel_distance(frames_BHW3, self.goal_HW3)
        return token_distance(tokens_BN, self.goal_N)
