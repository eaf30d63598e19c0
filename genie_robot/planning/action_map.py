"""Latent actions -> robot actions: what a robot user needs to act through a world model's latent
action model (Genie §3.3, LAPA-style), from a few labelled transitions.

    from genie_robot.planning.action_map import LatentActionMap, label_latents, transition_actions
    latents_ET = label_latents(wm, episodes, stride=wm.frame_stride)  # the frozen LAM's labels
    action_map = LatentActionMap("table", wm.num_actions).fit(latent_N, robot_action_NA)
    robot_action_NA = action_map(latent_N)

One model step spans `stride` source frames (the bundle's training frame_stride): `label_latents`
labels transitions frame t -> t + stride, and `transition_actions` gives the robot action of each:
the mean of its `stride` recorded actions, the one action whose holding for a model step reproduces
the transition (a controller that moves its target by a fixed step per action, as Fetch's does).
experiments/agents.py (`genie-robot agents`) measures policies built on these in the simulator.

Shapes: E episodes, T frames, N labelled transitions, K latent actions, F observation features; robot
actions here are 3-D (x, y, z), hence the literal 3.
"""

from __future__ import annotations

import numpy as np

MAPS = ("table", "mlp")


class LatentActionMap:
    """Latent action (+ observation features) -> robot action, fitted on a few labelled samples.

    "table": the mean robot action of each latent in the labelled set (latents never seen: the overall
    mean). "mlp": a small MLP on (one-hot latent, features), weight decay against overfitting."""

    def __init__(self, kind: str, num_actions: int, seed: int = 0, weight_decay: float = 1.0):
        if kind not in MAPS:
            raise ValueError(f"unknown map {kind!r}: use one of {', '.join(MAPS)}")
        self.kind, self.num_actions, self.seed, self.weight_decay = kind, num_actions, seed, weight_decay
        self.table_K3 = None
        self.mlp = None

    def fit(self, latent_N: np.ndarray, action_N3: np.ndarray, feat_NF: np.ndarray | None = None,
            steps: int = 500) -> LatentActionMap:
        latent_N = np.asarray(latent_N, np.int64)
        action_N3 = np.asarray(action_N3, np.float32)
        if len(latent_N) == 0 or len(latent_N) != len(action_N3):
            raise ValueError(f"map: need >= 1 labelled sample with one action each, got {len(latent_N)} latents "
                             f"and {len(action_N3)} actions")
        mean = action_N3.mean(0)
        self.table_K3 = np.stack([action_N3[latent_N == z].mean(0) if (latent_N == z).any() else mean
                                  for z in range(self.num_actions)]).astype(np.float32)
        if self.kind == "mlp":
            import torch
            from torch import nn

            torch.manual_seed(self.seed)
            if feat_NF is None:
                raise ValueError("map 'mlp' needs observation features")
            # standardised features: the policy's ReLU features have arbitrary scales per unit
            self.feat_mean = np.asarray(feat_NF, np.float32).mean(0)
            self.feat_std = np.asarray(feat_NF, np.float32).std(0) + 1e-3
            x = torch.from_numpy(self._inputs(latent_N, feat_NF))
            y = torch.from_numpy(action_N3)
            self.mlp = nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, action_N3.shape[1]))
            opt = torch.optim.AdamW(self.mlp.parameters(), lr=3e-3, weight_decay=self.weight_decay)
            for _ in range(steps):
                loss = ((self.mlp(x) - y) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            self.mlp.eval()
        return self

    def _inputs(self, latent_N, feat_NF):
        onehot = np.eye(self.num_actions, dtype=np.float32)[latent_N]
        if feat_NF is None:
            raise ValueError("map 'mlp' needs observation features")
        feat = (np.asarray(feat_NF, np.float32) - self.feat_mean) / self.feat_std
        return np.concatenate([onehot, feat], 1).astype(np.float32)

    def __call__(self, latent_N: np.ndarray, feat_NF: np.ndarray | None = None) -> np.ndarray:
        latent_N = np.asarray(latent_N, np.int64)
        if self.kind == "table":
            return self.table_K3[latent_N]
        import torch

        with torch.no_grad():
            return self.mlp(torch.from_numpy(self._inputs(latent_N, feat_NF))).numpy()


def label_latents(wm, episodes: list[dict], stride: int = 1) -> np.ndarray:
    """(E, T - stride) latent actions the frozen LAM of `wm` (a WorldModel) infers from videos:
    episodes are dicts whose "rgb" is (T, H, W, 3) uint8, all of the same length T;
    [:, t] labels the transition frame t -> frame t + stride, one model step. The LAM reads each
    offset's subsampled video rgb[o::stride] (the frame rate it was trained on), one batched call per
    offset, and the offsets interleave back to every t."""
    video = np.stack([e["rgb"] for e in episodes])
    E, T = video.shape[:2]
    if not 1 <= stride < T:
        raise ValueError(f"stride {stride} needs episodes of more than {stride} frames, got {T} "
                         "(raise --steps)")
    latents_ET = np.zeros((E, T - stride), np.int64)
    for o in range(min(stride, T - stride)):
        latents_ET[:, o::stride] = wm.infer_actions(video[:, o::stride])
    return latents_ET


def transition_actions(action_T3: np.ndarray, stride: int) -> np.ndarray:
    """(T, D) recorded actions -> (T + 1 - stride, D): [t] = the mean of actions t .. t + stride - 1,
    the action whose holding for `stride` steps reproduces transition t -> t + stride (module docstring)."""
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(action_T3, np.float32), stride, axis=0)
    return windows.mean(-1, dtype=np.float32)  # (T + 1 - stride, D, stride) -> (T + 1 - stride, D)
