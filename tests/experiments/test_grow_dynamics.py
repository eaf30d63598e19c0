"""experiments/grow_dynamics.py: the grown model computes exactly what the trained one did, with more
blocks, and its checkpoint says the new depth."""

from __future__ import annotations

import torch

from experiments.grow_dynamics import main
from genie_robot.artifacts import checkpoints
from genie_robot.models import Genie, preset
from genie_robot.models.dynamics import DynamicsModel


def _dynamics(ck) -> DynamicsModel:
    model = DynamicsModel(checkpoints.genie_config(ck.config).dynamics)
    model.load_state_dict({k.removeprefix("dynamics."): v for k, v in ck.ema.items() if k.startswith("dynamics.")})
    return model.eval()


def test_grown_dynamics_predicts_what_the_trained_one_did(tmp_path):
    torch.manual_seed(0)
    genie = Genie(preset("tiny"))
    with torch.no_grad():  # a "trained" model: no zero output projections anywhere
        for p in genie.dynamics.parameters():
            p.add_(0.05 * torch.randn_like(p))
    config = {"train": {"preset": "tiny", "model": {}}, "model": genie.cfg.to_dict(), "stage": "dynamics"}
    weights = genie.state_dict()
    checkpoints.save_checkpoint(tmp_path / "run", 5, weights=weights, ema=weights, config=config, state={"step": 5})
    depth = genie.cfg.dynamics.transformer.depth

    assert main(["--from", str(tmp_path / "run"), "--depth", str(depth + 2), "--out", str(tmp_path / "grown")]) == 0

    old = _dynamics(checkpoints.load_checkpoint(tmp_path / "run", with_state=False))
    grown_ck = checkpoints.load_checkpoint(tmp_path / "grown", with_state=False)
    grown = _dynamics(grown_ck)
    assert len(grown.transformer.blocks) == depth + 2
    assert grown_ck.config["train"]["model"]["dynamics"]["transformer"]["depth"] == depth + 2
    new_blocks = [b for b in grown.transformer.blocks if not b.ffn[2].weight.any()]
    assert len(new_blocks) == 2 and all(not b.spatial.out.weight.any() and not b.temporal.out.weight.any() for b in new_blocks)
    V, N = old.cfg.vocab_size, old.cfg.num_tokens
    tokens = torch.randint(0, V, (2, 4, N))
    tokens[:, 2:, ::2] = old.mask_id
    actions = torch.randint(0, old.cfg.num_actions, (2, 3))
    with torch.no_grad():
        torch.testing.assert_close(grown(tokens, actions), old(tokens, actions), rtol=0, atol=1e-5)
