"""`genie-robot plan-eval`: how close does planning in imagination get to a real goal frame? The
comparison is the library's (genie_robot/planning/evaluate.py: planner vs random sequences vs the
LAM's labels of the true video, each imagined again with fresh seeds); this module runs it from the
command line and writes it up.

    genie-robot plan-eval --model BUNDLE --out DIR [--episodes 8] [--horizon 4] [--method cem]
                          [--samples 64] [--iterations 3] [--score pixel] [--scene push] [--seed 5000]
                          [--stride N]

The folder --out gets report.md, metrics.json, grid.png (start | goal | planner | random | LAM end
frames, one row per episode), rollouts.gif and rollouts.png (real video | planner | LAM imagined, over
time); the same go to MLflow (genie_robot/artifacts/tracking.py) as one run, artifacts under
`plan_eval/`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from genie_robot.errors import InputError
from genie_robot.planning.evaluate import METHOD_ROWS

ARTIFACT_DIR = "plan_eval"
MIN_SIZE = 96  # pictures enlarge small frames (nearest) to at least this many pixels
METHOD_NAMES = {"planner": "planner", "random": "random latent sequences", "lam": "LAM-inferred (true video)",
                "start": "start frame (no motion)"}


def write_pictures(pics: list[dict], out: Path) -> None:
    from genie_robot.data.preview import frame_grid, save_gif, save_image

    h = pics[0]["start"].shape[0]
    scale = max(1, -(-MIN_SIZE // h))
    rows = [np.stack([p["start"], p["goal"], p["planner_THW3"][-1], p["random_THW3"][-1], p["lam_THW3"][-1]])
            for p in pics]
    save_image(frame_grid(rows, labels=[f"ep {i}" for i in range(len(pics))], scale=scale), out / "grid.png")
    # over time: for each episode three rows (real, planner, LAM), columns t = 0 .. H
    strip, labels = [], []
    for i, p in enumerate(pics):
        for name, key in (("real", "real_THW3"), ("planner", "planner_THW3"), ("LAM", "lam_THW3")):
            strip.append(np.concatenate([p["start"][None], p[key]]))
            labels.append(f"ep {i} {name}")
    save_image(frame_grid(strip, labels=labels, scale=scale), out / "rollouts.png")
    H = len(pics[0]["real_THW3"])
    gif = [frame_grid(np.stack([np.stack([p["goal"],
                                          p["real_THW3"][t - 1] if t else p["start"],
                                          p["planner_THW3"][t - 1] if t else p["start"],
                                          p["lam_THW3"][t - 1] if t else p["start"]]) for p in pics]), scale=scale)
           for t in range(H + 1)]
    save_gif(np.stack(gif), out / "rollouts.gif", fps=2.0)


def write_report(results: dict, params: dict, out: Path) -> None:
    from genie_robot.planning.stats import fmt_ci

    s = results["summary"]
    n = len(results["episodes"])
    lines = ["# Planning in imagination: goal distance of imagined end frames", "",
             f"{n} held-out episodes; goal = the real frame {params['horizon']} model steps after the start frame "
             f"({params['horizon'] * params['stride']} source frames at stride {params['stride']}, the model's "
             "training frame stride; episodes are subsampled alike). "
             f"Planner: {params['method']}, {params['samples']} samples x {params['iterations']} iterations, "
             f"{params['elites']} elites, score `{params['score']}` (docs/planning.md). Every sequence is imagined "
             f"again {params['eval_rollouts']} times with a seed the search did not use; the numbers are those "
             "fresh end frames against the goal. Means with 95% bootstrap intervals over episodes.", "",
             "| sequence | pixel MSE (lower is closer) | PSNR dB (higher) | token distance (lower) |",
             "| --- | --- | --- | --- |"]
    for m in METHOD_ROWS:
        lines.append(f"| {METHOD_NAMES[m]} | {fmt_ci(s[m]['pixel_mse'], 5)} | {fmt_ci(s[m]['psnr'], 2)} | "
                     f"{fmt_ci(s[m]['token_distance'], 3)} |")
    lines += ["", f"Planner closer to the goal than the random sequences (by the planning score, on the fresh imaginings) in "
              f"{fmt_ci(s['planner_beats_random'], 2)} of the episodes; planning took {s['plan_seconds'][0]:.1f} s "
              "per episode.", "",
              "Reading: the planner should land between random sequences (what no planning gives) and the "
              "LAM-inferred actions of the true video (the actions that really reached the goal, as the "
              "model understands them). \"start frame\" is the distance if nothing moved.", "",
              "## End frames", "", "Columns: start | goal (real) | planner | random | LAM-inferred; one row per "
              "episode.", "", "![end frames](grid.png)", "",
              "## Over time", "", "Rows per episode: real video, planner imagined, LAM-inferred imagined; "
              "columns t = 0 .. H (t = 0 is the start frame). Animated: rollouts.gif (goal | real | planner | LAM).",
              "", "![rollouts](rollouts.png)", "", "## Settings", "", "```", json.dumps(params, indent=1), "```", "",
              "Per-episode numbers: metrics.json."]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def flat_metrics(summary: dict) -> dict[str, float]:
    out = {}
    for m, v in summary.items():
        if isinstance(v, dict):
            for k, (mean, lo, hi) in v.items():
                out.update({f"{m}/{k}": mean, f"{m}/{k}_ci_low": lo, f"{m}/{k}_ci_high": hi})
        else:
            out[m] = v[0]
    return {k: float(v) for k, v in out.items() if np.isfinite(v)}


def run(args: argparse.Namespace) -> int:
    from genie_robot.artifacts.tracking import log_report_run
    from genie_robot.planning.evaluate import (check_held_out, check_stride, evaluate_planner, model_stride,
                                               simulated_episodes, store_episodes)
    from genie_robot.runtime.world_model import WorldModel

    if args.backend == "torch":
        from genie_robot.device import configure_cpu_threads

        configure_cpu_threads(args.threads or None)  # --threads, else GENIE_NUM_THREADS, else all cores
    wm = WorldModel.load(args.model, backend=args.backend, threads=args.threads or None, seed=args.seed)
    args.stride = check_stride(args.stride or model_stride(args.model))  # 0: the bundle's frame_stride
    if args.store:
        episodes = store_episodes(args.store, args.episodes, args.first_episode, args.stride)
    else:
        check_held_out(args.seed, args.episodes)
        H, W = wm.resolution
        if H != W:
            raise InputError(f"the simulator renders square frames; this model is {W}x{H}: use --store")
        episodes = simulated_episodes(args.episodes, args.frames, H, args.scene, args.seed, stride=args.stride)
    params = {k: getattr(args, k) for k in ("model", "backend", "episodes", "horizon", "prompt_frames", "method",
                                            "samples", "iterations", "elites", "score", "random", "eval_rollouts",
                                            "seed", "scene", "frames", "store", "stride")}
    params["provider"] = wm.provider
    results = evaluate_planner(wm, episodes, horizon=args.horizon, prompt_frames=args.prompt_frames,
                               method=args.method, samples=args.samples, iterations=args.iterations,
                               elites=args.elites, score=args.score, random=args.random,
                               eval_rollouts=args.eval_rollouts, seed=args.seed, stride=args.stride)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_pictures(results["pictures"], out)
    write_report(results, params, out)
    (out / "metrics.json").write_text(json.dumps({"params": params, "summary": results["summary"],
                                                  "episodes": results["episodes"]}, indent=1))
    print((out / "report.md").read_text())
    if not args.no_mlflow:
        run_id = log_report_run(experiment=args.experiment, tracking_uri=args.tracking_uri, run_name="plan-eval",
                                params=params, metrics=flat_metrics(results["summary"]), out=out,
                                artifact_dir=ARTIFACT_DIR)
        print(f"MLflow run {run_id}")
    print(f"report: {out / 'report.md'}")
    return 0


def run_cli(args: argparse.Namespace) -> int:
    from genie_robot.cli import run_reporting_errors

    return run_reporting_errors(run, args, "genie-robot plan-eval")


def add_report_args(p) -> None:
    """The flags of the studies over a model bundle (plan-eval, agents): the model, how it runs, the
    report folder and MLflow."""
    from genie_robot import cli_flags as flags

    flags.add_model(p, required=True, help="model bundle dir (genie-robot export --out), or 'default'")
    flags.add_backend(p)
    flags.add_threads(p)
    flags.add_out(p, "report folder (created)", metavar="DIR")
    flags.add_mlflow(p, optional=True)


def register_cli(subparsers) -> None:
    from genie_robot import cli_flags as flags

    p = subparsers.add_parser("plan-eval", help="planner vs random vs LAM-inferred latent actions toward real goals",
                              description=__doc__.split("\n\n")[0])
    add_report_args(p)
    flags.add_episodes(p, 8, "held-out episodes, one start/goal pair each (default 8)")
    p.add_argument("--horizon", type=int, default=4,
                   help="plan length H; the goal is the real frame H model steps (H * stride frames) later")
    p.add_argument("--prompt-frames", type=int, default=1, help="real frames up to the start given as the prompt")
    p.add_argument("--method", default="cem", choices=["cem", "random"])
    p.add_argument("--samples", type=int, default=64, help="candidate sequences per iteration (one batch)")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--elites", type=int, default=8)
    p.add_argument("--score", default="pixel", choices=["pixel", "token"], help="goal distance (docs/planning.md)")
    p.add_argument("--random", type=int, default=16, help="random latent sequences per episode (the baseline)")
    p.add_argument("--eval-rollouts", type=int, default=4, help="fresh imaginings of each chosen sequence")
    flags.add_seed(p, 5000, "first simulator episode seed (held out: not in 1000-1599) and sampling seed")
    p.add_argument("--scene", default="push", choices=["push", "pick", "slide", "mix"], help="simulator scene")
    p.add_argument("--frames", type=int, default=24,
                   help="frames per simulated episode after subsampling (model steps + 1; default 24)")
    flags.add_stride(p, help="source frames per model step: keep every n-th simulated or stored frame "
                             "(default 0: the bundle's training frame_stride, 1 if it records none)")
    flags.add_store(p, "read episodes from this store instead of simulating")
    p.add_argument("--first-episode", type=int, default=0, help="with --store: first episode index")
    p.set_defaults(func=run_cli)
