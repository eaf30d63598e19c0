"""Planning in imagination measured against real goals: how close do planned latent-action sequences
get to a real goal frame, next to random sequences and the LAM's labels of the true video?
`evaluate_planner` returns the numbers and the frames; `genie-robot plan-eval`
(experiments/plan_report.py) writes them up as a report folder and an MLflow run.

For each held-out episode (simulated with seeds outside the training range 1000-1599, or read from
a store), a start frame s is drawn and the goal is the real frame s + H of the same episode. Four
latent-action sequences of length H are compared, each imagined from the start frame:

- planner: `plan(...)` toward the goal (CEM or random shooting);
- random: uniformly random latent sequences (`random` of them);
- LAM (true video): the latent actions the LAM infers from the real frames s .. s + H, an upper
  reference (the actions that really led to the goal, as the model understands them);
- and "start frame": the distance from the start frame itself to the goal (doing nothing).

Frames are model steps: a model trained on every n-th frame (the bundle's `frame_stride`, --stride)
imagines frames n source frames apart, so episodes are subsampled the same way (simulated for
(frames - 1) * n + 1 simulator frames and every n-th kept, or read from the store every n-th frame).
The goal is then H model steps = H * n source frames after the start, and the LAM labels transitions
the model was trained on.

Rollouts are sampled, so the planner's own search score is optimistic (it kept its luckiest draw).
Every sequence is therefore imagined again, `eval_rollouts` times with a seed the search never used,
and the distances of those fresh end frames are what is compared (pixel MSE, PSNR and token
distance, means with 95% bootstrap intervals over episodes).
"""

from __future__ import annotations

import time

import numpy as np

from genie_robot.errors import InputError

TRAIN_SEEDS = range(1000, 1600)  # seeds of the simulator episodes the default models are trained on
METHOD_ROWS = ("planner", "random", "lam", "start")  # the sequences compared, in the summary


def check_held_out(seed: int, episodes: int) -> None:
    lo, hi = seed, seed + episodes
    if lo < TRAIN_SEEDS.stop and hi > TRAIN_SEEDS.start:
        raise InputError(f"episode seeds {lo}..{hi - 1} overlap the training seeds {TRAIN_SEEDS.start}.."
                         f"{TRAIN_SEEDS.stop - 1}; pick --seed {TRAIN_SEEDS.stop} or higher (default 5000)")


def model_stride(model: str) -> int:
    """The bundle's training frame stride (its config's `data.frame_stride`, models.configs.DataConfig):
    one model step is this many source frames."""
    from genie_robot.runtime import bundle, default_model

    return bundle.read_config(default_model.resolve(model)).data.frame_stride


def check_stride(stride: int) -> int:
    if int(stride) < 1:
        raise InputError(f"--stride must be at least 1 (source frames per model step), got {stride}")
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
        raise InputError(f"--store {path} has {store.num_episodes} episodes; --first-episode {first} is past them")
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
            raise InputError(f"{name} must be at least 1, got {v}")
    if prompt_frames + horizon > wm.context + 1:
        raise InputError(f"prompt_frames + horizon = {prompt_frames + horizon} frames exceeds the model's context "
                         f"({wm.context}) + 1; shorten one of them")
    rng = np.random.default_rng([seed, 11])
    records, pics = [], []
    for e, video in enumerate(tqdm(episodes, desc="plan-eval", unit="ep", disable=not progress)):
        video = wm.prepare_frames(video, f"episode {e}")[0]
        T = len(video)
        if T < prompt_frames + horizon:
            raise InputError(f"episode {e} has {T} frames; need at least prompt_frames + horizon = "
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
