"""Image decoding and resizing shared by the converters: bytes or arrays in, uint8 RGB (H, W, 3) out.

Resizing keeps the aspect ratio: the largest centred crop with the target's aspect is taken, then
resized (INTER_AREA when shrinking, INTER_LINEAR when growing). RT-1's 256x320 frames therefore lose
32 columns on each side before going to 64x64; nothing is stretched.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from genie_robot.data.convert import ConversionError


def parse_resolution(resolution: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """`64` -> (64, 64); `(H, W)` -> (H, W). Raises ValueError for non-positive sizes."""
    if isinstance(resolution, (int, np.integer)):
        hw = (int(resolution), int(resolution))
    else:
        values = tuple(int(v) for v in resolution)
        if len(values) != 2:
            raise ValueError(f"resolution must be an int or (H, W), got {resolution!r}")
        hw = values
    if min(hw) <= 0:
        raise ValueError(f"resolution must be positive, got {resolution!r}")
    return hw


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Decode JPEG/PNG (anything cv2.imdecode reads) to uint8 RGB (H, W, 3).

    `where` names the source (file, record, step) for the error message.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if image is None:
        head = bytes(data[:8])
        raise ConversionError(
            f"{where}: could not decode image ({len(data)} bytes, starts with {head!r}); "
            "expected JPEG or PNG bytes"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_rgb(image: np.ndarray, where: str) -> np.ndarray:
    """Grey (H, W) / (H, W, 1), RGB (H, W, 3) or RGBA (H, W, 4) uint8 -> RGB (H, W, 3) uint8."""
    if image.dtype != np.uint8:
        raise ConversionError(f"{where}: expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    raise ConversionError(f"{where}: expected an (H, W[, 1|3|4]) image, got shape {image.shape}")


def center_crop_resize(image_HW3: np.ndarray, resolution: tuple[int, int]) -> np.ndarray:
    """Largest centred crop with the aspect of `resolution` (H, W), resized to it. uint8 in and out.

    The one preprocessing of frames of another size: the converters, `WorldModel.prepare_frames`
    (prompts, goals, real clips) and the ROS node's prompt echo all call it."""
    out_h, out_w = resolution
    h, w = image_HW3.shape[:2]
    if (h, w) == (out_h, out_w):
        return np.ascontiguousarray(image_HW3)
    # Crop to the target aspect: compare h/w with out_h/out_w without floats.
    if h * out_w > w * out_h:  # too tall
        crop_h, crop_w = max(1, round(w * out_h / out_w)), w
    else:  # too wide (or equal aspect)
        crop_h, crop_w = h, max(1, round(h * out_w / out_h))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    crop = image_HW3[top : top + crop_h, left : left + crop_w]
    interp = cv2.INTER_AREA if crop_h >= out_h and crop_w >= out_w else cv2.INTER_LINEAR
    return cv2.resize(crop, (out_w, out_h), interpolation=interp)


class FrameSizeCheck:
    """Remembers the first frame's size in an episode and rejects frames of another size.

    Frames of one episode come from one camera; a change of size means the input is mixed up (two
    cameras interleaved, a wrong key), so we stop instead of silently resizing it away.
    """

    def __init__(self) -> None:
        self.size: tuple[int, int] | None = None
        self.first_where: str = ""

    def check(self, shape: tuple[int, ...], where: str) -> None:
        """shape: the frame's (H, W, ...) shape."""
        size = tuple(int(v) for v in shape[:2])
        if self.size is None:
            self.size, self.first_where = size, where
        elif size != self.size:
            raise ConversionError(
                f"{where}: frame is {size[0]}x{size[1]} (HxW) but {self.first_where} was "
                f"{self.size[0]}x{self.size[1]}; frames of one episode must share one size "
                "(is the image key / topic mixing cameras?)"
            )


def natural_key(name: str) -> list:
    """Sort key that orders 'frame2.png' before 'frame10.png'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]
