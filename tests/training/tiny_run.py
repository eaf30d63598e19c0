"""A tiny stand-in model and synthetic windows for testing the training machinery, and a script that
trains them through `training.train.train` (for the resume-after-SIGKILL and DDP tests, which need
separate processes):

    python tests/training/tiny_run.py --run-dir DIR --max-steps 20 [--resume] [--mask] [--delay 0.05]
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/training/tiny_run.py ...
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training.configs import TrainConfig  # noqa: E402
from training.train import Stage, train  # noqa: E402

HW = 8


class TinyVideoModel(nn.Module):
    """Per-frame autoencoder over 8x8 frames. With `mask`, a random half of the frames is scored
    (drawn from torch's global RNG, like the dynamics model's token masking)."""

    def __init__(self, dim: int = 16, mask: bool = False, delay: float = 0.0):
        super().__init__()
        self.enc = nn.Linear(HW * HW * 3, dim)
        self.norm = nn.LayerNorm(dim)
        self.dec = nn.Linear(dim, HW * HW * 3)
        self.mask, self.delay = mask, delay

    def loss(self, frames_BTHW3: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if self.delay:
            time.sleep(self.delay)  # gives the SIGKILL test time to land mid-run
        x = frames_BTHW3.float().div(127.5).sub(1.0).flatten(2)  # (B, T, HW3)
        z = self.norm(self.enc(x))
        err = (self.dec(z) - x).pow(2).mean(-1)  # (B, T)
        if self.mask:
            keep = (torch.rand(err.shape) < 0.5).float()
            err = err * keep * 2.0
        loss = err.mean()
        usage = float((z.argmax(-1).flatten().bincount(minlength=z.shape[-1]) > 0).float().mean())
        return loss, {"codebook_usage": usage}


class SyntheticWindows(torch.utils.data.Dataset):
    """Item i is a pure function of (seed, i), like WindowDataset: smooth moving gradients plus noise."""

    def __init__(self, window: int = 4, seed: int = 0, length: int = 1_000_000):
        self.window, self.seed, self.length = window, seed, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, int(i)])
        base = rng.uniform(0, 255, size=(1, HW, HW, 3))
        shift = np.arange(self.window)[:, None, None, None] * rng.uniform(-20, 20)
        frames = np.clip(base + shift + rng.normal(0, 8, size=(self.window, HW, HW, 3)), 0, 255).astype(np.uint8)
        return {"frames": torch.from_numpy(frames), "episode": int(i % 7), "start": 0, "store": 0}


def save_grid(model, frames_BTHW3, out_dir: Path, step: int) -> list[Path]:
    """Stand-in preview: writes the first frames as a .npy 'picture'."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"recon_{step:06d}.npy"
    np.save(path, frames_BTHW3[:, 0].cpu().numpy())
    return [path]


def tiny_stage(mask: bool = False, delay: float = 0.0, window: int = 4) -> Stage:
    torch.manual_seed(0)
    model = TinyVideoModel(mask=mask, delay=delay)
    return Stage(name="tokenizer", model=model, loss=lambda m, f: m.loss(f),
                 model_config={"tiny": {"dim": 16, "mask": mask}}, window=window, preview=save_grid)


def tiny_config(run_dir: str | Path, **overrides) -> TrainConfig:
    base = dict(stage="tokenizer", preset="tiny", run_dir=str(run_dir), batch_size=4, max_steps=12,
                lr=1e-2, min_lr=1e-3, warmup_steps=3, val_every=5, val_batches=2, sample_every=6,
                ckpt_every=4, keep_last=2, log_every=2, experiment="tiny", device="cpu")
    base.update(overrides)
    return TrainConfig(**base)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True)
    p.add_argument("--max-steps", type=int, default=12)
    p.add_argument("--ckpt-every", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--ema", type=float, default=0.0)
    p.add_argument("--mask", action="store_true")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--precision", default="auto")
    a = p.parse_args()
    cfg = tiny_config(a.run_dir, max_steps=a.max_steps, ckpt_every=a.ckpt_every, batch_size=a.batch_size,
                      ema_decay=a.ema, tracking_uri=a.tracking_uri, keep_last=100, precision=a.precision)
    train(cfg, tiny_stage(mask=a.mask, delay=a.delay), SyntheticWindows(), SyntheticWindows(seed=99),
          resume="auto" if a.resume else None)


if __name__ == "__main__":
    main()
