"""The simulator after mujoco was imported by someone else (no MUJOCO_GL, no scripts/env.sh), and
`genie-robot simulate --resume` finishing an interrupted run into the store one run writes.
(Issue #14, items 4 and 15.)"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

pytestmark = [
    pytest.mark.sim,
    pytest.mark.skipif(
        importlib.util.find_spec("mujoco") is None or importlib.util.find_spec("gymnasium_robotics") is None,
        reason="needs MuJoCo and gymnasium-robotics (pip install -e '.[sim]')",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
RES = 32


def test_simulates_after_mujoco_was_imported_first_without_mujoco_gl():
    """mujoco imported without MUJOCO_GL picks GLFW, which needs a display; the scene still renders."""
    code = (
        "import mujoco, os\n"
        "from genie_robot.data.sim.simulate import generate_episode\n"
        "ep = generate_episode(0, 3, 16, 'push')\n"
        "assert ep.rgb.shape == (3, 16, 16, 3) and ep.rgb.std() > 10, ep.rgb.std()\n"
        "print('backend', os.environ['MUJOCO_GL'], 'mujoco context', mujoco.gl_context.GLContext.__module__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # The process keeps mujoco's own choice for everything else; the scene's renderer used the probed one.
    assert "backend egl" in out.stdout or "backend osmesa" in out.stdout
    assert "mujoco context mujoco.glfw" in out.stdout


def _arrays(path: str) -> dict:
    g = zarr.open_group(path, mode="r")
    out = {k: g[k][:] for k in ("data/rgb", "data/action", "data/state", "meta/episode_ends", "meta/instruction")}
    out["attrs"] = dict(g.attrs)
    return out


def test_resume_finishes_a_killed_run_into_the_same_store(tmp_path, monkeypatch, capsys):
    from genie_robot.cli import main
    from genie_robot.data.sim import simulate
    from genie_robot.data.store import EpisodeStore, StoreError

    argv = ["--episodes", "3", "--frames", "4", "--resolution", str(RES), "--workers", "1", "--seed", "5",
            "--scene", "mix"]
    ref = str(tmp_path / "ref.zarr")
    assert main(["simulate", *argv, "--out", ref]) == 0

    # A run killed during episode 2: episodes 0-1 committed, some of episode 2's frames written.
    out = str(tmp_path / "cut.zarr")
    real_job = simulate._job

    def job(args):
        if args[0] == 5 + 2:
            raise KeyboardInterrupt
        return real_job(args)

    monkeypatch.setattr(simulate, "_job", job)
    with pytest.raises(KeyboardInterrupt):
        simulate.simulate(out, episodes=3, frames=4, resolution=RES, workers=1, seed=5, scene="mix", progress=False)
    monkeypatch.setattr(simulate, "_job", real_job)
    g = zarr.open_group(out, mode="r+")
    n = g["data/rgb"].shape[0]
    g["data/rgb"].resize((n + 3, RES, RES, 3))
    g["data/rgb"][n:] = 77  # the half-written episode a SIGKILL leaves
    assert EpisodeStore.open(out, allow_incomplete=True).num_episodes == 2

    capsys.readouterr()
    assert main(["simulate", *argv, "--out", out]) == 2
    assert "--resume" in capsys.readouterr().err  # a re-run without it says how to finish the store
    assert main(["simulate", *argv, "--out", out, "--resume"]) == 0
    assert "(2 kept from the interrupted run)" in capsys.readouterr().out
    got, want = _arrays(out), _arrays(ref)
    assert got["attrs"] == want["attrs"] and got["attrs"]["complete"] is True
    for key in want:
        assert np.array_equal(got[key], want[key]), key
    assert main(["simulate", *argv, "--out", out, "--resume"]) == 0  # complete already: nothing to do
    assert np.array_equal(_arrays(out)["data/rgb"], want["data/rgb"])

    # Resuming with other arguments than the store was made with is refused, naming the difference.
    with pytest.raises(StoreError, match="differs from the one --seed 6 makes"):
        simulate.simulate(out, episodes=4, frames=4, resolution=RES, workers=1, seed=6, scene="mix",
                          resume=True, progress=False)
    with pytest.raises(StoreError, match=r"its episodes have \[4\] frames, this run makes 5"):
        simulate.simulate(out, episodes=4, frames=5, resolution=RES, workers=1, seed=5, scene="mix",
                          resume=True, progress=False)
    with pytest.raises(StoreError, match="mujoco/fetch-mix .* this run makes mujoco/fetch-push"):
        simulate.simulate(out, episodes=4, frames=4, resolution=RES, workers=1, seed=5, scene="push",
                          resume=True, progress=False)
