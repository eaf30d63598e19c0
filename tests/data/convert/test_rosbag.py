"""rosbag2 converter on bags written here (sqlite3 and mcap, Image and CompressedImage) from real RT-1
frames: pixel round trips per encoding, resampling to the nearest earlier frame, and errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from genie_robot.data.convert import ConversionError
from genie_robot.data.convert.images import center_crop_resize
from genie_robot.data.convert.rosbag import convert_rosbag
from genie_robot.data.store import EpisodeStore

RT1_NPZ = Path("/work/shared/data/real/rt1_fractal_sample.npz")
TS = get_typestore(Stores.LATEST)
Image = TS.types["sensor_msgs/msg/Image"]
CompressedImage = TS.types["sensor_msgs/msg/CompressedImage"]
Header = TS.types["std_msgs/msg/Header"]
Time = TS.types["builtin_interfaces/msg/Time"]
String = TS.types["std_msgs/msg/String"]

T0 = 1_700_000_000 * 10**9  # ns


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    if not RT1_NPZ.exists():
        pytest.skip("real RT-1 sample not present")
    full = np.load(RT1_NPZ)["image"]  # (22, 256, 320, 3): real RT-1 camera frames
    return np.stack([cv2.resize(f, (80, 64), interpolation=cv2.INTER_AREA) for f in full])


def _header(t_ns: int) -> object:
    return Header(stamp=Time(sec=t_ns // 10**9, nanosec=t_ns % 10**9), frame_id="camera")


def _image_msg(rgb: np.ndarray, encoding: str, t_ns: int, pad: int = 0):
    if encoding == "rgb8":
        pixels = rgb
    elif encoding == "bgr8":
        pixels = rgb[..., ::-1]
    else:  # mono8
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None]
    h, w, c = pixels.shape
    rows = np.zeros((h, w * c + pad), np.uint8)  # row padding: step > width * channels
    rows[:, : w * c] = pixels.reshape(h, w * c)
    return Image(header=_header(t_ns), height=h, width=w, encoding=encoding, is_bigendian=0,
                 step=w * c + pad, data=rows.ravel())


def _compressed_msg(rgb: np.ndarray, t_ns: int):
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # lossless: exact check
    assert ok
    return CompressedImage(header=_header(t_ns), format="png", data=buf.ravel())


def _write_bag(path: Path, messages: list[tuple[str, object, int]], storage: StoragePlugin,
               empty_topics: dict[str, str] | None = None) -> Path:
    """messages: (topic, message, receive time ns); empty_topics: {topic: msgtype} with no messages."""
    with Writer(path, version=9, storage_plugin=storage) as writer:
        conns = {t: writer.add_connection(t, m, typestore=TS) for t, m in (empty_topics or {}).items()}
        for topic, msg, t in messages:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=TS)
            writer.write(conns[topic], t, TS.serialize_cdr(msg, msg.__msgtype__))
    return path


def _stamps(n: int, period_ns: int, seed: int = 0) -> list[int]:
    """Camera stamps with jitter (up to 20% of a period), increasing."""
    rng = np.random.default_rng(seed)
    return [T0 + i * period_ns + int(rng.uniform(-0.2, 0.2) * period_ns) * (i > 0) for i in range(n)]


def _expected(stamps: list[int], fps: float) -> list[int]:
    """Index of the nearest earlier frame at each tick t0 + k / fps, up to the last frame."""
    out, k = [], 0
    while stamps[0] + k * 1e9 / fps <= stamps[-1]:
        tick = stamps[0] + k * 1e9 / fps
        out.append(max(i for i, s in enumerate(stamps) if s <= tick))
        k += 1
    return out


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP], ids=["sqlite3", "mcap"])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "compressed"])
def test_camera_topic_round_trip_and_resampling(tmp_path, frames, storage, encoding):
    stamps = _stamps(len(frames), 100_000_000)  # ~10 Hz camera with jitter
    messages = []
    for i, (f, t) in enumerate(zip(frames, stamps)):
        msg = _compressed_msg(f, t) if encoding == "compressed" else _image_msg(f, encoding, t, pad=4 * (i % 2))
        messages.append(("/camera/image", msg, t + 5_000_000))  # received 5 ms after capture
        messages.append(("/chatter", String(data=f"hello {i}"), t + 6_000_000))
    bag = _write_bag(tmp_path / "bag", messages, storage)

    report = convert_rosbag(bag, tmp_path / "out.zarr", topic="/camera/image", fps=4, progress=False)
    store = EpisodeStore.open(str(tmp_path / "out.zarr"))
    expected = _expected(stamps, 4)
    assert report.frames == len(expected) == store.num_frames and store.num_episodes == 1
    assert store.fps == 4 and store.camera == "/camera/image" and store.resolution == (64, 64)
    ref = frames
    if encoding == "mono8":
        ref = np.stack([cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB) for f in frames])
    want = np.stack([center_crop_resize(ref[i], (64, 64)) for i in expected])
    np.testing.assert_array_equal(store.episode(0).rgb, want)  # lossless inputs: exact pixels


def test_receive_time_used_when_stamps_are_zero_and_resolution(tmp_path, frames):
    receive = [T0 + i * 250_000_000 for i in range(8)]  # 4 Hz, stamps all zero
    messages = [("/cam", _image_msg(f, "rgb8", 0), t) for f, t in zip(frames[:8], receive)]
    bag = _write_bag(tmp_path / "bag", messages, StoragePlugin.SQLITE3)
    convert_rosbag([bag, bag], tmp_path / "out.zarr", topic="/cam", fps=2, resolution=(32, 40), progress=False)
    store = EpisodeStore.open(str(tmp_path / "out.zarr"))
    assert store.resolution == (32, 40) and list(store.episode_lengths) == [4, 4]
    want = np.stack([center_crop_resize(frames[i], (32, 40)) for i in (0, 2, 4, 6)])
    np.testing.assert_array_equal(store.episode(1).rgb, want)


def test_bag_errors_name_topic_message_and_fix(tmp_path, frames):
    stamps = _stamps(6, 100_000_000)
    good = [("/cam", _image_msg(f, "rgb8", t), t) for f, t in zip(frames, stamps)]
    bag = _write_bag(tmp_path / "good", good + [("/log", String(data="x"), stamps[-1])], StoragePlugin.MCAP)
    out = tmp_path / "out.zarr"

    with pytest.raises(ConversionError, match=r"no topic '/camera'; image topics: \['/cam'\]"):
        convert_rosbag(bag, out, topic="/camera", fps=5, progress=False)
    with pytest.raises(ConversionError, match=r"topic '/log' carries std_msgs/msg/String"):
        convert_rosbag(bag, out, topic="/log", fps=5, progress=False)

    mixed = good[:3] + [("/cam", _image_msg(frames[3][:32], "rgb8", stamps[3]), stamps[3])]
    mixed_bag = _write_bag(tmp_path / "mixed", mixed, StoragePlugin.SQLITE3)
    with pytest.raises(ConversionError, match=r"mixed topic /cam message 3 .*32x80 \(HxW\) but .*message 0 .*64x80"):
        convert_rosbag(mixed_bag, out, topic="/cam", fps=10, progress=False)

    depth = Image(header=_header(stamps[0]), height=64, width=80, encoding="16UC1", is_bigendian=0,
                  step=160, data=np.zeros(64 * 160, np.uint8))
    odd_bag = _write_bag(tmp_path / "odd", [("/cam", depth, stamps[0])] + good[1:3], StoragePlugin.SQLITE3)
    with pytest.raises(ConversionError, match=r"odd topic /cam message 0 .*unsupported Image encoding '16UC1'"):
        convert_rosbag(odd_bag, out, topic="/cam", fps=10, progress=False)

    not_jpeg = CompressedImage(header=_header(T0), format="jpeg",
                               data=np.frombuffer(b"\xff\xd8 not a jpeg", np.uint8))
    broken_bag = _write_bag(tmp_path / "broken", [("/cam", not_jpeg, T0)], StoragePlugin.SQLITE3)
    with pytest.raises(ConversionError, match=r"broken topic /cam message 0 .*could not decode image"):
        convert_rosbag(broken_bag, out, topic="/cam", fps=10, progress=False)

    silent = _write_bag(tmp_path / "silent", [("/log", String(data="x"), T0)], StoragePlugin.SQLITE3,
                        empty_topics={"/cam": Image.__msgtype__})
    with pytest.raises(ConversionError, match=r"silent: empty episode: topic '/cam' has no messages"):
        convert_rosbag(silent, out, topic="/cam", fps=10, progress=False)

    # A failing bag after a good one: nothing written.
    with pytest.raises(ConversionError, match="mixed"):
        convert_rosbag([bag, mixed_bag], out, topic="/cam", fps=10, progress=False)
    assert not out.exists() and not (tmp_path / "out.zarr.partial").exists()
