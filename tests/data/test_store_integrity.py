"""Damaged stores are errors that name the damage: non-finite actions/states, a frame chunk that is
overwritten, truncated or deleted (on the direct local read path and through zarr), a corrupt
zarr.json. `genie-robot info --check` lists every damaged chunk; `train` fails on one it reads.
(Issue #14, items 7, 9 and 12.)"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from genie_robot.cli import main as cli
from genie_robot.data.store import Episode, EpisodeStore, StoreError, StoreWriter


def _chunk(path: str, k: int) -> Path:
    return Path(path) / "data" / "rgb" / "c" / str(k) / "0" / "0" / "0"


# -- item 7: non-finite actions and states ---------------------------------------------------------


@pytest.mark.parametrize("name", ["action", "state"])
def test_non_finite_vectors_are_refused_on_open_naming_array_and_episode(tiny_store, name):
    path = tiny_store(3, length=12, state_dim=3)
    g = zarr.open_group(path, mode="r+")
    g[f"data/{name}"][14:] = np.nan  # from step 2 of episode 1 on (a converter that wrote NaN)
    with pytest.raises(StoreError, match=rf"data/{name} holds non-finite values .* frame 14 \(episode 1, step 2\)"):
        EpisodeStore.open(path)
    g[f"data/{name}"][:] = np.inf
    with pytest.raises(StoreError, match=rf"data/{name} .* frame 0 \(episode 0, step 0\)"):
        EpisodeStore.open(path)


def test_writer_refuses_non_finite_actions(tmp_path, tiny_episode):
    ep = tiny_episode(0, 6)
    ep.action[3, 1] = np.nan
    with StoreWriter(str(tmp_path / "s.zarr"), resolution=(16, 16), fps=10, source="t", action_dim=2) as w:
        with pytest.raises(StoreError, match=r"episode 0: action holds non-finite values .* step 3"):
            w.add_episode(ep)


# -- item 9: damaged and missing chunks ------------------------------------------------------------


def test_damaged_rgb_chunks_name_array_frames_and_episode(tiny_store):
    path = tiny_store(3, length=12)  # chunks of 4 frames: chunk 4 = frames 16-19 = episode 1
    store = EpisodeStore.open(path)
    good = store.episode(1).rgb
    raw = _chunk(path, 4).read_bytes()

    _chunk(path, 4).write_bytes(raw[: len(raw) // 2])  # truncated
    with pytest.raises(StoreError, match=r"data/rgb: chunk c/4/0/0/0 \(frames 16-19, episode 1\) is damaged"):
        store.episode(1)
    _chunk(path, 4).write_bytes(bytes(len(raw)))  # overwritten
    with pytest.raises(StoreError, match=r"chunk c/4/0/0/0 \(frames 16-19, episode 1\) is damaged"):
        store.frames(15, 17)
    _chunk(path, 4).unlink()  # deleted: zarr would read black frames
    with pytest.raises(StoreError, match=r"chunk c/4/0/0/0 \(frames 16-19, episode 1\) is missing"):
        EpisodeStore.open(path).frames(12, 24, 2)
    _chunk(path, 4).write_bytes(raw)
    assert np.array_equal(EpisodeStore.open(path).episode(1).rgb, good)
    assert store.episode(0).rgb.shape == (12, 16, 16, 3)  # other chunks read as before


def test_all_black_frames_are_stored_and_read_back(tmp_path):
    path = str(tmp_path / "black.zarr")
    with StoreWriter(path, resolution=(8, 8), fps=10, source="t", action_dim=2) as w:
        w.add_episode(Episode(rgb=np.zeros((8, 8, 8, 3), np.uint8), action=np.zeros((8, 2), np.float32)))
    assert sorted(os.listdir(Path(path) / "data" / "rgb" / "c")) == ["0", "1"]  # zarr alone would skip them
    store = EpisodeStore.open(path)
    assert not store.episode(0).rgb.any() and not store.episode(0).action.any()


def test_missing_chunk_through_zarr_on_an_fsspec_store(tiny_store):
    import fsspec

    local = tiny_store(2, length=8)
    fs, root = fsspec.filesystem("memory"), f"/integrity-{os.getpid()}/s.zarr"
    fs.put(local, root, recursive=True)
    url = f"memory://{root}"
    store = EpisodeStore.open(url)
    assert store._readers["rgb"].root is None  # zarr's read path, not the direct local one
    assert np.array_equal(store.episode(1).rgb, EpisodeStore.open(local).episode(1).rgb)
    fs.rm(f"{root}/data/rgb/c/3/0/0/0")
    with pytest.raises(StoreError, match=r"chunk c/3/0/0/0 \(frames 12-15, episode 1\) is missing"):
        EpisodeStore.open(url).episode(1)
    fs.rm(root, recursive=True)


def test_info_check_lists_damaged_chunks_and_train_fails_on_one(tiny_store, tmp_path, monkeypatch, capsys):
    path = tiny_store(4, length=12)
    assert cli(["info", path, "--check"]) == 0
    assert "every chunk present and readable (12 chunks of data/rgb, 1 chunks of data/action)" in capsys.readouterr().out
    _chunk(path, 1).unlink()
    _chunk(path, 7).write_bytes(b"garbage")
    assert cli(["info", path]) == 0  # opening reads no frame chunk
    capsys.readouterr()
    assert cli(["info", path, "--check"]) == 2
    err = capsys.readouterr().err
    assert "c/1/0/0/0 (frames 4-7, episode 0) is missing" in err and "c/7/0/0/0 (frames 28-31, episode 2)" in err
    assert "check: 2 damaged or missing chunks" in err

    monkeypatch.chdir(tmp_path)
    args = ["train", "tokenizer", "--store", path, "--preset", "tiny", "--set", "window=4", "--set", "max_steps=3",
            "--set", "batch_size=8", "--set", "val_fraction=0", "--set", "sample_every=0", "--run-dir", "run"]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "genie-robot train tokenizer: error:" in err and "data/rgb: chunk" in err and "Traceback" not in err


def test_eval_names_the_damaged_chunk_it_reads(tiny_store, tmp_path, capsys):
    """`eval` reads frames through the same checked path: exit 2, one line naming the chunk."""
    import torch

    from genie_robot.artifacts import checkpoints
    from genie_robot.models import Genie, preset

    torch.manual_seed(0)
    genie = Genie(preset("tiny"))
    config = {"train": {"preset": "tiny", "model": {}}, "model": genie.cfg.to_dict(), "stage": "dynamics"}
    checkpoints.save_checkpoint(tmp_path / "dyn", 1, weights=genie.state_dict(), config=config,
                                state={"step": 1, "mlflow_run_id": None})
    path = tiny_store(2, length=12)
    _chunk(path, 4).write_bytes(b"garbage")  # frames 16-19, episode 1
    args = ["eval", "--dynamics", str(tmp_path / "dyn"), "--store", path, "--split", "all", "--episodes", "2",
            "--frames", "4", "--out", str(tmp_path / "report"), "--tracking-uri", f"file://{tmp_path / 'mlruns'}"]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("genie-robot eval: error:") and "data/rgb: chunk c/4/0/0/0" in err, err
    assert "episode 1" in err and "Traceback" not in err
    assert not (tmp_path / "report" / "metrics.json").exists()


# -- item 12: corrupt metadata ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["zarr.json", "data/rgb/zarr.json", "meta/episode_ends/zarr.json"])
def test_corrupt_zarr_json_is_a_one_line_error(tiny_store, where, capsys):
    path = tiny_store(2)
    (Path(path) / where).write_text('{"zarr_format": 3, "node_type": ')
    with pytest.raises(StoreError, match=rf"{where}: the store's Zarr metadata cannot be read .* damaged"):
        EpisodeStore.open(path)
    assert cli(["info", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genie-robot info: error: ") and err.count("\n") == 1 and where in err


def test_damaged_episode_ends_chunk_is_a_store_error(tiny_store):
    path = tiny_store(2)
    (Path(path) / "meta" / "episode_ends" / "c" / "0").write_bytes(b"not blosc at all")
    with pytest.raises(StoreError, match="meta/episode_ends cannot be read"):
        EpisodeStore.open(path)
