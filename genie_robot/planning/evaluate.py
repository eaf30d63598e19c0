"""`genie-robot plan-eval`: how close does planning in imagination get to a real goal frame?

    genie-robot plan-eval --model BUNDLE --out DIR [--episodes 8] [--horizon 4] [--method cem]
                          [--samples 64] [--iterations 3] [--score pixel] [--scene push] [--seed 5000]
                          [--stride N]

For each held-out episode (simulated with seeds outside the training range 1000-1599, or read from
--store), a start frame s is drawn and the goal is the real frame s + H of the same episode. Four
latent-action sequences of length H are compared, each imagined from the start frame:

- planner: `plan(...)` toward the goal (CEM or random shooting);
- random: uniformly random latent sequences (--random of them);
- LAM (true video): the latent actions the LAM infers from the real frames s .. s + H, an upper
  reference (the actions that really led to the goal, as the model understands them);
- and "start frame": the distance from the start frame itself to the goal (doing nothing).

Frames are model steps: a model trained on every n-th frame (the bundle's `frame_stride`, --stride)
imagines frames n source frames apart, so episodes are subsampled the same way (simulated for
(frames - 1) * n + 1 simulator frames and every n-th kept, or read from the store every n-th frame).
The goal is then H model steps = H * n source frames after the start, and the LAM labels transitions
the model was trained on.

Rollouts are sampled, so the planner's own search score is optimistic (it kept its luckiest draw).
Every sequence is therefore imagined again, --eval-rollouts times with a seed the search never used,
and the distances of those fresh end frames are what the report compares (pixel MSE, PSNR and token
distance, means with 95% bootstrap intervals over episodes).

The folder --out gets report.md, metrics.json, grid.png (start | goal | planner | random | LAM end
frames, one row per episode), rollouts.gif and rollouts.png (real video | planner | LAM imagined, over
time); the same go to MLflow (genie_robot/artifacts/tracking.py) as one run, artifacts under
`plan_eval/`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from genie_robot.cli import report_error

ARTIFACT_DIR = "plan_eval"
TRAIN_SEEDS = range(1000, 1600)  # seeds of the simulator episodes the default models are trained on
MIN_SIZE = 96  # pictures enlarge small frames (nearest) to at least this many pixels
METHOD_ROWS = ("planner", "random", "lam", "start")
METHOD_NAMES = {"planner": "planner", "random": "random latent sequences", "lam": "LAM-inferred (true video)",
                "start": "start frame (no motion)"}


def check_held_out(seed: int, episodes: int) -> None:
    lo, hi = seed, seed + episodes
    if lo < TRAIN_SEEDS.stop and hi > TRAIN_SEEDS.start:
        raise ValueError(f"episode seeds {lo}..{hi - 1} overlap the training seeds {TRAIN_SEEDS.start}.."
                         f"{TRAIN_SEEDS.stop - 1}; pick --seed {TRAIN_SEEDS.stop} or higher (default 5000)")


def model_stride(model: str) -> int:
    """The bundle's training frame stride (its config's `data.frame_stride`, models.configs.DataConfig):
    one model step is this many source frames."""
    from genie_robot.runtime import bundle, default_model

    return bundle.read_config(default_model.resolve(model)).data.frame_stride


def check_stride(stride: int) -> int:
    if int(stride) < 1:
        raise ValueError(f"--stride must be at least 1 (source frames per model step), got {stride}")
    return int(stride)


def simulated_episodes(episodes: int, frames: int, resolution: int, scene: str, seed: int, progress=True,
                       stride: int = 1):
    """Held-out simulator episodes at the model's frame rate: list of (frames, R, R, 3) uint8, each
    simulated for (frames - 1) * stride + 1 simulator frames and every stride-th frame kept."""
    from tqdm import tqdm

    from genie_robot.data.sim.simulate import generate_episode

    stride = check_stride(stride)
    return [generate_episode(seed + k, (frames - 1) * stride + 1, resolution, scene).rgb[::stride]
            for k in tqdm(range(episodes), desc=f"simulate {scene}", unit="ep", disable=not progress)]


def store_episodes(path: str, episodes: int, first: int = 0, stride: int = 1):
    """Episodes first .. first + episodes - 1 of a store, every stride-th frame: list of (T, H, W, 3)."""
    from genie_robot.data.store import EpisodeStore

    stride = check_stride(stride)
    store = EpisodeStore.open(path)
    picked = range(first, min(store.num_episodes, first + episodes))
    if not picked:
        raise ValueError(f"--store {path} has {store.num_episodes} episodes; --first-episode {first} is past them")
    return [store.frames(*store.episode_bounds(i), stride) for i in picked]


def _imagine(wm, prompt, actions_BT, seed):
    """-> (frames (B, T, H, W, 3), last tokens (B, N)) of one batched rollout, T = the actions' steps."""
    state = wm.reset(prompt, seed=seed)
    state = state.repeat(len(actions_BT))
    frames = [wm.step(state, actions_BT[:, t]) for t in range(actions_BT.shape[1])]
    return np.stack(frames, 1), state.last_tokens_BN


def evaluate_planner(wm, episodes: list[np.ndarray], *, horizon: int = 4, prompt_frames: int = 1, method: str = "cem",
             samples: int = 64, iterations: int = 3, elites: int = 8, score: str = "pixel", random: int = 16,
             eval_rollouts: int = 4, seed: int = 0, stride: int = 1, progress: bool = True) -> dict:
    """Runs the comparison on `episodes` (list of (T, H, W, 3) uint8 videos at the model's frame rate,
    i.e. already subsampled by `stride`). Returns a dict with per-episode records ("episodes": "start"
    and "goal" index the given video, "start_frame" and "goal_frame" the source episode, stride
    times those), summary metrics ("summary": method -> metric -> (mean, lo, hi)), and the frames for
    pictures ("pictures")."""
    from tqdm import tqdm

    from genie_robot.planning.planner import plan
    from genie_robot.planning.scoring import pixel_distance, psnr, token_distance
    from genie_robot.planning.stats import mean_ci

    for name, v in (("horizon", horizon), ("prompt_frames", prompt_frames), ("random", random),
                    ("eval_rollouts", eval_rollouts)):
        if v < 1:
            raise ValueError(f"{name} must be at least 1, got {v}")
    if prompt_frames + horizon > wm.context + 1:
        raise ValueError(f"prompt_frames + horizon = {prompt_frames + horizon} frames exceeds the model's context "
                         f"({wm.context}) + 1; shorten one of them")
    rng = np.random.default_rng([seed, 11])
    records, pics = [], []
    for e, video in enumerate(tqdm(episodes, desc="plan-eval", unit="ep", disable=not progress)):
        video = wm.prepare_frames(video, f"episode {e}")[0]
        T = len(video)
        if T < prompt_frames + horizon:
            raise ValueError(f"episode {e} has {T} frames; need at least prompt_frames + horizon = "
                             f"{prompt_frames + horizon} (simulate longer episodes with --frames)")
        s = int(rng.integers(prompt_frames - 1, T - horizon))
        prompt, goal = video[s - prompt_frames + 1: s + 1], video[s + horizon]
        t0 = time.perf_counter()
        result = plan(wm, prompt, goal, horizon, method=method, samples=samples, iterations=iterations,
                      elites=elites, score=score, seed=seed + e)
        plan_s = time.perf_counter() - t0
        lam_T = wm.infer_actions(video[s: s + horizon + 1][None])[0]
        random_RT = rng.integers(0, wm.num_actions, (random, horizon))
        K = eval_rollouts
        rows = np.concatenate([np.repeat(result.actions_T[None], K, 0), np.repeat(lam_T[None], K, 0), random_RT])
        # a seed the search never used: the comparison sees fresh draws of every sequence
        frames, tokens = _imagine(wm, prompt, rows, seed=10_000_019 + seed + e)
        ends = frames[:, -1]
        goal_N = wm.encode(goal)[0, 0]
        start_N = wm.encode(video[s])[0, 0]
        groups = {"planner": slice(0, K), "lam": slice(K, 2 * K), "random": slice(2 * K, 2 * K + random)}
        rec = {"episode": e, "start": s, "goal": s + horizon, "start_frame": s * stride,
               "goal_frame": (s + horizon) * stride, "planner_actions": result.actions_T.tolist(),
               "lam_actions": lam_T.tolist(), "search_score": result.score, "plan_seconds": plan_s}
        for m, g in groups.items():
            rec[f"{m}/pixel_mse"] = float(pixel_distance(ends[g], goal).mean())
            rec[f"{m}/psnr"] = float(psnr(ends[g], goal).mean())
            rec[f"{m}/token_distance"] = float(token_distance(tokens[g], goal_N).mean())
        rec["start/pixel_mse"] = float(pixel_distance(video[s][None], goal)[0])
        rec["start/psnr"] = float(psnr(video[s][None], goal)[0])
        rec["start/token_distance"] = float(token_distance(start_N[None], goal_N)[0])
        rec["planner_beats_random"] = rec["planner/pixel_mse" if score == "pixel" else "planner/token_distance"] < \
            rec["random/pixel_mse" if score == "pixel" else "random/token_distance"]
        records.append(rec)
        pics.append({"start": video[s], "goal": goal, "real_THW3": video[s + 1: s + horizon + 1],
                     "planner_THW3": frames[0], "lam_THW3": frames[K], "random_THW3": frames[2 * K]})
    summary = {m: {k: mean_ci([r[f"{m}/{k}"] for r in records], seed=seed)
                   for k in ("pixel_mse", "psnr", "token_distance")} for m in METHOD_ROWS}
    summary["planner_beats_random"] = mean_ci([float(r["planner_beats_random"]) for r in records], seed=seed)
    summary["plan_seconds"] = mean_ci([r["plan_seconds"] for r in records], seed=seed)
    return {"episodes": records, "summary": summary, "pictures": pics}


# ------------------------------------------------------------------------------------- report


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


def log_to_mlflow(experiment: str, tracking_uri: str | None, run_name: str, params: dict, metrics: dict,
                  out: Path, artifact_dir: str) -> str:
    """One MLflow run through genie_robot/artifacts/tracking.py: params, metrics (step 0), every file in `out`."""
    from genie_robot.artifacts.tracking import log_report_run

    return log_report_run(experiment=experiment, tracking_uri=tracking_uri, run_name=run_name, params=params,
                          metrics=metrics, out=out, artifact_dir=artifact_dir)


def run_cli(args: argparse.Namespace) -> int:
    from genie_robot.runtime.world_model import WorldModel

    try:
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
                raise ValueError(f"the simulator renders square frames; this model is {W}x{H}: use --store")
            episodes = simulated_episodes(args.episodes, args.frames, H, args.scene, args.seed, stride=args.stride)
        params = {k: getattr(args, k) for k in ("model", "backend", "episodes", "horizon", "prompt_frames", "method",
                                                "samples", "iterations", "elites", "score", "random", "eval_rollouts",
                                                "seed", "scene", "frames", "store", "stride")}
        params["provider"] = wm.provider
        results = evaluate_planner(wm, episodes, horizon=args.horizon, prompt_frames=args.prompt_frames, method=args.method,
                           samples=args.samples, iterations=args.iterations, elites=args.elites, score=args.score,
                           random=args.random, eval_rollouts=args.eval_rollouts, seed=args.seed, stride=args.stride)
    except (ValueError, FileNotFoundError) as exc:
        return report_error("genie-robot plan-eval", exc)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_pictures(results["pictures"], out)
    write_report(results, params, out)
    (out / "metrics.json").write_text(json.dumps({"params": params, "summary": results["summary"],
                                                  "episodes": results["episodes"]}, indent=1))
    print((out / "report.md").read_text())
    if not args.no_mlflow:
        run_id = log_to_mlflow(args.experiment, args.tracking_uri, "plan-eval", params,
                               flat_metrics(results["summary"]), out, ARTIFACT_DIR)
        print(f"MLflow run {run_id}")
    print(f"report: {out / 'report.md'}")
    return 0


def add_common_args(p) -> None:
    p.add_argument("--model", required=True, metavar="BUNDLE", help="model bundle dir (genie-robot export --out)")
    p.add_argument("--backend", default="onnx", choices=["onnx", "torch"])
    p.add_argument("--threads", type=int, default=0, help="CPU threads for inference (0 = the backend's default)")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (created)")
    p.add_argument("--experiment", default="genie-robot", help="MLflow experiment")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: sqlite:///mlflow.db in the working directory)")
    p.add_argument("--no-mlflow", action="store_true", help="write the report folder only")


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("plan-eval", help="planner vs random vs LAM-inferred latent actions toward real goals",
                              description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--episodes", type=int, default=8, help="held-out episodes, one start/goal pair each (default 8)")
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
    p.add_argument("--seed", type=int, default=5000,
                   help="first simulator episode seed (held out: not in 1000-1599) and sampling seed")
    p.add_argument("--scene", default="push", choices=["push", "pick", "slide", "mix"], help="simulator scene")
    p.add_argument("--frames", type=int, default=24,
                   help="frames per simulated episode after subsampling (model steps + 1; default 24)")
    p.add_argument("--stride", type=int, default=0,
                   help="source frames per model step: keep every n-th simulated or stored frame "
                        "(default 0: the bundle's training frame_stride, 1 if it records none)")
    p.add_argument("--store", default=None, help="read episodes from this store instead of simulating")
    p.add_argument("--first-episode", type=int, default=0, help="with --store: first episode index")
    p.set_defaults(func=run_cli)
