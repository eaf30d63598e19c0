"""Training windows: random clips of T frames from one or more episode stores, as a torch Dataset.

A window never crosses an episode boundary. Episodes are split into train/val by a hash of their
index (not of the seed), so changing the training seed never moves an episode across the split.
Item i is a pure function of (seed, i): a run resumed at sample k sees exactly the stream it would
have seen. Stores are opened lazily in each DataLoader worker, never pickled.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path

import numpy as np
import torch

from genie_robot.data.store import EpisodeStore, StoreError

SPLITS = ("train", "val", "all")


_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _unit_hash(i: np.ndarray) -> np.ndarray:
    """splitmix64 of each integer, mapped to [0, 1): a fixed, seed-free 'random' number per episode."""
    with np.errstate(over="ignore"):
        z = i.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_episodes(num_episodes: int, split: str, val_fraction: float = 0.1) -> np.ndarray:
    """(E',) int64 indices of the episodes in `split` ("train" | "val" | "all").

    Episode e is in val when hash(e) < val_fraction, so the split is stable when episodes are appended.
    If that leaves val empty although val_fraction > 0 and there are >= 2 episodes, the episode with
    the smallest hash goes to val, so tiny stores still get a validation episode.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    idx = np.arange(num_episodes, dtype=np.int64)
    if split == "all":
        return idx
    u = _unit_hash(idx)
    is_val = u < val_fraction
    if val_fraction > 0 and num_episodes >= 2 and not is_val.any():
        is_val[np.argmin(u)] = True
    return idx[is_val] if split == "val" else idx[~is_val]


class WindowDataset(torch.utils.data.Dataset):
    """Random windows of `window` frames, `stride` apart, from one or several stores.

    Returns {"frames": uint8 (T, H, W, 3), "actions": float32 (T, A) when every store has actions of
    the same dimension, "episode": episode index in its store, "start": first frame's index within
    that episode, "frame": its index in the whole store, "store": index into `stores`}. With stride s, actions are those of the returned
    frames (every s-th), not summed over the skipped ones; "transition_actions" float32 (T-1, A) holds
    the sum of the s store actions between consecutive returned frames (what moved the robot from
    frame t to frame t+1), for the ground-truth-action control and for scoring latent actions.

    A store is picked with probability proportional to `weights` (default: its number of windows,
    i.e. uniform over all windows), then a window uniformly among that store's valid windows.
    `length` is the nominal size for samplers; any index i >= 0 is valid.
    """

    def __init__(
        self,
        stores: str | list[str],
        *,
        split: str = "train",
        window: int = 16,
        stride: int = 1,
        val_fraction: float = 0.1,
        seed: int = 0,
        weights: list[float] | None = None,
        length: int = 100_000,
    ):
        paths = [stores] if isinstance(stores, (str, Path)) else list(stores)
        if not paths:
            raise ValueError("no stores given")
        if window < 1 or stride < 1:
            raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
        self.paths = [str(p) for p in paths]
        self.split, self.window, self.stride = split, int(window), int(stride)
        self.seed, self.length = int(seed), int(length)
        self.span = (self.window - 1) * self.stride + 1  # frames a window covers in its episode

        self.episodes: list[np.ndarray] = []  # per store: episode indices usable in this split
        self._cum_windows: list[np.ndarray] = []  # per store: cumulative window counts
        resolutions, action_dims = set(), set()
        for path in self.paths:
            store = EpisodeStore.open(path)
            resolutions.add(store.resolution)
            action_dims.add(store.action_dim)
            in_split = split_episodes(store.num_episodes, split, val_fraction)
            lengths = store.episode_lengths[in_split]
            usable = lengths >= self.span
            if len(in_split) == 0:
                raise StoreError(
                    f"{path}: split {split!r} has no episodes ({store.num_episodes} in the store, "
                    f"val_fraction={val_fraction}); use split='all', or more episodes"
                    + (" or val_fraction > 0" if split == "val" else " or a smaller val_fraction")
                )
            if not usable.any():
                longest = int(lengths.max()) if len(lengths) else 0
                raise StoreError(
                    f"{path}: no episode in split {split!r} "
                    f"({len(in_split)} of {store.num_episodes} episodes) "
                    f"has the {self.span} frames a window of {window} with stride {stride} needs "
                    f"(longest: {longest}); use a shorter window or stride"
                    + (", or split='all' / a smaller val_fraction" if split != "all" else "")
                )
            eps = in_split[usable]
            self.episodes.append(eps)
            self._cum_windows.append(np.cumsum(lengths[usable] - self.span + 1))
        if len(resolutions) > 1:
            raise StoreError(
                f"stores have different resolutions {sorted(resolutions)}; windows are batched together, "
                f"so convert them to one resolution"
            )
        self.resolution = resolutions.pop()
        self.has_actions = len(action_dims) == 1 and None not in action_dims

        num_windows = np.array([c[-1] for c in self._cum_windows], dtype=np.float64)
        if weights is None:
            w = num_windows
        else:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (len(self.paths),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise ValueError(
                    f"weights must be {len(self.paths)} finite non-negative numbers (one per store) with a "
                    f"positive sum, got {weights}"
                )
        self.store_probs = w / w.sum()
        self._cum_probs = np.cumsum(self.store_probs).tolist()
        self._cum_lists = [c.tolist() for c in self._cum_windows]
        self._stores: list[EpisodeStore] | None = None  # opened lazily, per process
        self._pid = None

    @property
    def num_windows(self) -> list[int]:
        """Distinct windows available per store in this split."""
        return [int(c[-1]) for c in self._cum_windows]

    def __len__(self) -> int:
        return self.length

    def _open(self) -> list[EpisodeStore]:
        # A forked worker inherits the parent's handles; reopen so no zarr/fsspec state is shared.
        if self._stores is None or self._pid != os.getpid():
            self._stores = [EpisodeStore.open(p) for p in self.paths]
            self._pid = os.getpid()
        return self._stores

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_stores"] = None
        return state

    def locate(self, i: int) -> tuple[int, int, int]:
        """(store, episode, start within episode) of item i; a pure function of (seed, i)."""
        if i < 0:
            raise IndexError(f"index must be >= 0, got {i}")
        # Two uniforms from a counter-based hash of (seed, i): 5x cheaper than a seeded Generator
        # per item, and just as much a pure function of (seed, i).
        h1 = _splitmix64(_splitmix64(self.seed & _M64) ^ int(i))
        h2 = _splitmix64(h1)
        u_store, u_window = (h1 >> 11) / 2.0**53, (h2 >> 11) / 2.0**53
        k = min(bisect.bisect_right(self._cum_probs, u_store), len(self.paths) - 1)
        while self.store_probs[k] == 0:  # u landed on a float-rounding edge next to a zero-weight store
            k -= 1
        cum = self._cum_lists[k]
        j = min(int(u_window * cum[-1]), cum[-1] - 1)
        e = bisect.bisect_right(cum, j)
        offset = j - (cum[e - 1] if e else 0)
        return k, int(self.episodes[k][e]), offset

    def __getitem__(self, i: int) -> dict:
        k, episode, offset = self.locate(i)
        store = self._open()[k]
        start = int(store.episode_ends[episode - 1]) if episode else 0
        first = start + offset
        stop = first + self.span
        item = {
            "frames": torch.from_numpy(store.read("rgb", first, stop, self.stride)),
            "episode": episode,
            "start": offset,
            "frame": first,
            "store": k,
        }
        if self.has_actions:
            raw = store.read("action", first, stop, 1)  # (span, A): every store frame's action
            item["actions"] = torch.from_numpy(np.ascontiguousarray(raw[:: self.stride]))
            T1 = self.window - 1
            item["transition_actions"] = torch.from_numpy(
                raw[: T1 * self.stride].reshape(T1, self.stride, raw.shape[1]).sum(1, dtype=np.float32))
        return item
