"""WorldModel: seeded determinism, torch/onnxruntime agreement, agreement with the models' reference
MaskGIT loop, constant memory over 1,000 steps, batches, and the errors users will hit."""

from __future__ import annotations

import logging
import os
import shutil
import warnings

import numpy as np
import pytest
import torch

from genie_robot.runtime import bundle
from genie_robot.runtime.bundle import BundleError
from genie_robot.runtime.world_model import WorldModel


def _tokens_of_rollout(wm, prompt, actions, seed=0):
    state = wm.reset(prompt, seed=seed)
    out = []
    for a in actions:
        wm.step(state, np.array([a]))
        out.append(state.last_tokens_BN.copy())
    return np.stack(out, 1)


def test_seeded_rollout_gives_identical_tokens_on_torch_and_onnxruntime(onnx_wm, torch_wm, prompt):
    actions = [0, 3, 1, 2, 2, 0, 1, 3, 3, 1, 0, 2]  # longer than the context of 8: the rings wrap
    a = _tokens_of_rollout(onnx_wm, prompt, actions, seed=5)
    b = _tokens_of_rollout(torch_wm, prompt, actions, seed=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, _tokens_of_rollout(onnx_wm, prompt, actions, seed=5))  # deterministic per seed
    assert not np.array_equal(a, _tokens_of_rollout(onnx_wm, prompt, actions, seed=6))


def test_greedy_rollout_equals_the_models_whole_sequence_forward(tiny_export, prompt, greedy_reference):
    """temperature 0 + confidence order needs no random numbers: the onnx rollout's tokens must equal
    those sampled from the torch models' whole-sequence forwards (no cache; banded past the context)."""
    out, _, genie = tiny_export
    wm = WorldModel.load(out, backend="onnx", temperature=0.0, order="confidence", steps=3, threads=1)
    actions = [1, 0, 3, 2, 1, 1, 0, 2, 3, 0]
    got = _tokens_of_rollout(wm, prompt, actions)
    np.testing.assert_array_equal(got, greedy_reference(genie, prompt, actions).numpy())


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_is_constant_over_a_1000_step_rollout(tiny_export, prompt):
    wm = WorldModel.load(tiny_export[0], backend="onnx", steps=1, threads=1)
    state = wm.reset(prompt)
    shapes, nbytes = (state.dyn_kv.shape, state.dec_kv.shape), state.cache_nbytes()
    rng = np.random.default_rng(0)
    for t in range(1000):
        frame = wm.step(state, rng.integers(0, wm.num_actions, 1))
        if t == 199:
            rss_200 = _rss_bytes()
    assert (state.dyn_kv.shape, state.dec_kv.shape) == shapes and state.cache_nbytes() == nbytes
    assert state.pos == prompt.shape[0] + 1000 and frame.shape == (1, 16, 16, 3)
    assert _rss_bytes() - rss_200 < 8 * 2**20, "RSS grew by more than 8 MiB between step 200 and 1000"


def test_batched_rollout_for_planners(onnx_wm, prompt):
    actions = np.random.default_rng(0).integers(0, onnx_wm.num_actions, (64, 3))
    frames = onnx_wm.rollout(prompt, actions, seed=1)
    assert frames.shape == (64, 3, 16, 16, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, onnx_wm.rollout(prompt, actions, seed=1))
    # a branched state continues exactly like the original
    state = onnx_wm.reset(prompt).repeat(4)
    branch = state.copy()
    a = np.array([0, 1, 2, 3])
    np.testing.assert_array_equal(onnx_wm.step(state, a), onnx_wm.step(branch, a))


def test_infer_actions_matches_the_lam(onnx_wm, tiny_export):
    genie = tiny_export[2]
    video = np.random.default_rng(3).integers(0, 256, (2, 11, 16, 16, 3), dtype=np.uint8)  # > LAM context 8
    with torch.no_grad():
        ref = genie.lam.infer_actions(torch.from_numpy(video)).numpy()
    np.testing.assert_array_equal(onnx_wm.infer_actions(video), ref)


def test_provider_is_reported_and_a_cuda_fallback_warns(tiny_export, onnx_wm, monkeypatch):
    assert onnx_wm.provider == "CPUExecutionProvider"
    import genie_robot.device as device

    monkeypatch.setattr(device, "onnx_providers", lambda requested=None: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # onnxruntime's own note about the missing provider
        with pytest.warns(RuntimeWarning, match="CUDAExecutionProvider was asked for"):
            wm = WorldModel.load(tiny_export[0], backend="onnx", providers="cuda", threads=1)
    assert wm.provider == "CPUExecutionProvider"


def test_bad_inputs_fail_with_the_expected_layout(onnx_wm, prompt, caplog):
    state = onnx_wm.reset(prompt)
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        onnx_wm.step(state, np.array([4]))
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        onnx_wm.step(state, np.array([-1]))
    with pytest.raises(ValueError, match="state.repeat"):
        onnx_wm.step(state, np.array([1, 2]))
    with pytest.raises(ValueError, match=r"expected uint8 RGB frames, channels last.*float32"):
        onnx_wm.reset(prompt.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="channels first"):
        onnx_wm.reset(prompt.transpose(0, 3, 1, 2).copy())
    big = np.repeat(np.repeat(prompt, 4, axis=1), 4, axis=2)  # 64x64: only the size differs
    with caplog.at_level(logging.WARNING, logger="genie_robot.runtime.world_model"):
        resized = onnx_wm.reset(big)
    assert "resizing frames from 64x64 to the model's 16x16" in caplog.text
    np.testing.assert_array_equal(resized.last_frames_BHW3[0], prompt[-1])  # INTER_AREA undoes the 4x repeat


def test_broken_bundles_name_the_file_and_the_fix(tiny_export, tmp_path):
    src = tiny_export[0]
    with pytest.raises(FileNotFoundError, match="genie-robot export"):
        WorldModel.load(tmp_path / "missing")
    partial = tmp_path / "partial"
    shutil.copytree(src, partial)
    (partial / "dynamics_step.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"no dynamics_step\.onnx.*genie-robot export"):
        WorldModel.load(partial)
    WorldModel.load(partial, backend="torch")  # the torch backend does not need the graphs
    # config of another model next to these graphs/weights
    import json

    from genie_robot.models import preset

    other = tmp_path / "other"
    shutil.copytree(src, other)
    cfg = preset("tiny")
    cfg.dynamics.transformer.depth = 3
    for name in ("config.json", "manifest.json"):
        d = json.loads((other / name).read_text())
        if name == "config.json":
            d = cfg.to_dict()
        else:  # a consistent forgery (sha256 re-recorded), so the checks behind the hashes are reached
            d["config"] = cfg.to_dict()
            d["files"]["config.json"] = bundle.sha256(other / "config.json")
        (other / name).write_text(json.dumps(d))
    with pytest.raises(BundleError, match="different models"):
        WorldModel.load(other, threads=1)
    with pytest.raises(BundleError, match="does not fit the model"):
        WorldModel.load(other, backend="torch")
    (other / "config.json").write_text(json.dumps(preset("tiny").to_dict()))
    with pytest.raises(BundleError, match="differs from the config recorded"):
        WorldModel.load(other)


def test_the_model_says_what_one_of_its_steps_is(tmp_path, monkeypatch):
    """frame_stride, fps and step_seconds come from the bundle's config (DataConfig); a bundle exported
    before the config recorded them keeps its manifest's frame stride, fps unknown."""
    from pathlib import Path

    old = Path(__file__).resolve().parents[1] / "data" / "formats" / "tiny_bundle"  # recorded before DataConfig
    wm = WorldModel.load(old, backend="onnx", threads=1)
    assert (wm.frame_stride, wm.fps, wm.step_seconds) == (1, 0.0, None)
    monkeypatch.setenv("GENIE_ROBOT_CACHE", str(tmp_path))
    wm = WorldModel.load("default", backend="torch")
    assert (wm.frame_stride, wm.fps) == (3, 25.0) and abs(wm.step_seconds - 0.12) < 1e-12



def test_a_batch_of_one_takes_a_bare_action(onnx_wm, prompt):
    """wm.step(state, 2) is wm.step(state, np.array([2])) for one prompt; a bare int for a batch of
    several rows is refused, naming the shape."""
    a, b = onnx_wm.reset(prompt, seed=3), onnx_wm.reset(prompt, seed=3)
    np.testing.assert_array_equal(onnx_wm.step(a, 2), onnx_wm.step(b, np.array([2])))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        onnx_wm.step(onnx_wm.reset(prompt).repeat(3), 2)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_two_lanes_imagine_exactly_what_one_thread_does(tiny_export, prompt, guidance):
    """threads=2: the guided and unguided passes, and the halves of a batch, run side by side
    (onnx_backend.py) -> the same actions, tokens and frames as one thread, for an odd batch too."""
    one, two = (WorldModel.load(tiny_export[0], backend="onnx", threads=n, guidance=guidance) for n in (1, 2))
    assert (one.backend.lanes, two.backend.lanes) == (1, 2)
    video = np.random.default_rng(4).integers(0, 256, (3, 11, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(one.infer_actions(video), two.infer_actions(video))
    actions = np.random.default_rng(0).integers(0, one.num_actions, (3, 4))
    np.testing.assert_array_equal(one.rollout(prompt, actions, seed=2), two.rollout(prompt, actions, seed=2))
    a, b = one.reset(prompt, seed=3), two.reset(prompt, seed=3)
    np.testing.assert_array_equal(one.step(a, 1), two.step(b, 1))  # batch 1: nothing to halve
    np.testing.assert_array_equal(a.dyn_kv, b.dyn_kv)
