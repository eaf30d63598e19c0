"""How fast does training run on this machine's CPU, and how close to the matmul peak?

Two questions, one script:
1. `common`: the dynamics train step (forward + backward, batch 4) at the comparison config shared
   with the PyTorch peers (1xgpt, tinyworlds, open-genie): width 256, 8 layers, 8 heads, 16x16
   tokens per frame, vocabulary 1024, 16 frames. Seconds per step and the share of the fp32 matmul
   peak measured in the same process (a large matmul), once per glibc allocator mode:
     default  glibc's defaults (freed tensor memory goes back to the kernel and is faulted in again)
     env      MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=16G set before the process starts (scripts/env.sh)
     mallopt  the same two parameters set from inside the process by training.train.tune_cpu_allocator
              (what `genie-robot train` does when the variables are not set)
2. `preset`: training throughput (frames/s) for the `cpu` preset, both stages: a bare optimizer step
   and the real loop (`genie-robot train`'s `train()`, MLflow included) on a small random store.

Each measurement runs in a fresh subprocess (the allocator mode must be in place from the start).
    python bench/bench_train.py                    # everything, prints tables
    python bench/bench_train.py --only common --modes mallopt
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS_S = {"1xgpt": 7.6, "tinyworlds": 8.7, "open-genie": 5.4}  # s/step, same machine, keep-memory allocator
TRIM = str(16 << 30)


# ------------------------------------------------------------------------------------------ worker


def matmul_peak(n: int = 4096, reps: int = 3) -> float:
    """Best fp32 GFLOP/s of an n x n @ n x n matmul."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def flop_counter():
    """FlopCounterMode that also counts CPU flash attention (torch registers only the CUDA kernels).

    Uses torch's own formulas for the CUDA kernels: 4*L*S*E forward, 2.5x that backward, causal
    masks counted in full.
    """
    import torch
    from torch.utils import flop_counter as fc

    def fwd(q, k, v, *args, out_shape=None, **kwargs):
        return fc.sdpa_flop_count(q, k, v)

    def bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs):
        return fc.sdpa_backward_flop_count(grad_out, q, k, v)

    ops = torch.ops.aten
    return fc.FlopCounterMode(display=False, custom_mapping={
        ops._scaled_dot_product_flash_attention_for_cpu: fwd,
        ops._scaled_dot_product_flash_attention_for_cpu_backward: bwd,
    })


def common_step(steps: int) -> dict:
    import torch

    from genie_robot.models.configs import DynamicsConfig, TransformerConfig
    from genie_robot.models.dynamics import DynamicsModel

    torch.manual_seed(0)
    cfg = DynamicsConfig(vocab_size=1024, grid=(16, 16), num_actions=8, action_dim=32, context=16,
                         transformer=TransformerConfig(width=256, depth=8, heads=8, ffn_width=1024))
    model = DynamicsModel(cfg).train()
    B, T, N = 4, 16, 256
    tokens = torch.randint(1024, (B, T, N))
    actions = torch.randint(8, (B, T - 1))
    table = torch.nn.functional.normalize(torch.randn(8, 32), dim=-1)

    def step():
        loss, _ = model.loss(tokens, actions, table)
        loss.backward()
        model.zero_grad(set_to_none=True)

    with flop_counter() as counter:
        step()  # also the warm-up
    flops = counter.get_total_flops()
    attention = sum(f for op, f in counter.get_flop_counts()["Global"].items() if "attention" in str(op))
    peak = matmul_peak()
    import resource

    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    # Page faults do not depend on the machine's load: they show what the allocator mode does.
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    peak = max(peak, matmul_peak())  # the peak before and after: the machine is shared
    best, median = min(times), sorted(times)[len(times) // 2]
    return {"params_M": sum(p.numel() for p in model.parameters()) / 1e6, "gflop": flops / 1e9,
            "attention_gflop": attention / 1e9, "page_faults_per_step": faults,
            "peak_gflops": peak, "best_s": best, "median_s": median,
            "pct_peak_best": 100 * flops / best / 1e9 / peak, "pct_peak_median": 100 * flops / median / 1e9 / peak}


def preset_steps(stage: str, steps: int, batch: int) -> dict:
    """`stage` for the cpu preset, two ways: a bare optimizer step (forward, backward, clip, AdamW) on
    fixed random frames, and the real loop (`training.train.train`, MLflow logging included) on a
    small random store. Median seconds per step of each."""
    import tempfile

    import numpy as np
    import torch

    from genie_robot.artifacts import checkpoints as ckpt_io
    from genie_robot.data.store import Episode, StoreWriter
    from genie_robot.models.configs import preset
    from training.configs import TrainConfig
    from training.train import train

    torch.manual_seed(0)
    cfg = preset("cpu")
    if stage == "tokenizer":
        from genie_robot.models.tokenizer import VideoTokenizer

        model = VideoTokenizer(cfg.tokenizer).train()
        T = cfg.tokenizer.context
        loss_fn = model.loss
    else:
        from genie_robot.models.genie import Genie

        model = Genie(cfg).train()
        model.tokenizer.requires_grad_(False).eval()
        T = cfg.dynamics.context
        loss_fn = model.dynamics_loss
    trainable = [p for p in model.parameters() if p.requires_grad]
    H, W = cfg.tokenizer.resolution
    frames = torch.randint(0, 256, (batch, T, H, W, 3), dtype=torch.uint8)
    opt = torch.optim.AdamW(trainable, lr=1e-4)

    def step():
        loss, _ = loss_fn(frames)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()

    step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    bare = sorted(times)[len(times) // 2]

    # The real loop, on a store of random frames.
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    rng = np.random.default_rng(0)
    with StoreWriter(str(tmp / "store.zarr"), resolution=(H, W), fps=10.0, source="bench") as w:
        for _ in range(6):
            w.add_episode(Episode(rgb=rng.integers(0, 256, (3 * T, H, W, 3), dtype=np.uint8)))
    if stage == "dynamics":  # stage 2 needs a stage-1 checkpoint: the untrained tokenizer will do
        ckpt_io.save_checkpoint(tmp / "tok", 0, weights=model.tokenizer.state_dict(), state={},
                                config={"stage": "tokenizer", "train": TrainConfig(preset="cpu").to_dict(),
                                        "model": cfg.to_dict()})
    uri = f"sqlite:///{tmp}/mlflow.db"
    train(TrainConfig(stage=stage, preset="cpu", stores=[str(tmp / "store.zarr")], tokenizer=str(tmp / "tok"),
                      batch_size=batch, max_steps=steps + 1, warmup_steps=1, val_every=10**6, val_batches=1,
                      sample_every=0, ckpt_every=10**6, run_dir=str(tmp / "run"), tracking_uri=uri,
                      experiment="bench"))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("bench").experiment_id])
    loop_times = sorted(m.value for m in client.get_metric_history(run.info.run_id, "perf/step_s") if m.step > 1)
    loop = loop_times[len(loop_times) // 2]
    return {"stage": stage, "batch": batch, "frames": T, "params_M": sum(p.numel() for p in trainable) / 1e6,
            "bare_s": bare, "loop_s": loop, "frames_per_s": batch * T / loop}


def worker(args) -> None:
    sys.path.insert(0, str(ROOT))
    from genie_robot.device import configure_cpu_threads

    mode = args.malloc
    if mode == "mallopt":
        from training.train import tune_cpu_allocator

        mode = tune_cpu_allocator()
    configure_cpu_threads()
    import torch

    if args.worker == "common":
        out = common_step(args.steps)
    else:
        out = preset_steps(args.worker, args.steps, args.batch)
    out.update(malloc=mode, threads=torch.get_num_threads())
    print("RESULT " + json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------------ driver


def run_worker(what: str, malloc: str, steps: int, batch: int = 4) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("GENIE_MALLOC", None)
    if malloc == "env":
        env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=TRIM)
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, __file__, "--worker", what, "--malloc", malloc, "--steps", str(steps), "--batch", str(batch)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{what}/{malloc} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["common", "preset"], default=None)
    p.add_argument("--modes", default="default,env,mallopt", help="allocator modes for the common config")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=4, help="batch of the preset throughput runs")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--malloc", default="mallopt", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    print(f"# bench_train  {time.strftime('%Y-%m-%d %H:%M')}  cpus={os.cpu_count()}  load avg before: {load_average()}")
    if args.only in (None, "common"):
        print("\n## dynamics train step (fwd+bwd, B=4), width 256, 8 layers, 8 heads, 16x16 tokens, V=1024, T=16")
        print(f"{'allocator':<16} {'threads':>7} {'params':>7} {'GFLOP':>7} {'(attn)':>6} {'peak GF/s':>9} "
              f"{'best s':>7} {'median s':>8} {'% peak':>7} {'vs 1xgpt 7.6 s':>14} {'faults/step':>11}")
        for mode in args.modes.split(","):
            r = run_worker("common", mode, args.steps)
            print(f"{r['malloc']:<16} {r['threads']:>7} {r['params_M']:>6.2f}M {r['gflop']:>7.0f} {r['attention_gflop']:>6.0f} {r['peak_gflops']:>9.1f} "
                  f"{r['best_s']:>7.2f} {r['median_s']:>8.2f} {r['pct_peak_best']:>6.1f}% "
                  f"{PEERS_S['1xgpt'] / r['best_s']:>13.2f}x {r['page_faults_per_step']:>11.0f}", flush=True)
    if args.only in (None, "preset"):
        print(f"\n## cpu preset training steps (fwd, bwd, clip, AdamW), batch {args.batch}, allocator: mallopt")
        print(f"{'stage':<10} {'trainable':>9} {'frames/step':>11} {'bare s/step':>11} {'loop s/step':>11} "
              f"{'loop/bare':>9} {'frames/s':>9}")
        for stage in ("tokenizer", "dynamics"):
            r = run_worker(stage, "mallopt", args.steps, args.batch)
            print(f"{stage:<10} {r['params_M']:>8.2f}M {r['batch'] * r['frames']:>11} {r['bare_s']:>11.2f} "
                  f"{r['loop_s']:>11.2f} {r['loop_s'] / r['bare_s']:>9.2f} {r['frames_per_s']:>9.1f}", flush=True)
    print(f"\nload avg after: {load_average()}")


if __name__ == "__main__":
    main()
