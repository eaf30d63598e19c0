"""Bundles are checked against the sha256 values in their own manifest before use (issue #14, item 6),
the default model's ONNX cache too, and every bundle file is readable by other users (item 13)."""

from __future__ import annotations

import json
import logging
import shutil
import stat

import numpy as np
import pytest

from genie_robot.runtime import bundle, default_model
from genie_robot.runtime.bundle import BundleError
from genie_robot.runtime.world_model import WorldModel


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _flip_a_byte(path, where: float = 0.5):
    data = bytearray(path.read_bytes())
    i = int(len(data) * where)
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_a_graph_is_refused_naming_the_file(tiny_export, tmp_path):
    d = _copy(tiny_export[0], tmp_path / "flipped")
    _flip_a_byte(d / "dynamics_step.onnx")
    for backend in ("onnx", "torch"):
        with pytest.raises(BundleError, match=r"dynamics_step\.onnx does not match the sha256.*re-export"):
            WorldModel.load(d, backend=backend, threads=1)


def test_a_graph_from_another_export_is_refused(tiny_export, tmp_path):
    import onnx
    from onnx import numpy_helper

    d = _copy(tiny_export[0], tmp_path / "swapped")
    # another export of the same architecture: same graph, other weights (shapes all fit)
    model = onnx.load(str(d / "tokenizer_decoder.onnx"))
    init = next(i for i in model.graph.initializer if numpy_helper.to_array(i).dtype == np.float32
                and numpy_helper.to_array(i).size > 1)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(0.5), init.name))
    onnx.save(model, str(d / "tokenizer_decoder.onnx"))
    with pytest.raises(BundleError, match=r"tokenizer_decoder\.onnx does not match the sha256.*another export"):
        WorldModel.load(d, backend="onnx", threads=1)


def test_weights_of_the_wrong_shape_are_refused_by_both_backends(tiny_export, tmp_path):
    import torch
    from safetensors.torch import save_file

    d = _copy(tiny_export[0], tmp_path / "wrong_weights")
    genie = tiny_export[2]
    tensors = {k: v.detach().contiguous() for k, v in genie.state_dict().items()}
    name = next(iter(tensors))
    tensors[name] = torch.zeros(tuple(s + 1 for s in tensors[name].shape) or (2,))
    save_file(tensors, str(d / bundle.WEIGHTS))
    for backend in ("onnx", "torch"):
        with pytest.raises(BundleError, match=r"weights\.safetensors does not match the sha256"):
            WorldModel.load(d, backend=backend, threads=1)
    with pytest.raises(BundleError, match=r"weights\.safetensors does not match the sha256"):
        bundle.load_genie(d)


def test_a_corrupt_default_model_cache_is_exported_again(tiny_export, tmp_path, monkeypatch, caplog, capfd):
    from genie_robot.cli import main

    src, ckpt, _ = tiny_export
    light = tmp_path / "light"  # a weight-only bundle, like the shipped default model
    assert main(["export", "--dynamics", str(ckpt), "--out", str(light), "--no-onnx"]) == 0
    monkeypatch.setenv("GENIE_ROBOT_CACHE", str(tmp_path / "cache"))
    sha = json.loads((light / bundle.MANIFEST).read_text())["files"][bundle.WEIGHTS]
    cached = tmp_path / "cache" / "onnx" / sha[:16]
    shutil.copytree(src, cached)  # what an earlier export of the same weights left in the cache
    assert default_model.onnx_bundle(light) == cached  # intact: reused
    _flip_a_byte(cached / "lam_encoder.onnx")
    capfd.readouterr()

    with caplog.at_level(logging.WARNING, logger="genie_robot.runtime.default_model"):
        wm = WorldModel.load(light, backend="onnx", threads=1)
    assert "lam_encoder.onnx does not match the sha256" in caplog.text and "exporting it again" in caplog.text
    bundle.verify(cached, bundle.ONNX_FILES)  # the cache is whole again
    printed = capfd.readouterr()
    assert len((printed.out + printed.err).splitlines()) <= 5, printed  # the export's own logging is held back
    reference = WorldModel.load(src, backend="onnx", threads=1)
    prompt = np.random.default_rng(0).integers(0, 256, (2, *wm.resolution, 3), dtype=np.uint8)
    np.testing.assert_array_equal(wm.rollout(prompt, np.array([[0, 1, 2]]), seed=3),
                                  reference.rollout(prompt, np.array([[0, 1, 2]]), seed=3))


def test_bundle_files_are_as_readable_as_any_other_new_file(tiny_export):
    d = tiny_export[0]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in d.iterdir()}
    assert modes[bundle.WEIGHTS] == modes[bundle.CONFIG], modes  # safetensors alone writes 0600
    assert len(set(modes.values())) == 1, modes
