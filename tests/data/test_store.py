"""The Zarr episode store: round trips, validation errors, append, incomplete stores and crash safety."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import zarr

from genie_robot.data.store import Episode, EpisodeStore, StoreError, StoreWriter

ROOT = Path(__file__).resolve().parents[2]


def assert_episode_equal(got: Episode, want: Episode) -> None:
    np.testing.assert_array_equal(got.rgb, want.rgb)
    for name in ("action", "state"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == np.float32
            np.testing.assert_array_equal(a, b.astype(np.float32))
    assert got.instruction == want.instruction


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "memory"])
def test_round_trip(where, tmp_path, tiny_episode):
    path = str(tmp_path / "s.zarr") if where == "local" else f"memory://genie-test-{uuid.uuid4().hex}"
    lengths = [5, 9, 4]
    episodes = [
        tiny_episode(i, n, (12, 10), action_dim=3, state_dim=2, instruction=["pick", None, "place"][i])
        for i, n in enumerate(lengths)
    ]
    with StoreWriter(
        path, resolution=(12, 10), fps=15, source="unit", camera="wrist", action_dim=3, state_dim=2
    ) as w:
        for ep in episodes:
            w.add_episode(ep)

    store = EpisodeStore.open(path)
    assert store.complete
    assert (store.num_episodes, store.num_frames) == (3, 18)
    np.testing.assert_array_equal(store.episode_ends, [5, 14, 18])
    assert store.episode_ends.dtype == np.int64
    assert (store.resolution, store.fps, store.source, store.camera) == ((12, 10), 15.0, "unit", "wrist")
    assert (store.action_dim, store.state_dim) == (3, 2)
    assert store.instructions == ["pick", None, "place"]
    assert store.episode_bounds(1) == (5, 14) and store.episode_bounds(-1) == (14, 18)
    for i, ep in enumerate(episodes):
        assert_episode_equal(store.episode(i), ep)
    all_rgb = np.concatenate([ep.rgb for ep in episodes])
    np.testing.assert_array_equal(store.frames(3, 16, stride=3), all_rgb[3:16:3])
    with pytest.raises(IndexError):
        store.frames(0, 19)
    with pytest.raises(IndexError):
        store.episode(3)


def test_layout_is_the_documented_contract(tiny_store):
    """Raw zarr sees the layout docs/data_format.md promises: other tools read it without our code."""
    g = zarr.open_group(tiny_store(episodes=[3, 6], action_dim=2, state_dim=4), mode="r")
    assert g["data/rgb"].shape == (9, 16, 16, 3) and g["data/rgb"].dtype == np.uint8
    assert g["data/rgb"].chunks == (4, 16, 16, 3)
    assert g["data/action"].dtype == np.float32 and g["data/state"].shape == (9, 4)
    assert g["meta/episode_ends"][:].tolist() == [3, 9]
    codec = g["data/rgb"].compressors[0]
    assert type(codec).__name__ == "BloscCodec" and codec.cname.value == "zstd"
    attrs = dict(g.attrs)
    assert attrs["complete"] is True and attrs["schema_version"] == 1 and attrs["resolution"] == [16, 16]
    assert {"fps", "source", "camera"} <= attrs.keys()


def test_empty_store_and_no_optional_arrays(tmp_path):
    path = tmp_path / "empty.zarr"
    StoreWriter(str(path), resolution=(4, 4), fps=1, source="x").close()
    store = EpisodeStore.open(str(path))
    assert (store.num_episodes, store.num_frames, store.action, store.state) == (0, 0, None, None)
    assert store.instructions == []


# -- writer modes --------------------------------------------------------------------------------


def test_modes_new_overwrite_append(tiny_store, tiny_episode):
    path = tiny_store(episodes=2, length=5)
    with pytest.raises(StoreError, match="already exists; use mode='a'"):
        StoreWriter(path, resolution=(16, 16), fps=10, source="tiny", action_dim=2)

    with StoreWriter(path, resolution=(16, 16), fps=10, source="tiny", action_dim=2, mode="a") as w:
        w.add_episode(tiny_episode(2, 7))
    store = EpisodeStore.open(path)
    assert store.episode_lengths.tolist() == [5, 5, 7]
    assert_episode_equal(store.episode(2), tiny_episode(2, 7))
    assert_episode_equal(store.episode(0), tiny_episode(0, 5, instruction="task 0"))

    with pytest.raises(StoreError, match="resolution=.*pass the store's resolution"):
        StoreWriter(path, resolution=(8, 8), fps=10, source="tiny", action_dim=2, mode="a")
    with pytest.raises(StoreError, match="action_dim=2 but the writer was given action_dim=None"):
        StoreWriter(path, resolution=(16, 16), fps=10, source="tiny", mode="a")

    StoreWriter(path, resolution=(16, 16), fps=10, source="tiny", action_dim=2, mode="w").close()
    assert EpisodeStore.open(path).num_episodes == 0


@pytest.mark.parametrize("mode", ["w-", "w", "a"])
def test_never_writes_over_other_content(tmp_path, mode):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "keep.jpg").write_bytes(b"precious")
    with pytest.raises(StoreError, match="exists but is not a Zarr store; refusing"):
        StoreWriter(str(folder), resolution=(4, 4), fps=1, source="x", mode=mode)
    assert (folder / "keep.jpg").read_bytes() == b"precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    StoreWriter(
        str(empty), resolution=(4, 4), fps=1, source="x", mode=mode
    ).close()  # an empty folder is fine


def test_failed_add_episode_does_not_shift_the_next(tmp_path, tiny_episode, monkeypatch):
    """An I/O error half-way through an episode leaves rows behind; the next episode overwrites them."""
    path = str(tmp_path / "s.zarr")
    original = zarr.Array.__setitem__

    def flaky(self, key, value):
        if self.path == "data/state":
            raise OSError("disk full")
        return original(self, key, value)

    with StoreWriter(path, resolution=(16, 16), fps=10, source="t", action_dim=2, state_dim=1) as w:
        w.add_episode(tiny_episode(0, 5, state_dim=1))
        monkeypatch.setattr(zarr.Array, "__setitem__", flaky)
        with pytest.raises(OSError):
            w.add_episode(tiny_episode(1, 8, state_dim=1))  # rgb and action written, state not
        monkeypatch.setattr(zarr.Array, "__setitem__", original)
        w.add_episode(tiny_episode(2, 3, state_dim=1))
    store = EpisodeStore.open(path)
    assert store.episode_lengths.tolist() == [5, 3]
    assert_episode_equal(store.episode(1), tiny_episode(2, 3, state_dim=1))


# -- validation of episodes ----------------------------------------------------------------------


def _bad_episodes():
    ok = np.zeros((3, 8, 8, 3), np.uint8)
    act = np.zeros((3, 2), np.float32)
    return [
        (
            Episode(np.zeros((3, 3, 8, 8), np.float32), act),
            r"expected uint8 frames \(T, H, W, 3\), got float32 \(T, 3, H, W\)",
        ),
        (Episode(np.zeros((3, 8, 8, 3), np.float64), act), r"got float64 \(T, H, W, 3\).*convert to uint8"),
        (Episode(np.zeros((3, 3, 8, 8), np.uint8), act), r"got uint8 \(T, 3, H, W\).*channels last"),
        (Episode(ok[0], act), r"got uint8 \(H, W, 3\), a single frame"),
        (Episode(np.zeros((0, 8, 8, 3), np.uint8), act[:0]), "empty episode"),
        (Episode(np.zeros((3, 6, 8, 3), np.uint8), act), r"frames are 6x8 .* store holds 8x8; resize"),
        (Episode(ok, act[:2]), "action has 2 steps but the episode has 3 frames"),
        (Episode(ok, None), r"holds actions \(action_dim=2\) but the episode has none"),
        (Episode(ok, np.zeros((3, 5), np.float32)), r"expected action of shape \(T, 2\), got \(3, 5\)"),
        (Episode(ok, act, state=np.zeros((3, 1), np.float32)), "created without states; pass state_dim=1"),
        (Episode(ok, act, instruction=3), "instruction must be a str"),
    ]


@pytest.mark.parametrize("episode,message", _bad_episodes())
def test_add_episode_rejects_bad_episodes_and_writes_nothing(tmp_path, episode, message):
    path = str(tmp_path / "s.zarr")
    with StoreWriter(path, resolution=(8, 8), fps=10, source="t", action_dim=2) as w:
        w.add_episode(Episode(np.ones((2, 8, 8, 3), np.uint8), np.ones((2, 2), np.float32)))
        with pytest.raises(StoreError, match=message):
            w.add_episode(episode)
    store = EpisodeStore.open(path)  # still consistent: the rejected episode left no trace
    assert store.num_episodes == 1 and store.rgb.shape[0] == 2 and store.action.shape[0] == 2


def test_store_error_is_a_value_error():
    assert issubclass(StoreError, ValueError)


# -- validation on open --------------------------------------------------------------------------


def test_open_missing_store(tmp_path):
    with pytest.raises(StoreError, match="no episode store at .*check the path"):
        EpisodeStore.open(str(tmp_path / "nothing.zarr"))


def test_open_missing_array(tiny_store):
    path = tiny_store()
    zarr.open_group(path, mode="r+")["data"].__delitem__("rgb")
    with pytest.raises(StoreError, match="missing array data/rgb"):
        EpisodeStore.open(path)


def test_open_wrong_dtype_and_layout(tiny_store):
    path = tiny_store(episodes=1, length=4)
    g = zarr.open_group(path, mode="r+")
    g.create_array("data/rgb", shape=(4, 3, 16, 16), dtype="float32", overwrite=True)
    with pytest.raises(
        StoreError, match=r"expected uint8 frames \(N, H, W, 3\) in data/rgb, got float32 \(T, 3, H, W\)"
    ):
        EpisodeStore.open(path)


def test_open_wrong_action_dtype(tiny_store):
    path = tiny_store(episodes=1, length=4)
    zarr.open_group(path, mode="r+").create_array(
        "data/action", shape=(4, 2), dtype="float64", overwrite=True
    )
    with pytest.raises(StoreError, match="expected float32 data/action"):
        EpisodeStore.open(path)


@pytest.mark.parametrize("ends", [[5, 3, 12], [4, 8, 13], [4, 8, 11], [0, 8, 12]])
def test_open_inconsistent_episode_ends(tiny_store, ends):
    path = tiny_store(episodes=3, length=4)
    zarr.open_group(path, mode="r+")["meta/episode_ends"][:] = np.array(ends, np.int64)
    with pytest.raises(StoreError, match="inconsistent episode_ends.*rewrite it"):
        EpisodeStore.open(path)


def test_open_wrong_schema_version(tiny_store):
    path = tiny_store()
    zarr.open_group(path, mode="r+").attrs["schema_version"] = 99
    with pytest.raises(StoreError, match="newer than this genie-robot reads.*upgrade"):
        EpisodeStore.open(path)


# -- incomplete stores ---------------------------------------------------------------------------


def test_unclosed_writer_leaves_store_incomplete(tmp_path, tiny_episode):
    path = str(tmp_path / "s.zarr")
    w = StoreWriter(path, resolution=(16, 16), fps=10, source="t", action_dim=2)
    w.add_episode(tiny_episode(0, 5))
    with pytest.raises(
        StoreError, match=r"incomplete.*holds 1 committed episodes.*allow_incomplete=True.*mode='a'"
    ):
        EpisodeStore.open(path)
    store = EpisodeStore.open(path, allow_incomplete=True)
    assert not store.complete and store.num_episodes == 1
    w.close()
    assert EpisodeStore.open(path).complete


def test_exception_inside_with_leaves_store_incomplete(tmp_path, tiny_episode):
    path = str(tmp_path / "s.zarr")
    with pytest.raises(RuntimeError):
        with StoreWriter(path, resolution=(16, 16), fps=10, source="t", action_dim=2) as w:
            w.add_episode(tiny_episode(0, 5))
            raise RuntimeError("converter failed")
    with pytest.raises(StoreError, match="incomplete"):
        EpisodeStore.open(path)
    assert EpisodeStore.open(path, allow_incomplete=True).num_episodes == 1


# -- crash safety: SIGKILL a writer subprocess ---------------------------------------------------

# The child writes two episodes, then dies by SIGKILL just before the k-th zarr array mutation
# (resize or write) of the third: every point inside an episode's write sequence gets hit.
KILL_AT_MUTATION = r"""
import os, signal, sys
import zarr
sys.path.insert(0, sys.argv[3])
from conftest import make_episode
from genie_robot.data.store import StoreWriter

path, kill_at = sys.argv[1], int(sys.argv[2])
count, armed = 0, False

def counting(fn):
    def wrapper(*args, **kwargs):
        global count
        if armed:
            count += 1
            if count == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)
    return wrapper

zarr.Array.resize = counting(zarr.Array.resize)
zarr.Array.__setitem__ = counting(zarr.Array.__setitem__)
w = StoreWriter(path, resolution=(8, 8), fps=5, source="crash", action_dim=2, state_dim=1)
for i in range(2):
    w.add_episode(make_episode(i, 5 + i, (8, 8), 2, 1, f"task {i}"))
armed = True
w.add_episode(make_episode(2, 9, (8, 8), 2, 1, "task 2"))
print("mutations", count, flush=True)
"""

WRITE_FOREVER = r"""
import sys
sys.path.insert(0, sys.argv[2])
from conftest import make_episode
from genie_robot.data.store import StoreWriter

with StoreWriter(sys.argv[1], resolution=(32, 32), fps=5, source="crash", action_dim=2, chunk_frames=3) as w:
    for i in range(100000):
        w.add_episode(make_episode(i, 4 + i % 7, (32, 32), 2, None, f"task {i}" if i % 3 else None))
        print("committed", i, flush=True)
"""


def _child_env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def _expected(i: int, **kw) -> Episode:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from conftest import make_episode
    finally:
        sys.path.pop(0)
    return make_episode(i, **kw)


def _resume_and_check(path: str, n_committed: int, **writer_kw) -> None:
    """Appending to a crashed store cuts the half-written episode away and ends complete and valid."""
    extra = Episode(
        np.full((3, *writer_kw["resolution"], 3), 7, np.uint8),
        np.zeros((3, 2), np.float32),
        None if writer_kw.get("state_dim") is None else np.zeros((3, writer_kw["state_dim"]), np.float32),
    )
    with StoreWriter(path, mode="a", **writer_kw) as w:
        w.add_episode(extra)
    store = EpisodeStore.open(path)
    assert store.num_episodes == n_committed + 1
    assert store.rgb.shape[0] == store.num_frames == store.episode_ends[-1]
    assert_episode_equal(store.episode(-1), extra)


def test_sigkill_at_every_point_of_an_episode_write(tmp_path):
    procs = {}
    for k in range(1, 13):
        path = str(tmp_path / f"k{k}.zarr")
        cmd = [sys.executable, "-c", KILL_AT_MUTATION, path, str(k), str(ROOT / "tests")]
        procs[k] = (
            path,
            subprocess.Popen(
                cmd, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            ),
        )
    killed = 0
    for k, (path, proc) in procs.items():
        out, err = proc.communicate(timeout=120)
        if proc.returncode == -signal.SIGKILL:
            killed += 1
            n_committed = 2
        else:
            assert proc.returncode == 0, err
            assert int(out.split()[-1]) < k  # survived only because the episode needed fewer mutations
            n_committed = 3
        with pytest.raises(StoreError, match="incomplete"):
            EpisodeStore.open(path)
        store = EpisodeStore.open(path, allow_incomplete=True)
        assert store.num_episodes == n_committed, f"killed before mutation {k}"
        for i in range(n_committed):
            assert_episode_equal(
                store.episode(i),
                _expected(
                    i,
                    length=5 + i if i < 2 else 9,
                    resolution=(8, 8),
                    action_dim=2,
                    state_dim=1,
                    instruction=f"task {i}",
                ),
            )
        _resume_and_check(
            path, n_committed, resolution=(8, 8), fps=5, source="crash", action_dim=2, state_dim=1
        )
    assert killed >= 8, "the kill points should cover the whole write of an episode"


def test_sigkill_from_outside_mid_write(tmp_path):
    path = str(tmp_path / "s.zarr")
    cmd = [sys.executable, "-c", WRITE_FOREVER, path, str(ROOT / "tests")]
    proc = subprocess.Popen(cmd, env=_child_env(), stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.split()[-1] == "3":
                break
        time.sleep(random.uniform(0.0, 0.02))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    with pytest.raises(StoreError, match="incomplete.*allow_incomplete=True"):
        EpisodeStore.open(path)
    store = EpisodeStore.open(path, allow_incomplete=True)
    assert store.num_episodes >= 4
    for i in range(store.num_episodes):
        want = _expected(
            i, length=4 + i % 7, resolution=(32, 32), action_dim=2, instruction=f"task {i}" if i % 3 else None
        )
        assert_episode_equal(store.episode(i), want)
    _resume_and_check(path, store.num_episodes, resolution=(32, 32), fps=5, source="crash", action_dim=2)


# -- the direct chunk reader -----------------------------------------------------------------------


@pytest.mark.parametrize("chunk_frames", [1, 4, 5])
def test_fast_reads_match_zarr(tiny_store, chunk_frames):
    """The local-disk fast path returns exactly what zarr's own indexing returns, edges included."""
    store = EpisodeStore.open(
        tiny_store(episodes=[7, 6, 9], action_dim=2, state_dim=3, chunk_frames=chunk_frames)
    )
    assert all(r.root is not None for r in store._readers.values())  # the fast path is in use
    n = store.num_frames
    for start, stop, stride in [
        (0, n, 1),
        (0, 1, 1),
        (n - 1, n, 1),
        (3, 17, 1),
        (2, 19, 3),
        (5, 5, 1),
        (4, 8, 1),
    ]:
        np.testing.assert_array_equal(store.frames(start, stop, stride), store.rgb[start:stop:stride])
        np.testing.assert_array_equal(
            store.read("action", start, stop, stride), store.action[start:stop:stride]
        )
        np.testing.assert_array_equal(
            store.read("state", start, stop, stride), store.state[start:stop:stride]
        )
    with pytest.raises(KeyError, match="no data/nope"):
        store.read("nope", 0, 1)
