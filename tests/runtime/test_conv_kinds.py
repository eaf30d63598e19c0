"""The runtime with conv tokenizers and conv LAMs (TokenizerConfig.kind / LatentActionConfig.kind "conv"):
the same four single-frame graphs and cache protocol as the ST kinds, with small caches (see
torch_backend.py). Checked against the models' own inference (ConvTokenizer.encode/decode,
ConvLatentActionModel.infer_actions, the dynamics model's full forward) and torch against onnxruntime, on a bundle that
`genie-robot export` makes from a random-init stage-2 checkpoint of a `tiny`-sized conv model."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from genie_robot.runtime.graphs import cache_shapes
from genie_robot.runtime.torch_backend import layer_views, step_modules
from genie_robot.runtime.world_model import WorldModel

ort = pytest.importorskip("onnxruntime")

GRAPHS = ("tokenizer_encoder", "tokenizer_decoder", "lam_encoder", "dynamics_step")


def conv_config(tokenizer: str = "conv", lam: str = "conv"):
    from genie_robot.models.configs import GenieConfig, DynamicsConfig, preset

    base = preset("tiny")
    tok, act = base.tokenizer, base.lam
    if tokenizer == "conv":  # 16x16, patch 4: log2(4) + 1 = 3 widths; FSQ 5x5 = 25 codes; patch-local
        tok = dataclasses.replace(tok, kind="conv", channels=(8, 8, 16), fsq_levels=(5, 5), local_encoder=True)
    if lam == "conv":  # binary FSQ on 3 dims = 8 actions
        act = dataclasses.replace(act, kind="conv", channels=(8, 8), decoder_channels=(8, 16), fsq_levels=(2, 2, 2))
    dyn = DynamicsConfig(context=8, transformer=base.dynamics.transformer, maskgit_steps=4)
    return GenieConfig(tok, act, dyn, name=f"tiny-{tokenizer}-{lam}")


def export_conv_bundle(root, tokenizer: str = "conv", lam: str = "conv", seed: int = 0):
    """A stage-2 checkpoint of `conv_config` (random init) exported with `genie-robot export`
    -> (bundle dir, the Genie that was saved)."""
    from genie_robot.artifacts import checkpoints as ckpt_io
    from genie_robot.cli import main
    from genie_robot.models import Genie

    torch.manual_seed(seed)
    genie = Genie(conv_config(tokenizer, lam))
    with torch.no_grad():
        genie.dynamics.action_table.copy_(genie.lam.action_embeddings())
    config = {"train": {"preset": "tiny", "model": {}}, "model": genie.cfg.to_dict(), "stage": "dynamics"}
    ckpt_io.save_checkpoint(root / "runs" / "dynamics", 1, weights=genie.state_dict(), config=config,
                            state={"step": 1, "mlflow_run_id": None})
    out = root / "bundle"
    assert main(["export", "--dynamics", str(root / "runs" / "dynamics"), "--out", str(out)]) == 0
    return out, genie.eval()


@pytest.fixture(scope="module")
def conv_export(tmp_path_factory):
    return export_conv_bundle(tmp_path_factory.mktemp("conv-export"))


@pytest.fixture(scope="module")
def conv_onnx_wm(conv_export):
    return WorldModel.load(conv_export[0], backend="onnx", threads=1)


@pytest.fixture(scope="module")
def conv_torch_wm(conv_export):
    return WorldModel.load(conv_export[0], backend="torch")


def _video(T=11, B=2, seed=3):
    """Random frames, longer than every context (8) so that the rings wrap."""
    return np.random.default_rng(seed).integers(0, 256, (B, T, 16, 16, 3), dtype=np.uint8)


def test_conv_caches_fit_the_ring_protocol_and_the_exported_graphs(conv_export):
    out, genie = conv_export
    cfg = genie.cfg
    shapes = cache_shapes(cfg)
    assert shapes["tokenizer_encoder"] == shapes["tokenizer_decoder"] == (1, 2, 1, 1, 1, cfg.tokenizer.context, 1)
    assert shapes["lam_encoder"] == (1, 2, 1, 1, 1, 1, 16 * 16 * 3)
    d, m = cfg.dynamics, cfg.dynamics.transformer
    assert shapes["dynamics_step"] == (m.depth, 2, 1, d.num_tokens, m.heads, d.context, m.width // m.heads)
    graphs = json.loads((out / "manifest.json").read_text())["graphs"]
    assert sorted(graphs) == sorted(GRAPHS)
    for graph, shape in shapes.items():
        k0 = graphs[graph]["inputs"]["k0"]["shape"]
        assert isinstance(k0[0], str) and k0[1:] == list(shape[3:])  # dynamic batch, static rest
        new = graphs[graph]["outputs"]["new_kv"]["shape"]
        assert new[:2] == [1 if graph != "dynamics_step" else m.depth, 2] and new[3:] == list(shape[3:5] + shape[6:])
        assert set(graphs[graph]["inputs"]) >= {"k0", "v0", "pos"}  # unused inputs stay in the graph
    WorldModel.load(out, backend="onnx", threads=1)  # _check_onnx_shapes accepts them


def _inputs(graph, cfg, B, t, rng):
    H, W = cfg.tokenizer.resolution
    frames = rng.integers(0, 256, (B, H, W, 3), dtype=np.uint8)
    tokens = rng.integers(0, cfg.dynamics.vocab_size + (graph == "dynamics_step"), (B, cfg.dynamics.num_tokens))
    first = {"tokenizer_encoder": frames, "lam_encoder": frames, "tokenizer_decoder": tokens, "dynamics_step": tokens}[graph]
    extra = [rng.integers(-1 if t == 0 else 0, cfg.dynamics.num_actions, B)] if graph == "dynamics_step" else []
    return [first, *extra]


@pytest.mark.parametrize("graph", GRAPHS)
def test_onnx_graph_matches_torch_over_a_wrapping_ring(conv_export, graph):
    from genie_robot.runtime.onnx_backend import OnnxBackend

    out, genie = conv_export
    module = step_modules(genie)[graph]
    backend = OnnxBackend(out, "cpu", threads=1)
    B, rng = 3, np.random.default_rng(0)  # batch 3: not the export example's 2
    shape = cache_shapes(genie.cfg)[graph]
    kv = np.zeros(shape[:2] + (B,) + shape[3:], np.float32)
    kv_t = torch.zeros(kv.shape)
    C = shape[5]
    for t in range(max(C, 2) + 3):
        x = _inputs(graph, genie.cfg, B, t, rng)
        o, new = backend.run(graph, *x, kv, np.array(t, np.int64))
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


def test_torch_backend_equals_the_conv_models_own_inference(conv_torch_wm, conv_export):
    genie = conv_export[1]
    video = _video()
    v = torch.from_numpy(video)
    with torch.no_grad():
        tokens_ref = genie.tokenizer.encode(v)
        actions_ref = genie.lam.infer_actions(v)
        frames_ref = genie.tokenizer.decode(tokens_ref)
    tokens = conv_torch_wm.encode(video)
    np.testing.assert_array_equal(tokens, tokens_ref.numpy())
    actions = conv_torch_wm.infer_actions(video)
    assert actions.shape == (2, 10) and len(np.unique(actions)) > 1
    np.testing.assert_array_equal(actions, actions_ref.numpy())
    # the decoder graph, streamed with its (dummy) ring cache, == ConvTokenizer.decode
    be, B = conv_torch_wm.backend, video.shape[0]
    shape = cache_shapes(genie.cfg)["tokenizer_decoder"]
    kv = be.zeros(shape[:2] + (B,) + shape[3:])
    for t in range(video.shape[1]):
        frames, new = be.run("tokenizer_decoder", tokens[:, t], kv, np.array(t, np.int64))
        be.write_slot(kv, new, t % shape[5])
        np.testing.assert_array_equal(frames, frames_ref[:, t].numpy())


def test_onnx_backend_encodes_and_infers_actions_like_the_models(conv_onnx_wm, conv_export):
    genie = conv_export[1]
    video = _video(seed=4)
    with torch.no_grad():
        v = torch.from_numpy(video)
        tokens_ref, actions_ref = genie.tokenizer.encode(v).numpy(), genie.lam.infer_actions(v).numpy()
    np.testing.assert_array_equal(conv_onnx_wm.encode(video), tokens_ref)
    np.testing.assert_array_equal(conv_onnx_wm.infer_actions(video), actions_ref)


def _greedy_rollout(wm, prompt, actions):
    state = wm.reset(prompt)
    frames, tokens = [], []
    for a in actions:
        frames.append(wm.step(state, np.array([a])))
        tokens.append(state.last_tokens_BN.copy())
    return np.stack(frames, 1), np.stack(tokens, 1)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_greedy_rollout_equals_the_reference_rollout(conv_export, prompt, backend, greedy_reference):
    """temperature 0 + confidence order needs no random numbers: frames must equal a reference made from
    the models' whole-sequence forwards, no cache (prompt tokens and prompt actions from the conv
    tokenizer and conv LAM on both sides; the dynamics' banded window past its context of 8)."""
    out, genie = conv_export
    wm = WorldModel.load(out, backend=backend, temperature=0.0, order="confidence", steps=3, threads=1)
    actions = [1, 0, 7, 2, 5, 1, 0, 6, 3, 4]  # with the prompt's 3 frames longer than the context of 8
    frames, tokens = _greedy_rollout(wm, prompt, actions)
    with torch.no_grad():
        ref_frames = genie.tokenizer.decode(greedy_reference(genie, prompt, actions)).numpy()
        decoded = genie.tokenizer.decode(torch.from_numpy(tokens)).numpy()
    np.testing.assert_array_equal(decoded, ref_frames)  # the same tokens were sampled
    if backend == "torch":
        np.testing.assert_array_equal(frames, ref_frames)
    else:  # onnxruntime's conv decoder may round a pixel to the next level
        assert np.abs(frames.astype(int) - ref_frames.astype(int)).max() <= 1


def _tokens_of_rollout(wm, prompt, actions, seed):
    state = wm.reset(prompt, seed=seed)
    frames, tokens = [], []
    for a in actions:
        frames.append(wm.step(state, np.array([a])))
        tokens.append(state.last_tokens_BN.copy())
    return np.stack(tokens, 1), np.stack(frames, 1)


def test_seeded_rollout_agrees_on_torch_and_onnxruntime(conv_onnx_wm, conv_torch_wm, prompt):
    actions = [0, 3, 1, 2, 7, 0, 1, 5, 3, 1, 6, 2]  # longer than the context of 8: the rings wrap
    tokens_a, frames_a = _tokens_of_rollout(conv_onnx_wm, prompt, actions, seed=5)
    tokens_b, frames_b = _tokens_of_rollout(conv_torch_wm, prompt, actions, seed=5)
    np.testing.assert_array_equal(tokens_a, tokens_b)
    assert np.abs(frames_a.astype(int) - frames_b.astype(int)).max() <= 1
    np.testing.assert_array_equal(tokens_a, _tokens_of_rollout(conv_onnx_wm, prompt, actions, seed=5)[0])
    assert not np.array_equal(tokens_a, _tokens_of_rollout(conv_onnx_wm, prompt, actions, seed=6)[0])


def test_batched_conv_rollout_branches_like_the_original(conv_onnx_wm, prompt):
    actions = np.random.default_rng(0).integers(0, conv_onnx_wm.num_actions, (16, 3))
    frames = conv_onnx_wm.rollout(prompt, actions, seed=1)
    assert frames.shape == (16, 3, 16, 16, 3)
    np.testing.assert_array_equal(frames, conv_onnx_wm.rollout(prompt, actions, seed=1))
    state = conv_onnx_wm.reset(prompt).repeat(4)
    branch = state.copy()
    a = np.array([0, 1, 2, 7])
    np.testing.assert_array_equal(conv_onnx_wm.step(state, a), conv_onnx_wm.step(branch, a))


@pytest.mark.slow  # two more exports (~25 s each on a loaded 2-core machine)
@pytest.mark.parametrize("kinds", [("conv", "st_transformer"), ("st_vivit", "conv")])
def test_mixed_kinds_run_on_both_backends(tmp_path, prompt, kinds):
    out, genie = export_conv_bundle(tmp_path, *kinds, seed=1)
    onnx_wm = WorldModel.load(out, backend="onnx", threads=1)
    torch_wm = WorldModel.load(out, backend="torch")
    video = _video(seed=5)
    with torch.no_grad():
        v = torch.from_numpy(video)
        tokens_ref, actions_ref = genie.tokenizer.encode(v).numpy(), genie.lam.infer_actions(v).numpy()
    for wm in (onnx_wm, torch_wm):
        np.testing.assert_array_equal(wm.encode(video), tokens_ref)
        np.testing.assert_array_equal(wm.infer_actions(video), actions_ref)
    actions = np.array([[0, 3, 1, 2, 3, 0, 1, 2, 3, 1]]) % genie.cfg.dynamics.num_actions
    a, b = onnx_wm.rollout(prompt, actions, seed=2), torch_wm.rollout(prompt, actions, seed=2)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_two_lanes_encode_infer_and_imagine_like_one_thread(conv_export, conv_onnx_wm, prompt):
    """The conv graphs' small caches split along the batch like the transformers' (onnx_backend.py)."""
    two = WorldModel.load(conv_export[0], backend="onnx", threads=2, guidance=2.0)
    one = WorldModel.load(conv_export[0], backend="onnx", threads=1, guidance=2.0)
    video = _video(B=3)
    np.testing.assert_array_equal(one.infer_actions(video), two.infer_actions(video))
    np.testing.assert_array_equal(one.encode(video), two.encode(video))
    actions = np.random.default_rng(1).integers(0, one.num_actions, (5, 3))
    np.testing.assert_array_equal(one.rollout(prompt, actions, seed=1), two.rollout(prompt, actions, seed=1))
