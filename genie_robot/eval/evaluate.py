"""Evaluate a trained Genie on held-out episodes: the computation behind `genie-robot eval`.

    genie, _ = load_genie("runs/dynamics")                      # or runtime.bundle.load_genie(bundle)
    data = load_clips("sim.zarr", resolution=(64, 64), frames=16, split="val", episodes=16, val_fraction=0.1)
    ev = evaluate_model(genie, data["clips"])                   # Evaluation: metrics + the frames behind them
    ev.metrics["recon/psnr"], ev.metrics["delta_psnr/t4"], ev.metrics.get("latent/nmi")

`evaluate_model` returns data, not files: the metrics (what metrics.json holds) and the frames and
curves the pictures are made of. experiments/eval_report.py (`genie-robot eval`) writes them as a
report folder (report.md, pictures) and an MLflow run.

Clips: one per episode of the split (the training run's `val_fraction`), the first `frames` frames
(every `stride`-th), episodes too short are skipped. Latent actions for usage / NMI are inferred over
the whole of each episode, in windows of the LAM's context.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genie_robot.errors import InputError


class EvalError(InputError):
    """A problem with the inputs (checkpoints, store) that the user fixes; printed without a traceback."""


# ------------------------------------------------------------------------------------------ loading


def load_genie(dynamics: str, tokenizer: str | None = None, *, ema: bool = True, device="cpu"):
    """A Genie from a stage-2 checkpoint (a run dir or checkpoint dir), in eval mode, optionally with a
    stage-1 run's tokenizer (artifacts.checkpoints.load_genie). Returns (genie, dynamics checkpoint
    config dict)."""
    import torch

    from genie_robot.artifacts import checkpoints as ckpt_io

    try:
        genie, used = ckpt_io.load_genie(dynamics, tokenizer, ema=ema)
    except ckpt_io.CheckpointError as exc:
        raise EvalError(str(exc)) from None
    return genie.to(torch.device(device)).requires_grad_(False), used["dynamics"].config


def load_clips(store_path: str, *, resolution: tuple[int, int], frames: int, split: str, episodes: int,
               val_fraction: float, stride: int = 1) -> dict:
    """{"clips": uint8 (B, T, H, W, 3), "episodes": (B,) indices, "store": EpisodeStore}: the first
    `frames` frames (every `stride`-th, as the model was trained) of up to `episodes` episodes of
    `split` long enough for them."""
    from genie_robot.data.store import EpisodeStore, StoreError
    from genie_robot.data.windows import split_episodes

    try:
        store = EpisodeStore.open(store_path)
    except (StoreError, OSError) as exc:  # missing path, invalid store
        raise EvalError(f"--store {store_path}: {exc}") from None
    if tuple(store.resolution) != tuple(resolution):
        H, W = store.resolution
        raise EvalError(f"store resolution {H}x{W} differs from the model's {resolution[0]}x{resolution[1]}; "
                        "evaluate on a store recorded at the model's resolution")
    chosen, clips = [], []
    span = (frames - 1) * stride + 1  # store frames a clip of `frames` frames, every `stride`-th, covers
    in_split = split_episodes(store.num_episodes, split, val_fraction)
    for e in in_split:
        start, end = store.episode_bounds(int(e))
        if end - start >= span:
            chosen.append(int(e))
            clips.append(store.frames(start, start + span, stride))
        if len(chosen) == episodes:
            break
    if not chosen:
        longest = int(store.episode_lengths[in_split].max()) if len(in_split) else 0
        fixes = [f"--frames {max(1, (longest - 1) // stride + 1)} or fewer" if longest else "a store with episodes"]
        if stride > 1:
            fixes.append("a smaller --stride (the model was trained at this one)")
        if split != "all":
            fixes.append("--split all")
        raise EvalError(
            f"no {split} episode of {store_path} has the {span} frames a clip of {frames} frames "
            + (f"at stride {stride} " if stride > 1 else "")
            + f"needs ({len(in_split)} {split} episodes, the longest {longest} frames); pass "
            + ", or ".join(fixes)
        )
    return {"clips": np.stack(clips), "episodes": np.asarray(chosen), "store": store}


def load_ood_clips(path: str, *, resolution: tuple[int, int], frames: int, episodes: int) -> np.ndarray:
    """uint8 (B, T, H, W, 3) out-of-domain clips at the model's resolution (centred crop + resize, the
    converters' `center_crop_resize`): the first `frames` frames (or as many as the shortest chosen
    episode has) of up to `episodes` episodes of an episode store, or the clip in an .npz file's
    `image` array (T, H, W, 3)."""
    from genie_robot.data.convert.images import center_crop_resize
    from genie_robot.data.store import EpisodeStore, StoreError

    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                if "image" not in z:
                    raise EvalError(f"--ood {path}: no 'image' array in the file (found {sorted(z.files)})")
                videos = [np.asarray(z["image"])]
        except (OSError, ValueError) as exc:
            raise EvalError(f"--ood {path}: not a readable .npz ({exc})") from None
    else:
        try:
            store = EpisodeStore.open(path)
        except (StoreError, OSError) as exc:
            raise EvalError(f"--ood {path}: {exc} (pass an episode store or an .npz with an 'image' array)") from None
        videos = [store.frames(*store.episode_bounds(e)) for e in range(min(episodes, store.num_episodes))]
    v0 = videos[0]
    if v0.dtype != np.uint8 or v0.ndim != 4 or v0.shape[-1] != 3:
        raise EvalError(f"--ood {path}: expected uint8 (T, H, W, 3) frames, got {v0.dtype} {v0.shape}")
    T = min(frames, *(len(v) for v in videos))
    if T < 2:
        raise EvalError(f"--ood {path}: episodes have fewer than 2 frames")
    return np.stack([[center_crop_resize(f, resolution) for f in v[:T]] for v in videos])


def evaluate_ood(genie, clips_BTHW3: np.ndarray, *, seed: int = 0, show: int = 3) -> tuple[dict, list[np.ndarray]]:
    """Tokenizer reconstruction and rollouts from the first frame on out-of-domain clips. Returns the
    metrics and the first `show` clips' videos [real, reconstruction, inferred actions, random actions],
    each uint8 (show, T, H, W, 3)."""
    import torch

    from . import metrics as M

    clips = torch.from_numpy(np.ascontiguousarray(clips_BTHW3)).to(next(genie.parameters()).device)
    rec = M.tokenizer_reconstruction(genie.tokenizer, clips)
    dp = M.delta_psnr(genie, clips, seed=seed)
    B, T = clips_BTHW3.shape[:2]
    r = {"clips": int(B), "frames": int(T), "recon/psnr": float(rec["psnr"].mean()),
         "recon/ssim": float(rec["ssim"].mean()), "gen/psnr_inferred": float(np.mean(dp.psnr_inferred_BT[:, 1:])),
         "gen/psnr_random": float(np.mean(dp.psnr_random_BT[:, 1:]))}
    n = min(show, B)
    return r, [clips_BTHW3[:n], rec["recon"][:n], dp.frames_inferred_BTHW3[:n], dp.frames_random_BTHW3[:n]]


def infer_episode_actions(lam, frames_THW3: np.ndarray, context: int) -> np.ndarray:
    """Latent actions (T-1,) of a whole episode: windows of `context` frames overlapping by one frame,
    so every transition is labelled once, with at most `context` frames of history."""
    import torch

    acts = []
    step = max(context - 1, 1)
    for s in range(0, len(frames_THW3) - 1, step):
        chunk = torch.from_numpy(np.ascontiguousarray(frames_THW3[s : s + context]))[None]
        if chunk.shape[1] < 2:
            break
        acts.append(lam.infer_actions(chunk.to(next(lam.parameters()).device))[0].cpu().numpy())
    return np.concatenate(acts) if acts else np.zeros(0, np.int64)



GRID_MAX_STREAMS = 256  # latent_action_grid's rollouts per batch: memory grows with it (2,048 streams of
                        # the default model took 24 GiB)


def latent_action_grid(genie, starts_BHW3, *, depth: int = 3, seed: int = 0, actions: list[int] | None = None,
                       **sampling) -> np.ndarray:
    """From each start frame, `depth` steps of each latent action repeated -> uint8 (B, A, depth+1, H, W, 3)
    (index 0 along the steps is the start frame). `actions`: only these, in this order (A = their
    number); default every one. Batched rollouts of whole start frames, at most GRID_MAX_STREAMS
    streams each (or one start frame's A), each seeded with `seed`."""
    from genie_robot.runtime.world_model import WorldModel

    starts = np.asarray(starts_BHW3)
    B = starts.shape[0]
    chosen = np.arange(genie.cfg.dynamics.num_actions) if actions is None else np.asarray(actions, np.int64)
    A = len(chosen)
    per_batch = max(1, GRID_MAX_STREAMS // A)
    was_training = genie.training
    parts = []
    try:
        for b0 in range(0, B, per_batch):
            chunk = starts[b0:b0 + per_batch]
            prompt = np.repeat(chunk, A, 0)[:, None]  # (b*A, 1, H, W, 3): start b, action a at row b*A + a
            actions_BT = np.tile(chosen, len(chunk))[:, None].repeat(depth, 1)
            imagined = WorldModel.from_genie(genie, seed=seed, **sampling).rollout(prompt, actions_BT)
            parts.append(np.concatenate([prompt, imagined], 1))
    finally:
        genie.train(was_training)
    out = np.concatenate(parts)
    return out.reshape(B, A, depth + 1, *out.shape[2:])


# ------------------------------------------------------------------------------------------ the run

MOTION_MAX_ACTIONS = 16  # the motion table covers every code of a LAM with at most this many


def measure_motion(genie, starts_BHW3: np.ndarray, episode_frames: list[np.ndarray], episode_codes: list[np.ndarray],
                   *, actions: list[int] | None = None, group_of_code: np.ndarray | None = None, depth: int = 3,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Which way `actions` (default: every code) move the picture from each start frame, against the real
    moves of the episodes (motion.py). episode_codes: each episode's inferred actions (infer_episode_actions);
    group_of_code: code -> index into `actions` (e.g. its direction; default: the code itself).
    Returns (grid (B, K, depth+1, H, W, 3), its moves (B, K, depth, 2), motion.action_motion's dict)."""
    from . import motion as mo

    grid = latent_action_grid(genie, starts_BHW3, depth=depth, seed=seed, actions=actions)
    real_moves = np.concatenate([mo.step_moves(f[: len(c) + 1]) for f, c in zip(episode_frames, episode_codes)])
    codes = np.concatenate(episode_codes)
    moves = mo.grid_moves(grid)
    return grid, moves, mo.action_motion(moves, real_moves, codes if group_of_code is None else group_of_code[codes])


@dataclass
class Evaluation:
    """What `evaluate_model` measured. `metrics` is what metrics.json holds; the rest is what the
    report's pictures are made of, for the first `shown` clips."""

    metrics: dict
    clips_BTHW3: np.ndarray                 # uint8, the first `shown` real clips
    recon_BTHW3: np.ndarray                 # their tokenizer reconstructions
    delta_psnr: object                      # metrics.DeltaPSNR of every clip: PSNR curves, imagined frames
    shown: int
    depth: int                              # steps per latent action in latent_grid
    t_report: int                           # the t of the Δ_t PSNR in the report
    latent_grid: np.ndarray | None = None   # (shown, A, depth+1, H, W, 3): latent_action_grid; None for a
                                            # ground-truth-action model
    nmi_table: tuple | None = None          # latent_analysis.contingency(codes, discretised actions)
    direction_codes: list[int] | None = None  # FSQ actions read as directions: each one's corner code
                                              # (latent_analysis.direction_corners), an index into latent_grid
    motion_grid: np.ndarray | None = None   # (shown, K, depth+1, H, W, 3): the rollouts of the K actions
                                            # metrics["latent/motion/actions"] that the motion table measured
    motion_moves: np.ndarray | None = None  # (shown, K, depth, 2): their moves (motion.grid_moves)
    fvd_note: str | None = None             # why FVD was skipped
    ood_videos: dict[str, list[np.ndarray]] = field(default_factory=dict)  # name -> evaluate_ood's videos


def evaluate_model(genie, clips_BTHW3: np.ndarray, *, episode_frames: list[np.ndarray] | None = None,
                   episode_actions: list[np.ndarray] | None = None, seed: int = 0, seeds: int = 1, depth: int = 3,
                   t_report: int = 4,
                   fvd: bool = False, i3d_weights: str | None = None, show: int = 4,
                   ood: dict[str, np.ndarray] | None = None, clip_actions_BTm1: np.ndarray | None = None) -> Evaluation:
    """Compute every metric of the report, and the frames its pictures show.
    `ood`: {name: uint8 (B, T, H, W, 3)} out-of-domain clips (load_ood_clips), reported beside.

    clips_BTHW3: uint8 real clips; episode_frames / episode_actions: whole episodes (T_e, H, W, 3) and
    their ground-truth actions (T_e, A) for the latent-action analysis (actions may be None).
    seeds: generation PSNR and ΔPSNR averaged over this many sampling seeds (seed, seed + 1, ...; each
    seed's reading kept in `*_by_seed`); one seed's reading moves by ~0.1-0.2 dB with the seed. The
    pictures, SSIM and FVD use the first seed's rollouts.
    clip_actions_BTm1: the clips' ground-truth actions summed per transition (B, T-1, A), for a dynamics
    model conditioned on them (the ground-truth-action control): ΔPSNR is then true vs shuffled
    actions, and the latent-action pictures and analysis are skipped."""
    import torch
    from tqdm import tqdm

    from . import latent_analysis as la
    from . import metrics as M

    if seeds < 1:
        raise EvalError(f"seeds={seeds}: average over at least 1 sampling seed")
    clips = torch.from_numpy(np.ascontiguousarray(clips_BTHW3)).to(next(genie.parameters()).device)
    B, T, H, W, _ = clips.shape
    n = min(show, B)
    A = genie.cfg.dynamics.num_actions
    results: dict = {"clips": int(B), "frames": int(T), "num_actions": int(A)}
    ground_truth = genie.cfg.dynamics.action_source == "ground_truth"

    # One tick per stage, on a terminal only (disable=None): FVD and --ood take tens of seconds each.
    stages = ["reconstruction", "rollouts" if seeds == 1 else f"rollouts ({seeds} seeds)"] \
        + ([] if ground_truth else ["latent actions", "action motion"]) \
        + (["FVD"] if fvd else []) + [f"ood {name}" for name in (ood or {})]
    progress = tqdm(total=len(stages), desc="eval", unit="stage", disable=None, leave=False)

    def stage_done():
        progress.update()
        if progress.n < len(stages):
            progress.set_postfix_str(stages[progress.n])  # refreshes: every stage is shown, however fast
        else:
            progress.refresh()

    progress.set_postfix_str(stages[0])

    # Tokenizer reconstruction
    rec = M.tokenizer_reconstruction(genie.tokenizer, clips)
    results["recon/psnr"] = float(rec["psnr"].mean())
    results["recon/ssim"] = float(rec["ssim"].mean())
    results["tokens/changed"], results["tokens/patches_changed"] = rec["token_change"], rec["patch_change"]
    results["gen/psnr_no_motion"] = float(M.no_motion_psnr(clips_BTHW3).mean())
    stage_done()

    # ΔPSNR and the rollouts it makes
    if ground_truth and clip_actions_BTm1 is None:
        raise EvalError("this dynamics model is conditioned on ground-truth actions: evaluate it on a store with "
                        "data/action")
    gt_actions = torch.from_numpy(np.asarray(clip_actions_BTm1, np.float32)) if ground_truth else None
    runs = [M.delta_psnr(genie, clips, seed=seed + k, actions_BTm1=gt_actions) for k in range(seeds)]
    dp = M.DeltaPSNR.averaged(runs)
    if seeds > 1:
        results["seeds"] = int(seeds)
        results["gen/psnr_inferred_by_seed"] = [float(np.mean(r.psnr_inferred_BT[:, 1:])) for r in runs]
        if 1 <= t_report < T:
            results[f"delta_psnr/t{t_report}_by_seed"] = [r.at(t_report) for r in runs]
    del runs
    results["actions"] = "ground truth (baseline: shuffled)" if ground_truth else "latent (baseline: random)"
    results["delta_psnr/curve"] = [None if np.isnan(v) else float(v) for v in dp.delta_T]
    if 1 <= t_report < T:
        results[f"delta_psnr/t{t_report}"] = dp.at(t_report)
    results["gen/psnr_inferred"] = float(np.mean(dp.psnr_inferred_BT[:, 1:]))
    results["gen/psnr_random"] = float(np.mean(dp.psnr_random_BT[:, 1:]))
    results["gen/ssim_inferred"] = float(M.ssim(clips_BTHW3[:, 1:], dp.frames_inferred_BTHW3[:, 1:]).mean())
    stage_done()
    ev = Evaluation(metrics=results, clips_BTHW3=clips_BTHW3[:n], recon_BTHW3=rec["recon"][:n], delta_psnr=dp,
                    shown=n, depth=depth, t_report=t_report)

    if not ground_truth:  # the latent actions: pictures, usage, NMI
        # The latent action grid: same start frames, every action, `depth` steps
        ev.latent_grid = latent_action_grid(genie, clips_BTHW3[:n, 0], depth=depth, seed=seed)

        # Latent actions: usage over whole episodes, NMI with the discretised ground truth
        codes, gt = [], []
        lam_context = genie.cfg.lam.context
        real_episodes = episode_frames if episode_frames is not None else list(clips_BTHW3)
        for e, frames in enumerate(real_episodes):
            acts = infer_episode_actions(genie.lam, frames, lam_context)
            codes.append(acts)
            if episode_actions is not None and episode_actions[e] is not None:
                gt.append(la.discretise_actions(episode_actions[e][: len(acts)]))
        codes_all = np.concatenate(codes)
        usage = la.code_usage(codes_all, A)
        results["latent/usage"] = [float(u) for u in usage]
        results["latent/perplexity"] = la.perplexity(usage)
        results["latent/transitions"] = int(codes_all.size)
        if gt and len(gt) == len(codes):
            labels_all = np.concatenate(gt)
            classes = np.unique(labels_all)
            if len(classes) < 2:
                # Against one class there is nothing to agree with: NMI would be 0 whatever the LAM
                # learnt, so the report says why instead of printing a number that looks like a failure.
                results["latent/nmi_note"] = (f"not computed: every ground-truth action falls in one class "
                                              f"({classes[0] if len(classes) else 'none'}), so there is "
                                              "nothing for the latent actions to agree with")
            else:
                results["latent/nmi"] = la.normalized_mutual_information(codes_all, labels_all)
            ev.nmi_table = la.contingency(codes_all, labels_all)
        levels = genie.cfg.lam.fsq_levels if genie.cfg.lam.kind == "conv" else None
        if la.has_directions(levels):  # FSQ actions with levels also read as 2^D directions
            values_VD = genie.lam.action_embeddings().float().cpu().numpy()
            directions = la.code_directions(values_VD)[codes_all]
            d_usage = la.code_usage(directions, 2 ** len(levels))
            results["latent/directions/usage"] = [float(u) for u in d_usage]
            results["latent/directions/min_usage"] = float(d_usage.min())
            results["latent/directions/perplexity"] = la.perplexity(d_usage)
            if "latent/nmi" in results:
                results["latent/directions/nmi"] = la.normalized_mutual_information(directions, labels_all)
            ev.direction_codes = la.direction_corners(values_VD)
        stage_done()

        # Which way each action moves the picture from every clip's first frame, and the real video
        # the LAM labels with it (motion.py): each direction's corner code, or each code of a LAM
        # with few enough for a table.
        if ev.direction_codes is not None:
            motion_actions, group_of_code = ev.direction_codes, la.code_directions(values_VD)
        elif A <= MOTION_MAX_ACTIONS:
            motion_actions, group_of_code = list(range(A)), np.arange(A)
        else:
            motion_actions = None
        if motion_actions is not None:
            grid, moves, motion = measure_motion(genie, clips_BTHW3[:, 0], real_episodes, codes, actions=motion_actions,
                                                 group_of_code=group_of_code, depth=depth, seed=seed)
            ev.motion_grid, ev.motion_moves = grid[:n], moves[:n]
            results.update({f"latent/motion/{k}": v for k, v in motion.items()})
            results["latent/motion/actions"] = [int(a) for a in motion_actions]
        stage_done()

    # FVD (optional: the I3D runs at 224x224 and is slow on a CPU)
    if fvd:
        from . import fvd as F
        from .i3d import I3DWeightsError, load_kinetics_i3d

        if T < F.MIN_FRAMES:
            ev.fvd_note = f"FVD skipped: clips of {T} frames, the I3D needs at least {F.MIN_FRAMES} (pass --frames 16)"
        else:
            try:
                i3d = load_kinetics_i3d(i3d_weights, device=clips.device)
            except I3DWeightsError as exc:
                raise EvalError(str(exc)) from None
            real_f = F.i3d_features(clips_BTHW3, i3d)
            results["fvd/inferred"] = F.fvd_from_features(real_f, F.i3d_features(dp.frames_inferred_BTHW3, i3d))
            results["fvd/random"] = F.fvd_from_features(real_f, F.i3d_features(dp.frames_random_BTHW3, i3d))
            results["fvd/videos"] = int(B)
        stage_done()

    if ood:
        if ground_truth:
            raise EvalError("--ood clips have no actions: a ground-truth-action model cannot roll them out")
        results["ood"] = {}
        for name, c in ood.items():
            results["ood"][name], ev.ood_videos[name] = evaluate_ood(genie, c, seed=seed)
            stage_done()
    progress.close()
    return ev
