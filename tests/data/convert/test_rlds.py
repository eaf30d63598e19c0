"""RLDS / TFDS TFRecord converter: real Bridge shard, an RT-1-schema dataset built from real RT-1
frames, CRC checks, bad-input errors, resume and parallel shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from genie_robot.data.convert import ConversionError
from genie_robot.data.convert.images import center_crop_resize
from genie_robot.data.convert.rlds import convert_rlds, example_pb2, read_tfrecord, write_tfrecord
from genie_robot.data.store import EpisodeStore

REAL = Path("/work/shared/data/real")
BRIDGE = REAL / "bridge_rlds_debug"
BRIDGE_SHARD = BRIDGE / "1.0.0" / "bridge_dataset-train.tfrecord-00000-of-00001"
RT1_NPZ = REAL / "rt1_fractal_sample.npz"

needs_bridge = pytest.mark.skipif(not BRIDGE_SHARD.exists(), reason="real Bridge sample not present")
needs_rt1 = pytest.mark.skipif(not RT1_NPZ.exists(), reason="real RT-1 sample not present")


# -- helpers: write TFDS datasets -------------------------------------------------------------------


def _example(values: dict[str, tuple[str, list]]) -> bytes:
    """{key: (kind, values)} with kind bytes_list | float_list | int64_list -> serialized Example."""
    ex = example_pb2.Example()
    for key, (kind, vals) in values.items():
        getattr(ex.features.feature[key], kind).value.extend(vals)
    return ex.SerializeToString()


def _features_json(leaves: dict[str, dict]) -> dict:
    """TFDS features.json from {path key: leaf spec}; keys under steps/ become per-step features."""

    def fdict() -> dict:
        return {"pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
                "featuresDict": {"features": {}}}

    root = fdict()
    steps = {"pythonClassName": "tensorflow_datasets.core.features.dataset_feature.Dataset",
             "sequence": {"feature": fdict(), "length": "-1"}}
    root["featuresDict"]["features"]["steps"] = steps
    for key, leaf in leaves.items():
        parts = key.split("/")
        node = steps["sequence"]["feature"] if parts[0] == "steps" else root
        for name in parts[1:-1] if parts[0] == "steps" else parts[:-1]:
            node = node["featuresDict"]["features"].setdefault(name, fdict())
        node["featuresDict"]["features"][parts[-1]] = leaf
    return root


def _image(h: int, w: int) -> dict:
    return {"pythonClassName": "tensorflow_datasets.core.features.image_feature.Image",
            "image": {"shape": {"dimensions": [str(h), str(w), "3"]}, "dtype": "uint8",
                      "encodingFormat": "jpeg"}}


def _tensor(dims: list[int], dtype: str = "float32") -> dict:
    return {"pythonClassName": "tensorflow_datasets.core.features.tensor_feature.Tensor",
            "tensor": {"shape": {"dimensions": [str(d) for d in dims]}, "dtype": dtype,
                       "encoding": "none"}}


TEXT = {"pythonClassName": "tensorflow_datasets.core.features.text_feature.Text", "text": {}}


def _write_dataset(folder: Path, name: str, leaves: dict, shards: list[list[bytes]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "features.json").write_text(json.dumps(_features_json(leaves)))
    (folder / "dataset_info.json").write_text(json.dumps({"name": name, "version": folder.name}))
    paths = []
    for i, records in enumerate(shards):
        path = folder / f"{name}-train.tfrecord-{i:05d}-of-{len(shards):05d}"
        write_tfrecord(path, records)
        paths.append(path)
    return paths


def _jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


# A small generic (no preset) schema for the error and resume tests, built from real RT-1 frames.
TOY_LEAVES = {
    "steps/observation/image": _image(32, 40),
    "steps/observation/wrist_image": _image(32, 40),
    "steps/action": _tensor([2]),
    "steps/language_instruction": TEXT,
}


def _toy_episode(frames: list[bytes], instruction: str = "pick the can", key: str = "steps/observation/image") -> bytes:
    T = len(frames)
    return _example({
        key: ("bytes_list", frames),
        "steps/observation/wrist_image": ("bytes_list", frames),
        "steps/action": ("float_list", [float(v) for v in np.arange(2 * T)]),
        "steps/language_instruction": ("bytes_list", [instruction.encode()] * T),
    })


@pytest.fixture(scope="module")
def rt1_frames() -> np.ndarray:
    if not RT1_NPZ.exists():
        pytest.skip("real RT-1 sample not present")
    return np.load(RT1_NPZ)["image"]  # (22, 256, 320, 3) uint8, real RT-1 camera frames


@pytest.fixture(scope="module")
def toy_jpegs(rt1_frames) -> list[bytes]:
    small = [cv2.resize(f, (40, 32), interpolation=cv2.INTER_AREA) for f in rt1_frames]
    return [_jpeg(f) for f in small]


def _toy_dataset(folder: Path, toy_jpegs: list[bytes], shards: int = 1, per_shard: int = 2) -> list[Path]:
    records = [[_toy_episode(toy_jpegs[(s * per_shard + e) % 8:][:4 + e], f"task {s}.{e}") for e in range(per_shard)]
               for s in range(shards)]
    return _write_dataset(folder, "toy_dataset", TOY_LEAVES, records)


# -- real Bridge ------------------------------------------------------------------------------------


@needs_bridge
def test_bridge_real_shard_converts_with_images_actions_and_instructions(tmp_path):
    report = convert_rlds(BRIDGE, tmp_path / "bridge.zarr", progress=False)  # preset picked from the name
    store = EpisodeStore.open(str(tmp_path / "bridge.zarr"))
    assert (report.episodes, report.frames) == (25, 250)
    assert (store.num_episodes, store.num_frames) == (25, 250)
    assert store.resolution == (64, 64) and store.fps == 5.0
    assert store.camera == "steps/observation/image_0" and store.source == "rlds:bridge_dataset/1.0.0"
    assert list(store.episode_lengths) == [10] * 25

    # Compare with the raw records, decoded independently here.
    records = [example_pb2.Example.FromString(r) for _, r in read_tfrecord(BRIDGE_SHARD)]
    for i in (0, 13, 24):
        feats = records[i].features.feature
        ep = store.episode(i)
        raw_action = np.array(feats["steps/action"].float_list.value, np.float32).reshape(10, 7)
        raw_state = np.array(feats["steps/observation/state"].float_list.value, np.float32).reshape(10, 7)
        np.testing.assert_array_equal(ep.action, raw_action)
        np.testing.assert_array_equal(ep.state, raw_state)
        assert ep.instruction == feats["steps/language_instruction"].bytes_list.value[0].decode()
        # Source frames are 64x64 already: the stored frames are the decoded JPEGs, bit for bit.
        first = cv2.imdecode(np.frombuffer(feats["steps/observation/image_0"].bytes_list.value[0], np.uint8),
                             cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(ep.rgb[0], cv2.cvtColor(first, cv2.COLOR_BGR2RGB))
    rgb = store.frames(0, store.num_frames)
    assert rgb.reshape(250, -1).std(axis=1).min() > 20, "real camera frames, not blank"
    assert np.abs(np.diff(rgb.astype(np.int16), axis=0)).mean() > 2, "frames change over time"
    assert {"put carrot on plate", "flip pot upright which is in sink"} <= set(store.instructions)
    assert not (tmp_path / "bridge.zarr.parts").exists(), "parts are removed after the merge"


@needs_bridge
def test_bridge_other_camera_and_unknown_key(tmp_path):
    convert_rlds(BRIDGE, tmp_path / "cam2.zarr", image_key="steps/observation/image_2", resolution=(32, 48),
                 progress=False)
    store = EpisodeStore.open(str(tmp_path / "cam2.zarr"))
    assert store.resolution == (32, 48) and store.camera == "steps/observation/image_2"

    with pytest.raises(ConversionError) as err:
        convert_rlds(BRIDGE, tmp_path / "bad.zarr", image_key="steps/observation/image", progress=False)
    msg = str(err.value)
    assert "steps/observation/image'" in msg and "features.json" in msg
    for k in range(4):
        assert f"steps/observation/image_{k}" in msg, "the error lists the available image keys"
    assert not (tmp_path / "bad.zarr").exists()


@needs_bridge
def test_real_shard_crc_corruption_is_detected(tmp_path):
    corrupt = tmp_path / "1.0.0" / BRIDGE_SHARD.name
    corrupt.parent.mkdir()
    shutil.copy(BRIDGE / "1.0.0" / "features.json", corrupt.parent)
    data = bytearray(BRIDGE_SHARD.read_bytes())
    # Find record 3's data and flip one byte inside a JPEG: the protobuf would still parse.
    offset = 0
    for _ in range(3):
        offset += 12 + int.from_bytes(data[offset:offset + 8], "little") + 4
    data[offset + 12 + 5000] ^= 0x40
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ConversionError, match=r"record 3 .*data CRC mismatch") as err:
        convert_rlds(corrupt.parent, tmp_path / "out.zarr", preset="bridge", progress=False)
    assert str(corrupt) in str(err.value)
    assert not (tmp_path / "out.zarr").exists()


# -- RT-1 schema, written here from real RT-1 frames ------------------------------------------------

RT1_LEAVES = {
    "steps/observation/image": _image(256, 320),
    "steps/observation/natural_language_instruction": TEXT,
    "steps/observation/natural_language_embedding": _tensor([512]),
    "steps/observation/base_pose_tool_reached": _tensor([7]),
    "steps/action/world_vector": _tensor([3]),
    "steps/action/rotation_delta": _tensor([3]),
    "steps/action/gripper_closedness_action": _tensor([1]),
    "steps/action/base_displacement_vector": _tensor([2]),
    "steps/action/base_displacement_vertical_rotation": _tensor([1]),
    "steps/action/terminate_episode": _tensor([3], "int32"),
    "steps/is_first": {"pythonClassName": "tensorflow_datasets.core.features.scalar.Scalar",
                       "tensor": {"shape": {}, "dtype": "bool", "encoding": "none"}},
}


def _rt1_episode(frames: np.ndarray, instruction: str, seed: int) -> tuple[bytes, dict[str, np.ndarray]]:
    """One RT-1-schema record. The frames are real RT-1 camera frames; the actions, poses and
    embeddings are MADE UP here (the sample has none), with distinct values per key so the test can
    check the concatenation order."""
    T = len(frames)
    rng = np.random.default_rng(seed)
    made_up = {
        "world_vector": rng.uniform(-1, 1, (T, 3)), "rotation_delta": rng.uniform(-1, 1, (T, 3)),
        "gripper_closedness_action": rng.uniform(-1, 1, (T, 1)),
        "base_displacement_vector": rng.uniform(-1, 1, (T, 2)) + 10,
        "base_displacement_vertical_rotation": rng.uniform(-1, 1, (T, 1)) + 20,
        "terminate_episode": np.eye(3, dtype=np.int64)[[1] * (T - 1) + [0]],
    }
    made_up = {k: v.astype(np.int64 if k == "terminate_episode" else np.float32) for k, v in made_up.items()}
    pose = rng.uniform(-1, 1, (T, 7)).astype(np.float32)
    values = {
        "steps/observation/image": ("bytes_list", [_jpeg(f) for f in frames]),
        "steps/observation/natural_language_instruction": ("bytes_list", [instruction.encode()] * T),
        "steps/observation/natural_language_embedding": ("float_list", [0.0] * (512 * T)),
        "steps/observation/base_pose_tool_reached": ("float_list", pose.ravel().tolist()),
        "steps/is_first": ("int64_list", [1] + [0] * (T - 1)),
    }
    for k, v in made_up.items():
        values[f"steps/action/{k}"] = ("int64_list" if v.dtype == np.int64 else "float_list", v.ravel().tolist())
    return _example(values), {**made_up, "pose": pose}


@needs_rt1
def test_rt1_schema_from_real_frames(tmp_path, rt1_frames):
    ep0, truth0 = _rt1_episode(rt1_frames[:12], "pick coke can from top drawer", 0)
    ep1, truth1 = _rt1_episode(rt1_frames[12:], "place coke can upright", 1)
    folder = tmp_path / "fractal20220817_data" / "0.1.0"
    shard = _write_dataset(folder, "fractal20220817_data", RT1_LEAVES, [[ep0, ep1]])[0]
    # Our framing is TFRecord's: the CRCs agree with the tfrecord package's writer.
    from tfrecord.writer import TFRecordWriter

    first = next(read_tfrecord(shard))[1]
    head = shard.read_bytes()[: 12 + len(first) + 4]
    assert head[8:12] == TFRecordWriter.masked_crc(head[:8])
    assert head[-4:] == TFRecordWriter.masked_crc(first)

    report = convert_rlds(folder.parent, tmp_path / "rt1.zarr", progress=False)  # preset from the name
    store = EpisodeStore.open(str(tmp_path / "rt1.zarr"))
    assert (report.episodes, report.frames) == (2, 22)
    assert list(store.episode_lengths) == [12, 10]
    assert store.fps == 3.0 and store.resolution == (64, 64) and store.camera == "steps/observation/image"
    assert store.action_dim == 13 and store.state_dim == 7
    for ep, truth in ((store.episode(0), truth0), (store.episode(1), truth1)):
        order = ["world_vector", "rotation_delta", "gripper_closedness_action", "base_displacement_vector",
                 "base_displacement_vertical_rotation", "terminate_episode"]
        expected = np.concatenate([truth[k].astype(np.float32) for k in order], axis=1)
        np.testing.assert_array_equal(ep.action, expected)
        np.testing.assert_array_equal(ep.state, truth["pose"])
        assert ep.action[-1, 10:].tolist() == [1, 0, 0], "terminate_episode one-hot kept, as float"
    assert store.instructions == ["pick coke can from top drawer", "place coke can upright"]

    # 256x320 -> 64x64 keeps the aspect by centre-cropping: closer to the crop than to a stretch.
    got = store.frames(0, 22)
    crop = np.stack([center_crop_resize(f, (64, 64)) for f in rt1_frames])
    stretch = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in rt1_frames])
    assert _psnr(got, crop) > 32
    assert _psnr(got, crop) > _psnr(got, stretch) + 5

    # Explicit preset and a non-square resolution.
    convert_rlds(shard, tmp_path / "rt1_wide.zarr", preset="rt1", resolution=(48, 60), progress=False)
    wide = EpisodeStore.open(str(tmp_path / "rt1_wide.zarr"))
    assert wide.resolution == (48, 60) and wide.num_frames == 22


@needs_rt1
def test_rt1_preset_on_wrong_schema_names_missing_keys(tmp_path, toy_jpegs):
    folder = tmp_path / "toy"
    _toy_dataset(folder, toy_jpegs)
    with pytest.raises(ConversionError, match="preset 'rt1' expects keys .*world_vector"):
        convert_rlds(folder, tmp_path / "out.zarr", preset="rt1", progress=False)


# -- bad input: named file and record, nothing half-written -----------------------------------------


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists(), "no complete-looking OUT after a failure"
    assert not out.with_name(out.name + ".partial").exists()
    parts = out.with_name(out.name + ".parts")
    assert not list(parts.glob("*.partial")), "no half-written part left behind"


@needs_rt1
@pytest.mark.parametrize("damage, message", [
    ("flip_data", r"record 1 \(byte \d+\): data CRC mismatch"),
    ("flip_length", r"record 1 \(byte \d+\): length CRC mismatch"),
    ("truncate", r"record 1 \(byte \d+\): truncated record"),
    ("truncate_header", r"record 2 \(byte \d+\): truncated record header"),
])
def test_corrupt_or_truncated_tfrecord(tmp_path, toy_jpegs, damage, message):
    shard = _toy_dataset(tmp_path / "toy", toy_jpegs, per_shard=3)[0]
    data = bytearray(shard.read_bytes())
    rec1 = 12 + int.from_bytes(data[:8], "little") + 4
    rec2 = rec1 + 12 + int.from_bytes(data[rec1:rec1 + 8], "little") + 4
    if damage == "flip_data":
        data[rec1 + 12 + 40] ^= 0x01
    elif damage == "flip_length":
        data[rec1] ^= 0x01
    elif damage == "truncate":
        data = data[: rec1 + 100]
    else:
        data = data[: rec2 + 5]
    shard.write_bytes(bytes(data))
    out = tmp_path / "out.zarr"
    with pytest.raises(ConversionError, match=message) as err:
        convert_rlds(tmp_path / "toy", out, fps=10, progress=False)
    assert str(shard) in str(err.value)
    _assert_nothing_written(out)


@needs_rt1
def test_empty_episode_undecodable_image_and_mixed_sizes(tmp_path, toy_jpegs, rt1_frames):
    big = _jpeg(cv2.resize(rt1_frames[0], (80, 64)))
    cases = {
        "empty": (_toy_episode([]), r"record 1: empty episode"),
        "undecodable": (_toy_episode(toy_jpegs[:2] + [b"\x89PNG\r\n\x1a\n garbage"]),
                        r"record 1 step 2 \(steps/observation/image\): could not decode image"),
        "mixed": (_toy_episode(toy_jpegs[:3] + [big]),
                  r"record 1 step 3 .*64x80 \(HxW\) but .*record 1 step 0 .* was 32x40"),
    }
    for name, (bad, message) in cases.items():
        folder = tmp_path / name
        shard = _write_dataset(folder, "toy_dataset", TOY_LEAVES,
                               [[_toy_episode(toy_jpegs[:4]), bad, _toy_episode(toy_jpegs[:4])]])[0]
        out = tmp_path / f"{name}.zarr"
        with pytest.raises(ConversionError, match=message) as err:
            convert_rlds(folder, out, fps=10, progress=False)
        assert str(shard) in str(err.value), name
        _assert_nothing_written(out)


def test_no_features_json_is_a_clear_error(tmp_path):
    (tmp_path / "x.tfrecord").write_bytes(b"")
    with pytest.raises(ConversionError, match="no features.json"):
        convert_rlds(tmp_path, tmp_path / "out.zarr", progress=False)


# -- scale: resume, parallel shards, max_episodes ---------------------------------------------------


def _store_content(path: Path) -> tuple:
    s = EpisodeStore.open(str(path))
    return (s.episode_ends.tolist(), s.instructions, np.asarray(s.rgb[:]).tobytes(), np.asarray(s.action[:]).tobytes())


@needs_rt1
def test_resume_reconverts_only_the_broken_part(tmp_path, toy_jpegs):
    src = tmp_path / "toy"
    shards = _toy_dataset(src, toy_jpegs, shards=3)
    out = tmp_path / "out.zarr"
    first = convert_rlds(src, out, fps=10, keep_parts=True, progress=False)
    assert first.shards_converted == [s.name for s in shards] and first.episodes == 6
    reference = _store_content(out)
    parts = out.with_name("out.zarr.parts")
    mtimes = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.zarr")}

    # Break the middle part (its episode index is gone) and throw OUT away: re-run.
    shutil.rmtree(parts / f"{shards[1].name}.zarr" / "meta" / "episode_ends")
    shutil.rmtree(out)
    second = convert_rlds(src, out, fps=10, keep_parts=True, progress=False)
    assert second.shards_converted == [shards[1].name]
    assert second.shards_skipped == [shards[0].name, shards[2].name]
    for s in (shards[0], shards[2]):
        assert (parts / f"{s.name}.zarr").stat().st_mtime_ns == mtimes[f"{s.name}.zarr"], "untouched"
    assert _store_content(out) == reference

    # Parts made with other settings are not silently mixed in.
    shutil.rmtree(out)
    with pytest.raises(ConversionError, match="other settings .*resolution"):
        convert_rlds(src, out, fps=10, resolution=32, progress=False)


@needs_rt1
def test_failed_run_resumes_after_the_fix(tmp_path, toy_jpegs):
    src = tmp_path / "toy"
    shards = _toy_dataset(src, toy_jpegs, shards=3)
    good = shards[1].read_bytes()
    shards[1].write_bytes(good[:-3])  # truncated shard: the run stops there
    out = tmp_path / "out.zarr"
    with pytest.raises(ConversionError, match="truncated"):
        convert_rlds(src, out, fps=10, progress=False)
    _assert_nothing_written(out)
    parts = out.with_name("out.zarr.parts")
    assert (parts / f"{shards[0].name}.zarr").exists()

    shards[1].write_bytes(good)  # e.g. re-downloaded
    report = convert_rlds(src, out, fps=10, progress=False)
    assert report.shards_skipped == [shards[0].name]
    assert report.shards_converted == [shards[1].name, shards[2].name]
    store = EpisodeStore.open(str(out))
    assert store.num_episodes == 6 and store.instructions[2] == "task 1.0"
    assert not parts.exists()


@needs_rt1
def test_parallel_workers_match_serial_and_max_episodes(tmp_path, toy_jpegs):
    src = tmp_path / "toy"
    _toy_dataset(src, toy_jpegs, shards=3)
    convert_rlds(src, tmp_path / "serial.zarr", fps=10, progress=False)
    report = convert_rlds(src, tmp_path / "parallel.zarr", fps=10, workers=2, progress=False)
    assert len(report.shards_converted) == 3
    assert _store_content(tmp_path / "parallel.zarr") == _store_content(tmp_path / "serial.zarr")
    assert EpisodeStore.open(str(tmp_path / "serial.zarr")).instructions == [
        "task 0.0", "task 0.1", "task 1.0", "task 1.1", "task 2.0", "task 2.1"]

    few = convert_rlds(src, tmp_path / "few.zarr", fps=10, max_episodes=3, progress=False)
    assert few.episodes == 3 and len(few.shards_converted) == 2, "stops reading shards once it has enough"
    assert EpisodeStore.open(str(tmp_path / "few.zarr")).instructions == ["task 0.0", "task 0.1", "task 1.0"]

    with pytest.raises(FileExistsError, match="overwrite"):
        convert_rlds(src, tmp_path / "few.zarr", fps=10, progress=False)


@needs_bridge
def test_cli_convert_rlds(tmp_path, capsys):
    from genie_robot.cli import main

    out = tmp_path / "cli.zarr"
    assert main(["convert", "rlds", str(BRIDGE), "-o", str(out), "--max-episodes", "5",
                 "--image-key", "steps/observation/image_1", "--quiet"]) == 0
    store = EpisodeStore.open(str(out))
    assert store.num_episodes == 5 and store.camera == "steps/observation/image_1" and store.fps == 5
    assert "5 episodes, 50 frames" in capsys.readouterr().out
    assert main(["convert", "rlds", str(BRIDGE), "-o", str(tmp_path / "x.zarr"), "--preset", "rt2",
                 "--quiet"]) == 2
    assert "unknown preset 'rt2'" in capsys.readouterr().err
