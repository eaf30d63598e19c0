"""Prompts of another size are preprocessed like the converters preprocess video: centre crop to the
model's aspect, then resize (issue #14, item 14); an empty prompt is a ValueError (item 12); the
README's `from genie_robot.runtime import WorldModel` works without importing torch (item 1)."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from genie_robot.data.convert.images import center_crop_resize


def _wide_prompt_with_a_marker():
    """(48, 64, 3): 4:3, a smooth pattern with pure red in the left 1/8 of the width (8 columns), which
    a centred square crop (columns 8..55) removes."""
    yy, xx = np.mgrid[0:48, 0:64]
    frame = np.stack([(xx * 3) % 200, (yy * 4) % 200, np.full_like(xx, 90)], -1).astype(np.uint8)
    frame[:, :8] = (255, 0, 0)
    return frame


def test_a_4_3_prompt_is_centre_cropped_not_stretched(onnx_wm):
    frame = _wide_prompt_with_a_marker()
    got = onnx_wm.prepare_frames(frame)[0, 0]
    assert got.shape == (16, 16, 3)
    assert not (got[..., 0] > 200).any(), "the marker in the left 1/8 survived: the frame was stretched"
    want = cv2.resize(frame[:, 8:56], (16, 16), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, center_crop_resize(frame, (16, 16)))  # the converters' function
    state = onnx_wm.reset(frame)
    np.testing.assert_array_equal(state.last_frames_BHW3[0], want)


def test_reset_with_no_frames_is_a_value_error_naming_the_problem(onnx_wm):
    for empty in (np.zeros((0, 16, 16, 3), np.uint8), np.zeros((1, 0, 16, 16, 3), np.uint8),
                  np.zeros((0, 16, 3), np.uint8)):
        with pytest.raises(ValueError, match=r"prompt: no frames .*at least one frame"):
            onnx_wm.reset(empty)
    with pytest.raises(ValueError, match=r"video: no frames"):
        onnx_wm.infer_actions(np.zeros((0, 16, 16, 3), np.uint8))


def test_the_readme_import_works_without_torch():
    code = ("import sys\nfrom genie_robot.runtime import WorldModel, WorldState, BundleError\n"
            "from genie_robot.runtime import bundle, default_model\n"
            "print(WorldModel.__module__, BundleError.__name__, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["genie_robot.runtime.world_model", "BundleError", "False"]
    import genie_robot.runtime as runtime

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        runtime.Nope  # noqa: B018
