"""Pictures of frames: labelled grids (rows x time) and GIFs, shared by `genie-robot info`, eval and play.

Everything takes and returns uint8 RGB, channels last; files are written with the right colour order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

BACKGROUND = 32  # grey of padding and the label column


def _as_frames(x: np.ndarray, what: str, ndim: int) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != ndim or x.shape[-1] != 3:
        dims = "(R, C, H, W, 3)" if ndim == 5 else "(T, H, W, 3)"
        raise ValueError(f"{what}: expected uint8 frames {dims}, got {x.dtype} with shape {x.shape}")
    return x


def enlarge(frames: np.ndarray, scale: int) -> np.ndarray:
    """Frames (..., H, W, 3) enlarged `scale` times, nearest neighbour (pixels stay sharp)."""
    return frames if scale <= 1 else frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


def frame_grid(
    frames_RCHW3: np.ndarray | Sequence[np.ndarray],
    *,
    labels: Sequence[str] | None = None,
    pad: int = 2,
    scale: int = 1,
) -> np.ndarray:
    """(R, C, H, W, 3) uint8 -> one (H', W', 3) uint8 RGB image: row r holds frames_RCHW3[r] left to
    right, rows optionally labelled in a column on the left. `scale` enlarges frames (nearest) so
    small frames stay legible. A list of (C, H, W, 3) rows with different C is padded with grey."""
    if isinstance(frames_RCHW3, np.ndarray):
        rows = list(_as_frames(frames_RCHW3, "frame_grid", 5))
    else:
        rows = [_as_frames(r, f"frame_grid row {i}", 4) for i, r in enumerate(frames_RCHW3)]
    if not rows:
        raise ValueError("frame_grid: no rows")
    h, w = rows[0].shape[1:3]
    if any(r.shape[1:3] != (h, w) for r in rows):
        raise ValueError(
            f"frame_grid: all frames must share one size, got {sorted({r.shape[1:3] for r in rows})}"
        )
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"frame_grid: {len(labels)} labels for {len(rows)} rows")
    h, w = h * scale, w * scale
    cols = max(len(r) for r in rows)

    label_w = 0
    if labels is not None:
        import cv2

        label_w = max(cv2.getTextSize(str(s), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] for s in labels) + 8
    grid = np.full(
        (pad + len(rows) * (h + pad), label_w + pad + cols * (w + pad), 3), BACKGROUND, dtype=np.uint8
    )
    for r, row in enumerate(rows):
        y = pad + r * (h + pad)
        for c, frame in enumerate(row):
            frame = enlarge(frame, scale)
            x = label_w + pad + c * (w + pad)
            grid[y : y + h, x : x + w] = frame
        if labels is not None:
            import cv2

            cv2.putText(
                grid,
                str(labels[r]),
                (4, y + h // 2 + 4),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4,
                (235, 235, 235),
                1,
                cv2.LINE_AA,
            )
    return grid


def save_image(image_HW3: np.ndarray, path: str | Path) -> None:
    """Writes an RGB uint8 image (png, jpg, ... by extension)."""
    import cv2

    image_HW3 = np.asarray(image_HW3)
    if image_HW3.dtype != np.uint8 or image_HW3.ndim != 3 or image_HW3.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image_HW3.dtype} {image_HW3.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image_HW3[..., ::-1])):
        raise OSError(f"could not write {path}; use an image extension such as .png or .jpg")


def save_gif(frames_THW3: np.ndarray, path: str | Path, fps: float = 10.0) -> None:
    """Writes (T, H, W, 3) uint8 RGB frames as a looping GIF at `fps` frames per second."""
    import imageio.v3 as iio

    frames_THW3 = _as_frames(frames_THW3, "save_gif", 4)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(str(path), frames_THW3, extension=".gif", duration=1000.0 / fps, loop=0)


def side_by_side_movie(videos: list[np.ndarray], scale: int = 1, pad: int = 2,
                       labels: Sequence[str] | None = None) -> np.ndarray:
    """list of K (B, T, H, W, 3) uint8 -> (T, H', W', 3): columns = the K videos, rows = the B clips,
    optionally a caption over each column (drawn after upscaling, so it stays legible)."""
    B, T, H, W, _ = videos[0].shape
    canvas = np.full((T, pad + B * (H + pad), pad + len(videos) * (W + pad), 3), 32, np.uint8)
    for k, v in enumerate(videos):
        for b in range(B):
            y, x = pad + b * (H + pad), pad + k * (W + pad)
            canvas[:, y : y + H, x : x + W] = v[b]
    canvas = enlarge(canvas, scale)
    if labels is None:
        return canvas
    import cv2

    if len(labels) != len(videos):
        raise ValueError(f"side_by_side_movie: {len(labels)} labels for {len(videos)} videos")
    bar = np.full((T, 18, canvas.shape[2], 3), 32, np.uint8)
    for k, text in enumerate(labels):
        cv2.putText(bar[0], str(text), ((pad + k * (W + pad)) * scale + 2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (235, 235, 235), 1, cv2.LINE_AA)
    bar[1:] = bar[0]
    return np.concatenate([bar, canvas], axis=1)


def store_preview(store, *, episodes: int = 4, frames: int = 8, min_size: int = 96) -> np.ndarray:
    """A grid from an EpisodeStore: `episodes` episodes spread over the store (rows), each shown as
    `frames` frames spread over its duration (columns), rows labelled 'ep i, T f'."""
    if store.num_episodes == 0:
        raise ValueError(f"{store.path} has no episodes to preview")
    picked = np.unique(
        np.linspace(0, store.num_episodes - 1, min(episodes, store.num_episodes)).round().astype(int)
    )
    rows, labels = [], []
    for e in picked:
        start, end = store.episode_bounds(int(e))
        t = np.unique(np.linspace(start, end - 1, min(frames, end - start)).round().astype(int))
        rows.append(np.stack([store.frames(int(i), int(i) + 1)[0] for i in t]))  # checked reads
        labels.append(f"ep {e}, {end - start} f")
    scale = max(1, -(-min_size // min(store.resolution)))
    return frame_grid(rows, labels=labels, scale=scale)
