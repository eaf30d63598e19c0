"""Does every latent action move the arm one way? (issue #13) The report's motion table for every code.

`genie-robot eval` measures which way each direction's corner action moves the picture (or each code of
a LAM with at most 16; genie_robot/eval/motion.py). This runs the same measurement on every code of a
model, whatever their number, from the first frame of each held-out clip, and summarises it:

    python -m experiments.code_motion --model default --store runs/sim600.zarr --episodes 32 --out code_motion.json

Costs: (episodes x codes) rollouts of `--depth` steps; 32 x 64 take about 8 minutes on 2 CPU threads.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def summarise(m: dict, *, good: float = 0.8) -> dict:
    """motion.action_motion's output -> how many codes move one way (consistency >= `good`), over
    every code and over the moving codes the LAM uses on the real transitions."""
    cons = np.array([np.nan if c is None else c for c in m["consistency"]])
    agree = np.array([np.nan if a is None else a for a in m["agreement"]])
    n = np.array(m["real_transitions"])
    moving = np.array([k for k in range(len(cons)) if k not in m["still"] and n[k] > 0], np.int64)
    w = n[moving] / max(n[moving].sum(), 1)
    return {"codes": len(cons), "used": int((n > 0).sum()), "still": list(m["still"]),
            "consistency_median": float(np.nanmedian(cons)), "codes_one_way": int((cons >= good).sum()),
            "moving_used": len(moving), "moving_used_one_way": int((cons[moving] >= good).sum()),
            "moving_used_consistency_weighted": float((w * cons[moving]).sum()),
            "agreement_median": float(np.nanmedian(agree[moving])) if len(moving) else None,
            "exceptions": [{"code": int(k), "consistency": float(cons[k]), "real_transitions": int(n[k])}
                           for k in moving if cons[k] < good]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.code_motion", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="model bundle (default: the shipped model)")
    p.add_argument("--store", required=True, help="store with held-out episodes (the model's val split)")
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--depth", type=int, default=3, help="steps of each code")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="JSON file: motion.action_motion's output and the summary")
    args = p.parse_args(argv)

    import torch

    from genie_robot.eval.evaluate import infer_episode_actions, load_clips, measure_motion
    from genie_robot.runtime import bundle, default_model

    genie = bundle.load_genie(default_model.resolve(args.model)).requires_grad_(False)
    stride = genie.cfg.data.frame_stride
    data = load_clips(args.store, resolution=tuple(genie.cfg.tokenizer.resolution), frames=genie.cfg.lam.context,
                      split="val", episodes=args.episodes, val_fraction=genie.cfg.data.val_fraction, stride=stride)
    store = data["store"]
    with torch.no_grad():
        frames = [store.frames(*store.episode_bounds(int(e)), stride) for e in data["episodes"]]
        codes = [infer_episode_actions(genie.lam, f, genie.cfg.lam.context) for f in frames]
        _, _, m = measure_motion(genie, data["clips"][:, 0], frames, codes, depth=args.depth, seed=args.seed)
    s = summarise(m)
    with open(args.out, "w") as f:
        json.dump({"summary": s, "motion": m}, f, indent=1)
    print(f"{s['codes']} codes ({s['used']} used on {sum(m['real_transitions'])} real transitions, still: "
          f"{s['still']}): consistency median {s['consistency_median']:.2f}, {s['codes_one_way']} of {s['codes']} "
          f">= 0.8; of the {s['moving_used']} used codes that move, {s['moving_used_one_way']} >= 0.8 "
          f"(transition-weighted mean {s['moving_used_consistency_weighted']:.3f}), agreement median "
          f"{'n/a' if s['agreement_median'] is None else format(s['agreement_median'], '.2f')}; "
          f"below 0.8: {s['exceptions']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
