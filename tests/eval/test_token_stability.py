"""The report's token-stability numbers and its no-motion floor (genie_robot/eval/metrics.py)."""

import dataclasses

import numpy as np
import pytest
import torch

from genie_robot.eval import metrics
from genie_robot.models.configs import preset
from genie_robot.models.conv_tokenizer import ConvTokenizer


def test_token_and_patch_change_count_what_changed():
    cfg = dataclasses.replace(preset("tiny").tokenizer, kind="conv", channels=(8, 8, 16), local_encoder=True)
    torch.manual_seed(0)
    tok = ConvTokenizer(cfg).eval()
    with torch.no_grad():
        tok.encoder[-1].weight.mul_(30)  # many codes in use, as a trained encoder
    rng = np.random.default_rng(0)
    clip = np.repeat(rng.integers(0, 256, (2, 1, *cfg.resolution, 3), dtype=np.uint8), 3, axis=1)
    p = cfg.patch
    clip[:, 2, :p, :p] = 255 - clip[:, 2, :p, :p]  # one patch of the last frame
    r = metrics.tokenizer_reconstruction(tok, torch.from_numpy(clip))
    N = cfg.num_tokens
    assert r["patch_change"] == pytest.approx(1 / (2 * N))  # 1 of N patches in 1 of 2 transitions
    assert 0 < r["token_change"] <= 1 / (2 * N)  # a local encoder changes that token at most
    assert r["recon"].shape == clip.shape and r["psnr"].shape == (2, 3)


def test_no_motion_psnr_is_the_held_first_frame():
    rng = np.random.default_rng(1)
    clip = rng.integers(0, 256, (2, 4, 8, 8, 3), dtype=np.uint8)
    clip[1] = clip[1, :1]  # a still clip
    floor = metrics.no_motion_psnr(clip)
    assert floor.shape == (2, 3)
    assert np.all(floor[1] == metrics.PSNR_CAP)
    assert floor[0, 0] == pytest.approx(metrics.psnr(clip[0, 1], clip[0, 0]))
