"""RLDS / TFDS TFRecord datasets (RT-1 fractal20220817_data, Bridge, other Open X-Embodiment sets)
into the episode store, without TensorFlow.

Layout read: a TFDS version folder with `features.json` (the schema), optionally `dataset_info.json`
(the dataset name) and shards `<name>-<split>.tfrecord-XXXXX-of-YYYYY`. Each record is one episode
as a `tf.train.Example` whose per-step features are flattened lists under path keys
(`steps/observation/image` holds T encoded images, `steps/action` holds T*7 floats, ...).

What is kept, per episode:
- rgb: the camera `image_key`, decoded (JPEG/PNG), centre-cropped to the target aspect and resized
  (`images.center_crop_resize`).
- action (T, A) float32: the preset's action keys concatenated in the preset's order; without a
  preset, `steps/action` if it is one tensor, else every `steps/action/*` tensor in sorted key order.
  Integer and bool sub-keys (RT-1's `terminate_episode`) are cast to float32.
- state (T, S) float32: the preset's state keys; without a preset, `steps/observation/state` if any.
- instruction: the first non-empty per-step instruction string.

At scale (RT-1: 1,024 shards, 87,212 episodes) each shard streams record by record into its own part
store `OUT.parts/<shard>.zarr` (written as `.partial`, renamed when complete), shards run in parallel
(`workers`), and the parts are merged in shard order into OUT as they finish. A re-run skips parts
that are complete and open cleanly; OUT appears only once every shard converted. Record CRCs (masked crc32c of length
and data) are verified, so corrupt or truncated files raise `ConversionError` instead of decoding; a
shard cut at a record boundary passes those checks, so its episode count is compared with
dataset_info.json's `shardLengths` when the dataset has them.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import crc32c
import numpy as np
from tqdm import tqdm

from genie_robot.data.convert import ConversionError, ConversionReport
from genie_robot.data.convert.images import (
    FrameSizeCheck,
    center_crop_resize,
    decode_image,
    natural_key,
    parse_resolution,
)
from genie_robot.data.convert.staging import check_output, staged

log = logging.getLogger(__name__)


def _import_example_pb2():
    """tfrecord's `__init__` imports torch for its DataLoader helpers (2 s and ~300 MB in every
    worker); only its protobufs are needed here, so that one import is blocked while loading them."""
    if "tfrecord" not in sys.modules:
        sys.modules["tfrecord.torch"] = None  # makes `from tfrecord import torch` an ImportError
        try:
            import tfrecord  # noqa: F401
        finally:
            del sys.modules["tfrecord.torch"]
    from tfrecord import example_pb2

    return example_pb2


example_pb2 = _import_example_pb2()


# --------------------------------------------------------------------------------------------------
# TFRecord framing: uint64 length, uint32 masked crc32c(length), data, uint32 masked crc32c(data)


def _masked_crc(data: bytes | memoryview) -> int:
    crc = crc32c.crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecord(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield (record index, record bytes) one at a time, verifying both CRCs of every record.

    Raises ConversionError naming the file, record index and byte offset on a CRC mismatch or a
    truncated record.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        index = 0
        while True:
            offset = f.tell()
            header = f.read(12)
            if not header:
                return
            where = f"{path} record {index} (byte {offset})"
            if len(header) < 12:
                raise ConversionError(f"{where}: truncated record header ({len(header)} of 12 bytes)")
            length_bytes = header[:8]
            (length,) = struct.unpack("<Q", length_bytes)
            (length_crc,) = struct.unpack("<I", header[8:])
            if _masked_crc(length_bytes) != length_crc:
                raise ConversionError(f"{where}: length CRC mismatch; the file is corrupt")
            if offset + 12 + length + 4 > size:
                raise ConversionError(
                    f"{where}: truncated record (needs {length + 4} more bytes, file has "
                    f"{size - offset - 12}); the file was cut short"
                )
            data = f.read(length)
            (data_crc,) = struct.unpack("<I", f.read(4))
            if _masked_crc(data) != data_crc:
                raise ConversionError(f"{where}: data CRC mismatch; the file is corrupt")
            yield index, data
            index += 1


def write_tfrecord(path: str | Path, records: Iterator[bytes] | Sequence[bytes]) -> None:
    """Write records with TFRecord framing and CRCs (what TensorFlow's TFRecordWriter writes)."""
    with open(path, "wb") as f:
        for data in records:
            length_bytes = struct.pack("<Q", len(data))
            f.write(length_bytes)
            f.write(struct.pack("<I", _masked_crc(length_bytes)))
            f.write(data)
            f.write(struct.pack("<I", _masked_crc(data)))


# --------------------------------------------------------------------------------------------------
# features.json


@dataclass(frozen=True)
class Feature:
    key: str  # flattened path, e.g. "steps/observation/image"
    kind: str  # "image" | "tensor" | "text" | "other"
    shape: tuple[int, ...] = ()
    dtype: str = ""
    encoding: str = ""
    per_step: bool = False

    @property
    def size(self) -> int:
        """Values per step (per episode for episode-level features)."""
        return int(math.prod(self.shape)) if self.shape else 1


def load_features(path: str | Path) -> dict[str, Feature]:
    """Flatten a TFDS features.json into {path key: Feature}."""
    path = Path(path)
    try:
        root = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path}: cannot read the TFDS schema: {exc}") from exc
    out: dict[str, Feature] = {}
    _flatten(root, "", False, out)
    if not out:
        raise ConversionError(f"{path}: no features found; is this a TFDS features.json?")
    return out


def _flatten(node: dict, key: str, per_step: bool, out: dict[str, Feature]) -> None:
    def dims(spec: dict) -> tuple[int, ...]:
        return tuple(int(d) for d in spec.get("shape", {}).get("dimensions", []))

    if "featuresDict" in node:
        for name, child in node["featuresDict"]["features"].items():
            _flatten(child, f"{key}/{name}" if key else name, per_step, out)
    elif "sequence" in node:
        _flatten(node["sequence"]["feature"], key, True, out)
    elif "image" in node:
        spec = node["image"]
        out[key] = Feature(key, "image", dims(spec), spec.get("dtype", "uint8"),
                           spec.get("encodingFormat", ""), per_step)
    elif "tensor" in node:
        spec = node["tensor"]
        out[key] = Feature(key, "tensor", dims(spec), spec.get("dtype", ""),
                           spec.get("encoding", "none"), per_step)
    elif "text" in node:
        out[key] = Feature(key, "text", (), "string", "", per_step)
    elif "classLabel" in node:
        out[key] = Feature(key, "tensor", (), "int64", "none", per_step)
    else:
        out[key] = Feature(key, "other", (), "", "", per_step)


# --------------------------------------------------------------------------------------------------
# Presets and the resolved schema


@dataclass(frozen=True)
class Preset:
    image_key: str
    action_keys: tuple[str, ...]
    state_keys: tuple[str, ...]
    instruction_key: str | None
    fps: float
    dataset_names: tuple[str, ...]  # TFDS names that select this preset automatically


_RT1_ACTION = "steps/action/"
PRESETS: dict[str, Preset] = {
    # RT-1 (fractal20220817_data 0.1.0): 256x320 images, 3 Hz. Action (13) in this order:
    # world_vector (3), rotation_delta (3), gripper_closedness_action (1),
    # base_displacement_vector (2), base_displacement_vertical_rotation (1), terminate_episode (3).
    "rt1": Preset(
        image_key="steps/observation/image",
        action_keys=tuple(
            _RT1_ACTION + k
            for k in (
                "world_vector",
                "rotation_delta",
                "gripper_closedness_action",
                "base_displacement_vector",
                "base_displacement_vertical_rotation",
                "terminate_episode",
            )
        ),
        state_keys=("steps/observation/base_pose_tool_reached",),
        instruction_key="steps/observation/natural_language_instruction",
        fps=3.0,
        dataset_names=("fractal20220817_data",),
    ),
    # Bridge (WidowX): camera 0, action (7), state (7), 5 Hz.
    "bridge": Preset(
        image_key="steps/observation/image_0",
        action_keys=("steps/action",),
        state_keys=("steps/observation/state",),
        instruction_key="steps/language_instruction",
        fps=5.0,
        dataset_names=("bridge_dataset", "bridge"),
    ),
}


@dataclass(frozen=True)
class Schema:
    """What to read from each record; resolved once from features.json, a preset and overrides."""

    image_key: str
    action_keys: tuple[str, ...]
    state_keys: tuple[str, ...]
    instruction_key: str | None
    fps: float
    action_dim: int | None
    state_dim: int | None


def resolve_schema(
    features: dict[str, Feature],
    *,
    preset: str | None,
    image_key: str | None,
    fps: float | None,
    where: str,
) -> Schema:
    image_keys = sorted(k for k, f in features.items() if f.kind == "image" and f.per_step)
    if preset is not None:
        if preset not in PRESETS:
            raise ConversionError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        p = PRESETS[preset]
        missing = [k for k in (*p.action_keys, *p.state_keys) if k not in features]
        if p.instruction_key and p.instruction_key not in features:
            missing.append(p.instruction_key)
        if missing:
            raise ConversionError(
                f"{where}: preset {preset!r} expects keys {missing} which the schema lacks; "
                f"is this the right preset? schema keys: {sorted(features)}"
            )
        action_keys, state_keys, instruction_key = p.action_keys, p.state_keys, p.instruction_key
        image_key = image_key or p.image_key
        fps = fps or p.fps
    else:
        if not image_keys:
            raise ConversionError(f"{where}: the schema has no per-step image feature")
        image_key = image_key or image_keys[0]
        if "steps/action" in features:
            action_keys = ("steps/action",)
        else:
            action_keys = tuple(sorted(
                k for k, f in features.items()
                if k.startswith("steps/action/") and f.kind == "tensor"
            ))
        state_keys = ("steps/observation/state",) if "steps/observation/state" in features else ()
        texts = sorted(
            k for k, f in features.items() if f.kind == "text" and f.per_step and k.endswith("instruction")
        )
        instruction_key = texts[0] if texts else None
        if fps is None:
            raise ConversionError(
                f"{where}: no preset for this dataset, so its control rate is unknown; pass --fps (fps=)"
            )
    if image_key not in features or features[image_key].kind != "image":
        raise ConversionError(
            f"{where}: unknown image key {image_key!r}; available image keys: {image_keys}"
        )
    for k in (*action_keys, *state_keys):
        f = features[k]
        if f.kind != "tensor" or f.encoding not in ("", "none") or not f.per_step:
            raise ConversionError(f"{where}: {k} is not a plain per-step tensor ({f}); cannot use it")
    action_dim = sum(features[k].size for k in action_keys) or None
    state_dim = sum(features[k].size for k in state_keys) or None
    return Schema(image_key, tuple(action_keys), tuple(state_keys), instruction_key, float(fps),
                  action_dim, state_dim)


# --------------------------------------------------------------------------------------------------
# One record -> one Episode


def decode_episode(
    record: bytes,
    schema: Schema,
    features: dict[str, Feature],
    resolution: tuple[int, int],
    where: str,
):
    """Parse one `tf.train.Example` (a whole episode) into an `Episode` at `resolution` (H, W)."""
    from genie_robot.data.store import Episode

    example = example_pb2.Example()
    try:
        example.ParseFromString(record)
    except Exception as exc:  # protobuf's DecodeError
        raise ConversionError(f"{where}: not a tf.train.Example ({exc})") from exc
    fmap = example.features.feature

    if schema.image_key not in fmap:
        present = sorted(k for k in fmap if features.get(k, Feature(k, "")).kind == "image")
        raise ConversionError(
            f"{where}: record has no {schema.image_key!r}; image keys present: {present}"
        )
    images = fmap[schema.image_key].bytes_list.value
    T = len(images)
    if T == 0:
        raise ConversionError(f"{where}: empty episode (0 steps under {schema.image_key!r})")

    sizes = FrameSizeCheck()
    rgb_THW3 = np.empty((T, *resolution, 3), dtype=np.uint8)
    for t, data in enumerate(images):
        step_where = f"{where} step {t} ({schema.image_key})"
        image = decode_image(data, step_where)
        sizes.check(image.shape, step_where)
        rgb_THW3[t] = center_crop_resize(image, resolution)

    def stacked(keys: tuple[str, ...]) -> np.ndarray | None:
        if not keys:
            return None
        parts = []
        for k in keys:
            dim = features[k].size
            if k not in fmap:
                raise ConversionError(f"{where}: record has no {k!r}")
            feat = fmap[k]
            kind = feat.WhichOneof("kind")
            values = np.asarray(getattr(feat, kind).value if kind else [], dtype=np.float32)
            if values.size != T * dim:
                raise ConversionError(
                    f"{where}: {k} has {values.size} values, expected {T} steps x {dim}"
                )
            parts.append(values.reshape(T, dim))
        return np.concatenate(parts, axis=1)

    instruction = None
    if schema.instruction_key and schema.instruction_key in fmap:
        for raw in fmap[schema.instruction_key].bytes_list.value:
            text = raw.decode("utf-8", errors="replace").strip()
            if text:
                instruction = text
                break
    return Episode(
        rgb=rgb_THW3,
        action=stacked(schema.action_keys),
        state=stacked(schema.state_keys),
        instruction=instruction,
    )


# --------------------------------------------------------------------------------------------------
# Finding the dataset


@dataclass(frozen=True)
class Dataset:
    features_path: Path
    shards: tuple[Path, ...]
    name: str  # TFDS name from dataset_info.json, else the folder name
    version: str
    # episodes per shard file name, from dataset_info.json's splits[].shardLengths (when it has them)
    shard_lengths: dict[str, int] = field(default_factory=dict)


_SHARD_RE = re.compile(r"-(?P<split>[^-]+)\.tfrecord-(?P<index>\d+)-of-(?P<count>\d+)$")


def _shard_lengths(meta: dict, shards: Sequence[Path]) -> dict[str, int]:
    """{shard file name: episodes} for the shards that dataset_info.json's `splits` describe: shard
    i of n of split S (`…-S.tfrecord-0000i-of-0000n`) holds shardLengths[i] of the split named S,
    when that list has n entries."""
    lengths = {}
    splits = {sp.get("name"): sp.get("shardLengths") for sp in meta.get("splits") or [] if isinstance(sp, dict)}
    for shard in shards:
        m = _SHARD_RE.search(shard.name)
        listed = splits.get(m.group("split")) if m else None
        if m and isinstance(listed, list) and len(listed) == int(m.group("count")):
            try:
                lengths[shard.name] = int(listed[int(m.group("index"))])
            except (ValueError, IndexError):
                pass
    return lengths


def _version_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in name.split("."))


def find_dataset(src: str | Path | Sequence[str | Path], split: str | None = "train") -> Dataset:
    """Locate features.json and the shards of `split` (None: every split).

    `src` is a TFDS version folder (`.../1.0.0`), a dataset folder holding version folders (the
    highest version is used), or a list of shard files (features.json next to the first one).
    """
    if isinstance(src, (str, Path)) and Path(src).is_dir():
        folder = Path(src)
        if not (folder / "features.json").exists():
            versions = sorted(
                (d for d in folder.iterdir() if d.is_dir() and (d / "features.json").exists()),
                key=lambda d: _version_key(d.name),
            )
            if not versions:
                raise ConversionError(
                    f"{folder}: no features.json here or in a version sub-folder; "
                    "point at a TFDS dataset folder"
                )
            folder = versions[-1]
        all_shards = sorted((p for p in folder.iterdir() if ".tfrecord" in p.name),
                            key=lambda p: natural_key(p.name))
        shards = [p for p in all_shards if split is None or f"-{split}.tfrecord" in p.name]
        if not shards:
            raise ConversionError(
                f"{folder}: no TFRecord shards for split {split!r}; files: "
                f"{[p.name for p in all_shards] or 'none'}"
            )
    else:
        paths = [Path(src)] if isinstance(src, (str, Path)) else [Path(p) for p in src]
        if not paths:
            raise ConversionError("no TFRecord files given")
        for p in paths:
            if not p.is_file():
                raise ConversionError(f"{p}: no such TFRecord file")
        folder = paths[0].parent
        shards = paths
        if not (folder / "features.json").exists():
            raise ConversionError(f"{folder}: no features.json next to {paths[0].name}")
    name, version = folder.parent.name, folder.name
    info = folder / "dataset_info.json"
    lengths: dict[str, int] = {}
    if info.exists():
        try:
            meta = json.loads(info.read_text())
            name, version = meta.get("name", name), meta.get("version", version)
            lengths = _shard_lengths(meta, shards)
        except json.JSONDecodeError:
            log.warning("%s is not valid JSON; ignoring it", info)
    return Dataset(folder / "features.json", tuple(shards), name, version, lengths)


def preset_for(dataset_name: str) -> str | None:
    for key, p in PRESETS.items():
        if dataset_name in p.dataset_names:
            return key
    return None


# --------------------------------------------------------------------------------------------------
# Shard -> part store, parts -> OUT


@dataclass(frozen=True)
class _ShardJob:
    shard: str
    part: str
    schema: Schema
    features: dict
    resolution: tuple[int, int]
    source: str
    max_episodes: int | None
    progress: bool
    expected: int | None = None  # episodes dataset_info.json lists for the shard


def _convert_shard(job: _ShardJob) -> tuple[str, int, int]:
    """Stream one shard into its part store. Returns (shard name, episodes, frames)."""
    import cv2

    from genie_robot.data.store import StoreError, StoreWriter

    cv2.setNumThreads(1)  # parallelism comes from shards; threads would oversubscribe the cores
    shard, part = Path(job.shard), Path(job.part)
    episodes = frames = 0
    # The writer opens lazily (an empty shard gets a marker instead of a store); ExitStack closes it
    # before `staged` renames the part: cleanly on success, without marking it complete on error.
    with staged(part) as tmp, ExitStack() as stack:
        writer = None
        records = tqdm(read_tfrecord(shard), desc=shard.name, unit="ep", leave=False, position=2,
                       disable=not job.progress)
        for index, record in records:
            if job.max_episodes is not None and episodes >= job.max_episodes:
                break
            ep = decode_episode(record, job.schema, job.features, job.resolution,
                                f"{shard} record {index}")
            if writer is None:
                writer = stack.enter_context(StoreWriter(
                    str(tmp), resolution=job.resolution, fps=job.schema.fps, source=job.source,
                    camera=job.schema.image_key, action_dim=job.schema.action_dim,
                    state_dim=job.schema.state_dim, chunk_frames=_PART_CHUNK_FRAMES,
                ))
            try:
                writer.add_episode(ep)
            except StoreError as exc:  # e.g. NaN actions: name the record, not the part store's episode
                raise ConversionError(f"{shard} record {index}: {exc}") from None
            episodes += 1
            frames += len(ep.rgb)
        capped = job.max_episodes is not None and episodes >= job.max_episodes
        if job.expected is not None and episodes != job.expected and not capped:
            # A shard cut at a record boundary passes every CRC check: only the count tells.
            raise ConversionError(
                f"{shard}: holds {episodes} episodes but dataset_info.json lists {job.expected} for it; the "
                "file is truncated (or not the one the dataset describes): download it again"
            )
        if writer is None:
            tmp.mkdir(parents=True)
            (tmp / _EMPTY_MARK).write_text("0 episodes\n")
    return shard.name, episodes, frames


_EMPTY_MARK = "EMPTY_SHARD"
# Parts are written once and read once, in order: longer chunks than OUT's (tuned for random
# training windows) make the per-episode append cheaper (~25 vs ~40 ms for 40 frames at 64x64).
_PART_CHUNK_FRAMES = 32
_SETTINGS = "settings.json"


def _part_path(parts_dir: Path, shard: Path) -> Path:
    return parts_dir / f"{shard.name}.zarr"


def _part_is_complete(part: Path) -> tuple[bool, str]:
    """A part counts as done if it was renamed into place and opens as a valid store."""
    from genie_robot.data.store import EpisodeStore

    if not part.exists():
        return False, "missing"
    if (part / _EMPTY_MARK).exists():
        return True, ""
    try:
        EpisodeStore.open(str(part))
    except Exception as exc:  # any failure to validate means: convert again
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def convert_rlds(
    src: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    preset: str | None = None,
    image_key: str | None = None,
    resolution: int | tuple[int, int] = 64,
    fps: float | None = None,
    split: str | None = "train",
    workers: int = 1,
    max_episodes: int | None = None,
    overwrite: bool = False,
    keep_parts: bool = False,
    progress: bool = True,
) -> ConversionReport:
    """Convert an RLDS/TFDS TFRecord dataset into the episode store at `out`.

    src: a TFDS version folder, a dataset folder with version sub-folders, or shard files.
    preset: "rt1" | "bridge" | None (picked from dataset_info.json's name when None).
    image_key: camera feature, default the preset's or the first per-step image key (sorted).
    resolution: output size, int (square) or (H, W); frames are centre-cropped to that aspect.
    fps: control rate stored with the episodes; default the preset's (RT-1 3 Hz, Bridge 5 Hz).
    split: TFDS split whose shards are read ("train"); None reads every shard in the folder.
    workers: shards converted in parallel (processes, started with spawn: call from under
        `if __name__ == "__main__":` in a script); this process merges finished parts into OUT
        meanwhile. With `max_episodes` shards run in order, one at a time, until enough
        episodes are converted.
    keep_parts: keep `OUT.parts/` after the merge (it is removed by default).
    Re-running after a failure or interruption skips the shards whose parts are complete.
    Returns a ConversionReport (episodes, frames, shards converted / skipped, seconds).
    """
    from genie_robot.data.store import EpisodeStore, StoreWriter

    t0 = time.perf_counter()
    out = check_output(out, overwrite=overwrite)
    hw = parse_resolution(resolution)
    dataset = find_dataset(src, split)
    features = load_features(dataset.features_path)
    if preset is None:
        preset = preset_for(dataset.name)
        if preset:
            log.info("dataset %s: using preset %r", dataset.name, preset)
    schema = resolve_schema(features, preset=preset, image_key=image_key, fps=fps,
                            where=str(dataset.features_path))
    log.info("image %s; action %s (A=%s); state %s (S=%s); instruction %s",
             schema.image_key, list(schema.action_keys), schema.action_dim,
             list(schema.state_keys), schema.state_dim, schema.instruction_key)
    source = f"rlds:{dataset.name}/{dataset.version}"

    parts_dir = out.with_name(out.name + ".parts")
    settings = {
        "shards": [p.name for p in dataset.shards],
        "schema": asdict(schema),
        "resolution": list(hw),
        "source": source,
        "max_episodes": max_episodes,
    }
    settings_path = parts_dir / _SETTINGS
    if settings_path.exists():
        previous = json.loads(settings_path.read_text())
        if previous != json.loads(json.dumps(settings)):
            raise ConversionError(
                f"{parts_dir} holds parts converted with other settings "
                f"({_diff(previous, settings)}); delete {parts_dir} or rerun with the same settings"
            )
    parts_dir.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(settings, indent=1))

    report = ConversionReport(out=str(out))
    todo: list[Path] = []
    for shard in dataset.shards:
        part = _part_path(parts_dir, shard)
        complete, why = _part_is_complete(part)
        if complete:
            report.shards_skipped.append(shard.name)
        else:
            if part.exists():
                log.warning("part %s is broken (%s); converting %s again", part, why, shard.name)
                shutil.rmtree(part)
            todo.append(shard)
    if report.shards_skipped:
        log.info("resuming: %d of %d shards already converted", len(report.shards_skipped),
                 len(dataset.shards))

    def job(shard: Path, cap: int | None, bar: bool) -> _ShardJob:
        return _ShardJob(str(shard), str(_part_path(parts_dir, shard)), schema, features, hw,
                         source, cap, bar, dataset.shard_lengths.get(shard.name))

    # The merge into OUT runs in this process while the workers convert: part i is appended as soon
    # as parts 0..i are done, so OUT keeps shard order and the merge overlaps the conversion.
    done = set(report.shards_skipped)
    merged = 0

    def merge_ready(writer, bar) -> None:
        nonlocal merged
        while merged < len(dataset.shards) and dataset.shards[merged].name in done:
            part = _part_path(parts_dir, dataset.shards[merged])
            merged += 1
            if (part / _EMPTY_MARK).exists():
                continue
            store = EpisodeStore.open(str(part))
            for i in range(store.num_episodes):
                if max_episodes is not None and report.episodes >= max_episodes:
                    return
                ep = store.episode(i)
                writer.add_episode(ep)
                report.episodes += 1
                report.frames += len(ep.rgb)
                bar.update()

    def finished(shard: Path, writer, bar, shard_bar) -> None:
        report.shards_converted.append(shard.name)
        done.add(shard.name)
        shard_bar.update()
        merge_ready(writer, bar)

    with (
        staged(out) as tmp,
        StoreWriter(str(tmp), resolution=hw, fps=schema.fps, source=source,
                    camera=schema.image_key, action_dim=schema.action_dim,
                    state_dim=schema.state_dim) as writer,
        tqdm(total=len(dataset.shards), initial=len(done), desc="shards", unit="shard",
             disable=not progress, position=0) as shard_bar,
        tqdm(desc="episodes merged", unit="ep", disable=not progress, position=1) as bar,
    ):
        merge_ready(writer, bar)
        if max_episodes is not None or workers <= 1 or len(todo) <= 1:
            # In order, one shard at a time; with max_episodes, only until there are enough.
            for shard in todo:
                if max_episodes is not None and report.episodes >= max_episodes:
                    break
                cap = None if max_episodes is None else max_episodes - report.episodes
                _convert_shard(job(shard, cap, progress))
                finished(shard, writer, bar, shard_bar)
        else:
            # spawn, not fork: this process holds zarr/tqdm threads that a fork would copy mid-state.
            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(_convert_shard, job(s, None, False)): s for s in todo}
                pending = set(futures)
                while pending:
                    ready, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in ready:
                        if fut.exception() is not None:
                            for other in pending:
                                other.cancel()
                            raise fut.exception()
                        finished(futures[fut], writer, bar, shard_bar)
            report.shards_converted.sort(key=natural_key)
        if report.episodes == 0:
            raise ConversionError(f"{dataset.features_path.parent}: the shards hold no episodes")
    if not keep_parts:
        shutil.rmtree(parts_dir)
    report.seconds = time.perf_counter() - t0
    log.info("%s: %d episodes, %d frames in %.1fs", out, report.episodes, report.frames,
             report.seconds)
    return report


def _diff(old: dict, new: dict) -> str:
    new = json.loads(json.dumps(new))
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


__all__ = [
    "ConversionReport",
    "PRESETS",
    "convert_rlds",
    "decode_episode",
    "find_dataset",
    "load_features",
    "read_tfrecord",
    "resolve_schema",
    "write_tfrecord",
]
