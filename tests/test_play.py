"""`genie-robot play` used as a person would: under Xvfb, keys sent with xdotool, the screen grabbed
with xwd; the displayed picture must change after action keys, and `s` must save the session GIF."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TOOLS = ("Xvfb", "xdotool", "xwd")


def _checkpoint(run_dir):
    import torch

    from genie_robot.artifacts import checkpoints as ckpt_io
    from genie_robot.models import Genie, preset

    torch.manual_seed(0)
    genie = Genie(preset("tiny"))
    with torch.no_grad():
        genie.dynamics.action_table.copy_(genie.lam.action_embeddings())
    config = {"train": {"preset": "tiny", "model": {}}, "model": genie.cfg.to_dict(), "stage": "dynamics"}
    ckpt_io.save_checkpoint(run_dir, 1, weights=genie.state_dict(), config=config, state={"step": 1})


def _screen(env) -> bytes:
    return subprocess.run(["xwd", "-root", "-silent"], env=env, capture_output=True, check=True, timeout=20).stdout


def _wait(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def xvfb():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: the play test needs an X server and key injection "
                    "(scripts/setup installs them: apt-get install xvfb xdotool x11-apps)")
    display = next(n for n in range(90, 140) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    proc = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: Path(f"/tmp/.X11-unix/X{display}").exists(), 20, "Xvfb to start")
        yield {**os.environ, "DISPLAY": f":{display}", "QT_QPA_PLATFORM": "xcb"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_play_shows_new_frames_on_action_keys_and_saves_a_gif(xvfb, tmp_path):
    import imageio.v3 as iio

    from genie_robot.cli import main
    from genie_robot.data.preview import save_image

    _checkpoint(tmp_path / "run")
    bundle = tmp_path / "bundle"
    assert main(["export", "--dynamics", str(tmp_path / "run"), "--out", str(bundle), "--no-onnx"]) == 0
    yy, xx = np.mgrid[0:16, 0:16]
    save_image(np.stack([xx * 16, yy * 16, (xx + yy) * 8], -1).astype(np.uint8), tmp_path / "prompt.png")
    gif = tmp_path / "session.gif"
    play = subprocess.Popen(
        [sys.executable, "-m", "genie_robot.cli", "play", "--model", str(bundle), "--backend", "torch",
         "--image", str(tmp_path / "prompt.png"), "--out", str(gif)],
        env=xvfb, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wid = _wait(lambda: subprocess.run(["xdotool", "search", "--name", "genie-robot play"], env=xvfb,
                                           capture_output=True, text=True).stdout.split(), 90, "the play window")[0]
        subprocess.run(["xdotool", "windowfocus", "--sync", wid], env=xvfb, check=False, timeout=10)
        time.sleep(1.0)

        def key(k):
            subprocess.run(["xdotool", "key", "--window", wid, k], env=xvfb, check=True, timeout=10)

        shown = [_screen(xvfb)]
        for k in ("1", "2", "3"):
            key(k)
            shown.append(_wait(lambda: (s := _screen(xvfb)) != shown[-1] and s, 30, f"the picture to change after key {k}"))
        key("s")
        _wait(gif.exists, 30, "the session GIF")
        key("q")
        assert play.wait(timeout=30) == 0
    finally:
        if play.poll() is None:
            play.kill()
        print(play.stdout.read())
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == 4  # the prompt frame and one frame per action key
    assert len({f.tobytes() for f in frames}) > 1
