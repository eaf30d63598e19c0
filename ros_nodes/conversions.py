"""sensor_msgs/Image <-> numpy frames, the only place the nodes touch pixel bytes; and message stamps
<-> integer nanoseconds (`to_time`, `to_ns`).

Frames on the numpy side are what the runtime takes: uint8 RGB, channels last, (H, W, 3).
Every check raises `ImageError` with a message that says what was wrong, so a node can log it and
keep running.
"""

from __future__ import annotations

import array

import numpy as np

from genie_robot.errors import InputError

# encoding -> (channels, how to turn the channels into RGB)
_DECODERS = {
    "rgb8": (3, lambda x: x),
    "bgr8": (3, lambda x: x[..., ::-1]),
    "mono8": (1, lambda x: np.repeat(x, 3, axis=-1)),
    "rgba8": (4, lambda x: x[..., :3]),
    "bgra8": (4, lambda x: x[..., 2::-1]),
}
INPUT_ENCODINGS = tuple(_DECODERS)
OUTPUT_ENCODINGS = ("rgb8", "bgr8")
# 4096 x 4096: larger than any camera this model is prompted from; a guard against a corrupt header
# making the node allocate gigabytes.
DEFAULT_MAX_PIXELS = 4096 * 4096


class ImageError(InputError):
    """An Image message that cannot become an RGB frame."""


def to_time(ns: int):
    """Integer nanoseconds -> builtin_interfaces/Time."""
    from builtin_interfaces.msg import Time

    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def to_ns(t) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(t.sec) * 1_000_000_000 + int(t.nanosec)


def image_to_rgb(msg, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8; any row padding) -> (H, W, 3) uint8 RGB.

    The result owns its memory (the message may be reused by the middleware)."""
    enc = msg.encoding.lower()
    if enc not in _DECODERS:
        raise ImageError(f"unsupported image encoding {msg.encoding!r}: expected one of {', '.join(INPUT_ENCODINGS)}")
    h, w = int(msg.height), int(msg.width)
    if h <= 0 or w <= 0:
        raise ImageError(f"empty image: {w}x{h} pixels ({msg.encoding})")
    if h * w > max_pixels:
        raise ImageError(f"image of {w}x{h} = {h * w} pixels is over the limit of {max_pixels} "
                         "(parameter max_image_pixels)")
    c, to_rgb = _DECODERS[enc]
    step = int(msg.step) or w * c
    if step < w * c:
        raise ImageError(f"{msg.encoding} image {w}x{h}: step {step} is smaller than width * channels = {w * c}")
    data = np.frombuffer(msg.data, np.uint8) if len(msg.data) else np.empty(0, np.uint8)
    if data.size < step * (h - 1) + w * c:
        raise ImageError(f"{msg.encoding} image {w}x{h} (step {step}) needs {step * h} bytes of data, got {data.size}")
    if data.size < step * h:  # last row without its padding
        data = np.concatenate([data, np.zeros(step * h - data.size, np.uint8)])
    rows = data[: step * h].reshape(h, step)[:, : w * c].reshape(h, w, c)
    return np.ascontiguousarray(to_rgb(rows))


def rgb_to_image(frame_HW3: np.ndarray, *, stamp=None, frame_id: str = "", encoding: str = "rgb8"):
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image in `encoding` (rgb8 or bgr8). `stamp` is a
    builtin_interfaces/Time (or None for zero)."""
    from sensor_msgs.msg import Image

    f = np.asarray(frame_HW3)
    if f.dtype != np.uint8 or f.ndim != 3 or f.shape[-1] != 3:
        raise ImageError(f"expected a uint8 RGB frame (H, W, 3), got {f.dtype} {f.shape}")
    if encoding == "bgr8":
        f = f[..., ::-1]
    elif encoding != "rgb8":
        raise ImageError(f"unsupported output encoding {encoding!r}: use one of {', '.join(OUTPUT_ENCODINGS)}")
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(f.shape[0]), int(f.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(f.shape[1]) * 3
    # array.array is the setter's fast path; a bytes object would be checked byte by byte.
    msg.data = array.array("B", np.ascontiguousarray(f).tobytes())
    return msg
