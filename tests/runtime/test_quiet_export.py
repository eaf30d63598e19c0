"""`genie-robot export` prints a few lines, not the ONNX exporter's hundreds (issue #14, item 5);
`--verbose` still shows them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _export(ckpt, out, *extra):
    env = {**os.environ, "GENIE_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "genie_robot.cli", "export", "--dynamics", str(ckpt), "--out", str(out),
                          *extra], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return (run.stdout + run.stderr).splitlines()


def test_export_is_quiet_unless_verbose(tiny_export, tmp_path):
    ckpt = tiny_export[1]
    lines = _export(ckpt, tmp_path / "quiet")
    assert len(lines) <= 3, "\n".join(lines)
    assert lines[-1].startswith("bundle: ")
    loud = _export(ckpt, tmp_path / "loud", "--verbose")
    assert len(loud) > 20, "\n".join(loud)  # the exporter's and optimizer's own logging
