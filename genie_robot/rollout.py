"""`genie-robot rollout`: imagine the future of a robot video with a world model and write it as a GIF.

A real clip (the MuJoCo simulator by default, or a store episode) gives the prompt frame(s) and the
latent actions: the model's latent action model labels the clip's transitions, and the dynamics model
re-plays them from the prompt alone. The GIF shows, side by side: the real clip | imagined with the
inferred latent actions | imagined with random latent actions (or with --actions you type). The PNG
holds the same frames as a grid, and the per-frame PSNR against the real clip is printed.

    genie-robot rollout                                   # the shipped default model, a simulator episode
    genie-robot rollout --model bundles/cpu --store data/sim.zarr --episode 3 --frames 24
    genie-robot rollout --actions 0,0,3,3,5,5 --out rollout.gif
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from genie_robot.errors import SetupError

DEFAULT_SIM_SEED = 90_001  # far from the training seeds (1000-1599) of the default model


def real_clip(args: argparse.Namespace, resolution: tuple[int, int], stride: int = 1) -> np.ndarray:
    """(T, H, W, 3) uint8: the first --frames frames (every `stride`-th) of a store episode, or of a
    simulator episode."""
    if args.store:
        from genie_robot.data.store import EpisodeStore

        store = EpisodeStore.open(args.store)
        if not 0 <= args.episode < store.num_episodes:
            raise ValueError(f"--episode {args.episode} out of range: {args.store} has {store.num_episodes} episodes")
        start, end = store.episode_bounds(args.episode)
        return store.frames(start, min(end, start + (args.frames - 1) * stride + 1), stride)
    try:
        from genie_robot.data.sim.simulate import generate_episode
    except ImportError as exc:
        raise SetupError(f"the simulator is not installed ({exc}); pass --store, or install the sim extra "
                           "(pip install 'genie-robot[sim]')") from None
    if resolution[0] != resolution[1]:
        raise ValueError(f"the simulator renders square frames, the model wants {resolution}; pass --store")
    return generate_episode(args.seed, (args.frames - 1) * stride + 1, resolution=resolution[0], scene=args.scene).rgb[::stride]


def parse_actions(text: str, num_actions: int) -> np.ndarray:
    try:
        actions = np.array([int(a) for a in text.replace(" ", "").split(",") if a != ""], dtype=np.int64)
    except ValueError:
        raise ValueError(f"--actions {text!r}: expected comma-separated integers such as 0,3,3,7") from None
    if actions.size == 0:
        raise ValueError("--actions is empty: give at least one latent action")
    bad = actions[(actions < 0) | (actions >= num_actions)]
    if bad.size:
        raise ValueError(f"--actions holds {bad.tolist()}: latent actions are 0..{num_actions - 1} for this model")
    return actions


def rollout(args: argparse.Namespace) -> int:
    from genie_robot.data.preview import frame_grid, save_gif, save_image, side_by_side_movie
    from genie_robot.eval.metrics import psnr
    from genie_robot.runtime.world_model import WorldModel

    wm = WorldModel.load(args.model, backend=args.backend, providers=args.providers, steps=args.steps, seed=args.seed)
    if args.frames < args.prompt_frames + 1:
        raise ValueError(f"--frames {args.frames} leaves nothing to imagine after {args.prompt_frames} prompt frame(s)")
    stride = args.stride or wm.frame_stride
    clip = wm.prepare_frames(real_clip(args, wm.resolution, stride), "real clip")[0]  # (T, H, W, 3)
    T, P = clip.shape[0], args.prompt_frames
    inferred = wm.infer_actions(clip[None])[0]  # (T-1,) transition t -> t+1
    prompt = clip[:P]
    rng = np.random.default_rng(args.seed)
    if args.actions:
        third = parse_actions(args.actions, wm.num_actions)
        label = f"--actions {','.join(map(str, third))}"
    else:
        third = rng.integers(0, wm.num_actions, T - P)
        label = "random actions"
    sequences = {"inferred": inferred[P - 1 :], label: third}
    imagined = {}
    for name, actions in sequences.items():
        state = wm.reset(prompt, seed=args.seed)  # a longer prompt's own transitions are labelled by the LAM
        frames = [wm.step(state, np.array([a]))[0] for a in actions]
        imagined[name] = np.concatenate([prompt, np.stack(frames)]) if frames else prompt
    # pad the shorter (typed) sequence with its last frame so the movie columns line up
    length = max(T, *(v.shape[0] for v in imagined.values()))
    pad = lambda v: np.concatenate([v, np.repeat(v[-1:], length - v.shape[0], 0)])  # noqa: E731
    videos = [pad(clip)[None]] + [pad(v)[None] for v in imagined.values()]
    labels = ["real", "inferred", "typed" if args.actions else "random"]
    out = Path(args.out)
    save_gif(side_by_side_movie(videos, args.scale, labels=labels), out, fps=args.fps)
    grid = frame_grid([v[0] for v in videos], labels=labels, scale=max(1, args.scale // 2))
    save_image(grid, out.with_suffix(".png"))
    n = min(T, imagined["inferred"].shape[0])
    curve = psnr(clip[P:n], imagined["inferred"][P:n])
    print(f"model {args.model} ({wm.provider}), MaskGIT {wm.steps} steps; {T} real frames (every {stride}), "
          f"{P} prompt frame(s)")
    print(f"inferred latent actions: {' '.join(map(str, inferred.tolist()))}")
    print(f"PSNR(real, imagined with inferred actions) per frame: {' '.join(f'{v:.1f}' for v in curve)} dB "
          f"(mean {float(np.mean(curve)):.2f})")
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def run_cli(args: argparse.Namespace) -> int:
    import logging

    from genie_robot.cli import run_reporting_errors, setup_logging

    setup_logging()
    if args.verbose:  # the first use of a weight-only bundle exports ONNX graphs: show the exporter's log
        logging.getLogger("genie_robot.runtime.export").setLevel(logging.DEBUG)
    return run_reporting_errors(rollout, args, "genie-robot rollout")


def register_cli(subparsers) -> None:
    from genie_robot import cli_flags as flags

    p = subparsers.add_parser("rollout", help="imagine a robot video's future from its first frame -> GIF",
                              description=__doc__.split("\n\n")[0])
    flags.add_model(p, help="model bundle dir (from `genie-robot export`); default: the shipped model")
    flags.add_backend(p, providers=True)
    flags.add_store(p, "real clip from this episode store ...")
    p.add_argument("--episode", type=int, default=0, help="... episode index (default 0)")
    p.add_argument("--scene", default="mix", choices=["push", "pick", "slide", "mix"], help="simulator scene")
    flags.add_seed(p, DEFAULT_SIM_SEED, "simulator episode and sampling seed")
    p.add_argument("--frames", type=int, default=16, help="length of the real clip (prompt + imagined)")
    flags.add_stride(p, default=None, help="take every n-th frame of the real clip (default: the model's training "
                                           "frame_stride)")
    p.add_argument("--prompt-frames", type=int, default=1, help="real frames given to the model (default 1)")
    p.add_argument("--actions", default=None, help="comma-separated latent actions for the third column "
                                                    "(default: random ones)")
    p.add_argument("--steps", type=int, default=None, help="MaskGIT steps (default: the model config's)")
    p.add_argument("--scale", type=int, default=4, help="GIF upscaling factor (default 4)")
    p.add_argument("--fps", type=float, default=4.0, help="GIF frame rate")
    flags.add_out(p, "GIF path (a PNG grid is written next to it)", required=False, default="outputs/rollout.gif")
    p.add_argument("--verbose", action="store_true",
                   help="show the ONNX exporter's own log when the model's graphs are exported on first use")
    p.set_defaults(func=run_cli)
