"""rosbag2 (sqlite3 or mcap; ROS 1 bags too) camera topics into the episode store, one episode per bag,
without a ROS install (the `rosbags` library reads and deserializes the messages).

The topic is a `sensor_msgs/msg/Image` (rgb8, bgr8, mono8, rgba8, bgra8) or
`sensor_msgs/msg/CompressedImage` (JPEG/PNG). Frames are timed by their header stamp (by the bag's
receive time if the first stamp is zero) and resampled to `fps`: at each tick t0 + k / fps the nearest
earlier frame, up to the last frame. Only frames that some tick keeps are decoded. Frames are
centre-cropped to the target aspect and resized (`images.center_crop_resize`); a topic whose frames
change size is an error (checked on every Image message; for CompressedImage on the decoded ones).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from genie_robot.data.convert import ConversionError, ConversionReport
from genie_robot.data.convert.images import (
    FrameSizeCheck,
    center_crop_resize,
    decode_image,
    parse_resolution,
)
from genie_robot.data.convert.resample import nearest_earlier
from genie_robot.data.convert.staging import check_output, staged

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
# encoding -> (channels, conversion to RGB or None)
ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
}


def image_from_msg(msg, msgtype: str, where: str) -> np.ndarray:
    """A deserialized Image / CompressedImage message -> RGB (H, W, 3) uint8."""
    if msgtype == COMPRESSED:
        return decode_image(np.asarray(msg.data, dtype=np.uint8).tobytes(), where)
    encoding = msg.encoding.lower()
    if encoding not in ENCODINGS:
        raise ConversionError(
            f"{where}: unsupported Image encoding {msg.encoding!r}; supported: {sorted(ENCODINGS)}"
        )
    channels, code = ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if h == 0 or w == 0 or step < w * channels or data.size < h * step:
        raise ConversionError(
            f"{where}: {msg.encoding} image {h}x{w} with step {step} needs {h * step} bytes, "
            f"got {data.size}; the message is malformed"
        )
    # Rows may be padded to `step` bytes: cut each row to its pixels.
    image = data[: h * step].reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    return np.ascontiguousarray(image) if code is None else cv2.cvtColor(image, code)


def _topic_summary(reader) -> str:
    images = sorted({c.topic for c in reader.connections if c.msgtype in (IMAGE, COMPRESSED)})
    others = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections
                     if c.msgtype not in (IMAGE, COMPRESSED)})
    return f"image topics: {images or 'none'}; other topics: {others or 'none'}"


def read_bag_episode(
    bag: str | Path, topic: str, fps: float, resolution: tuple[int, int]
) -> np.ndarray:
    """One bag's camera topic -> (T, H, W, 3) uint8 at `resolution`, resampled to `fps`."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    bag = Path(bag)
    if not bag.exists():
        raise ConversionError(f"{bag}: no such bag")
    try:
        reader = AnyReader([bag], default_typestore=get_typestore(Stores.LATEST))
        reader.open()
    except Exception as exc:  # rosbags raises its own ReaderError family
        raise ConversionError(f"{bag}: cannot open as a rosbag: {exc}") from exc
    try:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            raise ConversionError(f"{bag}: no topic {topic!r}; {_topic_summary(reader)}")
        msgtype = conns[0].msgtype
        if msgtype not in (IMAGE, COMPRESSED):
            raise ConversionError(
                f"{bag}: topic {topic!r} carries {msgtype}, expected {IMAGE} or {COMPRESSED}; "
                f"{_topic_summary(reader)}"
            )

        use_header: list[bool] = []  # decided on the first message
        sizes = FrameSizeCheck()

        def stream() -> Iterator[tuple[int, tuple[str, object]]]:
            for i, (conn, receive_ns, raw) in enumerate(reader.messages(connections=conns)):
                msg = reader.deserialize(raw, conn.msgtype)
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                if not use_header:
                    use_header.append(stamp != 0)
                    if stamp == 0:
                        log.info("%s %s: header stamps are zero; timing by receive time", bag, topic)
                t = stamp if use_header[0] else receive_ns
                if msgtype == IMAGE:  # cheap without decoding: check every frame, kept or not
                    sizes.check((msg.height, msg.width), f"{bag} topic {topic} message {i} (t={t} ns)")
                yield t, (f"{bag} topic {topic} message {i} (t={t} ns)", msg)

        frames: list[np.ndarray] = []
        last_where, last_small = None, None
        for where, msg in nearest_earlier(stream(), fps, where=f"{bag} {topic}"):
            if where != last_where:  # a slow camera repeats frames: decode and resize each once
                image = image_from_msg(msg, msgtype, where)
                sizes.check(image.shape, where)
                last_where, last_small = where, center_crop_resize(image, resolution)
            frames.append(last_small)
    finally:
        reader.close()
    if not frames:
        raise ConversionError(f"{bag}: empty episode: topic {topic!r} has no messages")
    return np.stack(frames)


def convert_rosbag(
    bag_path: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    topic: str,
    fps: float,
    resolution: int | tuple[int, int] = 64,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionReport:
    """Convert the camera `topic` of one bag (or several, one episode each) into the store at `out`.

    bag_path: a rosbag2 folder (metadata.yaml + .db3 / .mcap), or a list of them.
    fps: output rate; frames are the nearest earlier message at each tick.
    resolution: output size, int (square) or (H, W); frames are centre-cropped to that aspect.
    """
    t0 = time.perf_counter()
    out = check_output(out, overwrite=overwrite)
    hw = parse_resolution(resolution)
    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    bags = [Path(bag_path)] if isinstance(bag_path, (str, Path)) else [Path(b) for b in bag_path]
    if not bags:
        raise ConversionError("no bags given")

    from genie_robot.data.store import Episode, StoreWriter

    source = f"rosbag:{bags[0].name}" + (f",+{len(bags) - 1} more" if len(bags) > 1 else "")
    report = ConversionReport(out=str(out))
    with staged(out) as tmp, StoreWriter(str(tmp), resolution=hw, fps=float(fps), source=source,
                                         camera=topic) as writer:
        for bag in tqdm(bags, desc="bags", unit="ep", disable=not progress):
            rgb = read_bag_episode(bag, topic, fps, hw)
            writer.add_episode(Episode(rgb=rgb))
            report.episodes += 1
            report.frames += len(rgb)
    report.seconds = time.perf_counter() - t0
    log.info("%s: %d episodes, %d frames in %.1fs", out, report.episodes, report.frames,
             report.seconds)
    return report
