"""How fast does the `cpu` preset generate frames, with and without the temporal KV cache?

Batch 1, a full 16-frame context, MaskGIT at 8 and 25 steps, torch eager, random weights (speed does
not depend on them). "cached" = `WorldModel.from_genie(genie).step` (the runtime's single-frame
steps over the KV caches, torch backend); "uncached" = every MaskGIT pass recomputes the whole window
(bench/uncached.py), and the tokenizer decodes the whole window to get the last frame. Also prints model_cost for the presets.

    python bench/bench_rollout.py [--threads 2] [--frames 10]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from uncached import generate_next_uncached

from genie_robot.models import Genie, model_cost, preset
from genie_robot.runtime.world_model import WorldModel


def _fmt(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


@torch.no_grad()
def fps(genie: Genie, steps: int, cached: bool, frames: int) -> tuple[float, float]:
    """-> (frames per wall-clock second, process CPU ms per frame, all threads)."""
    cfg = genie.cfg
    d, ctx_len = cfg.dynamics, cfg.dynamics.context
    gen = torch.Generator().manual_seed(0)
    past = torch.randint(0, d.vocab_size, (1, ctx_len - 1, d.num_tokens), generator=gen)
    acts = torch.randint(0, d.num_actions, (1, ctx_len - 2), generator=gen)
    action = torch.tensor([1])
    if cached:
        wm = WorldModel.from_genie(genie, steps=steps)
        H, W = cfg.tokenizer.resolution
        prompt = torch.randint(0, 256, (1, ctx_len - 1, H, W, 3), dtype=torch.uint8, generator=gen).numpy()
        state = wm.reset(prompt, prompt_actions_BTm1=acts.numpy())

        def one():
            wm.step(state, action.numpy())
    else:
        rng = np.random.default_rng(0)

        def one():
            nonlocal past, acts
            tokens = generate_next_uncached(genie.dynamics, past, acts, action, steps=steps, rng=rng)
            window = torch.cat([past, tokens[:, None]], 1)[:, -ctx_len:]
            genie.tokenizer.decode(window)[:, -1]
            past, acts = window[:, 1:], torch.cat([acts, action[:, None]], 1)[:, 1:]
    one()  # warm-up
    t, c = time.perf_counter(), time.process_time()
    for _ in range(frames):
        one()
    return frames / (time.perf_counter() - t), (time.process_time() - c) / frames * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print("| preset | tokenizer params | LAM params | dynamics params | total params | dynamics FLOPs/pass | "
          "steps | FLOPs/generated frame (dynamics + decode) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in ("tiny", "cpu", "paper"):
        c = model_cost(preset(name))
        print(f"| {name} | {_fmt(c['tokenizer']['params'])} | {_fmt(c['lam']['params'])} | "
              f"{_fmt(c['dynamics']['params'])} | {_fmt(c['total']['params'])} | {_fmt(c['dynamics']['flops_per_pass'])} | "
              f"{c['dynamics']['maskgit_steps']} | {_fmt(c['total']['flops_per_frame'])} |")

    genie = Genie(preset("cpu")).eval()
    print(f"\ncpu preset, batch 1, 16-frame context, torch {torch.__version__} eager, {args.threads} threads, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| MaskGIT steps | uncached frames/s (CPU ms/frame) | cached frames/s (CPU ms/frame) | speed-up wall (CPU) |")
    print("| --- | --- | --- | --- |")
    for steps in (8, 25):
        base, base_cpu = fps(genie, steps, cached=False, frames=max(2, args.frames // 3))
        fast, fast_cpu = fps(genie, steps, cached=True, frames=args.frames)
        print(f"| {steps} | {base:.2f} ({base_cpu:.0f}) | {fast:.2f} ({fast_cpu:.0f}) | "
              f"{fast / base:.1f}x ({base_cpu / fast_cpu:.1f}x) |")


if __name__ == "__main__":
    main()
