"""Video files (mp4/avi/gif/…, anything OpenCV's FFmpeg backend reads) and folders of PNG/JPEG frames
into the episode store, one episode per path.

Frames are centre-cropped to the target aspect and resized (`images.center_crop_resize`), so videos
of different resolutions can share a store: each is resized on its own. Within one image folder all
frames must share one size (a mismatch is an error, naming the file). Videos are treated as constant
rate (their container fps); an image folder's rate is `source_fps` (default: `fps`), which also
stands in for a video whose header has no rate. With `fps` set, every episode is resampled to it by
taking the nearest earlier frame at each tick. A video's own rate is never overridden: storing its
frames under another rate would make the store's fps a lie (the frames would play slower or faster),
so a store's fps is always what its frames were taken at, resampled or not.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from genie_robot.data.convert import ConversionError, ConversionReport
from genie_robot.data.convert.images import (
    FrameSizeCheck,
    center_crop_resize,
    decode_image,
    natural_key,
    parse_resolution,
)
from genie_robot.data.convert.resample import nearest_earlier
from genie_robot.data.convert.staging import check_output, staged

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def video_fps(path: Path) -> float:
    """Container frame rate of a video file; ConversionError if OpenCV cannot open it."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ConversionError(f"{path}: OpenCV cannot open this as a video")
        return float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()


def source_rate(path: Path, source_fps: float | None) -> float | None:
    """The rate a source's frames were taken at: a video's container fps (`source_fps` only when the
    header has none), an image folder's `source_fps`. None when unknown."""
    if path.is_dir():
        return source_fps
    rate = video_fps(path)
    return rate if rate > 0 and math.isfinite(rate) else source_fps


def _video_frames(path: Path, src_fps: float) -> Iterator[tuple[int, tuple[str, object]]]:
    """(time ns, (where, RGB frame)) for each frame, at the constant container rate."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ConversionError(f"{path}: OpenCV cannot open this as a video")
    try:
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            if bgr.ndim == 2:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
            elif bgr.shape[2] == 4:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
            else:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            yield round(i * 1e9 / src_fps), (f"{path} frame {i}", rgb)
            i += 1
    finally:
        cap.release()


def _folder_frames(files: list[Path], src_fps: float) -> Iterator[tuple[int, tuple[str, object]]]:
    """(time ns, (where, file)) per image; files are decoded only if the resampling keeps them."""
    for i, f in enumerate(files):
        yield round(i * 1e9 / src_fps), (str(f), f)


def read_episode(
    path: str | Path,
    resolution: tuple[int, int],
    *,
    fps: float | None = None,
    source_fps: float | None = None,
) -> np.ndarray:
    """One video file or image folder -> (T, H, W, 3) uint8 at `resolution`, resampled to `fps`."""
    path = Path(path)
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise ConversionError(
                f"{path}: empty episode: no {'/'.join(IMAGE_SUFFIXES)} files in the folder"
            )
        src_fps = source_fps or fps
        if not src_fps:
            raise ConversionError(
                f"{path}: an image folder has no frame rate; pass the rate its frames were taken at with "
                f"--source-fps (source_fps=), or --fps (fps=) to make it the output rate too"
            )
        stream = _folder_frames(files, src_fps)
    elif path.is_file():
        src_fps = source_rate(path, source_fps)
        if not src_fps:
            raise ConversionError(
                f"{path}: the video has no frame rate in its header; pass the rate it was recorded at with "
                f"--source-fps (source_fps=)"
            )
        stream = _video_frames(path, src_fps)
    else:
        raise ConversionError(f"{path}: no such video file or image folder")

    sizes = FrameSizeCheck()
    frames: list[np.ndarray] = []
    last_where, last_small = None, None
    for where, frame in nearest_earlier(stream, fps or src_fps,
                                        last_duration_ns=round(1e9 / src_fps), where=str(path)):
        if where != last_where:  # resampling repeats items: decode and resize each source frame once
            image = decode_image(frame.read_bytes(), where) if isinstance(frame, Path) else frame
            sizes.check(image.shape, where)
            last_where, last_small = where, center_crop_resize(image, resolution)
        frames.append(last_small)
    if not frames:
        raise ConversionError(f"{path}: empty episode: OpenCV decoded no frames from it")
    return np.stack(frames)


def convert_videos(
    paths: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    resolution: int | tuple[int, int] = 64,
    fps: float | None = None,
    source_fps: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionReport:
    """Convert video files and/or image folders into the store at `out`, one episode per path.

    resolution: output size, int (square) or (H, W); each source is centre-cropped to that aspect.
    fps: output rate; episodes are resampled to it (nearest earlier frame). Without it, all
        sources must share one rate (the videos' container fps / `source_fps` for folders).
    source_fps: rate of image folders (default `fps`), and of videos whose header has no rate. A
        video keeps its container rate: to store it at another one, resample it with `fps`.
    """
    t0 = time.perf_counter()
    out = check_output(out, overwrite=overwrite)
    hw = parse_resolution(resolution)
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not paths:
        raise ConversionError("no videos or image folders given")
    for p in paths:
        if not p.exists():
            raise ConversionError(f"{p}: no such video file or image folder")

    rates = {p: source_rate(p, source_fps) for p in paths}
    if source_fps:
        kept = [f"{p}: {r:g}" for p, r in rates.items() if p.is_file() and round(r, 6) != round(source_fps, 6)]
        if kept:
            log.info("videos keep their own frame rate (--source-fps is the rate of image folders): %s; "
                     "%s", ", ".join(kept), f"resampled to {fps:g} fps" if fps else "pass --fps to resample")
    if fps:
        out_fps = float(fps)
    else:
        missing = [str(p) for p, r in rates.items() if not r]
        if missing:
            raise ConversionError(
                f"no frame rate known for {', '.join(missing)} (an image folder, or a video without one in "
                "its header); pass the rate its frames were taken at with --source-fps (source_fps=), and "
                "--fps (fps=) to resample everything to one rate if the videos' own rates differ from it"
            )
        distinct = sorted({round(r, 6) for r in rates.values()})
        if len(distinct) > 1:
            raise ConversionError(
                f"sources have different frame rates: "
                f"{', '.join(f'{p}: {r:g}' for p, r in rates.items())}; "
                "pass --fps (fps=) to resample them all to one rate"
            )
        out_fps = float(distinct[0])
    names = [p.name for p in paths]
    source = "video:" + ",".join(names[:3]) + (f",+{len(names) - 3} more" if len(names) > 3 else "")

    from genie_robot.data.store import Episode, StoreWriter

    report = ConversionReport(out=str(out))
    with staged(out) as tmp, StoreWriter(str(tmp), resolution=hw, fps=out_fps,
                                         source=source) as writer:
        for p in tqdm(paths, desc="videos", unit="ep", disable=not progress):
            rgb = read_episode(p, hw, fps=fps, source_fps=source_fps)
            writer.add_episode(Episode(rgb=rgb))
            report.episodes += 1
            report.frames += len(rgb)
    report.seconds = time.perf_counter() - t0
    log.info("%s: %d episodes, %d frames at %g fps in %.1fs", out, report.episodes, report.frames,
             out_fps, report.seconds)
    return report
