"""Export: bundle contents, and parity of every ONNX graph with the torch modules and the models'
own inference paths (tokenizer.encode/decode_step, lam.infer_actions, dynamics.step)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genie_robot.runtime import bundle
from genie_robot.runtime.graphs import INPUTS, cache_shapes
from genie_robot.runtime.onnx_backend import OnnxBackend
from genie_robot.runtime.torch_backend import layer_views, step_modules

ort = pytest.importorskip("onnxruntime")


def test_bundle_has_graphs_weights_and_a_manifest_with_source_hashes(tiny_export):
    out, ckpt, genie = tiny_export
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["opset"] >= 18
    assert manifest["config"] == genie.cfg.to_dict()
    assert manifest["sources"]["dynamics"]["sha256"]["model.safetensors"] == bundle.sha256(ckpt / "model.safetensors")
    for name in bundle.ONNX_FILES + (bundle.WEIGHTS, bundle.CONFIG):
        assert manifest["files"][name] == bundle.sha256(out / name)
    k0 = manifest["graphs"]["dynamics_step"]["inputs"]["k0"]["shape"]
    assert isinstance(k0[0], str) and manifest["graphs"]["dynamics_step"]["inputs"]["tokens"]["shape"][0] == k0[0]


def _inputs(graph, cfg, B, t, rng):
    H, W = cfg.tokenizer.resolution
    frames = rng.integers(0, 256, (B, H, W, 3), dtype=np.uint8)
    tokens = rng.integers(0, cfg.dynamics.vocab_size + (graph == "dynamics_step"), (B, cfg.dynamics.num_tokens))
    first = {"tokenizer_encoder": frames, "lam_encoder": frames, "tokenizer_decoder": tokens, "dynamics_step": tokens}[graph]
    extra = [rng.integers(-1 if t == 0 else 0, cfg.dynamics.num_actions, B)] if graph == "dynamics_step" else []
    return [first, *extra]


@pytest.mark.parametrize("graph", list(INPUTS))
def test_onnx_graph_matches_torch_over_a_wrapping_ring(tiny_export, graph):
    out, _, genie = tiny_export
    module = step_modules(genie)[graph]
    backend = OnnxBackend(out, "cpu", threads=1)
    B, rng = 3, np.random.default_rng(0)  # batch 3: not the export example's 2, so the batch axis is dynamic
    shape = cache_shapes(genie.cfg)[graph]
    kv = np.zeros(shape[:2] + (B,) + shape[3:], np.float32)
    kv_t = torch.zeros(kv.shape)
    C = shape[5]
    for t in range(C + 3):
        x = _inputs(graph, genie.cfg, B, t, rng)
        pos = np.array(t, np.int64)
        o, new = backend.run(graph, *x, kv, pos)
        with torch.no_grad():
            ref, ref_new = module(*[torch.from_numpy(np.asarray(a)) for a in x], layer_views(kv_t), torch.tensor(t))
        if o.dtype == np.float32:
            np.testing.assert_allclose(o, ref.numpy(), atol=2e-5, rtol=1e-5)
        elif o.dtype == np.uint8:  # pixels: rounding may flip by one level at most
            assert np.abs(o.astype(int) - ref.numpy().astype(int)).max() <= 1
        else:
            np.testing.assert_array_equal(o, ref.numpy())
        np.testing.assert_allclose(new, ref_new.numpy(), atol=2e-5, rtol=1e-5)
        kv[:, :, :, :, :, t % C] = new
        kv_t[:, :, :, :, :, t % C] = ref_new


def test_torch_graphs_equal_the_models_own_inference(tiny_export):
    """The runtime's read-only-cache step == DynamicsModel.step / tokenizer.encode / lam.infer_actions."""
    _, _, genie = tiny_export
    cfg, mods = genie.cfg, step_modules(genie)
    d = cfg.dynamics
    g = torch.Generator().manual_seed(1)
    kv_ref, _ = genie.dynamics.init_cache(2)
    s = cache_shapes(cfg)["dynamics_step"]
    kv = torch.zeros(s[:2] + (2,) + s[3:])
    with torch.no_grad():
        for t in range(d.context + 4):
            tokens = torch.randint(0, d.vocab_size + 1, (2, d.num_tokens), generator=g)
            action = torch.randint(-1 if t == 0 else 0, d.num_actions, (2,), generator=g)
            ref, new_ref = genie.dynamics.step(tokens, action, kv_ref, t)
            genie.dynamics.transformer.write(kv_ref, new_ref, t)
            logits, new = mods["dynamics_step"](tokens, action, layer_views(kv), torch.tensor(t))
            torch.testing.assert_close(logits, ref, atol=2e-5, rtol=1e-5)
            kv[:, :, :, :, :, t % d.context] = new
        H, W = cfg.tokenizer.resolution
        video = torch.randint(0, 256, (2, cfg.lam.context + 2, H, W, 3), dtype=torch.uint8, generator=g)
        tokens_ref, actions_ref = genie.tokenizer.encode(video), genie.lam.infer_actions(video)
    from genie_robot.runtime.torch_backend import TorchBackend
    from genie_robot.runtime.world_model import WorldModel

    wm = WorldModel(cfg, TorchBackend(genie))
    np.testing.assert_array_equal(wm.encode(video.numpy()), tokens_ref.numpy())
    np.testing.assert_array_equal(wm.infer_actions(video.numpy()), actions_ref.numpy())


@pytest.mark.slow  # MLflow's sqlite store set-up and model logging take ~25 s here
def test_export_logs_onnx_models_to_the_runs_mlflow_run(tiny_export, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from genie_robot.runtime.export import log_to_mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("genie", artifact_location=(tmp_path / "mlruns").as_uri())
    run_id = client.create_run(exp).info.run_id
    uris = log_to_mlflow(tiny_export[0], run_id, uri)
    assert len(uris) == 4
    mlflow.set_tracking_uri(uri)
    model = mlflow.onnx.load_model(uris[0])
    assert model.opset_import[0].version >= 18
    names = {a.path for a in client.list_artifacts(run_id, "onnx")}
    assert "onnx/manifest.json" in names


def test_export_errors_name_the_problem(tmp_path):
    from genie_robot.artifacts import checkpoints as ckpt_io
    from genie_robot.runtime.export import ExportError, load_checkpoints

    with pytest.raises(FileNotFoundError, match="genie-robot train dynamics"):
        load_checkpoints(str(tmp_path / "nope"))
    from genie_robot.models import preset
    from genie_robot.models.tokenizer import VideoTokenizer

    cfg = preset("tiny")
    cfg.tokenizer.quantizer.num_codes = 16
    tok = VideoTokenizer(cfg.tokenizer)
    ckpt_io.save_checkpoint(tmp_path / "tok", 1, weights=tok.state_dict(), state={},
                            config={"train": {}, "model": cfg.to_dict() | {}, "stage": "tokenizer"})
    make = _make_checkpoint()
    make(tmp_path / "dyn")
    with pytest.raises(ExportError, match="another tokenizer config"):
        load_checkpoints(str(tmp_path / "dyn"), str(tmp_path / "tok"))
    with pytest.raises(ExportError, match="not a dynamics one"):
        load_checkpoints(str(tmp_path / "tok"))


def _make_checkpoint():
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location("_rt_conftest", pathlib.Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_checkpoint


def test_export_can_set_the_bundles_sampling_defaults(tiny_export, tmp_path, capsys):
    import json

    from genie_robot.cli import main
    from genie_robot.runtime.world_model import WorldModel

    ckpt = tiny_export[1]
    out = tmp_path / "b"
    assert main(["export", "--dynamics", str(ckpt), "--out", str(out), "--no-onnx", "--temperature", "0.5",
                 "--maskgit-steps", "3", "--order", "confidence"]) == 0
    cfg = json.loads((out / "config.json").read_text())["dynamics"]
    assert (cfg["temperature"], cfg["maskgit_steps"], cfg["order"]) == (0.5, 3, "confidence")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sampling_overrides"] == {"temperature": 0.5, "maskgit_steps": 3, "order": "confidence"}
    wm = WorldModel.load(out, backend="torch")
    assert (wm.temperature, wm.steps, wm.order) == (0.5, 3, "confidence")
    assert main(["export", "--dynamics", str(ckpt), "--out", str(tmp_path / "c"), "--no-onnx",
                 "--maskgit-steps", "0"]) == 2
    assert "maskgit_steps must be >= 1" in capsys.readouterr().err
