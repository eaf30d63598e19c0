"""Held-out controllability, watched while training (logged as `monitor/*` at every validation).

A LAM can look fine by its loss while its codes collapse, and a dynamics model can lower its loss
while ignoring its actions, so the trainer also measures what matters on held-out windows:
  lam_monitor:      code usage (perplexity, share of the rarest code, codes on >= 5 % of
                    transitions) and NMI of the codes with the discretised ground-truth motion;
  dynamics_monitor: ΔPSNR@4 (inferred vs random latent actions; for the ground-truth-action control,
                    true vs shuffled actions), generation PSNR at t = 4, LAM code usage.
Both read the first windows of the validation set (the same ones every time).
"""

from __future__ import annotations

import numpy as np
import torch

from genie_robot.eval import latent_analysis as la

LAM_WINDOWS = 512  # transitions scored by lam_monitor (window 2: one each)
DYN_CLIPS = 8  # clips rolled out by dynamics_monitor
DYN_FRAMES = 5  # prompt + 4 generated frames: ΔPSNR at t = 4


def _windows(val_set, n: int) -> dict[str, torch.Tensor]:
    items = [val_set[i] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in ("frames", "transition_actions") if k in items[0]}


def _usage_metrics(codes: np.ndarray, num_actions: int) -> dict[str, float]:
    usage = la.code_usage(codes, num_actions)
    return {"perplexity": la.perplexity(usage), "min_code_share": float(usage.min()),
            "codes_over_5pct": float((usage >= 0.05).sum())}


@torch.no_grad()
def lam_monitor(lam, val_set, device: torch.device) -> dict[str, float]:
    batch = _windows(val_set, LAM_WINDOWS)
    codes = torch.cat([lam.infer_actions(f.to(device)).cpu() for f in batch["frames"].split(64)]).numpy()
    out = _usage_metrics(codes, lam.cfg.num_actions)
    if "transition_actions" in batch and batch["transition_actions"].shape[-1] >= 3:  # NMI needs xyz actions
        labels = la.discretise_actions(batch["transition_actions"].reshape(-1, batch["transition_actions"].shape[-1]).numpy())
        if len(np.unique(labels)) >= 2:  # against one class NMI says nothing (latent_analysis gives 0)
            out["nmi"] = la.normalized_mutual_information(codes.reshape(-1), labels)
    return out


@torch.no_grad()
def dynamics_monitor(genie, val_set, device: torch.device) -> dict[str, float]:
    from genie_robot.eval.metrics import delta_psnr

    batch = _windows(val_set, DYN_CLIPS)
    clips = batch["frames"][:, :DYN_FRAMES].to(device)
    t = clips.shape[1] - 1  # 4, or less when training windows are shorter (then named for their t)
    if t < 1:
        return {}
    ground_truth = genie.cfg.dynamics.action_source == "ground_truth"
    actions = batch["transition_actions"][:, :t] if ground_truth else None
    dp = delta_psnr(genie, clips, seed=0, actions_BTm1=actions)
    out = {f"delta_psnr_{t}": float(np.mean(dp.psnr_inferred_BT[:, t] - dp.psnr_random_BT[:, t])),
           f"gen_psnr_{t}": float(np.nanmean(dp.psnr_inferred_BT[:, t]))}
    if not ground_truth:
        out.update(_usage_metrics(dp.actions_inferred_BT, genie.cfg.lam.num_actions))
    return out
