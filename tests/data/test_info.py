"""`genie-robot info` and the preview helpers (frame_grid, save_gif)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from genie_robot.data import info
from genie_robot.data.preview import frame_grid, save_gif, store_preview
from genie_robot.data.store import EpisodeStore, StoreWriter

ROOT = Path(__file__).resolve().parents[2]


def run_info(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    info.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["info", *argv])
    return args.func(args)


def test_info_prints_the_summary(tiny_store, capsys):
    path = tiny_store(
        episodes=[5, 9, 4], resolution=(12, 10), action_dim=3, state_dim=2, fps=15, source="sim-fetch"
    )
    assert run_info([path]) == 0
    out = capsys.readouterr().out
    fields = {k.strip(): v.strip() for k, v in (line.split("  ", 1) for line in out.splitlines())}
    assert fields["episodes"] == "3"
    assert fields["frames"].startswith("18 ")
    assert fields["resolution"] == "12 x 10 (H x W)"
    assert fields["fps"] == "15" and fields["source"] == "sim-fetch" and fields["camera"] == "rgb"
    assert fields["action dim"] == "3" and fields["state dim"] == "2"
    assert fields["episode length"] == "min 4, median 5, mean 6.0, max 9 frames"
    assert fields["instructions"] == "2 episodes, 2 distinct"
    assert fields["disk size"].endswith("KiB")


def test_describe_disk_size_matches_files(tiny_store):
    path = tiny_store(episodes=2)
    d = info.describe(EpisodeStore.open(path))
    on_disk = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    assert d["disk_bytes"] == on_disk and d["complete"] is True


def test_info_on_incomplete_store(tmp_path, tiny_episode, capsys):
    path = str(tmp_path / "s.zarr")
    w = StoreWriter(path, resolution=(16, 16), fps=10, source="t", action_dim=2)
    w.add_episode(tiny_episode(0, 4))
    assert run_info([path]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genie-robot info: error: ") and "Traceback" not in err
    # the fix is named as a command-line user types it, not only as a Python argument (#14 item 15)
    assert "`genie-robot info --allow-incomplete`" in err and "`genie-robot simulate --resume`" in err
    assert run_info([path, "--allow-incomplete"]) == 0
    assert "INCOMPLETE" in capsys.readouterr().out


def test_info_preview_grid(tiny_store, tmp_path, capsys):
    path = tiny_store(episodes=[6, 9, 7, 8, 10], resolution=(16, 16))
    out = tmp_path / "p" / "preview.png"
    assert run_info([path, "--preview", str(out), "--episodes", "3", "--frames", "4"]) == 0
    image = cv2.imread(str(out))[..., ::-1]
    store = EpisodeStore.open(path)
    expected = store_preview(store, episodes=3, frames=4)
    np.testing.assert_array_equal(image, expected)  # png is lossless
    # Rows are episodes 0, 2, 4 (spread over the store); columns spread over each episode's frames.
    scale, pad = 6, 2  # frames scaled to >= 96 px
    label_w = image.shape[1] - pad - 4 * (16 * scale + pad)
    assert label_w > 20  # a label column is there
    for row, e in enumerate([0, 2, 4]):
        start, end = store.episode_bounds(e)
        for col, t in enumerate(np.linspace(start, end - 1, 4).round().astype(int)):
            y, x = pad + row * (16 * scale + pad), label_w + pad + col * (16 * scale + pad)
            np.testing.assert_array_equal(
                image[y : y + 16 * scale : scale, x : x + 16 * scale : scale], store.rgb[t]
            )


def test_frame_grid_places_frames_and_labels():
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 3, 5, 7, 3), dtype=np.uint8)
    grid = frame_grid(frames, pad=1)
    assert grid.shape == (1 + 2 * 6, 1 + 3 * 8, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[7:12, 17:24], frames[1, 2])
    labelled = frame_grid(frames, labels=["a", "bb"], pad=1)
    assert labelled.shape[1] > grid.shape[1]
    label_w = labelled.shape[1] - grid.shape[1]
    assert (labelled[:, :label_w] > 128).any()  # text drawn in the label column
    ragged = frame_grid([frames[0], frames[1, :1]], pad=1)
    assert ragged.shape == grid.shape
    with pytest.raises(ValueError, match=r"expected uint8 frames \(R, C, H, W, 3\), got float32"):
        frame_grid(frames.astype(np.float32))


def test_save_gif_round_trip(tmp_path):
    import imageio.v3 as iio

    frames = np.zeros((5, 8, 12, 3), np.uint8)
    for t in range(5):
        frames[t, :, t * 2 : t * 2 + 2] = 255
    path = tmp_path / "clip.gif"
    save_gif(frames, path, fps=5)
    back = iio.imread(path, index=None)
    assert back.shape[:3] == (5, 8, 12)
    np.testing.assert_array_equal(back[..., :3].max(axis=(1, 3)) > 128, frames.max(axis=(1, 3)) > 128)
    assert iio.immeta(path, index=0)["duration"] == 200
    with pytest.raises(ValueError, match="uint8 frames"):
        save_gif(frames[0], path)


def test_info_does_not_import_torch():
    code = (
        "import sys, argparse; import genie_robot.data.info as i; p = argparse.ArgumentParser(); "
        "i.register_cli(p.add_subparsers()); assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
