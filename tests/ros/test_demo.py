"""`genie-ros-demo`: camera replay process -> world-model node process -> this client, over real DDS."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_demo_replays_a_camera_into_the_world_model_and_writes_the_imagined_gif(tiny_store, tiny_bundle, tmp_path,
                                                                                 capsys):
    import imageio.v3 as iio

    from genie_robot.data.store import EpisodeStore
    from ros_nodes.demo import main

    store_path = tiny_store(2, length=6, resolution=(16, 16), fps=20.0)
    out = tmp_path / "ros.gif"
    code = main(["--store", store_path, "--model", tiny_bundle, "--backend", "torch", "--actions", "0,1,2,3,3",
                 "--timeout", "120", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    gif = iio.imread(out)
    assert gif.shape[0] == 6  # the prompt (frame 0) + one frame per action
    assert out.with_suffix(".png").is_file()
    # frame 0 is a camera frame of the replayed episode, as the model saw it
    scale = gif.shape[1] // 16
    first = gif[0, ::scale, ::scale]
    store = EpisodeStore.open(store_path)
    episode = store.frames(*store.episode_bounds(0))
    assert min(np.abs(first.astype(int) - f.astype(int)).mean() for f in episode) < 3  # GIF palette error
    assert "step latency over DDS" in printed.out


def test_demo_refuses_bad_actions(tiny_store, tmp_path, capsys):
    from ros_nodes.demo import main

    assert main(["--store", tiny_store(1), "--actions", "x", "--out", str(tmp_path / "a.gif")]) == 2
    assert "comma-separated latent actions" in capsys.readouterr().err
