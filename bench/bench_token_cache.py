"""What stage 2's token cache saves (training/token_cache.py; issues #13, #16).

One `cpu`-preset stage-2 step (conv tokenizer and LAM frozen, dynamics forward + backward + AdamW,
batch 8 x 16 frames of 64x64, bf16 autocast where the CPU has it, like `genie-robot train`), timed
with the tokens encoded by the tokenizer (what every step did before; a cache miss) and with the
tokens already known (a cache hit), alternating in one process; median of --steps each.

    python bench/bench_token_cache.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()

    from genie_robot.device import autocast
    from genie_robot.models import Genie, preset

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    genie = Genie(preset("cpu"))
    genie.tokenizer.requires_grad_(False).eval()
    genie.lam.requires_grad_(False).eval()
    frames = torch.randint(0, 256, (8, 16, 64, 64, 3), dtype=torch.uint8)
    opt = torch.optim.AdamW([p for p in genie.parameters() if p.requires_grad], lr=1e-4)
    device = torch.device("cpu")
    with torch.no_grad(), autocast(device):
        tokens_BTN = genie.tokenizer.encode(frames)

    def step(cached: bool) -> float:
        t0 = time.perf_counter()
        with autocast(device):
            loss, _ = genie.dynamics_loss(frames, tokens_BTN=tokens_BTN if cached else None)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    step(False), step(True)  # warm-up
    times = {False: [], True: []}
    for _ in range(args.steps):
        for cached in (False, True):
            times[cached].append(step(cached))
    miss, hit = float(np.median(times[False])), float(np.median(times[True]))
    print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {args.threads} thread(s), load average {tuple(round(x, 2) for x in os.getloadavg())}")
    print("| stage-2 step, cpu preset, batch 8 x 16 | s/step (median) |")
    print("| --- | ---: |")
    print(f"| tokens encoded (no cache, or a miss) | {miss:.2f} |")
    print(f"| tokens from the cache (a hit) | {hit:.2f} |")
    print(f"| **hit / miss speed** | **{miss / hit:.2f}×** |")


if __name__ == "__main__":
    main()
