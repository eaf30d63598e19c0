"""`genie-robot simulate`: scripted Fetch episodes, rendered offscreen, written to an episode store.

Episode k is generated from seed + k alone (env reset, policy and warm-up all derive from it), and
episodes are written in order as workers finish, so a store is identical for any worker count.
Workers are spawned processes that each keep one scene + renderer alive across their episodes.
For the same reason an interrupted run resumes exactly: `--resume` keeps the store's committed
episodes (StoreWriter mode "a" drops a half-written one), checks that the last of them is the one
these arguments make, and simulates the rest, giving the store one uninterrupted run writes.

    genie-robot simulate --episodes 100 --frames 64 --resolution 64 --out data/sim.zarr --workers 2
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from genie_robot.data.sim.scene import (
    ACTION_DIM,
    FPS,
    SCENE_CHOICES,
    STATE_DIM,
    FetchScene,
    configure_gl,
    scene_for_seed,
)

if TYPE_CHECKING:
    from genie_robot.data.store import Episode

# Unrecorded steps at the start of an episode (the policy's fast move to a random pose), so that
# first frames differ between episodes instead of all showing the env's fixed start pose.
WARMUP_STEPS = (4, 13)

_scenes: dict[tuple[str, int], FetchScene] = {}


def _scene(name: str, resolution: int) -> FetchScene:
    """One scene + renderer per (scene, resolution) per process, reused across episodes."""
    key = (name, resolution)
    if key not in _scenes:
        first = not _scenes
        _scenes[key] = FetchScene(name, resolution)
        if first:  # after mujoco's import registered EGL's own atexit, so that ours runs before it
            atexit.register(close_scenes)
    return _scenes[key]


def close_scenes() -> None:
    """Frees this process's renderers (before interpreter teardown, where EGL cleanup would fail)."""
    while _scenes:
        _scenes.popitem()[1].close()


def generate_episode(seed: int, frames: int, resolution: int = 64, scene: str = "push") -> Episode:
    """One scripted episode, a pure function of its arguments.

    Returns Episode(rgb (T, R, R, 3) uint8, action (T, 4) float32, state (T, 7) float32, instruction).
    action[t] is the env action taken after frame t (dx, dy, dz, gripper); state[t] is measured at
    frame t (see scene.STATE_NAMES). scene "mix" picks push / pick / slide by seed % 3.
    """
    from genie_robot.data.sim.policy import ScriptedPolicy
    from genie_robot.data.store import Episode

    if frames < 1 or resolution < 1:
        raise ValueError(f"need frames >= 1 and resolution >= 1, got frames={frames}, resolution={resolution}")
    name = scene_for_seed(scene, seed)
    sim = _scene(name, resolution)
    sim.reset(seed)
    # The policy gets its own stream: the env's np_random is seeded with `seed` itself.
    policy = ScriptedPolicy(name, sim.spec, np.random.default_rng([seed, 1]))

    def act() -> np.ndarray:
        return policy.act(sim.grip_pos(), sim.object_pos(), sim.goal, sim.gripper_width())

    for _ in range(int(policy.rng.integers(*WARMUP_STEPS))):
        sim.step(act())
    rgb_THW3 = np.empty((frames, resolution, resolution, 3), dtype=np.uint8)
    action_TA = np.empty((frames, ACTION_DIM), dtype=np.float32)
    state_TS = np.empty((frames, STATE_DIM), dtype=np.float32)
    for t in range(frames):
        rgb_THW3[t] = sim.render()
        state_TS[t] = sim.state()
        action_TA[t] = act()
        sim.step(action_TA[t])
    return Episode(rgb=rgb_THW3, action=action_TA, state=state_TS, instruction=sim.spec.instruction)


def _init_worker() -> None:
    # Ctrl-C goes to the whole process group; only the parent should handle it (and leave the
    # store incomplete), not every worker with its own traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["LP_NUM_THREADS"] = "1"
    configure_gl()


def _job(args: tuple[int, int, int, str]) -> Episode:
    return generate_episode(*args)


def _episodes(jobs: list[tuple[int, int, int, str]], workers: int) -> Iterator[Episode]:
    """Episodes in job order; with workers > 1 from spawned processes, at most a few jobs ahead."""
    if workers <= 1:
        for job in jobs:
            yield _job(job)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # ProcessPoolExecutor rather than Pool: a worker that dies (segfault in a GL driver) raises
    # BrokenProcessPool here instead of hanging the run.
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)
    pending: deque = deque()
    todo = iter(jobs)
    try:
        while True:
            for job in todo:
                pending.append(pool.submit(_job, job))
                if len(pending) >= 3 * workers:
                    break
            if not pending:
                return
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def simulate(
    out: str,
    episodes: int,
    frames: int,
    resolution: int = 64,
    workers: int = 2,
    seed: int = 0,
    scene: str = "mix",
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> int:
    """Writes `episodes` episodes of `frames` frames at resolution x resolution to the store `out`;
    returns how many it simulated.

    Episode k uses seed + k, so the store does not depend on `workers`. The store is marked complete
    only if every episode was written (an interrupt or a crash leaves it incomplete). `resume`: keep
    the committed episodes of an existing store at `out` (written with the same arguments, which is
    checked) and simulate only the rest; without a store there it is a plain run.
    """
    from tqdm import tqdm

    from genie_robot.data.store import StoreError, StoreWriter, _exists

    if episodes < 1 or frames < 1 or resolution < 1 or workers < 1:
        raise ValueError(
            f"need episodes, frames, resolution and workers >= 1, got episodes={episodes}, "
            f"frames={frames}, resolution={resolution}, workers={workers}"
        )
    if scene not in SCENE_CHOICES:
        raise ValueError(f"unknown scene {scene!r}; choose one of {', '.join(SCENE_CHOICES)}")
    if resume and overwrite:
        raise ValueError("resume keeps the episodes already at out, overwrite deletes them: pass one of them")
    exists = _exists(out, None)
    if exists and not (resume or overwrite):
        raise StoreError(f"{out} already exists; pass --resume to finish an interrupted run into it, or "
                         "--overwrite to replace it (Python: resume=True / overwrite=True)")
    configure_gl()  # before spawning, so workers inherit the backend instead of probing
    source = f"mujoco/fetch-{scene}"
    done = _committed(out, episodes, frames, resolution, seed, scene, source) if resume and exists else 0
    jobs = [(seed + k, frames, resolution, scene) for k in range(done, episodes)]
    with StoreWriter(
        out,
        resolution=(resolution, resolution),
        fps=FPS,
        source=source,
        action_dim=ACTION_DIM,
        state_dim=STATE_DIM,
        mode="a" if resume else "w" if overwrite else "w-",
    ) as writer:
        bar = tqdm(total=episodes, initial=done, unit="ep", desc=f"simulate {scene}", disable=not progress)
        with bar, contextlib.closing(_episodes(jobs, min(workers, max(1, len(jobs))))) as stream:
            for episode in stream:
                writer.add_episode(episode)
                bar.update(1)
    return len(jobs)


def _committed(out: str, episodes: int, frames: int, resolution: int, seed: int, scene: str, source: str) -> int:
    """Committed episodes of the existing store at `out` that a resumed run keeps, after checking they
    are what these arguments make: source (scene), resolution, episode lengths, and the last episode
    itself, generated again (it depends on the seed)."""
    from genie_robot.data.store import EpisodeStore, StoreError

    store = EpisodeStore.open(out, allow_incomplete=True)
    redo = "pass the arguments of the run that wrote it, or --overwrite to start again"
    if store.source != source or store.resolution != (resolution, resolution):
        raise StoreError(f"cannot resume {out}: it holds {store.source} at {store.resolution[0]}x"
                         f"{store.resolution[1]}, this run makes {source} at {resolution}x{resolution}; {redo}")
    if store.num_episodes > episodes:
        raise StoreError(f"cannot resume {out}: it already holds {store.num_episodes} episodes, more than "
                         f"--episodes {episodes}; {redo}")
    lengths = set(store.episode_lengths.tolist())
    if lengths and lengths != {frames}:
        raise StoreError(f"cannot resume {out}: its episodes have {sorted(lengths)} frames, this run makes "
                         f"{frames}; {redo}")
    if store.num_episodes:
        last = store.num_episodes - 1
        ours = generate_episode(seed + last, frames, resolution, scene)
        theirs = store.episode(last)
        if not (np.array_equal(ours.rgb, theirs.rgb) and np.array_equal(ours.action, theirs.action)):
            raise StoreError(f"cannot resume {out}: its episode {last} differs from the one --seed {seed} makes "
                             f"(episode k uses seed + k); {redo}")
    return store.num_episodes


def _run(args: argparse.Namespace) -> int:
    from genie_robot.cli import run_reporting_errors

    # a bad argument or path (StoreError is a ValueError), no rendering backend (RenderBackendError)
    return run_reporting_errors(_simulate, args, "genie-robot simulate")


def _simulate(args: argparse.Namespace) -> int:
    made = simulate(
        args.out,
        episodes=args.episodes,
        frames=args.frames,
        resolution=args.resolution,
        workers=args.workers,
        seed=args.seed,
        scene=args.scene,
        overwrite=args.overwrite,
        resume=args.resume,
    )
    kept = f" ({args.episodes - made} kept from the interrupted run)" if made < args.episodes else ""
    print(f"wrote {args.episodes} episodes x {args.frames} frames to {args.out}{kept}")
    return 0


def register_cli(subparsers) -> None:
    from genie_robot import cli_flags as flags

    p = subparsers.add_parser(
        "simulate",
        help="generate scripted MuJoCo Fetch episodes into an episode store",
        description="Scripted MuJoCo Fetch episodes (arm motion, pushes, grasps), rendered offscreen "
        "at RESOLUTION x RESOLUTION and written to a Zarr episode store; episode k uses seed + k, "
        "so the store is the same for any --workers.",
    )
    p.add_argument("--episodes", type=int, required=True, help="number of episodes")
    p.add_argument("--frames", type=int, required=True, help="frames per episode (25 fps)")
    p.add_argument("--resolution", type=int, default=64, help="square frame size in pixels (default 64)")
    flags.add_out(p, "store path or fsspec URL, e.g. data/sim.zarr")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    flags.add_seed(p, 0, "episode k uses seed + k (default 0)")
    p.add_argument(
        "--scene",
        choices=SCENE_CHOICES,
        default="mix",
        help="Fetch scene: push, pick (pick and place, the only one with a moving gripper), slide, "
        "or mix (cycles the three by episode, the richest motion vocabulary); default mix",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted run: keep the episodes already committed to --out (same "
                   "arguments, checked) and simulate the rest")
    p.set_defaults(func=_run)
