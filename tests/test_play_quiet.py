"""`genie-robot play` does not print Qt's QFontDatabase warnings (issue #14, item 5): opencv-python's Qt
looks for fonts in cv2/qt/fonts, which the wheel does not ship, and says so for every window."""

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


def _wait(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def display():
    missing = [t for t in ("Xvfb", "xdotool") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install xvfb xdotool)")
    n = next(n for n in range(140, 190) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "320x240x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: Path(f"/tmp/.X11-unix/X{n}").exists(), 20, "Xvfb to start")
        env = {k: v for k, v in os.environ.items() if k != "QT_LOGGING_RULES"}
        yield {**env, "DISPLAY": f":{n}", "QT_QPA_PLATFORM": "xcb", "GENIE_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_play_prints_no_qt_font_warnings(display, tmp_path):
    import torch

    from genie_robot.artifacts import checkpoints
    from genie_robot.cli import main
    from genie_robot.data.preview import save_image
    from genie_robot.models import Genie, preset

    torch.manual_seed(0)
    genie = Genie(preset("tiny"))
    config = {"train": {"preset": "tiny", "model": {}}, "model": genie.cfg.to_dict(), "stage": "dynamics"}
    checkpoints.save_checkpoint(tmp_path / "run", 1, weights=genie.state_dict(), config=config, state={"step": 1})
    assert main(["export", "--dynamics", str(tmp_path / "run"), "--out", str(tmp_path / "bundle"), "--no-onnx"]) == 0
    save_image(np.full((16, 16, 3), 100, np.uint8), tmp_path / "prompt.png")
    play = subprocess.Popen(
        [sys.executable, "-m", "genie_robot.cli", "play", "--model", str(tmp_path / "bundle"), "--backend", "torch",
         "--image", str(tmp_path / "prompt.png"), "--out", str(tmp_path / "s.gif")],
        env=display, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wid = _wait(lambda: subprocess.run(["xdotool", "search", "--name", "genie-robot play"], env=display,
                                           capture_output=True, text=True).stdout.split(), 120, "the play window")[0]
        time.sleep(1.0)  # let Qt finish drawing (and warning)
        subprocess.run(["xdotool", "key", "--window", wid, "q"], env=display, check=True, timeout=10)
        assert play.wait(timeout=60) == 0
    finally:
        if play.poll() is None:
            play.kill()
    printed = play.stdout.read()
    assert "model " in printed  # play ran
    assert "QFontDatabase" not in printed, printed
