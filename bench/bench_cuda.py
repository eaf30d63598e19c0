"""The prepared GPU run (issue #16): training-step and imagination speed on a CUDA device, fp32 against
bf16 in the same process, for bench/RESULTS.md. Needs torch and this repo only (the GPU machine has
no zarr, mlflow or onnxruntime-gpu), so the data are random tokens and frames of the right shapes.

1. Training step (forward + backward + AdamW) of the dynamics model at the comparison config shared with
   the PyTorch peers (width 256, 8 layers, 8 heads, 16x16 tokens, vocabulary 1024, 16 frames), batch 4
   and 32, fp32 vs bf16 autocast (`genie_robot.device.autocast`, what `genie-robot train` uses).
2. The `cpu` preset's three stages (tokenizer, LAM, dynamics) at their training batch: steps/s and
   frames/s in bf16, so a run of the default recipe can be sized for a GPU.
3. Imagination: `WorldModel.from_genie` (the runtime's cached single-frame steps, torch backend) on the `cpu`
   preset, 15-frame prompt then new frames, 25 and 8 MaskGIT steps, batch 1 and 64, fp32 vs bf16.

    python bench/bench_cuda.py --out DIR            # on the GPU machine (see bench/gpu_run.sh)
    python bench/bench_cuda.py --device cpu --quick  # a check of the script itself, anywhere
    GENIE_NUM_THREADS=1 python bench/bench_cuda.py --device cpu --train-only --batches 4   # the CPU ratio

Writes DIR/bench_cuda.json and DIR/bench_cuda.md (tables); prints the tables too.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genie_robot.device import autocast, configure_cpu_threads, pick_device  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int, warmup: int = 2) -> float:
    """Median seconds of `fn()` over `reps` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, device, reps=5) / 1e12


def dynamics_train_step(device: torch.device, batch: int, precision: str, reps: int) -> float:
    from genie_robot.models.configs import DynamicsConfig, TransformerConfig
    from genie_robot.models.dynamics import DynamicsModel

    torch.manual_seed(0)
    cfg = DynamicsConfig(vocab_size=1024, grid=(16, 16), num_actions=8, action_dim=32, context=16,
                         transformer=TransformerConfig(width=256, depth=8, heads=8, ffn_width=1024))
    model = DynamicsModel(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens_BTN = torch.randint(1024, (batch, 16, 256), device=device)
    actions_BTm1 = torch.randint(8, (batch, 15), device=device)
    table = torch.nn.functional.normalize(torch.randn(8, 32, device=device), dim=-1)

    def step():
        with autocast(device, precision):
            loss, _ = model.loss(tokens_BTN, actions_BTm1, table)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return timed(step, device, reps)


def preset_stage_steps(device: torch.device, reps: int, quick: bool) -> list[dict]:
    """Steps/s of the `cpu` preset's stages in bf16, each at the batch and window of its
    training/configs/<stage>_cpu.yaml (the dynamics on tokens of the frozen tokenizer)."""
    import yaml

    from genie_robot.models.configs import preset
    from genie_robot.models.genie import Genie

    root = Path(__file__).resolve().parents[1] / "training" / "configs"
    cfg = preset("cpu")
    genie = Genie(cfg).to(device).train()
    H, W = cfg.tokenizer.resolution
    rows = []
    for stage in ("tokenizer", "lam", "dynamics"):
        train_cfg = yaml.safe_load((root / f"{stage}_cpu.yaml").read_text())
        B, T = (2, 4) if quick else (int(train_cfg["batch_size"]), int(train_cfg["window"]))
        frames = torch.randint(0, 256, (B, T, H, W, 3), dtype=torch.uint8, device=device)
        module = {"tokenizer": genie.tokenizer, "lam": genie.lam, "dynamics": genie.dynamics}[stage]
        params = [p for p in module.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)
        if stage == "dynamics":
            with torch.no_grad():
                tokens_BTN = genie.tokenizer.encode(frames)
            actions_BTm1 = torch.randint(cfg.dynamics.num_actions, (B, T - 1), device=device)
            table = genie.lam.action_embeddings().detach()

            def loss_fn():
                return genie.dynamics.loss(tokens_BTN, actions_BTm1, table)[0]
        else:
            def loss_fn(module=module):
                return module.loss(frames)[0]

        def step(loss_fn=loss_fn, opt=opt):
            with autocast(device, "bf16"):
                loss = loss_fn()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        s = timed(step, device, reps)
        rows.append({"stage": stage, "batch": B, "window": T, "step_s": s, "steps_per_s": 1 / s, "frames_per_s": B * T / s})
    return rows


def rollout_fps(device: torch.device, steps: int, batch: int, precision: str, frames: int) -> float:
    from genie_robot.models.configs import preset
    from genie_robot.models.genie import Genie
    from genie_robot.runtime.world_model import WorldModel

    torch.manual_seed(0)
    genie = Genie(preset("cpu")).to(device).eval()
    H, W = genie.cfg.tokenizer.resolution
    prompt = np.random.default_rng(0).integers(0, 256, (batch, 15, H, W, 3), dtype=np.uint8)
    wm = WorldModel.from_genie(genie, steps=steps)
    with torch.no_grad(), autocast(device, precision):
        state = wm.reset(prompt)
        a = np.zeros(batch, dtype=np.int64)
        wm.step(state, a)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for _ in range(frames):
            wm.step(state, a)
        sync(device)
    return batch * frames / (time.perf_counter() - t0)


def table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
                     + ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default=None, help="folder for bench_cuda.json and bench_cuda.md")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a check that the script runs")
    p.add_argument("--batches", default="4,32", help="batches of the comparison-config training step")
    p.add_argument("--train-only", action="store_true", help="only the comparison-config step (e.g. on a CPU)")
    args = p.parse_args()
    device = pick_device(args.device)
    if device.type == "cpu":
        configure_cpu_threads()  # GENIE_NUM_THREADS, as the trainer
    reps = 2 if args.quick else 10
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    n = 512 if args.quick else 8192
    info["matmul_tflops"] = {"fp32": matmul_tflops(device, torch.float32, n), "bf16": matmul_tflops(device, torch.bfloat16, n)}
    print(json.dumps(info), flush=True)

    train_rows = []
    for batch in ((1,) if args.quick else tuple(int(b) for b in args.batches.split(","))):
        fp32 = dynamics_train_step(device, batch, "fp32", reps)
        bf16 = dynamics_train_step(device, batch, "bf16", reps)
        train_rows.append({"config": "compare", "batch": batch, "fp32_s": fp32, "bf16_s": bf16, "bf16_speedup": fp32 / bf16})
        print(train_rows[-1], flush=True)
    if args.train_only:
        return 0
    stage_rows = preset_stage_steps(device, reps, args.quick)
    for r in stage_rows:
        print(r, flush=True)
    roll_rows = []
    for steps in (25, 8):
        for batch in ((1,) if args.quick else (1, 64)):
            frames = 2 if args.quick else 20
            fp32 = rollout_fps(device, steps, batch, "fp32", frames)
            bf16 = rollout_fps(device, steps, batch, "bf16", frames)
            roll_rows.append({"steps": steps, "batch": batch, "fp32_fps": fp32, "bf16_fps": bf16, "bf16_speedup": bf16 / fp32})
            print(roll_rows[-1], flush=True)

    md = "\n\n".join([
        f"# bench_cuda: {info['device']}, torch {info['torch']}, {info['when']}",
        f"matmul peak ({n}^3): fp32 {info['matmul_tflops']['fp32']:.2f} TFLOP/s, bf16 {info['matmul_tflops']['bf16']:.2f} TFLOP/s",
        "## Dynamics train step, comparison config (s/step)", table(train_rows, ["config", "batch", "fp32_s", "bf16_s", "bf16_speedup"]),
        "## `cpu` preset stages, bf16, training batch", table(stage_rows, ["stage", "batch", "window", "step_s", "steps_per_s", "frames_per_s"]),
        "## Imagination (`WorldModel.from_genie`, cpu preset, 16-frame context), frames/s", table(roll_rows, ["steps", "batch", "fp32_fps", "bf16_fps", "bf16_speedup"]),
    ])
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_cuda.json").write_text(json.dumps({"info": info, "train": train_rows, "stages": stage_rows,
                                                         "rollout": roll_rows}, indent=2))
        (out / "bench_cuda.md").write_text(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
