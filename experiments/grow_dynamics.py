"""Grow a trained dynamics model deeper without changing what it computes (issue #13: does capacity buy
generation PSNR?).

Each new ST block is a copy of the block before it with its three output projections (spatial and
temporal attention, FFN out) set to zero: in a pre-norm residual block that is the identity, so the
grown model predicts exactly what the old one did, and training then has the extra depth to use. The
new blocks are spread evenly (6 -> 8 puts one after blocks 3 and 6). The result is a checkpoint that
`genie-robot train dynamics --init` warm-starts from:

    python -m experiments.grow_dynamics --from RUN_OR_CKPT --depth 8 --out ~/genie-runs/grown8
    genie-robot train dynamics ... --init ~/genie-runs/grown8 --set model.dynamics.transformer.depth=8
"""

from __future__ import annotations

import argparse
import copy
import re

import torch

from genie_robot.artifacts import checkpoints as ckpt_io

_BLOCK = re.compile(r"^(.*\.blocks\.)(\d+)(\..*)$")
_OUTPUTS = ("spatial.out.", "temporal.out.", "ffn.2.")


def grow_weights(weights: dict[str, torch.Tensor], depth: int, new_depth: int) -> dict[str, torch.Tensor]:
    """State dict of an ST-Transformer with `depth` blocks -> one with `new_depth` (depth < new_depth <=
    2 * depth), the same function: a new block follows each old block in `after`."""
    after = {round((j + 1) * depth / (new_depth - depth)) - 1 for j in range(new_depth - depth)}
    slot = {i: i + sum(a < i for a in after) for i in range(depth)}  # old block i -> its new index
    grown = {}
    for key, value in weights.items():
        m = _BLOCK.match(key)
        if not m:
            grown[key] = value.clone()
            continue
        prefix, i, rest = m.group(1), int(m.group(2)), m.group(3)
        grown[f"{prefix}{slot[i]}{rest}"] = value.clone()
        if i in after:  # its copy, with zero output projections: the identity
            zero = rest.lstrip(".").startswith(_OUTPUTS)
            grown[f"{prefix}{slot[i] + 1}{rest}"] = torch.zeros_like(value) if zero else value.clone()
    return grown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="source", required=True, help="a `train dynamics` run dir or checkpoint dir")
    p.add_argument("--depth", type=int, required=True, help="the new number of ST blocks")
    p.add_argument("--out", required=True, help="run dir to write the grown checkpoint into")
    args = p.parse_args(argv)
    ck = ckpt_io.load_stage(args.source, "dynamics", what="--from")
    depth = int(ck.config["model"]["dynamics"]["transformer"]["depth"])
    if not depth < args.depth <= 2 * depth:
        raise SystemExit(f"error: --depth {args.depth}: grow a depth-{depth} model to {depth + 1}..{2 * depth} blocks")
    config = copy.deepcopy(ck.config)
    config["model"]["dynamics"]["transformer"]["depth"] = args.depth
    config["train"]["model"].setdefault("dynamics", {}).setdefault("transformer", {})["depth"] = args.depth
    weights = grow_weights(ck.ema if ck.ema is not None else ck.weights, depth, args.depth)
    path = ckpt_io.save_checkpoint(args.out, 0, weights=weights, ema=weights, config=config, state={"step": 0})
    print(f"{ck.path} (depth {depth}, EMA weights) -> {path} (depth {args.depth})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
