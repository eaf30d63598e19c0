"""A plain `pytest` from the activated venv, without `scripts/env.sh` (issue #14, item 4): tests/conftest.py
sets the environment the script sets, so the suite runs the same way either way.

The first test runs in a child pytest whose environment lacks every variable scripts/env.sh exports
(and the venv's bin/ on PATH): the conftest must set them all, and a simulator test, a child-interpreter
test and the ROS nodes' console scripts must pass there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env_sh() -> dict[str, str]:
    """`export NAME=${NAME:-VALUE}` lines of scripts/env.sh -> {NAME: VALUE}."""
    text = (ROOT / "scripts" / "env.sh").read_text()
    return dict(re.findall(r"^export (\w+)=\$\{\1:-([^}]*)\}$", text, flags=re.M))


def test_conftest_sets_what_scripts_env_sh_sets():
    wanted = _env_sh()
    assert {"MUJOCO_GL", "MALLOC_MMAP_MAX_", "ROS_AUTOMATIC_DISCOVERY_RANGE"} <= set(wanted)
    for name, value in wanted.items():
        assert os.environ.get(name) == value, f"{name}: conftest should set {value!r}, found {os.environ.get(name)!r}"
    assert str(Path(sys.executable).parent) in os.environ["PATH"].split(os.pathsep)  # console scripts


@pytest.mark.slow
def test_plain_pytest_without_scripts_env_sh():
    if os.environ.get("GENIE_PLAIN_PYTEST_CHILD"):
        pytest.skip("already the child run")
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in _env_sh() and k != "PYOPENGL_PLATFORM"}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != bin_dir)
    env.update(GENIE_PLAIN_PYTEST_CHILD="1", OMP_NUM_THREADS="1")
    tests = ["tests/test_plain_pytest.py::test_conftest_sets_what_scripts_env_sh_sets",
             "tests/data/test_sim.py::test_episode_shapes_and_dtypes",  # MuJoCo rendering
             "tests/data/test_info.py::test_info_does_not_import_torch",  # a child interpreter
             "tests/ros/test_node_entry_points.py::test_help_prints_usage_and_exits_0_without_starting_the_node"]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "failed" not in run.stdout and " skipped" not in run.stdout, run.stdout[-2000:]
