"""The dynamics step with its KV cache as plain inputs/outputs exports to ONNX and matches eager.

This is the export engineer's starting point (runtime/export.py owns the real export); the test keeps
the model side exportable: fixed-shape cache read, not written (the host writes the new K/V), tensor `pos`.
"""

import warnings

import numpy as np
import pytest
import torch

from genie_robot.models import DynamicsModel

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


class DynamicsStep(torch.nn.Module):
    def __init__(self, dynamics):
        super().__init__()
        self.dynamics = dynamics

    def forward(self, tokens_BN, action_B, kv, pos):
        logits, new_kv = self.dynamics.step(tokens_BN, action_B, kv, pos)
        return logits, new_kv, pos + 1


def test_dynamics_step_exports_with_the_cache_as_tensors(cfg, tmp_path):
    dyn = DynamicsModel(cfg.dynamics).eval()
    kv, pos = dyn.init_cache(1)
    tokens = torch.randint(0, cfg.dynamics.vocab_size, (1, cfg.dynamics.num_tokens))
    path = tmp_path / "dynamics_step.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(DynamicsStep(dyn), (tokens, torch.tensor([1]), kv, pos), str(path), dynamo=True,
                          input_names=["tokens", "action", "kv", "pos"], output_names=["logits", "new_kv", "pos_out"],
                          verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    kv_np, pos_np, kv_ref = kv.numpy(), np.array(0, dtype=np.int64), kv.clone()
    for t in range(cfg.dynamics.context + 3):  # past the window: the ring buffer wraps
        tokens = torch.randint(0, cfg.dynamics.vocab_size, (1, cfg.dynamics.num_tokens))
        action = torch.tensor([t % cfg.dynamics.num_actions if t else -1])
        logits, new_np, pos_np = session.run(None, {"tokens": tokens.numpy(), "action": action.numpy(),
                                                    "kv": kv_np, "pos": pos_np})
        kv_np[:, :, :, :, :, t % cfg.dynamics.context] = new_np
        with torch.no_grad():
            ref, new_ref = dyn.step(tokens, action, kv_ref, t)
            dyn.transformer.write(kv_ref, new_ref, t)
        np.testing.assert_allclose(logits, ref.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(kv_np, kv_ref.numpy(), atol=1e-5, rtol=1e-5)
