"""How many imagined frames per second does the runtime make, and what fraction of the machine's
fp32 matmul peak is that?

Methods (all with a full 16-frame context: a 15-frame prompt, then new frames; random weights, or
the shipped trained model with --configs default):
  naive   torch eager, no cache: every MaskGIT pass recomputes the whole window
          (bench/uncached.py) and the tokenizer decodes the whole window (the baseline)
  torch   WorldModel, torch backend (the cached single-frame graphs, eager)
  onnx    WorldModel, onnxruntime backend (the exported graphs)
at MaskGIT 25 and 8 steps, batch 1 and 64, for the `cpu` preset and the common comparison config
(width 256, 8 layers, 8 heads, 16x16 tokens, vocabulary 1000 -- the conv tokenizer's FSQ; the peers use
1024 --, 1 new frame from 15 context frames).
Achieved FLOP/s = model_cost's FLOPs of one generated frame (dynamics passes + one decoder step) x
frames/s; the naive method executes ~window x more, so its fraction is "useful" work only.

    python bench/bench_runtime.py [--threads 2] [--configs cpu,compare,default] [--budget 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def compare_config():
    from genie_robot.models.configs import GenieConfig, TransformerConfig, DynamicsConfig, preset

    c = preset("cpu")
    # 64x64 / 4 = 16x16 tokens: the conv tokenizer downsamples by 2 per width after the first
    tok = dataclasses.replace(c.tokenizer, patch=4, channels=c.tokenizer.channels[:3])
    dyn = DynamicsConfig(context=16, transformer=TransformerConfig(256, 8, 8, 1024))
    return GenieConfig(tok, c.lam, dyn, name="compare")


def matmul_peak(threads: int, n: int = 2048, reps: int = 5) -> float:
    """Best fp32 FLOP/s of an n x n matmul (torch, `threads` threads)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def make_bundle(cfg, out: Path) -> None:
    from safetensors.torch import save_file

    from genie_robot.models import Genie
    from genie_robot.runtime import bundle
    from genie_robot.runtime.export import export_onnx

    genie = Genie(cfg).eval()
    with torch.no_grad():
        genie.dynamics.action_table.copy_(genie.lam.action_embeddings())
    out.mkdir(parents=True)
    (out / bundle.CONFIG).write_text(json.dumps(cfg.to_dict()))
    save_file({k: v.contiguous() for k, v in genie.state_dict().items()}, str(out / bundle.WEIGHTS))
    export_onnx(genie, out)
    bundle.write_manifest(out, config=cfg.to_dict(), opset=18, graphs={}, sources={})


def timed(one, budget: float, max_frames: int) -> float:
    """frames/s of `one()` (one frame per call per batch row is counted by the caller), after a warm-up."""
    one()
    n, t0 = 0, time.perf_counter()
    while n < max_frames and (n == 0 or time.perf_counter() - t0 < budget):
        one()
        n += 1
    return n / (time.perf_counter() - t0)


@torch.no_grad()
def naive_fps(genie, B: int, steps: int, budget: float, max_frames: int) -> float:
    from uncached import generate_next_uncached

    d, C = genie.cfg.dynamics, genie.cfg.dynamics.context
    g = torch.Generator().manual_seed(0)
    state = {"past": torch.randint(0, d.vocab_size, (B, C - 1, d.num_tokens), generator=g),
             "acts": torch.randint(0, d.num_actions, (B, C - 2), generator=g)}
    action = torch.ones(B, dtype=torch.long)
    rng = np.random.default_rng(0)

    def one():
        past, acts = state["past"], state["acts"]
        tokens = generate_next_uncached(genie.dynamics, past, acts, action, steps=steps, rng=rng)
        window = torch.cat([past, tokens[:, None]], 1)[:, -C:]
        genie.tokenizer.decode(window)[:, -1]
        state["past"], state["acts"] = window[:, 1:], torch.cat([acts, action[:, None]], 1)[:, 1:]

    return timed(one, budget, max_frames) * B


def runtime_fps(wm, B: int, budget: float, max_frames: int) -> float:
    H, W = wm.resolution
    prompt = np.random.default_rng(0).integers(0, 256, (wm.context - 1, H, W, 3), dtype=np.uint8)
    state = wm.reset(prompt)
    if B > 1:
        state = state.repeat(B)
    actions = np.ones(B, np.int64)
    return timed(lambda: wm.step(state, actions), budget, max_frames) * B


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default="cpu,compare")
    ap.add_argument("--steps", default="25,8")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--compare-batches", default="1", help="batches for the comparison config (64 takes minutes a frame)")
    ap.add_argument("--naive-max-batch", type=int, default=1, help="skip the naive baseline above this batch")
    ap.add_argument("--methods", default="naive,torch,onnx")
    ap.add_argument("--budget", type=float, default=15.0, help="seconds per cell (at least one frame is timed)")
    ap.add_argument("--max-frames", type=int, default=20)
    args = ap.parse_args()
    os.environ["GENIE_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from genie_robot.models import model_cost, preset
    from genie_robot.runtime import bundle
    from genie_robot.runtime.world_model import WorldModel

    peak = matmul_peak(args.threads)
    print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {args.threads} threads; load average {os.getloadavg()}; "
          f"torch {torch.__version__}; fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (2048^3, best of 5)")
    print("| config | method | steps | batch | frames/s | vs naive | GFLOP/frame | GFLOP/s | of peak |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    configs = {"cpu": lambda: preset("cpu"), "compare": compare_config}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            t = time.perf_counter()
            if name == "default":  # the shipped, trained model (its ONNX graphs from the cache)
                from genie_robot.runtime import default_model

                out = default_model.onnx_bundle(default_model.resolve("default"))
                cfg = bundle.read_config(out)
            else:
                cfg = configs[name]()
                out = Path(tmp) / name
                make_bundle(cfg, out)
            print(f"<!-- {name}: bundle ready in {time.perf_counter() - t:.0f} s -->", flush=True)
            for steps in map(int, args.steps.split(",")):
                c = model_cost(cfg)
                flops = c["dynamics"]["flops_per_pass"] * (steps + 1) + c["tokenizer"]["decode_flops_per_frame"]
                wms = {m: WorldModel.load(out, backend=m, steps=steps, threads=args.threads)
                       for m in ("torch", "onnx") if m in args.methods}
                batches = args.compare_batches if name == "compare" else args.batches
                for B in map(int, batches.split(",")):
                    base = None
                    for method in args.methods.split(","):
                        if method == "naive" and B > args.naive_max_batch:
                            continue
                        if method == "naive":
                            fps = naive_fps(bundle.load_genie(out), B, steps, args.budget, args.max_frames)
                            base = fps
                        else:
                            fps = runtime_fps(wms[method], B, args.budget, args.max_frames)
                        ratio = f"{fps / base:.1f}×" if base else "–"
                        print(f"| {name} | {method} | {steps} | {B} | {fps:.3f} | {ratio} | {flops / 1e9:.2f} | "
                              f"{fps * flops / 1e9:.1f} | {fps * flops / peak:.0%} |", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
