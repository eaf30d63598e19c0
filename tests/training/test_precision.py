"""bf16 training (TrainConfig.precision, genie_robot/device.py): which dtype each setting picks, that
the CPU attention stays fp32 under autocast, and that a bf16 dynamics loss and its gradients agree
with fp32 to bf16's precision. The loss-curve parity over 300 steps is a benchmark (bench/)."""

import pytest
import torch

from genie_robot.device import autocast, autocast_dtype, native_bf16
from genie_robot.models import Genie, preset
from genie_robot.models.st_transformer import attention
from training.configs import TrainConfig

CPU = torch.device("cpu")


def test_precision_settings_pick_the_autocast_dtype():
    assert autocast_dtype(CPU, "fp32") is None
    assert autocast_dtype(CPU, "bf16") is torch.bfloat16
    assert autocast_dtype(CPU, "auto") is (torch.bfloat16 if native_bf16(CPU) else None)
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype(CPU, "fp16")
    with pytest.raises(ValueError, match="precision must be"):
        TrainConfig(stage="tokenizer", precision="half")
    assert TrainConfig(stage="tokenizer").precision == "auto"


def test_cpu_attention_runs_in_fp32_under_autocast():
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 2, 16, 8, requires_grad=True) for _ in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    with autocast(CPU, "bf16"):
        out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), is_causal=True)
    assert out.dtype == torch.bfloat16  # handed back in the caller's dtype ...
    torch.testing.assert_close(out.float(), ref, atol=0.03, rtol=0.03)  # ... bf16 inputs, fp32 kernel
    out.float().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_bf16_dynamics_loss_and_gradients_match_fp32():
    torch.manual_seed(0)
    cfg = preset("tiny")
    genie = Genie(cfg)
    tokens = torch.randint(0, cfg.tokenizer.num_codes, (2, 4, cfg.tokenizer.num_tokens))
    actions = torch.randint(0, cfg.lam.num_actions, (2, 3))
    table = genie.lam.action_embeddings().detach()

    def loss_and_grads(precision):
        torch.manual_seed(1)  # the same mask
        genie.dynamics.zero_grad(set_to_none=True)
        with autocast(CPU, precision):
            loss, _ = genie.dynamics.loss(tokens, actions, table)
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in genie.dynamics.parameters() if p.grad is not None])

    loss32, grad32 = loss_and_grads("fp32")
    loss16, grad16 = loss_and_grads("bf16")
    assert loss16 != loss32 and not torch.equal(grad16, grad32)  # bf16 really ran ...
    assert loss16 == pytest.approx(loss32, rel=0.01)  # ... to bf16's precision
    cos = torch.nn.functional.cosine_similarity(grad32, grad16, dim=0).item()
    assert cos > 0.99, cos
