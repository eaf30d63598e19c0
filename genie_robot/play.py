"""`genie-robot play`: drive the world model by hand in an OpenCV window.

The window shows the imagined camera, upscaled. Keys: 1-8 pick the latent action (one new frame
per key press); a model with more than 8 latent actions has them in banks of 8, and [ and ] switch
the bank (keys 1-8 of bank 2 are actions 17-24); r resets to the prompt, s saves the session since the
last reset as a GIF, q or Esc quits. The prompt comes from a store episode (--store PATH --episode i), an image file (--image),
or, by default, the MuJoCo simulator (genie_robot.data.sim.simulate.generate_episode).

    genie-robot play --model bundles/cpu
    genie-robot play --model bundles/cpu --store data/sim.zarr --episode 3 --prompt-frames 4
    genie-robot play --model bundles/cpu --image first_frame.png --backend torch
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from genie_robot.errors import SetupError

WINDOW = "genie-robot play"
HELP_LINE = "1-8 action  r reset  s save GIF  q quit"
BANK_HELP_LINE = "1-8 action  [ ] bank  r reset  s save GIF  q quit"
BANK = 8  # actions on the number keys at a time


def key_action(key: int, bank: int, num_actions: int) -> tuple[int | None, int, str]:
    """A key press -> (the latent action it picks or None, the bank after it, a caption for the window).
    Keys 1-8 pick action bank * 8 + (key - 1); [ and ] step through the banks of a model with more than
    8 actions."""
    banks = -(-num_actions // BANK)
    if key in (ord("["), ord("]")):
        bank = (bank + (1 if key == ord("]") else -1)) % banks
        last = min(num_actions, (bank + 1) * BANK)
        return None, bank, f"bank {bank + 1} of {banks}: actions {bank * BANK + 1}-{last}"
    if ord("1") <= key <= ord("8"):
        action = bank * BANK + key - ord("1")
        if action >= num_actions:
            return None, bank, f"action {action + 1} unused: this model has {num_actions}"
        return action, bank, f"action {action + 1}"
    return None, bank, ""


def load_prompt(args: argparse.Namespace, resolution: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) uint8 prompt frames from --store/--episode, --image, or the simulator."""
    if args.store:
        from genie_robot.data.store import EpisodeStore

        store = EpisodeStore.open(args.store)
        if not 0 <= args.episode < store.num_episodes:
            raise ValueError(f"--episode {args.episode} out of range: {args.store} has {store.num_episodes} episodes")
        start, end = store.episode_bounds(args.episode)
        return store.frames(start, min(end, start + args.prompt_frames))
    if args.image:
        import cv2

        bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"--image {args.image}: not a readable image file")
        return bgr[None, :, :, ::-1].copy()
    try:
        from genie_robot.data.sim.simulate import generate_episode
    except ImportError as exc:
        raise SetupError(f"no prompt given and the simulator is not installed ({exc}); pass --image or --store, "
                           "or install the sim extra (pip install 'genie-robot[sim]')") from None
    if resolution[0] != resolution[1]:
        raise ValueError(f"the simulator renders square frames, the model wants {resolution}; pass --image or --store")
    return generate_episode(args.seed, args.prompt_frames, resolution=resolution[0]).rgb


def render(frame_HW3: np.ndarray, scale: int, caption: str, help_line: str = HELP_LINE) -> np.ndarray:
    """RGB frame -> upscaled BGR image with a caption bar, for cv2.imshow."""
    import cv2

    big = cv2.resize(frame_HW3[..., ::-1], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    bar = np.zeros((36, big.shape[1], 3), np.uint8)
    cv2.putText(bar, caption, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(bar, help_line, (4, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (160, 160, 160), 1, cv2.LINE_AA)
    return np.ascontiguousarray(np.concatenate([big, bar], 0))


def play(args: argparse.Namespace) -> int:
    # opencv-python's Qt looks for fonts in cv2/qt/fonts, which the wheel does not ship, and warns about
    # it (QFontDatabase, uncategorised) many times per window; its captions are drawn by cv2.putText anyway
    os.environ.setdefault("QT_LOGGING_RULES", "default.warning=false")
    import cv2

    from genie_robot.data.preview import save_gif
    from genie_robot.runtime.world_model import WorldModel

    if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        raise SetupError("play needs a display (DISPLAY is not set); on a headless machine run it under "
                         "`xvfb-run genie-robot play ...`")
    wm = WorldModel.load(args.model, backend=args.backend, providers=args.providers, steps=args.steps,
                         seed=args.seed)
    prompt = load_prompt(args, wm.resolution)
    print(f"model {args.model} ({wm.provider}), {wm.num_actions} latent actions, MaskGIT {wm.steps} steps; "
          f"prompt {prompt.shape[0]} frame(s)", flush=True)
    state = wm.reset(prompt)
    session = [state.last_frames_BHW3[0]]
    cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE)
    caption, bank = "prompt", 0
    help_line = BANK_HELP_LINE if wm.num_actions > BANK else HELP_LINE
    out = Path(args.out)
    while True:
        cv2.imshow(WINDOW, render(session[-1], args.scale, f"frame {len(session) - 1}  {caption}", help_line))
        key = cv2.waitKey(0) & 0xFF
        if key in (ord("q"), 27):
            break
        action, bank, said = key_action(key, bank, wm.num_actions)
        if action is not None:
            t = time.perf_counter()
            session.append(wm.step(state, np.array([action]))[0])
            caption = f"{said}  {1e3 * (time.perf_counter() - t):.0f} ms"
        elif said:
            caption = said
        elif key == ord("r"):
            state = wm.reset(prompt)
            session = [state.last_frames_BHW3[0]]
            caption = "reset"
        elif key == ord("s"):
            frames = np.stack(session)
            big = frames.repeat(args.gif_scale, axis=1).repeat(args.gif_scale, axis=2)
            save_gif(big, out, fps=args.fps)
            caption = f"saved {out.name} ({len(session)} frames)"
            print(f"saved {out} ({len(session)} frames)", flush=True)
    cv2.destroyAllWindows()
    return 0


def run_cli(args: argparse.Namespace) -> int:
    from genie_robot.cli import run_reporting_errors, setup_logging

    setup_logging()
    return run_reporting_errors(play, args, "genie-robot play")


def register_cli(subparsers) -> None:
    from genie_robot import cli_flags as flags

    p = subparsers.add_parser("play", help="drive the world model with the keyboard in a window",
                              description=__doc__.split("\n\n")[0])
    flags.add_model(p, aliases=("--bundle",),
                    help="model bundle dir (from `genie-robot export`); default: the shipped model. --bundle is the "
                         "old name of this flag, as every other subcommand calls it --model")
    flags.add_backend(p, providers=True)
    flags.add_store(p, "prompt from this episode store ...")
    p.add_argument("--episode", type=int, default=0, help="... episode index (default 0)")
    p.add_argument("--image", default=None, help="prompt from an image file")
    p.add_argument("--prompt-frames", type=int, default=1, help="prompt length from a store or the simulator")
    flags.add_seed(p, 0, "sampling seed (and simulator episode seed)")
    p.add_argument("--steps", type=int, default=None, help="MaskGIT steps (default: the model config's)")
    p.add_argument("--scale", type=int, default=8, help="window upscaling factor (default 8)")
    flags.add_out(p, "where `s` saves the session GIF", required=False, default="play_session.gif")
    p.add_argument("--gif-scale", type=int, default=4, help="GIF upscaling factor (default 4)")
    p.add_argument("--fps", type=float, default=5.0, help="GIF frame rate")
    p.set_defaults(func=run_cli)
