"""How much of the robot's action can K discrete codes a model step carry? (issue #13)

A latent action model with K codes can at best tell the dynamics model which of K clusters a
transition's action falls in. This measures that ceiling on a store's ground-truth actions: the
actions summed over each model step (every `--stride`-th frame, as the dynamics model sees them),
clustered by k-means into K centroids, and the fraction of the action variance the centroids explain:

  displacement codes      the centroid of the step's action (what the pair LAM encodes)
  innovation codes        the previous step's action plus the centroid of the change: what a LAM that
                          sees the history could encode, if the change were the cheaper thing to say
  previous action alone   no code at all: how predictable a step's action is from the one before

    python -m experiments.action_bits --store runs/sim600.zarr --codes 8,64
"""

from __future__ import annotations

import argparse

import numpy as np


def step_actions(store_path: str, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(actions of steps 1.., the actions of the steps before them), each (M, A): the store's actions
    summed over `stride` frames, within episodes."""
    from genie_robot.data.store import EpisodeStore

    store = EpisodeStore.open(store_path)
    if store.action_dim is None:
        raise SystemExit(f"error: {store_path} has no data/action; pass a store recorded with actions")
    now, before = [], []
    start = 0
    for end in store.episode_ends:
        a = store.read("action", start, int(end), 1)
        start = int(end)
        steps = (len(a) // stride) * stride
        summed = a[:steps].reshape(-1, stride, a.shape[1]).sum(1)
        now.append(summed[1:])
        before.append(summed[:-1])
    return np.concatenate(now), np.concatenate(before)


def explained(codes_of: np.ndarray, k: int, target: np.ndarray, base: np.ndarray | float = 0.0, seed: int = 0) -> float:
    """Fraction of `target`'s variance explained by base + the k-means centroid of `codes_of`."""
    from sklearn.cluster import KMeans

    km = KMeans(k, n_init=4, random_state=seed).fit(codes_of)
    residual = target - (base + km.cluster_centers_[km.labels_])
    return 1.0 - float((residual ** 2).sum() / ((target - target.mean(0)) ** 2).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--stride", type=int, default=3, help="store frames per model step (the default model's: 3)")
    ap.add_argument("--codes", default="8,64", help="numbers of codes to compare")
    args = ap.parse_args()

    now, before = step_actions(args.store, args.stride)
    change = now - before
    still = 1.0 - float(((now - before) ** 2).sum() / ((now - now.mean(0)) ** 2).sum())
    print(f"{len(now)} model steps of {args.store} (stride {args.stride}), {now.shape[1]} action dims")
    print("| codes | bits | displacement codes | previous action + innovation codes | previous action alone |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for k in map(int, args.codes.split(",")):
        print(f"| {k} | {np.log2(k):.0f} | {explained(now, k, now):.3f} | {explained(change, k, now, before):.3f} "
              f"| {still:.3f} |")


if __name__ == "__main__":
    main()
