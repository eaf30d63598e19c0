"""int8 bundles (issue #16): `genie-robot export --precision int8` ships a quantized dynamics graph that
the manifest records and the integrity checks cover, WorldModel loads it unchanged, and its rollouts
stay close to the fp32 bundle's."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from genie_robot.runtime import bundle, default_model
from genie_robot.runtime.bundle import BundleError
from genie_robot.runtime.world_model import WorldModel


@pytest.fixture(scope="module")
def int8_export(tiny_export, tmp_path_factory):
    """-> the int8 bundle `genie-robot export --precision int8` makes from the tiny checkpoint."""
    from genie_robot.cli import main

    out = tmp_path_factory.mktemp("int8") / "bundle"
    assert main(["export", "--dynamics", str(tiny_export[1]), "--out", str(out), "--precision", "int8"]) == 0
    return out


def _op_types(path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_the_manifest_records_int8_and_the_hashes_of_the_graphs_shipped(int8_export, tiny_export):
    manifest = json.loads((int8_export / bundle.MANIFEST).read_text())
    assert manifest["precision"] == "int8"
    assert json.loads((tiny_export[0] / bundle.MANIFEST).read_text())["precision"] == "fp32"
    assert set(manifest["quantization"]) == {"dynamics_step.onnx"}
    assert manifest["quantization"]["dynamics_step.onnx"]["method"] == "onnxruntime.quantization.quantize_dynamic"
    for name in bundle.ONNX_FILES + (bundle.CONFIG, bundle.WEIGHTS):
        assert manifest["files"][name] == bundle.sha256(int8_export / name), name
    bundle.verify(int8_export, bundle.ONNX_FILES)
    # only the dynamics graph is quantized (quantize.py: the conv graphs are faster in fp32)
    assert _op_types(int8_export / "dynamics_step.onnx") & {"MatMulInteger", "DynamicQuantizeLinear"}
    for name in ("tokenizer_encoder.onnx", "tokenizer_decoder.onnx", "lam_encoder.onnx"):
        assert not any("Integer" in op or "Quantize" in op for op in _op_types(int8_export / name)), name
    assert manifest["graphs"]["dynamics_step"] == json.loads((tiny_export[0] / bundle.MANIFEST).read_text())["graphs"]["dynamics_step"]


def test_a_flipped_bit_in_the_int8_graph_is_refused(int8_export, tmp_path):
    d = shutil.copytree(int8_export, tmp_path / "flipped")
    data = bytearray((d / "dynamics_step.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (d / "dynamics_step.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"dynamics_step\.onnx does not match the sha256.*re-export"):
        WorldModel.load(d, backend="onnx", threads=1)


def test_worldmodel_reports_the_precision_and_rolls_out(int8_export, tiny_export, prompt):
    wm = WorldModel.load(int8_export, backend="onnx", threads=1)
    assert wm.precision == "int8" and wm.provider == "CPUExecutionProvider"
    assert WorldModel.load(tiny_export[0], backend="onnx", threads=1).precision == "fp32"
    assert WorldModel.load(int8_export, backend="torch").precision == "fp32"  # the torch backend runs the fp32 weights
    frames = wm.rollout(prompt, np.array([[0, 1, 2, 3, 0, 1, 2, 3, 0, 1]]), seed=3)  # past the context of 8
    assert frames.shape == (1, 10, 16, 16, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, wm.rollout(prompt, np.array([[0, 1, 2, 3, 0, 1, 2, 3, 0, 1]]), seed=3))


def _first_pass(wm, prompt):
    """Logits (1, N, V) of the first MaskGIT pass after the prompt (all tokens masked)."""
    state = wm.reset(prompt)
    tokens = np.full((1, wm.num_tokens), wm.mask_id, np.int64)
    logits, _ = wm.backend.run("dynamics_step", tokens, np.array([1]), state.dyn_kv, np.array(state.pos))
    return logits


def test_int8_logits_and_rollouts_stay_close_to_fp32(int8_export, tiny_export, prompt):
    kw = dict(backend="onnx", threads=1, temperature=0.0, order="confidence")  # greedy: no sampling noise
    fp32, int8 = WorldModel.load(tiny_export[0], **kw), WorldModel.load(int8_export, **kw)
    ref, got = _first_pass(fp32, prompt), _first_pass(int8, prompt)
    assert not np.array_equal(ref, got)  # the int8 graph really runs
    # quantization error: a few percent of the logits' spread (measured: 0.7 %), so most greedy choices
    # stay (measured: 15 of 16; the random-weight tiny model's logits are close to ties)
    assert np.abs(got - ref).mean() < 0.05 * ref.std()
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.75

    actions = np.array([[0, 1, 2, 3, 1, 2]])
    a, b = fp32.rollout(prompt, actions), int8.rollout(prompt, actions)
    other = fp32.rollout(prompt, (actions + 1) % fp32.num_actions)  # what other actions change
    from genie_robot.eval.metrics import psnr

    close, apart = psnr(a, b).mean(), psnr(a, other).mean()  # measured: 100 (identical) and 26 dB
    assert close >= 30.0 and close > apart + 10.0, (close, apart)


def test_precision_errors_name_the_fix(tiny_export, tmp_path, capsys):
    from genie_robot.cli import main

    ckpt = tiny_export[1]
    assert main(["export", "--dynamics", str(ckpt), "--out", str(tmp_path / "a"), "--no-onnx", "--precision", "int8"]) == 2
    assert "drop --no-onnx, or use --precision fp32" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    with pytest.raises(SystemExit) as exc:
        main(["export", "--dynamics", str(ckpt), "--out", str(tmp_path / "b"), "--precision", "bf16"])
    assert exc.value.code == 2 and "invalid choice: 'bf16'" in capsys.readouterr().err

    d = shutil.copytree(tiny_export[0], tmp_path / "odd")  # a manifest from some other version
    manifest = json.loads((d / bundle.MANIFEST).read_text())
    (d / bundle.MANIFEST).write_text(json.dumps({**manifest, "precision": "int4"}))
    with pytest.raises(BundleError, match=r"records precision 'int4'.*re-export"):
        WorldModel.load(d, backend="onnx", threads=1)


def test_export_bundle_converts_a_weight_only_bundle_and_leaves_its_cache_fp32(tiny_export, int8_export, tmp_path,
                                                                             monkeypatch, capsys, prompt):
    """`--bundle` is how the shipped (weight-only) default model gets an int8 bundle; its own ONNX cache,
    which `WorldModel.load("default")` uses, stays the fp32 export."""
    from genie_robot.cli import main

    monkeypatch.setenv("GENIE_ROBOT_CACHE", str(tmp_path / "cache"))
    light = tmp_path / "light"
    assert main(["export", "--dynamics", str(tiny_export[1]), "--out", str(light), "--no-onnx"]) == 0
    assert json.loads((light / bundle.MANIFEST).read_text())["precision"] == "fp32"
    out = tmp_path / "light-int8"
    assert main(["export", "--bundle", str(light), "--out", str(out), "--precision", "int8"]) == 0
    assert "(int8;" in capsys.readouterr().out
    manifest = bundle.verify(out, bundle.ONNX_FILES + (bundle.CONFIG, bundle.WEIGHTS))
    assert manifest["precision"] == "int8" and manifest["converted_from"]["path"] == str(light.resolve())
    assert manifest["config"] == json.loads((light / bundle.CONFIG).read_text())
    # the same weights, graphs and quantization as exporting from the checkpoint with --precision int8
    actions = np.array([[0, 1, 2]])
    np.testing.assert_array_equal(WorldModel.load(out, threads=1).rollout(prompt, actions, seed=2),
                                  WorldModel.load(int8_export, threads=1).rollout(prompt, actions, seed=2))

    cache = default_model.onnx_bundle(light)
    assert json.loads((cache / bundle.MANIFEST).read_text())["precision"] == "fp32"
    assert WorldModel.load(light, backend="onnx", threads=1).precision == "fp32"

    assert main(["export", "--bundle", str(out), "--out", str(tmp_path / "again"), "--precision", "int8"]) == 2
    assert "holds int8 graphs already" in capsys.readouterr().err
    assert main(["export", "--bundle", str(light), "--out", str(tmp_path / "c"), "--precision", "int8",
                 "--temperature", "0.5"]) == 2
    assert "--temperature" in capsys.readouterr().err and not (tmp_path / "c").exists()
