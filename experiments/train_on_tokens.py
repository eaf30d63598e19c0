"""Stage 2 on pre-encoded tokens, for a machine that cannot hold the stores: a lent GPU (issue #13).

The simulator stores (630 MB of frames) cannot travel to the `device` machine (64 MiB with the tree),
but their tokens can. `pack` (here, CPU) encodes every frame with a bundle's frozen tokenizer and labels
every transition f -> f + stride with its frozen LAM, which is what `genie-robot train dynamics` does to
each window, into one .npz (2,000 episodes of 64 frames: a few MB). `train` (there) fits a dynamics model
of any width and depth on the train split's windows for a wall-clock budget, with the model's own loss
(`DynamicsModel.loss`), the trainer's schedule and EMA, and writes a stage-2 checkpoint (the bundle's
tokenizer and LAM with the new dynamics) that `genie-robot export --dynamics` and `genie-robot eval
--dynamics` take back here. Only where the tokens come from is new.

    python -m experiments.train_on_tokens pack --model default --store sim600.zarr --store sim1400.zarr \\
        --out outputs/tokens/sim2000.npz
    python -m experiments.train_on_tokens train --tokens outputs/tokens/sim2000.npz --model default \\
        --out RUN --minutes 7 --width 320 --depth 8 --device cuda
    python -m experiments.train_on_tokens train ... --warm-start --lr 2e-4 --warmup 100   # fine-tune --model's own
    experiments/gpu_dynamics.sh     # the prepared device run; its header says how to fetch the result

Shapes: E episodes, F frames (all episodes concatenated), N tokens per frame, B batch, T window frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from genie_robot.artifacts import checkpoints as ckpt_io

PACK_VERSION = 1


def _weights_sha256(bundle_dir: Path) -> str:
    from genie_robot.runtime import bundle

    return bundle.sha256(bundle_dir / bundle.WEIGHTS)


def _load_bundle(model: str):
    from genie_robot.runtime import bundle, default_model

    path = default_model.resolve(model)
    return bundle.load_genie(path), _weights_sha256(path)


# ------------------------------------------------------------------------------------------------ pack


@torch.no_grad()
def pack(model: str, stores: list[str], out: str | Path, chunk: int = 256) -> Path:
    """Tokens of every frame and the LAM action of every transition f -> f + stride of `stores`, with
    the split the trainer uses (the bundle's val_fraction) -> the .npz at `out`."""
    from tqdm import tqdm

    from genie_robot.data.store import EpisodeStore
    from genie_robot.data.windows import split_episodes

    genie, weights_sha = _load_bundle(model)
    cfg = genie.cfg
    if cfg.dynamics.action_source != "latent":
        raise SystemExit("error: pack labels transitions with the bundle's LAM; this bundle is a ground-truth-action control")
    if cfg.tokenizer.kind != "conv" or cfg.lam.kind != "conv":  # tokens of a frame, actions of a pair, alone
        raise SystemExit(f"error: pack needs a per-frame (conv) tokenizer and a pair (conv) LAM, as the trainer's "
                         f"token cache does; this bundle has {cfg.tokenizer.kind!r} and {cfg.lam.kind!r}")
    stride, val_fraction = cfg.data.frame_stride, cfg.data.val_fraction
    tokens, actions, lengths, is_val, store_of = [], [], [], [], []
    opened = [EpisodeStore.open(s) for s in stores]
    total = sum(s.num_frames for s in opened)
    with tqdm(total=total, unit="frame", desc="pack", mininterval=2.0) as bar:
        for k, store in enumerate(opened):
            if tuple(store.resolution) != tuple(cfg.tokenizer.resolution):
                raise SystemExit(f"error: {stores[k]} is {store.resolution}, the bundle's tokenizer takes "
                                 f"{tuple(cfg.tokenizer.resolution)}")
            val = set(split_episodes(store.num_episodes, "val", val_fraction).tolist())
            for e in range(store.num_episodes):
                frames = torch.from_numpy(store.episode(e).rgb)  # (L, H, W, 3) uint8
                L = len(frames)
                tok = torch.cat([genie.tokenizer.encode(frames[i:i + chunk][None])[0] for i in range(0, L, chunk)])
                act = torch.full((L,), -1, dtype=torch.long)
                if L > stride:  # pairs (f, f + stride), batched as 2-frame clips
                    for i in range(0, L - stride, chunk):
                        j = min(i + chunk, L - stride)
                        pairs = torch.stack([frames[i:j], frames[i + stride:j + stride]], 1)
                        act[i:j] = genie.lam.infer_actions(pairs)[:, 0]
                tokens.append(tok.numpy().astype(np.int16))
                actions.append(act.numpy().astype(np.int16))
                lengths.append(L)
                is_val.append(e in val)
                store_of.append(k)
                bar.update(L)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out, version=PACK_VERSION, tokens_FN=np.concatenate(tokens), actions_F=np.concatenate(actions),
        lengths_E=np.asarray(lengths, np.int64), val_E=np.asarray(is_val), store_E=np.asarray(store_of, np.int16),
        action_table=genie.lam.action_embeddings().numpy(), config=json.dumps(cfg.to_dict()),
        stores=json.dumps([str(s) for s in stores]), bundle_weights_sha256=weights_sha,
    )
    print(f"{out}: {sum(lengths)} frames of {len(lengths)} episodes ({sum(is_val)} held out), stride {stride}, "
          f"{out.stat().st_size / 1e6:.1f} MB")
    return out


# ------------------------------------------------------------------------------------------------ windows


class TokenWindows:
    """Windows of `window` frames, every `stride`-th, drawn uniformly from the episodes of one split of a
    pack, on `device`: `batch(B, generator)` -> (tokens_BTN int64, actions_BTm1 int64)."""

    def __init__(self, data: dict, split: str, window: int, stride: int, device: torch.device):
        lengths = data["lengths_E"]
        first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        span = (window - 1) * stride  # a window's last frame is its first + span
        keep = data["val_E"] if split == "val" else ~data["val_E"]
        starts = [np.arange(f, f + L - span) for f, L, k in zip(first, lengths, keep) if k and L > span]
        if not starts:
            raise SystemExit(f"error: no {split} episode holds a window of {window} frames at stride {stride}")
        self.starts = torch.from_numpy(np.concatenate(starts)).to(device)
        self.offsets_T = torch.arange(window, device=device) * stride
        self.tokens_FN = torch.from_numpy(data["tokens_FN"].astype(np.int64)).to(device)
        self.actions_F = torch.from_numpy(data["actions_F"].astype(np.int64)).to(device)

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randint(len(self.starts), (size,), generator=generator, device=generator.device)
        frames_BT = self.starts[pick, None] + self.offsets_T
        return self.tokens_FN[frames_BT], self.actions_F[frames_BT[:, :-1]]


# ------------------------------------------------------------------------------------------------ train


def _model_config(packed: dict, args: argparse.Namespace):
    from genie_robot.models.configs import GenieConfig, TransformerConfig

    cfg = GenieConfig.from_dict(json.loads(str(packed["config"])))
    transformer = t = cfg.dynamics.transformer  # the bundle's, unless a size is given
    if args.width or args.depth or args.heads:
        width, depth = args.width or t.width, args.depth or t.depth
        heads = args.heads or max(1, width // 32)
        transformer = TransformerConfig(width=width, depth=depth, heads=heads, ffn_width=4 * width)
    dyn = dataclasses.replace(cfg.dynamics, transformer=transformer, mask_per=args.mask_per,
                              mask_rate=tuple(args.mask_rate), context_noise=args.context_noise)
    return dataclasses.replace(cfg, dynamics=dyn)


def train(args: argparse.Namespace) -> Path:
    from genie_robot.device import autocast, autocast_dtype, pick_device
    from genie_robot.models.dynamics import DynamicsModel
    from training.configs import TrainConfig
    from training.train import EMA, lr_at

    device = pick_device(args.device)
    packed = dict(np.load(args.tokens))
    if int(packed["version"]) != PACK_VERSION:
        raise SystemExit(f"error: {args.tokens} is pack version {int(packed['version'])}, this code reads {PACK_VERSION}: pack again")
    genie, weights_sha = _load_bundle(args.model)
    if weights_sha != str(packed["bundle_weights_sha256"]):
        raise SystemExit(f"error: {args.tokens} was packed with other tokenizer/LAM weights than --model {args.model}'s "
                         f"(sha256 {str(packed['bundle_weights_sha256'])[:12]}... vs {weights_sha[:12]}...): "
                         "pass the bundle it was packed with, or pack again")
    cfg = _model_config(packed, args)
    stride, window = cfg.data.frame_stride, cfg.dynamics.context
    torch.manual_seed(args.seed)
    model = DynamicsModel(cfg.dynamics)
    if args.warm_start:  # fine-tune the bundle's own dynamics model instead of a fresh one
        t = genie.cfg.dynamics.transformer
        if cfg.dynamics.transformer != t:
            raise SystemExit(f"error: --warm-start fine-tunes --model {args.model}'s dynamics model (width {t.width}, "
                             f"depth {t.depth}, heads {t.heads}): leave --width/--depth/--heads unset or equal")
        model.load_state_dict(genie.dynamics.state_dict())
    model = model.to(device)
    table = torch.from_numpy(packed["action_table"]).to(device)
    train_w = TokenWindows(packed, "train", window, stride, device)
    val_w = TokenWindows(packed, "val", window, stride, device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    val_batches = [val_w.batch(args.batch, torch.Generator(device=device).manual_seed(10_000 + i)) for i in range(4)]

    tcfg = TrainConfig(stage="dynamics", preset=cfg.name, frame_stride=stride, val_fraction=cfg.data.val_fraction,
                       batch_size=args.batch, max_steps=args.steps or 10**9, lr=args.lr, min_lr=args.lr / 10,
                       warmup_steps=args.warmup, weight_decay=0.05, ema_decay=args.ema, seed=args.seed,
                       device=str(device), run_name=f"train_on_tokens-w{cfg.dynamics.transformer.width}"
                                                    f"-d{cfg.dynamics.transformer.depth}"
                                                    + ("-warm" if args.warm_start else ""))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": tcfg.weight_decay},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=tcfg.lr, betas=(tcfg.beta1, tcfg.beta2), fused=device.type == "cuda")
    ema = EMA(model, tcfg.ema_decay)
    n_params = sum(p.numel() for p in params)
    print(f"dynamics {cfg.dynamics.transformer} ({n_params / 1e6:.2f} M parameters) on {device} "
          f"({'bf16' if autocast_dtype(device) is not None else 'fp32'}), batch {args.batch}; "
          f"{len(train_w)} train / {len(val_w)} val windows of {window} frames at stride {stride}", flush=True)

    def validate() -> float:
        devices = [device.index or 0] if device.type == "cuda" else []
        with ema.swapped_in(model), torch.no_grad(), torch.random.fork_rng(devices=devices):
            model.eval()
            torch.manual_seed(args.seed)  # the same masks each time, and the training stream untouched
            losses = []
            for tokens_BTN, actions_BTm1 in val_batches:
                with autocast(device):
                    losses.append(model.loss(tokens_BTN, actions_BTm1, table)[0].item())
            model.train()
        return float(np.mean(losses))

    budget_s, t0, step, t30 = args.minutes * 60.0, time.perf_counter(), 0, 0.0
    model.train()
    while step < tcfg.max_steps:
        if args.steps is None and step == 30:  # size the schedule to the budget from steps 30..80's time
            t30 = time.perf_counter()
        if args.steps is None and step == 80:
            per_step, left = (time.perf_counter() - t30) / 50, budget_s - (time.perf_counter() - t0)
            tcfg.max_steps = step + max(1, int(0.93 * left / per_step))  # 7 %: validation and saving
            print(f"{per_step * 1e3:.1f} ms a step: {tcfg.max_steps} steps in {args.minutes:g} min", flush=True)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, tcfg)  # until step 80 of a budgeted run: the warmup (cosine over 1e9 steps)
        tokens_BTN, actions_BTm1 = train_w.batch(args.batch, gen)
        with autocast(device):
            loss, _ = model.loss(tokens_BTN, actions_BTm1, table)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
        optimizer.step()
        step += 1
        ema.update(model, step)
        if step % args.val_every == 0 or step == tcfg.max_steps:
            elapsed = time.perf_counter() - t0
            print(f"step {step} train_loss {loss.item():.4f} val_loss {validate():.4f} lr {optimizer.param_groups[0]['lr']:.2e} "
                  f"{elapsed:.0f} s", flush=True)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower --lr")

    genie.dynamics = DynamicsModel(cfg.dynamics)  # the bundle's tokenizer and LAM, the new dynamics (EMA)
    genie.cfg = cfg
    genie.dynamics.load_state_dict({k: v.float().cpu() for k, v in ema.state_dict(model).items()})
    genie.dynamics.action_table.copy_(table.cpu())
    config = {"stage": "dynamics", "train": tcfg.to_dict(), "model": cfg.to_dict(),
              "source": {"experiment": "experiments.train_on_tokens", "tokens": str(args.tokens),
                         "stores": json.loads(str(packed["stores"])), "bundle_weights_sha256": weights_sha}}
    path = ckpt_io.save_checkpoint(args.out, step, weights=genie.state_dict(), config=config,
                                   state={"step": step, "mlflow_run_id": None})
    print(f"checkpoint: {path} (EMA weights, {time.perf_counter() - t0:.0f} s)", flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="encode stores into a token pack (run where the stores are)")
    pk.add_argument("--model", default="default", help="bundle whose tokenizer and LAM label the data")
    pk.add_argument("--store", action="append", required=True, help="episode store (repeatable)")
    pk.add_argument("--out", required=True, help=".npz to write")
    tr = sub.add_parser("train", help="fit a dynamics model on a token pack")
    tr.add_argument("--tokens", required=True, help="the .npz of `pack`")
    tr.add_argument("--model", default="default", help="the bundle the pack was made with (its tokenizer and LAM go into the checkpoint)")
    tr.add_argument("--out", required=True, help="run dir for the checkpoint")
    tr.add_argument("--minutes", type=float, default=7.0, help="wall-clock budget; the cosine schedule is sized to it")
    tr.add_argument("--steps", type=int, default=None, help="a fixed number of steps instead of --minutes")
    tr.add_argument("--width", type=int, default=None, help="transformer width (default: the bundle's)")
    tr.add_argument("--depth", type=int, default=None, help="ST blocks (default: the bundle's)")
    tr.add_argument("--heads", type=int, default=None,
                    help="attention heads (default: the bundle's; width / 32 when a size is given)")
    tr.add_argument("--warm-start", action="store_true",
                    help="start from --model's dynamics weights (its size) instead of a fresh model")
    tr.add_argument("--batch", type=int, default=64)
    tr.add_argument("--lr", type=float, default=6e-4)
    tr.add_argument("--warmup", type=int, default=300)
    tr.add_argument("--ema", type=float, default=0.999)
    tr.add_argument("--mask-per", default="frame", choices=["sample", "frame"])
    tr.add_argument("--mask-rate", type=float, nargs=2, default=[0.0, 1.0])
    tr.add_argument("--context-noise", type=float, default=0.1)
    tr.add_argument("--val-every", type=int, default=250)
    tr.add_argument("--device", default="auto")
    tr.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from genie_robot.device import configure_cpu_threads

    configure_cpu_threads()  # GENIE_NUM_THREADS, as the trainer (the CPU's share; a GPU run barely uses it)
    if args.cmd == "pack":
        pack(args.model, args.store, args.out)
    else:
        train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
