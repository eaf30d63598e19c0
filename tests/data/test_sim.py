"""The MuJoCo Fetch simulator: deterministic episodes, real motion, worker-count invariance, the CLI.

Tiny sizes (32 px, a few dozen frames) keep this to seconds. mujoco is never imported here directly:
its OpenGL backend must be chosen (scene.configure_gl) before the first import.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = [
    pytest.mark.sim,
    pytest.mark.skipif(
        importlib.util.find_spec("mujoco") is None or importlib.util.find_spec("gymnasium_robotics") is None,
        reason="needs MuJoCo and gymnasium-robotics (pip install -e '.[sim]')",
    ),
]

RES = 32


@pytest.fixture(scope="module")
def sim():
    from genie_robot.data.sim import simulate

    yield simulate
    simulate.close_scenes()


def _same(a, b) -> bool:
    return (
        np.array_equal(a.rgb, b.rgb)
        and np.array_equal(a.action, b.action)
        and np.array_equal(a.state, b.state)
        and a.instruction == b.instruction
    )


def test_episode_shapes_and_dtypes(sim):
    from genie_robot.data.sim.scene import ACTION_DIM, STATE_DIM

    ep = sim.generate_episode(seed=0, frames=8, resolution=RES, scene="push")
    assert ep.rgb.shape == (8, RES, RES, 3) and ep.rgb.dtype == np.uint8
    assert ep.action.shape == (8, ACTION_DIM) and ep.action.dtype == np.float32
    assert ep.state.shape == (8, STATE_DIM) and ep.state.dtype == np.float32
    assert np.all(np.abs(ep.action) <= 1.0)
    assert ep.instruction == "push the block to the target"
    assert ep.rgb.std() > 10, "frames look blank: the camera sees nothing"


def test_same_seed_same_episode_different_seed_differs(sim):
    a = sim.generate_episode(3, 12, RES, "pick")
    sim.generate_episode(4, 20, RES, "pick")  # the reused scene must not carry state over
    sim.generate_episode(5, 5, RES, "push")
    b = sim.generate_episode(3, 12, RES, "pick")
    c = sim.generate_episode(4, 12, RES, "pick")
    assert _same(a, b)
    assert not np.array_equal(a.rgb, c.rgb)
    assert not np.array_equal(a.action, c.action)


def test_arm_moves_and_objects_get_moved(sim):
    push = [sim.generate_episode(s, 40, RES, "push") for s in range(4)]
    for ep in push:
        frame_change = np.abs(np.diff(ep.rgb.astype(np.int16), axis=0)).mean()
        grip_path = np.linalg.norm(np.diff(ep.state[:, :3], axis=0), axis=1).sum()
        assert frame_change > 0.5, f"frames barely change (mean |diff| {frame_change:.2f})"
        assert grip_path > 0.1, f"the gripper travelled only {grip_path:.3f} m in 40 steps"
    object_shift = [np.linalg.norm(ep.state[-1, 4:6] - ep.state[0, 4:6]) for ep in push]
    assert max(object_shift) > 0.03, f"no push moved the block: shifts {np.round(object_shift, 3)}"

    pick = sim.generate_episode(0, 40, RES, "pick")
    width = pick.state[:, 3]
    assert width.max() - width.min() > 0.05, "the gripper never opened or closed in a pick episode"
    assert np.ptp(push[0].state[:, 3]) < 1e-3, "push blocks the fingers; the width must not change"


def test_mix_cycles_scenes_by_seed(sim):
    instr = [sim.generate_episode(s, 2, RES, "mix").instruction for s in range(3)]
    assert instr == [
        "push the block to the target",
        "pick up the block and place it at the target",
        "slide the puck to the target",
    ]
    with pytest.raises(ValueError, match="unknown scene"):
        sim.generate_episode(0, 2, RES, "stack")


@pytest.mark.slow
def test_store_is_identical_for_any_worker_count(sim, tmp_path):
    from genie_robot.data.store import EpisodeStore

    for workers in (1, 2):
        sim.simulate(str(tmp_path / f"w{workers}.zarr"), episodes=2, frames=8, resolution=RES, workers=workers,
                     seed=7, scene="mix", progress=False)  # fmt: skip
    one, two = (EpisodeStore.open(str(tmp_path / f"w{w}.zarr")) for w in (1, 2))
    assert one.num_episodes == two.num_episodes == 2
    assert np.array_equal(one.episode_ends, two.episode_ends)
    for i in range(2):
        assert _same(one.episode(i), two.episode(i))
    # Episode k is seed + k, whatever process made it.
    assert _same(one.episode(1), sim.generate_episode(8, 8, RES, "mix"))
    assert one.fps == 25.0 and one.source == "mujoco/fetch-mix"


def test_interrupted_run_leaves_store_incomplete(sim, tmp_path, monkeypatch):
    from genie_robot.data.store import EpisodeStore, StoreError

    real_job = sim._job

    def job(args):
        if args[0] == 1:
            raise KeyboardInterrupt
        return real_job(args)

    monkeypatch.setattr(sim, "_job", job)
    out = str(tmp_path / "cut.zarr")
    with pytest.raises(KeyboardInterrupt):
        sim.simulate(out, episodes=3, frames=4, resolution=RES, workers=1, progress=False)
    with pytest.raises(StoreError, match="incomplete"):
        EpisodeStore.open(out)
    assert EpisodeStore.open(out, allow_incomplete=True).num_episodes == 1


@pytest.mark.slow
def test_cli_end_to_end(sim, tmp_path, capsys):
    from genie_robot.cli import main
    from genie_robot.data.store import EpisodeStore

    out = str(tmp_path / "sim.zarr")
    argv = ["simulate", "--episodes", "3", "--frames", "5", "--resolution", str(RES), "--out", out,
            "--workers", "2", "--seed", "3", "--scene", "pick"]  # fmt: skip
    assert main(argv) == 0
    store = EpisodeStore.open(out)
    assert (store.num_episodes, store.num_frames, store.resolution) == (3, 15, (RES, RES))
    assert store.action_dim == 4 and store.state_dim == 7
    assert store.instructions == ["pick up the block and place it at the target"] * 3
    last = store.episode(2)
    assert _same(last, sim.generate_episode(5, 5, RES, "pick"))
    capsys.readouterr()
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    # argparse keeps the last --workers: one in-process worker, same store.
    assert main([*argv, "--workers", "1", "--overwrite"]) == 0
    assert _same(EpisodeStore.open(out).episode(2), last)


def test_gl_backend_falls_back_to_osmesa_then_says_what_to_install(monkeypatch):
    import subprocess
    import sys

    from genie_robot.data.sim import scene

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.delitem(sys.modules, "mujoco", raising=False)  # pretend this process has not picked one
    tried = []

    def fake_run(cmd, env, **kwargs):
        tried.append(env["MUJOCO_GL"])
        ok = env["MUJOCO_GL"] in working
        return subprocess.CompletedProcess(cmd, 0 if ok else 1, "", "ImportError: libEGL.so.1: cannot open")

    monkeypatch.setattr(scene.subprocess, "run", fake_run)
    working = {"osmesa"}
    assert scene.configure_gl() == "osmesa" and tried == ["egl", "osmesa"]
    assert scene.os.environ["MUJOCO_GL"] == "osmesa"

    monkeypatch.delenv("MUJOCO_GL")
    working = set()
    with pytest.raises(scene.RenderBackendError, match="apt-get install libosmesa6"):
        scene.configure_gl()
