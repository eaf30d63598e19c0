"""Configs: presets, JSON round trip, consistency checks, and model_cost against measured counts."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from genie_robot.models import Genie, GenieConfig, model_cost, preset


@pytest.mark.parametrize("name", ["tiny", "cpu", "paper"])
def test_presets_round_trip_through_json(name):
    cfg = preset(name)
    assert GenieConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_mirrored_fields_are_computed_and_inconsistent_configs_refused():
    d = preset("tiny").to_dict()
    d["dynamics"]["vocab_size"], d["dynamics"]["num_actions"] = 7, 99  # a stale copy in a file
    cfg = GenieConfig.from_dict(d)
    assert (cfg.dynamics.vocab_size, cfg.dynamics.num_actions) == (cfg.tokenizer.num_codes, cfg.lam.num_actions)
    d["lam"]["resolution"] = [8, 8]
    with pytest.raises(ValueError, match="tokenizer resolution"):
        GenieConfig.from_dict(d)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


@pytest.mark.parametrize("name", ["tiny", "cpu"])
def test_param_counts_match_the_built_models(name):
    cfg = preset(name)
    genie = Genie(cfg)
    cost = model_cost(cfg)
    for part, module in (("tokenizer", genie.tokenizer), ("lam", genie.lam), ("dynamics", genie.dynamics)):
        assert cost[part]["params"] == sum(p.numel() for p in module.parameters()), part


def test_cpu_preset_is_the_intended_scale():
    cost = model_cost(preset("cpu"))
    assert 5e6 <= cost["total"]["params"] <= 10.5e6
    paper = model_cost(preset("paper"))
    assert 9e9 < paper["dynamics"]["params"] < 11e9 and 1e8 < paper["tokenizer"]["params"] < 4e8


def _measure(fn) -> int:
    # CPU SDPA runs as one fused op that FlopCounterMode does not know; count it like the CUDA kernels.
    cpu_sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    with FlopCounterMode(display=False, custom_mapping={cpu_sdpa: lambda q, k, v, *a, **kw: sdpa_flop_count(q, k, v)}) as fc:
        fn()
    return fc.get_total_flops()


@torch.no_grad()
def test_flops_match_flop_counter():
    cfg = preset("tiny")
    genie = Genie(cfg).eval()
    cost = model_cost(cfg)
    tok, dyn, lam = genie.tokenizer, genie.dynamics, genie.lam
    H, W = cfg.tokenizer.resolution

    kv, pos = dyn.init_cache(1)
    got = _measure(lambda: dyn.step(torch.zeros(1, cfg.dynamics.num_tokens, dtype=torch.long), torch.tensor([1]), kv, pos))
    assert got == cost["dynamics"]["flops_per_pass"]

    kv = tok.init_cache(1, "decoder")
    got = _measure(lambda: tok.decode_step(torch.zeros(1, cfg.tokenizer.num_tokens, dtype=torch.long), kv, 0))
    assert got == cost["tokenizer"]["decode_flops_per_frame"]

    kv = tok.init_cache(1, "encoder")
    got = _measure(lambda: tok.encode_step(torch.zeros(1, H, W, 3, dtype=torch.uint8), kv, 0))
    assert got == cost["tokenizer"]["encode_flops_per_frame"]

    # LAM on a full window: T frames of encoder work, actions read at T-1 of them
    T = cfg.lam.context
    got = _measure(lambda: lam.infer_actions(torch.zeros(1, T, H, W, 3, dtype=torch.uint8)))
    D, A, M = cfg.lam.quantizer.code_dim, cfg.lam.num_actions, cfg.lam.encoder.width
    assert got == T * cost["lam"]["flops_per_frame"] - 2 * (M * D + D * A)
