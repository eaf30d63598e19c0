"""Pictures logged while training: tokenizer reconstruction grids and dynamics rollout GIFs.

Each function takes the model and a few held-out windows (uint8 (B, T, H, W, 3)), writes files under
`out_dir` and returns their paths; train.py logs them as MLflow artifacts under `samples/`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

MAX_FRAMES = 8  # columns of a grid
MIN_SIZE = 96  # frames are enlarged (nearest) to at least this many pixels so that 16x16 stays legible


def _scale(frames_BTHW3: torch.Tensor) -> int:
    return max(1, -(-MIN_SIZE // min(frames_BTHW3.shape[2:4])))


@torch.no_grad()
def tokenizer_preview(tokenizer, frames_BTHW3: torch.Tensor, out_dir: Path, step: int) -> list[Path]:
    """Grid: for each window, its frames (row 'real i') above their reconstruction (row 'recon i')."""
    from genie_robot.data.preview import frame_grid, save_image

    recon = tokenizer.decode(tokenizer.encode(frames_BTHW3))
    rows, labels = [], []
    for i in range(frames_BTHW3.shape[0]):
        rows += [frames_BTHW3[i, :MAX_FRAMES].cpu().numpy(), recon[i, :MAX_FRAMES].cpu().numpy()]
        labels += [f"real {i}", f"recon {i}"]
    path = Path(out_dir) / f"recon_{step:08d}.png"
    save_image(frame_grid(rows, labels=labels, scale=_scale(frames_BTHW3)), path)
    return [path]


@torch.no_grad()
def rollout_with_inferred_actions(genie, clip_BTHW3: torch.Tensor, context: int, seed: int = 0) -> torch.Tensor:
    """Prompt with the first `context` frames, then generate the rest with the latent actions the LAM
    infers from the real clip -> uint8 (B, T, H, W, 3) (prompt frames as given, then generated ones)."""
    from genie_robot.runtime.world_model import WorldModel

    actions_BTm1 = genie.lam.infer_actions(clip_BTHW3).cpu().numpy()
    clip = clip_BTHW3.cpu().numpy()
    was_training = genie.training
    try:
        wm = WorldModel.from_genie(genie, seed=seed)
        state = wm.reset(clip[:, :context], prompt_actions_BTm1=actions_BTm1[:, : context - 1])
        frames = [clip[:, t] for t in range(context)]
        frames += [wm.step(state, actions_BTm1[:, t - 1]) for t in range(context, clip.shape[1])]
    finally:
        genie.train(was_training)
    return torch.from_numpy(np.stack(frames, axis=1))


@torch.no_grad()
def rollout_preview(genie, frames_BTHW3: torch.Tensor, out_dir: Path, step: int, context: int = 2) -> list[Path]:
    """Rollout from `context` real frames, driven by the latent actions the LAM infers from the real
    clip: a GIF with real (top) and generated (bottom) frames side by side, and the same as a grid."""
    from genie_robot.data.preview import enlarge, frame_grid, save_gif, save_image

    B, T = frames_BTHW3.shape[:2]
    horizon = min(T, MAX_FRAMES)
    clip = frames_BTHW3[:, :horizon]
    generated = rollout_with_inferred_actions(genie, clip, context=min(context, horizon - 1))
    real, fake = clip.cpu().numpy(), generated.cpu().numpy()
    out_dir = Path(out_dir)
    grid_path = out_dir / f"rollout_{step:08d}.png"
    rows, labels = [], []
    for i in range(B):
        rows += [real[i], fake[i]]
        labels += [f"real {i}", f"gen {i}"]
    save_image(frame_grid(rows, labels=labels, scale=_scale(frames_BTHW3)), grid_path)
    # GIF: one frame per time step, real windows on top and generated ones below.
    pad = np.full_like(real[:, :, :, :2], 32)
    top = np.concatenate([np.concatenate([real[i], pad[i]], axis=2) for i in range(B)], axis=2)
    bottom = np.concatenate([np.concatenate([fake[i], pad[i]], axis=2) for i in range(B)], axis=2)
    movie = np.concatenate([top, np.full_like(top[:, :2], 32), bottom], axis=1)
    movie = enlarge(movie, _scale(frames_BTHW3))
    gif_path = out_dir / f"rollout_{step:08d}.gif"
    save_gif(movie, gif_path, fps=4)
    return [grid_path, gif_path]


@torch.no_grad()
def lam_preview(lam, frames_BTHW3: torch.Tensor, out_dir: Path, step: int) -> list[Path]:
    """Grid: per held-out window, the real x_t, x_t+1 and the LAM decoder's x_t+1 for each of the |A|
    actions from x_t (column 'a k'): each column should move the arm one way (conv LAM only)."""
    from genie_robot.data.preview import frame_grid, save_image

    if not hasattr(lam, "predict_next"):
        return []
    starts = frames_BTHW3[:, 0]
    A = lam.cfg.num_actions
    rows, labels = [], []
    inferred = lam.infer_actions(frames_BTHW3[:, :2])[:, 0].tolist()
    for i in range(starts.shape[0]):
        preds = lam.predict_next(starts[i : i + 1].repeat(A, 1, 1, 1), torch.arange(A, device=starts.device))
        row = torch.cat([frames_BTHW3[i, :2], preds]).cpu().numpy()
        rows.append(row)
        labels.append(f"real x_t, x_t+1 (a {inferred[i]}) | a 0..{A - 1}")
    path = Path(out_dir) / f"lam_{step:08d}.png"
    save_image(frame_grid(rows, labels=labels, scale=_scale(frames_BTHW3)), path)
    return [path]
