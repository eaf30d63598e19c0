"""Goal-reaching planner over latent actions: search sequences in {0..K-1}^T by imagined rollouts.

    result = plan(wm, frame_HW3, goal_HW3, horizon=4, method="cem", samples=64, iterations=3)
    result.actions_T      # (T,) int64, the best sequence found, T = horizon
    result.frames_THW3    # (T, H, W, 3) uint8, what the model imagined for it
    result.score          # distance of its last imagined frame to the goal (lower = closer)

The prompt is encoded once (`WorldModel.reset`); each iteration branches it into `samples` rows with
`WorldState.repeat` and rolls all candidates forward together, so the runtime sees batches of
`samples` (or `batch`) frames per step. Methods:

- "cem": the cross-entropy method over a categorical distribution per step, probs_TK. Each iteration
  samples `samples` sequences, keeps the `elites` closest to the goal, and moves probs_TK toward the
  elites' action frequencies (keeping `smoothing` of the old distribution so no action dies at once).
- "random": random shooting, `samples` uniform sequences per iteration (the same budget as CEM).

The best sequence over all iterations is returned. Rollouts are sampled (MaskGIT), so a score is one
draw; `genie-robot plan-eval` re-imagines the chosen sequence with fresh seeds to measure it honestly.

`RecedingHorizonPlanner` re-plans at every step from the newest camera frame and returns the first
action, warm-starting from the previous plan shifted by one step.

Shapes: B batch (candidates), T time (the horizon's steps), K latent actions; frames uint8 (…, H, W, 3)
(H, W: pixels, as in docs/architecture.md's legend).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from genie_robot.planning.scoring import SCORES, GoalScorer, check_image

METHODS = ("cem", "random")


@dataclass
class PlanResult:
    actions_T: np.ndarray  # (T,) int64, best latent-action sequence, T = horizon
    frames_THW3: np.ndarray  # (T, H, W, 3) uint8, its imagined frames (after each action)
    score: float  # goal distance of the last imagined frame ("pixel" MSE or "token" fraction)
    method: str
    score_name: str
    probs_TK: np.ndarray  # the final sampling distribution (uniform for "random")
    best_per_iteration: list[float] = field(default_factory=list)  # best score so far, after each iteration
    mean_per_iteration: list[float] = field(default_factory=list)  # mean candidate score of each iteration
    candidates: int = 0  # imagined rollouts evaluated
    seconds: float = 0.0


def _check_positive(**kwargs) -> None:
    for name, v in kwargs.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


def plan(world_model, frame, goal_HW3: np.ndarray, horizon: int, *, method: str = "cem", samples: int = 64,
         iterations: int = 3, elites: int = 8, score: str = "pixel", seed: int = 0, smoothing: float = 0.25,
         batch: int | None = None, init_probs_TK: np.ndarray | None = None,
         init_actions_T: np.ndarray | None = None, progress: bool = False) -> PlanResult:
    """Best latent-action sequence of length `horizon` from `frame` toward `goal_HW3`.

    frame: the current camera frame (H, W, 3) uint8, or recent frames (T, H, W, 3) ending with it
      (more context for the dynamics model; the actions between them are inferred with the LAM).
    goal_HW3: uint8 RGB of the same size as the frame. Both are resized to the model's resolution.
    samples: candidates per iteration; batch: most rows imagined at once (default: samples).
    init_probs_TK / init_actions_T: warm start (CEM distribution; a sequence tried in iteration 1).
    Deterministic for a given seed."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}: use one of {', '.join(SCORES)} (docs/planning.md)")
    _check_positive(horizon=horizon, samples=samples, iterations=iterations, elites=elites)
    batch = samples if batch is None else batch
    _check_positive(batch=batch)
    if elites > samples:
        raise ValueError(f"elites={elites} must be at most samples={samples}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    frame = np.asarray(frame)
    last = frame if frame.ndim == 3 else frame[-1] if frame.ndim == 4 else None
    if last is None:
        raise ValueError(f"frame: expected the current frame (H, W, 3) or recent frames (T, H, W, 3), "
                         f"got shape {frame.shape}")
    check_image(last, "frame")
    goal_HW3 = check_image(goal_HW3, "goal", like=last)
    K = world_model.num_actions
    T = int(horizon)
    probs_TK = np.full((T, K), 1.0 / K)
    if init_probs_TK is not None and method == "cem":
        p = np.asarray(init_probs_TK, np.float64)
        if p.shape != (T, K) or (p < 0).any() or not np.allclose(p.sum(1), 1.0):
            raise ValueError(f"init_probs_TK: expected ({T}, {K}) rows of probabilities, got {p.shape}")
        probs_TK = p.copy()
    warm = None
    if init_actions_T is not None:
        warm = np.asarray(init_actions_T, np.int64)
        if warm.shape != (T,) or (warm < 0).any() or (warm >= K).any():
            raise ValueError(f"init_actions_T: expected ({T},) latent actions in [0, {K}), got {warm.tolist()}")

    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 7])
    scorer = GoalScorer(world_model, goal_HW3, score)
    state0 = world_model.reset(frame, seed=seed)
    if state0.batch != 1:
        raise ValueError(f"frame: plan one world at a time, got a batch of {state0.batch} prompts")
    best = (np.inf, None, None)
    best_curve, mean_curve = [], []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=iterations * samples * T, unit="frame", desc=f"plan {method}", leave=False)
    for it in range(iterations):
        u = rng.random((samples, T, 1))
        actions_BT = (u > np.cumsum(probs_TK, 1)[None]).sum(-1).clip(0, K - 1).astype(np.int64)
        if it == 0 and warm is not None:
            actions_BT[0] = warm
        scores_B = np.empty(samples)
        frames_BTHW3 = None
        for lo in range(0, samples, batch):
            a = actions_BT[lo:lo + batch]
            state = state0.repeat(len(a))
            out = []
            for t in range(T):
                out.append(world_model.step(state, a[:, t]))
                if bar is not None:
                    bar.update(len(a))
            chunk = np.stack(out, 1)
            frames_BTHW3 = chunk if frames_BTHW3 is None else np.concatenate([frames_BTHW3, chunk])
            scores_B[lo:lo + len(a)] = scorer(state.last_frames_BHW3, state.last_tokens_BN)
        i = int(np.argmin(scores_B))
        if scores_B[i] < best[0]:
            best = (float(scores_B[i]), actions_BT[i].copy(), frames_BTHW3[i].copy())
        best_curve.append(best[0])
        mean_curve.append(float(scores_B.mean()))
        if method == "cem":
            elite = actions_BT[np.argsort(scores_B, kind="stable")[:elites]]
            freq_TK = np.stack([np.bincount(elite[:, t], minlength=K) for t in range(T)]) / elites
            probs_TK = smoothing * probs_TK + (1.0 - smoothing) * freq_TK
    if bar is not None:
        bar.close()
    return PlanResult(actions_T=best[1], frames_THW3=best[2], score=best[0], method=method, score_name=score,
                      probs_TK=probs_TK, best_per_iteration=best_curve, mean_per_iteration=mean_curve,
                      candidates=iterations * samples, seconds=time.perf_counter() - t0)


class RecedingHorizonPlanner:
    """Re-plans at every step from the newest frame toward a fixed goal; `act(frame) -> latent action`.

    One call is one model step: with a model trained on every n-th frame (the bundle's `frame_stride`)
    call it every n camera frames and execute the action for those n frames, so the kept frames are
    a model step apart, as the model saw them in training.

    Keeps the last `history` frames as the prompt (1 = the current frame only). Each plan is
    warm-started from the previous one shifted by one step: its remaining actions are tried as a
    candidate, and (CEM) its distribution seeds the next, with a uniform row appended at the end.

        mpc = RecedingHorizonPlanner(wm, goal_HW3, horizon=4, samples=32)
        for _ in range(steps):
            a = mpc.act(camera_frame)      # mpc.last: the PlanResult behind it
    """

    def __init__(self, world_model, goal_HW3: np.ndarray, horizon: int, *, history: int = 1, seed: int = 0,
                 **plan_kwargs):
        _check_positive(horizon=horizon, history=history)
        if history > world_model.context:
            raise ValueError(f"history={history} frames is more than the model's context of {world_model.context}")
        self.world_model, self.goal_HW3, self.horizon = world_model, goal_HW3, int(horizon)
        self.history, self.seed, self.plan_kwargs = int(history), int(seed), plan_kwargs
        self.reset()

    def reset(self) -> None:
        self._frames: list[np.ndarray] = []
        self._steps = 0
        self.last: PlanResult | None = None

    def act(self, frame_HW3: np.ndarray) -> int:
        frame_HW3 = check_image(frame_HW3, "frame", like=self._frames[-1] if self._frames else None)
        self._frames = (self._frames + [frame_HW3])[-self.history:]
        init_actions = init_probs = None
        if self.last is not None and self.horizon > 1:
            K = self.world_model.num_actions
            init_actions = np.concatenate([self.last.actions_T[1:], self.last.actions_T[-1:]])
            init_probs = np.concatenate([self.last.probs_TK[1:], np.full((1, K), 1.0 / K)])
        prompt = np.stack(self._frames) if len(self._frames) > 1 else self._frames[0]
        self.last = plan(self.world_model, prompt, self.goal_HW3, self.horizon, seed=self.seed + self._steps,
                         init_actions_T=init_actions, init_probs_TK=init_probs, **self.plan_kwargs)
        self._steps += 1
        return int(self.last.actions_T[0])
