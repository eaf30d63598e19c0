"""Is an int8 bundle as good as the fp32 one, and how much faster? (issue #16, inference half)

The fp32 bundle of a model (default: the shipped one, its graphs from the cache) against its int8
version (`genie-robot export --bundle MODEL --precision int8`, made in a temp dir unless --int8 names
one), both through WorldModel on onnxruntime (genie_robot/runtime/quantize.py says what is int8).

Speed: imagined frames/s at batch 1, --threads threads (default 1), at 25 and 8 MaskGIT steps, after
a 15-frame real prompt (full context); the two bundles alternate blocks of about --block seconds in
one process for --rounds rounds, and the table gives the median of each and their ratio.

Parity, on held-out clips (16 frames, every `frame_stride`-th store frame, as the model was trained):
  tokenizer PSNR     decode(encode(clip)) against the clip, all frames
  generation PSNR    rollout from the real first frame with the LAM's latent actions of the clip,
                     against the real frames 1..15 (mean)
  ΔPSNR@4            PSNR at frame 4 with the inferred actions minus with uniformly random ones
                     (same MaskGIT seed for both), mean over clips
at the model's sampling defaults, MaskGIT seed --seed (which also draws the random actions). The fp32
bundle at seed --seed + 1 is the noise reference: how much the same metrics move when only the seed
changes, i.e. how far apart two equally good runs of the same model land on these clips.

Clips: --store STORE, its validation split (as `genie-robot eval`); without --store the bench
simulates --clips held-out episodes (MuJoCo, seeds from 900000: not in the training stores).

    python bench/bench_int8.py --store /root/genie-runs/sim600.zarr
    python bench/bench_int8.py                      # simulated clips, shipped default model
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOLERANCE_DB = 0.3  # the parity bar for every metric


def held_out_clips(args, cfg, stride: int, tmp: Path) -> tuple[np.ndarray, str]:
    """(B, T, H, W, 3) uint8 clips and a line saying where they come from."""
    from genie_robot.eval.evaluate import EvalError, load_clips

    H, W = cfg.tokenizer.resolution
    if args.store is None:
        if H != W:
            sys.exit(f"error: the simulator renders square frames; the model is {H}x{W}: pass --store")
        from genie_robot.data.sim.simulate import simulate

        store, split = str(tmp / "held_out.zarr"), "all"
        seed = 900_000
        simulate(store, args.clips, (args.frames - 1) * stride + 1, resolution=H, workers=1, seed=seed, progress=False)
        where = f"{args.clips} simulated episodes (seeds {seed}+), 64x64"
    else:
        if not Path(args.store).exists():
            sys.exit(f"error: --store {args.store} does not exist; pass an episode store recorded at {H}x{W} "
                     "(e.g. the one the model was trained on: its val split is held out), or leave --store out "
                     "to simulate held-out episodes")
        store, split, where = args.store, "val", f"val split of {args.store}"
    try:
        got = load_clips(store, resolution=(H, W), frames=args.frames, split=split, episodes=args.clips,
                         val_fraction=args.val_fraction, stride=stride)
    except EvalError as exc:
        sys.exit(f"error: {exc}")
    clips = got["clips"]
    return clips, f"{len(clips)} clips of {args.frames} frames at stride {stride}, {where}"


def frames_per_second(wm, state, block: float) -> float:
    """Frames/s of `wm.step` from a copy of `state` for about `block` seconds (at least 2 frames)."""
    s = state.copy()
    action = np.zeros(s.batch, np.int64)
    wm.step(s, action)  # the first frame after a copy touches new memory
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < block:
        action = (action + 1) % wm.num_actions
        wm.step(s, action)
        n += 1
    return n / (time.perf_counter() - t0)


def speed(bundles: dict, prompt_THW3: np.ndarray, steps: int, args) -> tuple[dict, float]:
    """({name: median frames/s}, the guidance used), the bundles alternating block by block."""
    from genie_robot.runtime.world_model import WorldModel

    wms = {k: WorldModel.load(d, backend="onnx", providers="cpu", threads=args.threads, steps=steps,
                              guidance=args.guidance, seed=args.seed) for k, d in bundles.items()}
    states = {k: wm.reset(prompt_THW3) for k, wm in wms.items()}
    runs = {k: [] for k in wms}
    for _ in range(args.rounds):
        for k, wm in wms.items():
            runs[k].append(frames_per_second(wm, states[k], args.block))
    return {k: float(np.median(v)) for k, v in runs.items()}, wms["fp32"].guidance


def parity(bundle_dir, clips_BTHW3: np.ndarray, seed: int, threads: int) -> dict:
    """Tokenizer PSNR, generation PSNR (inferred actions) and ΔPSNR@4 of one bundle, through WorldModel."""
    from genie_robot.eval.metrics import psnr
    from genie_robot.runtime.world_model import WorldModel

    wm = WorldModel.load(bundle_dir, backend="onnx", providers="cpu", threads=threads, seed=seed)
    recon = wm.decode(wm.encode(clips_BTHW3))
    inferred_BT = wm.infer_actions(clips_BTHW3)
    random_BT = np.random.default_rng(seed).integers(0, wm.num_actions, inferred_BT.shape)
    first = clips_BTHW3[:, :1]
    real = clips_BTHW3[:, 1:]
    p_inf = psnr(real, wm.rollout(first, inferred_BT, seed=seed))  # (B, T-1): frames 1..T-1
    p_rand = psnr(real, wm.rollout(first, random_BT, seed=seed))
    return {"tokenizer PSNR (dB)": float(psnr(clips_BTHW3, recon).mean()),
            "generation PSNR, inferred actions (dB)": float(p_inf.mean()),
            "ΔPSNR@4 (dB)": float((p_inf[:, 3] - p_rand[:, 3]).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default", help="the fp32 bundle, or 'default' (the shipped model)")
    ap.add_argument("--int8", default=None, help="its int8 bundle (default: made now in a temp dir)")
    ap.add_argument("--store", default=None, help="episode store for held-out clips (its val split); "
                                                  "default: simulate them")
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--stride", type=int, default=None, help="store frames per model frame (default: the bundle's)")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0, help="MaskGIT sampling seed (and the random actions')")
    ap.add_argument("--steps", default="25,8", help="MaskGIT steps for the speed rows")
    ap.add_argument("--guidance", type=float, default=None,
                    help="guidance for the speed rows (default: the model's; each step costs 2 passes when != 1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block", type=float, default=2.0, help="seconds per timed block")
    ap.add_argument("--no-noise-reference", action="store_true", help="skip the fp32 run at seed + 1")
    ap.add_argument("--no-parity", action="store_true", help="speed rows only (parity takes ~5 min on 1 thread)")
    args = ap.parse_args()
    os.environ["GENIE_NUM_THREADS"] = str(args.threads)

    import onnxruntime as ort

    from genie_robot.runtime import bundle, default_model
    from genie_robot.runtime.export import ExportError, export_from_bundle

    src = default_model.resolve(args.model)
    cfg = bundle.read_config(src)
    fp32 = default_model.onnx_bundle(src)  # a weight-only bundle: its fp32 graphs, from the cache
    if bundle.precision(bundle.read_manifest(fp32), fp32) != "fp32":
        sys.exit(f"error: --model {args.model} is not an fp32 bundle; pass the fp32 one and its int8 one with --int8")
    stride = args.stride or int(bundle.read_manifest(src).get("frame_stride", 1))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.int8 is None:
            try:
                int8, _, _ = export_from_bundle(src, tmp / "int8", precision="int8")
            except (ExportError, bundle.BundleError, FileNotFoundError) as exc:
                sys.exit(f"error: {exc}")
        else:
            int8 = Path(args.int8)
            if bundle.precision(bundle.read_manifest(int8), int8) != "int8":
                sys.exit(f"error: --int8 {int8} is not an int8 bundle; make one with "
                         f"`genie-robot export --bundle {args.model} --precision int8 --out {int8}`")
        bundles = {"fp32": fp32, "int8": int8}
        clips, where = held_out_clips(args, cfg, stride, tmp)

        print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs, {args.threads} thread(s); load average {os.getloadavg()}; "
              f"onnxruntime {ort.__version__}; model {args.model} ({cfg.name} preset)")
        print(f"bundles: fp32 {fp32}, int8 {int8}")
        print()
        print(f"| speed, batch 1, {args.threads} thread(s) | MaskGIT steps | guidance | fp32 frames/s | int8 frames/s "
              "| int8 / fp32 |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        prompt = clips[0, : cfg.dynamics.context - 1]
        for steps in map(int, args.steps.split(",")):
            fps, guidance = speed(bundles, prompt, steps, args)
            print(f"| imagined frames/s | {steps} | {guidance:g} | {fps['fp32']:.2f} | {fps['int8']:.2f} | "
                  f"{fps['int8'] / fps['fp32']:.2f}× |", flush=True)
        print()
        if args.no_parity:
            print(f"load average after: {os.getloadavg()}")
            return

        t0 = time.perf_counter()
        ref = parity(fp32, clips, args.seed, args.threads)
        got = parity(int8, clips, args.seed, args.threads)
        noise = None if args.no_noise_reference else parity(fp32, clips, args.seed + 1, args.threads)
        print(f"| parity: {where}; MaskGIT seed {args.seed} | fp32 | int8 | int8 − fp32 | within {TOLERANCE_DB} dB "
              f"| noise: fp32 seed {args.seed + 1} − seed {args.seed} |")
        print("| --- | ---: | ---: | ---: | :---: | ---: |")
        for k in ref:
            d = got[k] - ref[k]
            n = "–" if noise is None else f"{noise[k] - ref[k]:+.3f}"
            print(f"| {k} | {ref[k]:.3f} | {got[k]:.3f} | {d:+.3f} | {'yes' if abs(d) <= TOLERANCE_DB else 'NO'} | {n} |")
        print()
        print(f"parity took {time.perf_counter() - t0:.0f} s; load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
