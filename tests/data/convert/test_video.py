"""Video / image-folder converter on videos written here from real RT-1 frames: round trips through
mp4, avi, gif and PNG/JPEG folders, natural sort order, fps resampling, and bad-input errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from genie_robot.cli import main as cli_main
from genie_robot.data.convert import ConversionError
from genie_robot.data.convert.images import center_crop_resize
from genie_robot.data.convert.video import convert_videos
from genie_robot.data.store import EpisodeStore

RT1_NPZ = Path("/work/shared/data/real/rt1_fractal_sample.npz")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    if not RT1_NPZ.exists():
        pytest.skip("real RT-1 sample not present")
    full = np.load(RT1_NPZ)["image"]  # (22, 256, 320, 3): real RT-1 camera frames
    return np.stack([cv2.resize(f, (160, 128), interpolation=cv2.INTER_AREA) for f in full])


def _write_video(path: Path, frames: np.ndarray, fps: float, fourcc: str) -> Path:
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc}"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _write_gif(path: Path, frames: np.ndarray, fps: float) -> Path:
    anim = cv2.Animation()
    anim.frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
    anim.durations = [round(1000 / fps)] * len(frames)
    assert cv2.imwriteanimation(str(path), anim)
    return path


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def _reference(frames: np.ndarray, hw=(64, 64)) -> np.ndarray:
    return np.stack([center_crop_resize(f, hw) for f in frames])


def test_mp4_avi_gif_and_folder_round_trip(tmp_path, frames):
    mp4 = _write_video(tmp_path / "a.mp4", frames, 10, "mp4v")
    avi = _write_video(tmp_path / "b.avi", frames[:15], 10, "MJPG")
    gif = _write_gif(tmp_path / "c.gif", frames[:8], 10)
    folder = tmp_path / "d"
    folder.mkdir()
    # Natural order: frame_2 comes before frame_10 (a plain sort would put frame_10 first).
    for i, f in enumerate(frames[:12]):
        params = [] if i % 2 else [cv2.IMWRITE_JPEG_QUALITY, 98]
        cv2.imwrite(str(folder / f"frame_{i}{'.png' if i % 2 else '.jpg'}"),
                    cv2.cvtColor(f, cv2.COLOR_RGB2BGR), params)
    (folder / "notes.txt").write_text("not a frame")

    report = convert_videos([mp4, avi, gif, folder], tmp_path / "out.zarr", source_fps=10, progress=False)
    store = EpisodeStore.open(str(tmp_path / "out.zarr"))
    assert (report.episodes, report.frames) == (4, 22 + 15 + 8 + 12)
    assert list(store.episode_lengths) == [22, 15, 8, 12]
    assert store.fps == 10.0 and store.resolution == (64, 64)
    ref = _reference(frames)
    for i, n, min_psnr in ((0, 22, 28), (1, 15, 30), (2, 8, 20), (3, 12, 35)):  # gif: 256 colours
        got = store.episode(i).rgb
        assert _psnr(got, ref[:n]) > min_psnr, i
        # Order kept, nothing shifted: aligned frames match better than frames shifted by one.
        # (Two of the real frames are nearly identical, so a per-frame argmin would be noise.)
        aligned = _psnr(got[1:], ref[1:n])
        assert aligned > _psnr(got[1:], ref[: n - 1]) + 3 and aligned > _psnr(got[:-1], ref[1:n]) + 3, i
    assert store.frames(0, store.num_frames).reshape(store.num_frames, -1).std(axis=1).min() > 10


def test_fps_resampling_takes_nearest_earlier_frame(tmp_path, frames):
    # Two real frames are nearly identical; a white square whose place encodes the index tells
    # every frame apart.
    frames = frames.copy()
    for i, f in enumerate(frames):
        y, x = 24 + 16 * (i // 6), 24 + 16 * (i % 6)
        f[y : y + 12, x : x + 12] = 255
    mp4 = _write_video(tmp_path / "a.avi", frames, 10, "MJPG")  # 22 frames, 2.2 s
    convert_videos(mp4, tmp_path / "half.zarr", fps=5, progress=False)
    convert_videos(mp4, tmp_path / "third.zarr", fps=3, progress=False)
    convert_videos(mp4, tmp_path / "up.zarr", fps=20, progress=False)
    ref = _reference(frames)
    for name, fps, expected in (
        ("half", 5, list(range(0, 22, 2))),  # ticks 0, .2, .4 s ... -> frames 0, 2, 4, ...
        ("third", 3, [0, 3, 6, 10, 13, 16, 20]),  # tick k/3 s -> frame floor(10 k / 3)
        ("up", 20, [i // 2 for i in range(44)]),  # each frame twice
    ):
        store = EpisodeStore.open(str(tmp_path / f"{name}.zarr"))
        assert store.fps == fps
        got = store.episode(0).rgb
        assert len(got) == len(expected), name
        nearest = [int(np.argmin([np.abs(g.astype(int) - r).mean() for r in ref])) for g in got]
        assert nearest == expected, name


def test_mixed_resolutions_are_each_resized_and_mixed_fps_needs_fps(tmp_path, frames):
    big = _write_video(tmp_path / "big.avi", frames[:5], 10, "MJPG")  # 128x160
    small_frames = np.stack([f[:, 16:144][::2, ::2] for f in frames[:6]])  # 64x64, another camera crop
    small = _write_video(tmp_path / "small.avi", small_frames, 10, "MJPG")
    convert_videos([big, small], tmp_path / "out.zarr", resolution=(48, 48), progress=False)
    store = EpisodeStore.open(str(tmp_path / "out.zarr"))
    assert store.resolution == (48, 48) and list(store.episode_lengths) == [5, 6]
    assert _psnr(store.episode(1).rgb, _reference(small_frames, (48, 48))) > 28

    slow = _write_video(tmp_path / "slow.avi", frames[:5], 5, "MJPG")
    with pytest.raises(ConversionError, match=r"different frame rates: .*big.avi: 10.*slow.avi: 5.*fps="):
        convert_videos([big, slow], tmp_path / "mixed.zarr", progress=False)
    assert not (tmp_path / "mixed.zarr").exists()
    convert_videos([big, slow], tmp_path / "mixed.zarr", fps=5, progress=False)
    assert list(EpisodeStore.open(str(tmp_path / "mixed.zarr")).episode_lengths) == [3, 5]


def test_bad_folders_and_files_name_the_culprit(tmp_path, frames):
    good = tmp_path / "good"
    good.mkdir()
    for i in range(3):
        cv2.imwrite(str(good / f"{i}.png"), frames[i])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "0.png"), frames[0])
    cv2.imwrite(str(mixed / "1.png"), frames[1][:100])
    broken = tmp_path / "broken"
    broken.mkdir()
    cv2.imwrite(str(broken / "0.png"), frames[0])
    (broken / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    empty = tmp_path / "empty"
    empty.mkdir()
    not_video = tmp_path / "clip.mp4"
    not_video.write_bytes(b"definitely not a video")

    cases = [
        (mixed, r"mixed/1.png: frame is 100x160 \(HxW\) but .*mixed/0.png was 128x160"),
        (broken, r"broken/1.png: could not decode image"),
        (empty, r"empty: empty episode"),
        (not_video, r"clip.mp4: OpenCV cannot open this as a video|clip.mp4: empty episode"),
        (tmp_path / "missing.mp4", r"missing.mp4: no such video file"),
    ]
    for bad, message in cases:
        out = tmp_path / "out.zarr"
        with pytest.raises(ConversionError, match=message):
            convert_videos([good, bad], out, fps=10, progress=False)
        assert not out.exists() and not (tmp_path / "out.zarr.partial").exists(), bad

    with pytest.raises(ConversionError, match="no frame rate"):
        convert_videos([good], tmp_path / "out.zarr", progress=False)


def test_cli_convert_video(tmp_path, frames, capsys):
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"img{i:03d}.jpg"), frames[i])
    out = tmp_path / "cli.zarr"
    assert cli_main(["convert", "video", str(folder), "-o", str(out), "--source-fps", "6", "--fps", "3",
                     "--resolution", "32x48", "--quiet"]) == 0
    store = EpisodeStore.open(str(out))
    assert store.resolution == (32, 48) and store.num_frames == 3 and store.fps == 3
    assert "1 episodes, 3 frames" in capsys.readouterr().out
    assert cli_main(["convert", "video", str(folder), "-o", str(out), "--fps", "3", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
