"""`genie-robot rollout`: real clip | imagined with inferred actions | imagined with random or typed ones."""

from __future__ import annotations

import numpy as np
import pytest

from genie_robot.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from genie_robot.data.store import Episode, StoreWriter

    path = tmp_path_factory.mktemp("rollout") / "clip.zarr"
    yy, xx = np.mgrid[0:16, 0:16]
    frames = np.stack([np.stack([(xx * 16 + 8 * t) % 256, yy * 16, np.full_like(xx, 40 * t % 256)], -1)
                       for t in range(8)]).astype(np.uint8)
    with StoreWriter(str(path), resolution=(16, 16), fps=10.0, source="test") as w:
        w.add_episode(Episode(rgb=frames))
    return str(path)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_rollout_writes_a_three_column_gif_and_a_grid(tiny_export, store, tmp_path, backend, capsys):
    import imageio.v3 as iio

    out = tmp_path / "r.gif"
    args = ["rollout", "--model", str(tiny_export[0]), "--backend", backend, "--store", store, "--frames", "6",
            "--scale", "2", "--out", str(out)]
    assert main(args) == 0
    gif = iio.imread(out)
    assert gif.shape[0] == 6  # prompt + 5 imagined frames
    assert gif.shape[2] == 2 * (2 + 3 * (16 + 2))  # three columns of 16-pixel frames, scaled 2x
    assert out.with_suffix(".png").is_file()
    printed = capsys.readouterr().out
    assert "inferred latent actions:" in printed and "PSNR(real, imagined with inferred actions)" in printed
    first = gif.copy()
    assert main(args) == 0  # seeded: the same movie again
    np.testing.assert_array_equal(iio.imread(out), first)


def test_typed_actions_are_checked(tiny_export, store, tmp_path, capsys):
    base = ["rollout", "--model", str(tiny_export[0]), "--backend", "torch", "--store", store, "--frames", "4",
            "--out", str(tmp_path / "r.gif")]
    assert main(base + ["--actions", "0,1,9"]) == 2
    assert "latent actions are 0..3" in capsys.readouterr().err  # the tiny preset has 4
    assert main(base + ["--actions", "a,b"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(base + ["--actions", "1,1,2,2,3,3"]) == 0  # longer than the clip: fine, the GIF grows
    assert main(base + ["--episode", "4"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_stride_takes_every_nth_real_frame(tiny_export, store, tmp_path):
    import imageio.v3 as iio

    from genie_robot.data.store import EpisodeStore

    out = tmp_path / "s.gif"
    assert main(["rollout", "--model", str(tiny_export[0]), "--backend", "torch", "--store", store, "--frames", "4",
                 "--stride", "2", "--scale", "1", "--out", str(out)]) == 0
    gif = iio.imread(out)
    real = gif[:, 18 + 2: 18 + 2 + 16, 2: 2 + 16]  # under the caption bar, first column
    ep = EpisodeStore.open(store)
    assert gif.shape[0] == 4
    err = lambda frames: np.abs(real.astype(int) - frames.astype(int)).mean()  # noqa: E731 (GIF palette error)
    assert err(ep.frames(0, 8, 2)) < 0.5 * err(ep.frames(0, 4))
