"""Give a trained dynamics model a new latent action model without starting over (issue #13: does a LAM
whose codes say more of the motion lift generation PSNR?).

Everything but the action input is kept: the tokenizer, the transformer, the output head. The action
input (`action_embed`, a linear map from an action's code vector to the model width) is refitted by least
squares so that each transition's new action lands where its old action did: on the transitions of
`--store`, both LAMs label every model step, and the new map minimises
sum ||W_new e_new(c_new) + b_new - (W_old e_old(c_old) + b_old)||². The model starts by reading the new
actions as the old ones it co-occurs with, and fine-tuning (`genie-robot train dynamics --init OUT`)
teaches it the rest. The result is a checkpoint that `--init` warm-starts from:

    python -m experiments.swap_lam --from default --lam ~/genie-runs/lam444 --store runs/sim600.zarr \\
        --out ~/genie-runs/swap444
    genie-robot train dynamics ... --lam ~/genie-runs/lam444 --init ~/genie-runs/swap444 \\
        --set "model.lam.fsq_levels=[4,4,4]"

With `--fsq-levels 2,2,2` a (4, 4, 4) LAM is read by the signs of its latent: its 8 directions become 8
actions (issue #13: what do 8 actions cost the default model?); train on it with `--lam OUT/lam --set
"model.lam.fsq_levels=[2,2,2]"`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch

from genie_robot.artifacts import checkpoints as ckpt_io


def _load_source(spec: str):
    """(Genie, its config dict) from a bundle ("default") or a `train dynamics` run/checkpoint."""
    from genie_robot.runtime import bundle, default_model

    try:
        source = default_model.resolve(spec)
    except FileNotFoundError:
        source = None
    if source is not None and (source / bundle.MANIFEST).is_file():
        genie = bundle.load_genie(source)
    else:
        genie, _ = ckpt_io.load_genie(spec)
    return genie.eval(), genie.cfg


def _save_relevelled(lam_ck, levels: tuple[int, ...], out: Path) -> None:
    """The LAM checkpoint again, its config saying `levels`: what `train dynamics --lam` takes for it."""
    config = copy.deepcopy(lam_ck.config)
    config["model"]["lam"]["fsq_levels"] = list(levels)
    config["train"].setdefault("model", {}).setdefault("lam", {})["fsq_levels"] = list(levels)
    ckpt_io.save_checkpoint(out, lam_ck.step, weights=lam_ck.weights, ema=lam_ck.ema, config=config,
                            state={"step": lam_ck.step})


def fit_action_embed(old_embed_Z_M: torch.Tensor, new_codes_Z_D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares (weight (M, D), bias (M,)) with new_codes @ weight.T + bias ≈ old_embed."""
    X = torch.cat([new_codes_Z_D, torch.ones(len(new_codes_Z_D), 1)], 1).double()
    sol = torch.linalg.lstsq(X, old_embed_Z_M.double()).solution  # (D + 1, M)
    return sol[:-1].T.float().contiguous(), sol[-1].float().contiguous()


def main(argv: list[str] | None = None) -> int:
    from genie_robot.data.store import EpisodeStore
    from genie_robot.models.genie import Genie, build_lam

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="source", default="default", help="a bundle (\"default\") or a `train dynamics` run")
    p.add_argument("--lam", required=True, help="the new LAM: a `train lam` run dir or checkpoint")
    p.add_argument("--store", required=True, help="a store whose transitions both LAMs label (the fit)")
    p.add_argument("--episodes", type=int, default=64, help="episodes of --store used for the fit")
    p.add_argument("--out", required=True, help="run dir to write the checkpoint into")
    p.add_argument("--fsq-levels", type=lambda s: tuple(int(x) for x in s.strip("[]()").split(",")),
                   help="read the new LAM's FSQ latent with these levels instead of its own, one per dim "
                        "(e.g. 2,2,2: the signs of a (4, 4, 4) LAM, its 8 directions as 8 actions); the LAM so "
                        "read is written to OUT/lam, for `train dynamics --lam OUT/lam`")
    args = p.parse_args(argv)

    genie, cfg = _load_source(args.source)
    lam_ck = ckpt_io.load_stage(args.lam, "lam", what="--lam")
    lam_cfg = ckpt_io.genie_config(lam_ck.config).lam
    if args.fsq_levels is not None:
        if len(args.fsq_levels) != len(lam_cfg.fsq_levels):
            raise SystemExit(f"--fsq-levels {list(args.fsq_levels)}: the LAM's latent has {len(lam_cfg.fsq_levels)} "
                             f"dims ({list(lam_cfg.fsq_levels)}); give one level per dim")
        lam_cfg = dataclasses.replace(lam_cfg, fsq_levels=args.fsq_levels)
        _save_relevelled(lam_ck, args.fsq_levels, Path(args.out) / "lam")
    new_lam = build_lam(lam_cfg)
    new_lam.load_state_dict(lam_ck.ema if lam_ck.ema is not None else lam_ck.weights)
    new_lam.eval()

    store = EpisodeStore.open(args.store)
    stride = cfg.data.frame_stride
    old_Z, new_Z = [], []
    for i in np.linspace(0, store.num_episodes - 1, min(args.episodes, store.num_episodes)).astype(int):
        start, end = store.episode_bounds(int(i))
        frames = torch.from_numpy(np.ascontiguousarray(store.read("rgb", start, end, stride)))[None]
        with torch.no_grad():
            old_Z.append(genie.dynamics.embed_actions(genie.lam.infer_actions(frames)[0]))
            new_Z.append(new_lam.action_embeddings()[new_lam.infer_actions(frames)[0]])
    old_ZM, new_ZD = torch.cat(old_Z), torch.cat(new_Z)
    weight, bias = fit_action_embed(old_ZM, new_ZD)
    spread = (old_ZM - old_ZM.mean(0)).pow(2).sum()
    resid = (new_ZD @ weight.T + bias - old_ZM).pow(2).sum() / spread if spread > 0 else torch.tensor(0.0)

    new_cfg = dataclasses.replace(cfg, lam=lam_cfg)  # recomputes the dynamics' action count and dim
    swapped = Genie(new_cfg)
    keep = {k: v for k, v in genie.state_dict().items()
            if not k.startswith("lam.") and k not in ("dynamics.action_embed.weight", "dynamics.action_table")}
    keep["dynamics.action_embed.weight"], keep["dynamics.action_embed.bias"] = weight, bias
    keep["dynamics.action_table"] = new_lam.action_embeddings()
    keep.update({f"lam.{k}": v for k, v in new_lam.state_dict().items()})
    swapped.load_state_dict(keep)
    config = {"stage": "dynamics", "model": new_cfg.to_dict(),
              "train": {"preset": new_cfg.name, "model": {"lam": {"fsq_levels": list(lam_cfg.fsq_levels)}},
                        "frame_stride": stride}}
    weights = swapped.state_dict()
    path = ckpt_io.save_checkpoint(args.out, 0, weights=weights, ema=weights, config=config, state={"step": 0})
    print(f"{args.source} + {lam_ck.path} ({new_lam.action_embeddings().shape[0]} actions) -> {path}; "
          f"action input refitted on {len(old_ZM)} transitions, unexplained {resid:.3f} of the old embeddings' variance")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
