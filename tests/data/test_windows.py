"""Training windows: boundaries, stride, determinism, splits, several stores, DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genie_robot.data.store import EpisodeStore, StoreError
from genie_robot.data.windows import WindowDataset, split_episodes


def check_item(item: dict, ds: WindowDataset, store: EpisodeStore) -> None:
    """The window lies inside one episode, at the promised frames, with the matching actions."""
    frames, e, start = item["frames"].numpy(), item["episode"], item["start"]
    assert frames.shape == (ds.window, *store.resolution, 3) and frames.dtype == np.uint8
    first, end = store.episode_bounds(e)
    assert 0 <= start and first + start + ds.span <= end  # never crosses into the next episode
    t = start + ds.stride * np.arange(ds.window)
    assert (frames[:, 0, 0, 0] == e % 256).all()  # markers written by tiny_store
    np.testing.assert_array_equal(frames[:, 0, 0, 1], t % 256)
    np.testing.assert_array_equal(frames, store.frames(first + start, first + start + ds.span, ds.stride))
    if "actions" in item:
        acts = item["actions"].numpy()
        assert acts.dtype == np.float32 and acts.shape == (ds.window, store.action_dim)
        np.testing.assert_array_equal(acts[:, 0], e)
        np.testing.assert_array_equal(acts[:, 1], t)


@pytest.mark.parametrize("window,stride", [(4, 1), (3, 2), (5, 1)])
def test_windows_stay_inside_episodes(tiny_store, window, stride):
    path = tiny_store(episodes=[5, 9, 6, 12, 4, 7])
    ds = WindowDataset(path, split="all", window=window, stride=stride, length=200)
    store = EpisodeStore.open(path)
    seen = set()
    for i in range(200):
        item = ds[i]
        check_item(item, ds, store)
        seen.add((item["episode"], item["start"]))
    usable = {e for e, n in enumerate(store.episode_lengths) if n >= ds.span}
    assert {e for e, _ in seen} == usable
    # Every valid window, first and last start of each episode included, can be drawn.
    all_windows = {(e, s) for e in usable for s in range(store.episode_lengths[e] - ds.span + 1)}
    assert {ds.locate(i)[1:] for i in range(3000)} == all_windows


def test_window_exactly_episode_long(tiny_store):
    path = tiny_store(episodes=[4, 3, 4])
    ds = WindowDataset(path, split="all", window=4, length=20)
    assert ds.num_windows == [2] and {ds[i]["episode"] for i in range(20)} == {0, 2}
    assert all(ds[i]["start"] == 0 for i in range(20))


def test_item_is_a_pure_function_of_seed_and_index(tiny_store):
    path = tiny_store(episodes=[8, 10, 12, 9])
    a = WindowDataset(path, window=4, seed=3, split="all")
    b = WindowDataset(path, window=4, seed=3, split="all")
    order = [17, 3, 17, 99_999, 0, 123_456_789]
    got_a = [(i, a.locate(i)) for i in order]
    got_b = [(i, b.locate(i)) for i in reversed(order)]
    assert sorted(got_a) == sorted(got_b)
    torch.testing.assert_close(a[5]["frames"], b[5]["frames"])
    other = WindowDataset(path, window=4, seed=4, split="all")
    assert [a.locate(i) for i in range(20)] != [other.locate(i) for i in range(20)]


def test_split_is_disjoint_stable_and_covers_all():
    for n in (2, 3, 10, 57):
        train, val, everything = (split_episodes(n, s, 0.2) for s in ("train", "val", "all"))
        assert len(val) >= 1 and not set(train) & set(val)
        assert sorted([*train, *val]) == list(everything) == list(range(n))
    # Appending episodes never moves an existing episode across the split.
    val_small, val_big = set(split_episodes(100, "val", 0.1)), set(split_episodes(400, "val", 0.1))
    assert val_small == {e for e in val_big if e < 100}
    assert 0.05 < len(val_big) / 400 < 0.15
    assert len(split_episodes(10, "val", 0.0)) == 0


def test_dataset_splits_do_not_share_episodes(tiny_store):
    path = tiny_store(episodes=10, length=6)
    train = WindowDataset(path, split="train", window=3, val_fraction=0.3)
    val = WindowDataset(path, split="val", window=3, val_fraction=0.3)
    assert set(train.episodes[0]).isdisjoint(val.episodes[0])
    assert {train[i]["episode"] for i in range(100)} <= set(train.episodes[0])
    assert {val[i]["episode"] for i in range(100)} <= set(val.episodes[0])
    # The split does not depend on the training seed.
    assert list(WindowDataset(path, split="val", window=3, val_fraction=0.3, seed=9).episodes[0]) == list(
        val.episodes[0]
    )


def test_no_episode_long_enough(tiny_store):
    path = tiny_store(episodes=[5, 7, 6])
    with pytest.raises(
        StoreError, match=r"no episode .* has the 16 frames a window of 16 with stride 1 needs \(longest: 7\)"
    ):
        WindowDataset(path, split="all")
    with pytest.raises(StoreError, match=r"has the 9 frames a window of 5 with stride 2"):
        WindowDataset(path, split="all", window=5, stride=2)


def test_empty_split(tiny_store):
    path = tiny_store(episodes=1, length=20)
    with pytest.raises(StoreError, match=r"split 'val' has no episodes \(1 in the store"):
        WindowDataset(path, split="val", window=4)
    assert len(WindowDataset(path, split="train", window=4).episodes[0]) == 1


def test_several_stores_with_weights(tiny_store):
    a, b = tiny_store(episodes=4, length=6), tiny_store(episodes=4, length=10, action_dim=None)
    only_b = WindowDataset([a, b], split="all", window=3, weights=[0, 1])
    assert {only_b[i]["store"] for i in range(50)} == {1}
    mixed = WindowDataset([a, b], split="all", window=3, weights=[1, 3], length=400)
    stores = [mixed.locate(i)[0] for i in range(400)]
    assert 0.17 < stores.count(0) / 400 < 0.33
    assert "actions" not in mixed[0]  # store b has none, so batches stay uniform
    opened = [EpisodeStore.open(a), EpisodeStore.open(b)]
    for i in range(30):
        item = mixed[i]
        check_item(item, mixed, opened[item["store"]])
    # Default: uniform over all windows, so the store with more windows is picked more often.
    default = WindowDataset([a, b], split="all", window=3)
    np.testing.assert_allclose(default.store_probs, np.array([16, 32]) / 48)


def test_several_stores_must_share_resolution(tiny_store):
    a, b = tiny_store(resolution=(16, 16)), tiny_store(resolution=(8, 8))
    with pytest.raises(StoreError, match="different resolutions"):
        WindowDataset([a, b], window=2)
    with pytest.raises(ValueError, match="one per store"):
        WindowDataset([a, a], window=2, weights=[1])


def test_dataloader_workers_match_main_process(tiny_store):
    path = tiny_store(episodes=[6, 9, 7, 8, 10], resolution=(8, 8))
    ds = WindowDataset(path, split="all", window=4, stride=1, length=24, seed=11)
    ds[0]  # open in the parent first: forked workers must not reuse its handles
    # spawn-based workers (the default on macOS and Windows) get the dataset pickled by torch itself
    spawned = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1, shuffle=False,
                                          multiprocessing_context="spawn")
    first = next(iter(spawned))
    for i in range(4):
        torch.testing.assert_close(first["frames"][i], ds[i]["frames"])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    assert len(batches) == 6
    frames = torch.cat([b["frames"] for b in batches])
    episodes = torch.cat([b["episode"] for b in batches])
    assert frames.shape == (24, 4, 8, 8, 3) and frames.dtype == torch.uint8
    for i in range(24):
        torch.testing.assert_close(frames[i], ds[i]["frames"])
        assert episodes[i].item() == ds[i]["episode"]
