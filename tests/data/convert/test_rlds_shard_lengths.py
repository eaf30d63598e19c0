"""A TFRecord shard cut exactly at a record boundary passes every CRC check; its episode count is
checked against dataset_info.json's shardLengths (issue #14, item 8). Also `--resolution 0`
(item 12): an argparse-style error, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from genie_robot.cli import main as cli
from genie_robot.data.convert import ConversionError
from genie_robot.data.convert.rlds import convert_rlds, example_pb2, find_dataset, write_tfrecord
from genie_robot.data.store import EpisodeStore

FEATURES = {"featuresDict": {"features": {"steps": {"sequence": {"feature": {"featuresDict": {"features": {
    "observation": {"featuresDict": {"features": {"image": {"image": {
        "shape": {"dimensions": ["16", "16", "3"]}, "dtype": "uint8", "encodingFormat": "png"}}}}},
    "action": {"tensor": {"shape": {"dimensions": ["2"]}, "dtype": "float32", "encoding": "none"}},
}}}}}}}}


def _record(i: int, steps: int = 3) -> bytes:
    ex = example_pb2.Example()
    for t in range(steps):
        frame = np.full((16, 16, 3), (10 * i + t) % 256, np.uint8)
        ex.features.feature["steps/observation/image"].bytes_list.value.append(cv2.imencode(".png", frame)[1].tobytes())
    ex.features.feature["steps/action"].float_list.value.extend([float(i)] * (2 * steps))
    return ex.SerializeToString()


def _dataset(folder: Path, records_per_shard: list[int], listed: list[int] | None) -> list[Path]:
    """Shards toy-train.tfrecord-0000i-of-0000n holding `records_per_shard[i]` episodes; dataset_info.json
    lists `listed` as the train split's shardLengths (None: no splits, as in older exports)."""
    folder.mkdir(parents=True)
    (folder / "features.json").write_text(json.dumps(FEATURES))
    info = {"name": "toy", "version": "1.0.0"}
    if listed is not None:
        info["splits"] = [{"name": "train", "shardLengths": [str(n) for n in listed]},
                          {"name": "val", "shardLengths": ["99"]}]
    (folder / "dataset_info.json").write_text(json.dumps(info))
    n, paths, k = len(records_per_shard), [], 0
    for i, count in enumerate(records_per_shard):
        paths.append(folder / f"toy-train.tfrecord-{i:05d}-of-{n:05d}")
        write_tfrecord(paths[-1], [_record(k + j) for j in range(count)])
        k += count
    return paths


def test_shard_cut_at_a_record_boundary_is_an_error_naming_it(tmp_path):
    folder = tmp_path / "toy" / "1.0.0"
    shards = _dataset(folder, [4, 2], listed=[4, 5])  # shard 1 lost 3 of its 5 episodes
    assert find_dataset(folder).shard_lengths == {shards[0].name: 4, shards[1].name: 5}
    with pytest.raises(ConversionError, match=rf"{shards[1].name}: holds 2 episodes but dataset_info.json lists 5"):
        convert_rlds(folder, tmp_path / "out.zarr", fps=5, progress=False)
    assert not (tmp_path / "out.zarr").exists()
    # --max-episodes stops early on purpose: not a truncated shard.
    report = convert_rlds(folder, tmp_path / "few.zarr", fps=5, max_episodes=3, progress=False, overwrite=True)
    assert report.episodes == 3


def test_matching_or_unlisted_shard_lengths_convert(tmp_path):
    ok = tmp_path / "ok" / "1.0.0"
    _dataset(ok, [3, 2], listed=[3, 2])
    assert convert_rlds(ok, tmp_path / "ok.zarr", fps=5, progress=False).episodes == 5
    unlisted = tmp_path / "unlisted" / "1.0.0"
    _dataset(unlisted, [3, 2], listed=None)
    assert find_dataset(unlisted).shard_lengths == {}
    assert convert_rlds(unlisted, tmp_path / "unlisted.zarr", fps=5, progress=False).episodes == 5
    assert EpisodeStore.open(str(tmp_path / "unlisted.zarr")).num_episodes == 5


def test_cli_shard_error_and_zero_resolution(tmp_path, capsys):
    folder = tmp_path / "toy" / "1.0.0"
    _dataset(folder, [2], listed=[25])
    assert cli(["convert", "rlds", str(folder), "--fps", "5", "--out", str(tmp_path / "o.zarr"), "--quiet"]) == 2
    assert "holds 2 episodes but dataset_info.json lists 25" in capsys.readouterr().err
    for bad in ("0", "0x64", "-3"):
        with pytest.raises(SystemExit) as exit_:
            cli(["convert", "rlds", str(folder), "--resolution", bad, "--out", str(tmp_path / "r.zarr")])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "error: argument --resolution: sizes must be positive" in err and "Traceback" not in err
