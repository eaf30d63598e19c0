"""Frame rates of mixed videos and image folders (issue #14, item 3): videos keep their own rate,
image folders need --source-fps (the error says so), and a video is never stored under another rate
than its frames were taken at unless it is resampled to it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from genie_robot.cli import main as cli
from genie_robot.data.convert import ConversionError
from genie_robot.data.convert.video import convert_videos
from genie_robot.data.store import EpisodeStore


def _frames(n: int) -> np.ndarray:
    """Frames told apart by a bright square whose place encodes the index (survives mp4 compression)."""
    out = np.full((n, 48, 64, 3), 40, np.uint8)
    for i in range(n):
        y, x = 4 + 12 * (i // 5), 4 + 12 * (i % 5)
        out[i, y : y + 8, x : x + 8] = 250
    return out


def _mp4(path: Path, frames: np.ndarray, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames.shape[2:0:-1])
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _folder(path: Path, frames: np.ndarray) -> Path:
    path.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(path / f"{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture
def sources(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    return (_mp4(clips / "a.mp4", _frames(10), 25), _mp4(clips / "b.mp4", _frames(5), 25),
            _folder(tmp_path / "frames_dir", _frames(6)))


def test_readme_mix_of_videos_and_an_image_folder(tmp_path, sources, capsys):
    a, b, folder = sources
    out = tmp_path / "videos.zarr"
    # The folder has no rate: the error says which flag gives it.
    assert cli(["convert", "video", str(a), str(b), str(folder), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "frames_dir" in err and "--source-fps" in err and not out.exists()
    # Given, at the videos' rate: one store at 25 fps, nothing resampled.
    assert cli(["convert", "video", str(a), str(b), str(folder), "--source-fps", "25", "--out", str(out),
                "--quiet"]) == 0
    store = EpisodeStore.open(str(out))
    assert store.fps == 25 and list(store.episode_lengths) == [10, 5, 6]


def test_source_fps_never_relabels_a_video(tmp_path, sources):
    a, _, folder = sources
    # A 25 fps video with --source-fps 10 stays a 25 fps episode (it used to become "10 fps").
    convert_videos([a], tmp_path / "only.zarr", source_fps=10, progress=False)
    only = EpisodeStore.open(str(tmp_path / "only.zarr"))
    assert only.fps == 25 and only.num_frames == 10
    # Mixed with a 10 fps folder, the rates differ: resampling is the fix the error names.
    with pytest.raises(ConversionError, match=r"different frame rates: .*a.mp4: 25.*frames_dir: 10.*--fps"):
        convert_videos([a, folder], tmp_path / "mixed.zarr", source_fps=10, progress=False)
    convert_videos([a, folder], tmp_path / "mixed.zarr", source_fps=10, fps=10, progress=False)
    mixed = EpisodeStore.open(str(tmp_path / "mixed.zarr"))
    # 10 frames at 25 fps last 0.4 s: 4 frames at 10 fps (video resampled); the folder is already at 10.
    assert mixed.fps == 10 and list(mixed.episode_lengths) == [4, 6]
