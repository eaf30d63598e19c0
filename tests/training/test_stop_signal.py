"""Stopping a training run by signal loses nothing: SIGTERM (a scheduler's preemption, `kill`) or SIGINT
(Ctrl-C; also for a run started in the background, where the shell has SIGINT ignored) ends the run
after the step in progress with a checkpoint at that step, exit 130, and `--resume` goes on from it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ignore_sigint():  # what `cmd &` does to a job started from a non-interactive shell
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_after_the_step_with_a_checkpoint_at_that_step(tiny_store, tmp_path, sig):
    from genie_robot.artifacts import checkpoints as ckpt_io

    store = tiny_store(4, length=12)
    args = [sys.executable, "-m", "genie_robot.cli", "train", "tokenizer", "--store", store, "--preset", "tiny",
            "--set", "window=4", "--set", "batch_size=2", "--set", "val_every=100000", "--set", "sample_every=0",
            "--run-dir", "run", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), GENIE_NUM_THREADS="1")
    proc = subprocess.Popen(args + ["--max-steps", "100000", "--set", "ckpt_every=100000"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_ignore_sigint)
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read1(4096), b"")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not re.search(rb" [3-9]\d*/100000", b"".join(err)):  # a few steps done (tqdm's n/total)
        assert proc.poll() is None, b"".join(err).decode()[-3000:]
        assert time.monotonic() < deadline, "no training step within 300 s"
        time.sleep(0.2)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 130
    reader.join(10)
    text = proc.stdout.read().decode() + b"".join(err).decode()
    m = re.search(rf"tokenizer: stopped by {sig.name} after step (\d+); checkpoint saved in .*run: continue with "
                  r"--resume", text)
    assert m, text[-3000:]
    step = int(m.group(1))
    latest = ckpt_io.latest_checkpoint(tmp_path / "run")
    assert latest is not None and latest.name == f"step_{step:08d}"  # ckpt_every never came: the stop saved it
    assert "Traceback" not in text

    resumed = subprocess.run(args + ["--resume", "--max-steps", str(step + 2), "--set", "ckpt_every=1",
                                     "--allow-changes"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ckpt_io.latest_checkpoint(tmp_path / "run").name == f"step_{step + 2:08d}"
