"""Image <-> numpy: encodings, row padding, and errors that say what was wrong; QoS strings."""

from __future__ import annotations

import array

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

from sensor_msgs.msg import Image  # noqa: E402

from ros_nodes.conversions import ImageError, image_to_rgb, rgb_to_image  # noqa: E402
from ros_nodes.qos import qos_from_string  # noqa: E402


def frame(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def raw(x: np.ndarray, encoding: str, pad: int = 0) -> Image:
    h, w = x.shape[:2]
    rows = x.reshape(h, -1)
    rows = np.concatenate([rows, np.full((h, pad), 77, np.uint8)], 1)
    return Image(height=h, width=w, encoding=encoding, step=rows.shape[1], data=array.array("B", rows.tobytes()))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_round_trip(encoding):
    f = frame()
    msg = rgb_to_image(f, frame_id="cam", encoding=encoding)
    assert (msg.height, msg.width, msg.step, msg.encoding, msg.header.frame_id) == (5, 7, 21, encoding, "cam")
    np.testing.assert_array_equal(image_to_rgb(msg), f)
    if encoding == "bgr8":
        np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(5, 7, 3), f[..., ::-1])


def test_other_encodings_and_row_padding_become_rgb():
    f = frame()
    np.testing.assert_array_equal(image_to_rgb(raw(f[..., ::-1], "bgr8", pad=3)), f)
    gray = f[..., :1]
    np.testing.assert_array_equal(image_to_rgb(raw(gray, "mono8", pad=1)), np.repeat(gray, 3, -1))
    rgba = np.concatenate([f, np.full((5, 7, 1), 255, np.uint8)], -1)
    np.testing.assert_array_equal(image_to_rgb(raw(rgba, "rgba8")), f)
    np.testing.assert_array_equal(image_to_rgb(raw(rgba[..., [2, 1, 0, 3]], "bgra8")), f)
    out = image_to_rgb(raw(f, "RGB8"))
    assert out.flags.c_contiguous and out.flags.owndata or out.base is not None


@pytest.mark.parametrize("msg, problem", [
    (Image(height=2, width=2, encoding="16UC1", step=4, data=array.array("B", bytes(8))), "unsupported image encoding '16UC1'"),
    (Image(height=0, width=4, encoding="rgb8"), "empty image: 4x0"),
    (Image(height=5000, width=5000, encoding="rgb8", step=15000), "over the limit"),
    (Image(height=2, width=2, encoding="rgb8", step=6, data=array.array("B", bytes(11))), "needs 12 bytes of data, got 11"),
    (Image(height=2, width=4, encoding="rgb8", step=6, data=array.array("B", bytes(24))), "step 6 is smaller than"),
])
def test_errors_say_what_was_wrong(msg, problem):
    with pytest.raises(ImageError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        image_to_rgb(msg)


def test_output_checks():
    with pytest.raises(ImageError, match="uint8 RGB frame"):
        rgb_to_image(np.zeros((3, 4, 3), np.float32))
    with pytest.raises(ImageError, match="output encoding 'mono8'"):
        rgb_to_image(frame(), encoding="mono8")


def test_qos_strings():
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    q = qos_from_string("sensor_data")
    assert q.reliability == ReliabilityPolicy.BEST_EFFORT and q.depth == 5
    q = qos_from_string("reliable:3,transient_local")
    assert (q.reliability, q.depth, q.durability) == (ReliabilityPolicy.RELIABLE, 3, DurabilityPolicy.TRANSIENT_LOCAL)
    for bad, problem in [("fast", "expected one of"), ("reliable:x", "not an integer"), ("reliable:0", "at least 1"),
                         ("reliable,durable", "unknown option")]:
        with pytest.raises(ValueError, match=problem):
            qos_from_string(bad)
