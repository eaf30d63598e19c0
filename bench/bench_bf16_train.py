"""bf16 training on CPU: how much faster, and does the loss curve stay within noise of fp32?

Three runs of the real trainer (`training.train.train`, MLflow in a temp folder) on the same data,
stage 2 (dynamics) of the `cpu` preset on a frozen tokenizer and LAM:

  fp32      seed 0, precision fp32
  bf16      seed 0, precision bf16 (the same initial weights, the same batches, the same masks)
  fp32-s1   seed 1, precision fp32: the noise reference (another initialisation and data order)

Parity: the gap between the bf16 and fp32 curves (training loss smoothed over 25 steps, and the
validation loss) against the gap between the two fp32 seeds. Speed: median seconds per step of each
run (MLflow's perf/step_s), bf16 / fp32 as a ratio measured in this process.

    GENIE_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/bench_bf16_train.py \
        --store runs/sim600.zarr --tokenizer runs/tokenizer --lam runs/lam --steps 300
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def run(args, precision: str, seed: int, root: Path) -> dict:
    from mlflow.tracking import MlflowClient

    from training.configs import TrainConfig
    from training.train import train

    name = f"{precision}-s{seed}"
    uri = f"sqlite:///{root}/mlflow.db"
    cfg = TrainConfig(stage="dynamics", preset="cpu", stores=list(args.store), tokenizer=args.tokenizer,
                      lam=args.lam, lam_weights="raw", window=args.window, frame_stride=3,
                      batch_size=args.batch_size, max_steps=args.steps, lr=6e-4, min_lr=6e-5, warmup_steps=50,
                      weight_decay=0.05, val_every=args.val_every, val_batches=4, sample_every=0,
                      ckpt_every=10**6, seed=seed, precision=precision, run_dir=str(root / name),
                      tracking_uri=uri, experiment="bench-bf16", run_name=name)
    t0 = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - t0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("bench-bf16")
    (r,) = client.search_runs([exp.experiment_id], f"tags.mlflow.runName = '{name}'")

    def history(key):
        return {m.step: m.value for m in client.get_metric_history(r.info.run_id, key)}

    return {"name": name, "wall_s": wall, "loss": history("train/loss"), "val": history("val/loss"),
            "step_s": statistics.median(v for s, v in history("perf/step_s").items() if s > 5)}


def smooth(curve: dict, k: int = 25) -> list[float]:
    ys = [curve[s] for s in sorted(curve)]
    return [statistics.fmean(ys[i:i + k]) for i in range(0, len(ys) - k + 1, k)]


def gap(a: dict, b: dict) -> tuple[float, float]:
    """(mean, max) absolute difference of the smoothed training-loss curves."""
    d = [abs(x - y) for x, y in zip(smooth(a["loss"]), smooth(b["loss"]))]
    return statistics.fmean(d), max(d)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", action="append", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--lam", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--out", default=None, help="write the curves and the summary as JSON here")
    args = p.parse_args()
    from genie_robot.device import configure_cpu_threads

    threads = configure_cpu_threads()
    root = Path(tempfile.mkdtemp(prefix="bench_bf16_"))
    runs = {r["name"]: r for r in (run(args, "fp32", 0, root), run(args, "bf16", 0, root), run(args, "fp32", 1, root))}
    fp32, bf16, ref = runs["fp32-s0"], runs["bf16-s0"], runs["fp32-s1"]
    (bf_mean, bf_max), (seed_mean, seed_max) = gap(fp32, bf16), gap(fp32, ref)
    last = max(fp32["val"])
    summary = {
        "steps": args.steps, "threads": threads, "batch": args.batch_size, "window": args.window,
        "step_s": {k: r["step_s"] for k, r in runs.items()}, "speedup": fp32["step_s"] / bf16["step_s"],
        "loss_gap_bf16_vs_fp32": {"mean": bf_mean, "max": bf_max},
        "loss_gap_seed1_vs_seed0": {"mean": seed_mean, "max": seed_max},
        "final_val": {k: r["val"][last] for k, r in runs.items()},
    }
    print(json.dumps(summary, indent=2))
    print(f"\nbf16 step {bf16['step_s']:.2f} s vs fp32 {fp32['step_s']:.2f} s: {summary['speedup']:.2f}x; "
          f"loss gap bf16-fp32 {bf_mean:.4f} (max {bf_max:.4f}) vs seed gap {seed_mean:.4f} (max {seed_max:.4f})")
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "runs": runs}, indent=1, default=str))


if __name__ == "__main__":
    main()
