"""Conv tokenizer and conv latent action model (the `kind="conv"` models): shapes, per-frame and
per-transition independence, training and inference agreeing on code values, learning, and that the
LAM's codes come to carry the motion; plus the config plumbing of the conv kinds."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from genie_robot.eval.latent_analysis import normalized_mutual_information
from genie_robot.models import Genie, GenieConfig, model_cost, preset
from genie_robot.models.configs import LatentActionConfig, TokenizerConfig, DynamicsConfig
from genie_robot.models.conv_blocks import ResBlock
from genie_robot.models.conv_latent_actions import ConvLatentActionModel
from genie_robot.models.conv_tokenizer import ConvTokenizer
from genie_robot.models.genie import build_lam, build_tokenizer
from genie_robot.models.latent_actions import LatentActionModel
from genie_robot.models.tokenizer import VideoTokenizer, to_float, to_uint8


def conv_tok_cfg(cfg, **kw) -> TokenizerConfig:
    return dataclasses.replace(cfg.tokenizer, kind="conv", channels=(8, 8, 16), **kw)  # 16x16, patch 4


def conv_lam_cfg(cfg, **kw) -> LatentActionConfig:
    return dataclasses.replace(cfg.lam, kind="conv", channels=(16, 32), decoder_channels=(16, 32), **kw)


def conv_genie_cfg(cfg, **dyn) -> GenieConfig:
    tok, lam = conv_tok_cfg(cfg), conv_lam_cfg(cfg)
    return GenieConfig(tok, lam, DynamicsConfig(context=8, transformer=cfg.dynamics.transformer,
                                               maskgit_steps=2, **dyn), name="tiny-conv")


# ------------------------------------------------------------------------------------ ResBlock


def test_resblock_film_starts_near_zero_and_uses_its_condition():
    torch.manual_seed(0)
    block = ResBlock(8, 16, cond_dim=3)
    x = torch.randn(2, 8, 6, 6)
    a, b = torch.ones(2, 3), -torch.ones(2, 3)
    assert block(x, a).shape == (2, 16, 6, 6)
    fresh_gap = (block(x, a) - block(x, b)).abs().max().item()
    assert 0 < fresh_gap < 0.05  # a fresh block barely listens to its condition ...
    with torch.no_grad():
        block.film.weight.normal_()
    assert (block(x, a) - block(x, b)).abs().max().item() > 20 * fresh_gap  # ... but the path is there
    plain = ResBlock(8, 8)
    assert plain.film is None and plain(x).shape == x.shape


# ------------------------------------------------------------------------------------ tokenizer


@pytest.fixture
def tok(cfg):
    return ConvTokenizer(conv_tok_cfg(cfg)).eval()


def test_tokenizer_shapes_dtypes_and_code_range(cfg, tok, make_random_frames):
    frames = make_random_frames(cfg, B=2, T=3)
    tokens = tok.encode(frames)
    assert tokens.shape == (2, 3, cfg.tokenizer.num_tokens) and tokens.dtype == torch.int64
    assert 0 <= tokens.min() and tokens.max() < 1000 == tok.cfg.num_codes
    out = tok.decode(tokens)
    assert out.shape == frames.shape and out.dtype == torch.uint8
    with pytest.raises(ValueError):
        tok.encode(frames[..., :8, :8, :])  # wrong resolution


def test_tokenizer_codes_frames_independently_and_streams_the_same(cfg, tok, make_random_frames):
    frames = make_random_frames(cfg, B=2, T=4)
    tokens = tok.encode(frames)
    other = frames.clone()
    other[:, 0] = make_random_frames(cfg, B=2, T=1, seed=5)[:, 0]
    assert torch.equal(tok.encode(other)[:, 1:], tokens[:, 1:]) and not torch.equal(tok.encode(other)[:, 0], tokens[:, 0])
    decoded = tok.decode(tokens)
    kv = tok.init_cache(2)
    for t in range(4):
        step_tokens, kv = tok.encode_step(frames[:, t], kv, t)
        assert torch.equal(step_tokens, tokens[:, t])
        step_frames, kv = tok.decode_step(tokens[:, t], kv, t)
        assert torch.equal(step_frames, decoded[:, t])


@pytest.mark.parametrize("local", [True, False])
def test_local_encoder_changes_only_the_tokens_whose_patch_changed(cfg, make_random_frames, local):
    """With `local_encoder` a token depends on its own p x p patch alone: still background keeps its
    codes while the arm moves elsewhere. A frame-wide encoder (GroupNorm, overlapping convs) does not."""
    torch.manual_seed(0)
    tok = ConvTokenizer(conv_tok_cfg(cfg, local_encoder=local)).eval()
    with torch.no_grad():  # spread the latents over many codes, as a trained encoder does
        tok.encoder[-1].weight.mul_(30)
    frames = make_random_frames(cfg, B=4, T=1)
    moved = frames.clone()
    p = tok.cfg.patch
    moved[:, 0, :p, :p] = 255 - moved[:, 0, :p, :p]  # only the top-left patch
    changed = tok.encode(frames) != tok.encode(moved)  # (B, 1, N)
    assert changed[..., 0].any()
    if local:
        assert not changed[..., 1:].any()
    else:
        assert changed[..., 1:].any()


def test_tokenizer_decode_uses_the_code_values_training_sees(cfg, tok, make_video):
    """decode(encode(x)) must be the training loss's reconstruction: the FSQ forward value and
    embeddings()[index] are the same point of the grid."""
    frames, _ = make_video(cfg, B=3, T=2)
    z = tok._latents(frames)
    z_q, codes, _, _ = tok.fsq(z.reshape(-1, z.shape[-1]))
    torch.testing.assert_close(tok.fsq.embeddings()[codes], z_q)
    recon = to_uint8(tok._pixels(z_q.view(z.shape))).view(frames.shape)
    assert (recon.int() - tok.decode(tok.encode(frames)).int()).abs().max() <= 1


def test_tokenizer_learns_a_fixed_batch(cfg, make_video):
    torch.manual_seed(0)
    tok = ConvTokenizer(conv_tok_cfg(cfg)).train()
    frames, _ = make_video(cfg, B=4, T=2)
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss, metrics = tok.loss(frames)
        first = first if first is not None else metrics
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert {"loss", "mse", "psnr", "fsq/perplexity", "fsq/usage"} <= set(metrics)
    assert metrics["mse"] < first["mse"] / 5 and metrics["psnr"] > first["psnr"] + 5, (first, metrics)  # ~20x, +13 dB
    tok.eval()
    real = to_float(frames)
    before = ((to_float(ConvTokenizer(conv_tok_cfg(cfg)).decode(tokens := tok.encode(frames))) - real) ** 2).mean()
    after = ((to_float(tok.decode(tokens)) - real) ** 2).mean()
    assert after < before / 5  # the inference path (encode -> decode) learnt it too


# ---------------------------------------------------------------------------------- latent actions


@pytest.fixture
def lam(cfg):
    return ConvLatentActionModel(conv_lam_cfg(cfg)).eval()


def test_lam_actions_shape_range_and_table(cfg, lam, make_random_frames):
    frames = make_random_frames(cfg, B=3, T=5)
    actions = lam.infer_actions(frames)
    assert actions.shape == (3, 4) and actions.dtype == torch.int64
    assert 0 <= actions.min() and actions.max() < 8 == lam.cfg.num_actions
    table = lam.action_embeddings()
    assert table.shape == (8, 3) == (lam.cfg.num_actions, lam.cfg.action_dim)
    assert set(table.unique().tolist()) == {-1.0, 1.0} and len({tuple(r) for r in table.tolist()}) == 8
    assert not table.requires_grad
    # one label per transition, from that pair alone
    for t in range(4):
        assert torch.equal(lam.infer_actions(frames[:, t:t + 2])[:, 0], actions[:, t])
    loss, metrics, train_actions = lam(frames)
    assert torch.equal(train_actions, actions) and loss.dim() == 0
    assert {"loss", "mse", "var_floor_loss", "fsq/perplexity", "fsq/usage", "action_sensitivity"} <= set(metrics)
    with pytest.raises(ValueError):
        lam.infer_actions(frames[:, :1])  # a transition needs two frames


def test_lam_decoder_sees_x_t_and_the_action_only(cfg, lam, make_random_frames, monkeypatch):
    """Two windows with the same x_t and different x_t+1: with the action held fixed, the decoder's
    prediction is the same, so x_t+1 can reach it only through the action."""
    with torch.no_grad():  # make FiLM strong, so that a wrong action would show
        for m in lam.decoder.modules():
            if isinstance(m, ResBlock) and m.film is not None:
                m.film.weight.normal_()
    a = make_random_frames(cfg, B=2, T=2, seed=0)
    b = a.clone()
    b[:, 1] = make_random_frames(cfg, B=2, T=2, seed=1)[:, 1]
    seen = []
    lam.decoder.register_forward_hook(lambda mod, args, out: seen.append((args, out)))

    fixed = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 0.8, -2.0]])  # the encoder's output, forced
    monkeypatch.setattr(lam.encoder, "forward", lambda x_t, x_next: fixed)
    lam.cfg = dataclasses.replace(lam.cfg, monitor_action_sensitivity=False)
    lam(a)
    lam(b)
    (args_a, out_a), (args_b, out_b) = seen
    torch.testing.assert_close(args_a[0], to_float(a[:, 0]).permute(0, 3, 1, 2))  # x_t, nothing else
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    # ... and predict_next (the latent-action grid) is the same function of x_t and the action's code
    codes = lam.fsq.quantize(fixed)
    torch.testing.assert_close(args_a[1], lam.fsq.embeddings()[codes])
    expected = to_uint8((args_a[0] + out_a).permute(0, 2, 3, 1))
    assert (lam.predict_next(a[:, 0], codes).int() - expected.int()).abs().max() <= 1
    other = lam.predict_next(a[:, 0], (codes + 1) % 8)
    assert not torch.equal(other, lam.predict_next(a[:, 0], codes))


def test_lam_learns_the_direction_a_square_moves(cfg, make_video):
    """Frames x_t -> x_t+1 where a square moves one of 4 known ways (2 pixels): after 200 steps the
    codes carry the direction (measured over seeds 0-6: NMI 0.64-1.0, 0.89 at seed 0; chance ~0.01)
    and the decoder relies on the action (action_sensitivity 3.6-350, 186 at seed 0)."""
    torch.manual_seed(0)
    lam = ConvLatentActionModel(conv_lam_cfg(cfg)).train()
    opt = torch.optim.Adam(lam.parameters(), lr=3e-3)
    for i in range(200):
        frames, _ = make_video(cfg, B=32, T=2, seed=1000 + i, step=2)
        loss, metrics = lam.loss(frames)
        opt.zero_grad()
        loss.backward()
        opt.step()
    lam.eval()
    frames, moves = make_video(cfg, B=512, T=2, seed=1, step=2)
    codes = lam.infer_actions(frames).flatten().numpy()
    nmi = normalized_mutual_information(codes, moves.flatten().numpy())
    shuffled = normalized_mutual_information(np.random.default_rng(0).permutation(codes), moves.flatten().numpy())
    _, held_out, _ = lam(frames)
    assert nmi > 0.5 and shuffled < 0.05, (nmi, shuffled, np.bincount(codes, minlength=8))
    assert held_out["action_sensitivity"] > 1.5, held_out


# ---------------------------------------------------------------------------------------- configs


def test_conv_kinds_link_vocabulary_and_actions(cfg):
    gcfg = conv_genie_cfg(cfg)
    d = gcfg.dynamics
    assert gcfg.tokenizer.num_codes == d.vocab_size == 8 * 5 * 5 * 5
    assert gcfg.lam.num_actions == d.num_actions == 8 and gcfg.lam.action_dim == d.action_dim == 3
    assert tuple(d.grid) == (4, 4)
    # the ST kinds keep reading their quantizers
    assert cfg.tokenizer.num_codes == cfg.tokenizer.quantizer.num_codes == 32
    assert (cfg.lam.num_actions, cfg.lam.action_dim) == (4, 8)
    # the mirrored dynamics fields are computed by GenieConfig, never copied: a dynamics config made
    # for the ST models takes the conv models' values when composed with them
    d = GenieConfig(gcfg.tokenizer, gcfg.lam, cfg.dynamics).dynamics
    assert (d.vocab_size, d.num_actions, d.action_dim) == (1000, 8, 3)
    assert d.transformer == cfg.dynamics.transformer and d.context == cfg.dynamics.context


def test_ground_truth_actions_need_not_match_the_lam(cfg):
    tok, lam = conv_tok_cfg(cfg), conv_lam_cfg(cfg)
    gt = GenieConfig(tok, lam, dataclasses.replace(DynamicsConfig(), action_dim=4, action_source="ground_truth"))
    assert gt.dynamics.action_dim == 4
    latent = dataclasses.replace(gt, dynamics=dataclasses.replace(gt.dynamics, action_source="latent"))
    assert latent.dynamics.action_dim == 3  # latent actions: the LAM's
    with pytest.raises(ValueError, match="action_source"):
        dataclasses.replace(gt.dynamics, action_source="oracle")
    with pytest.raises(ValueError, match="action_dropout"):
        dataclasses.replace(gt.dynamics, action_dropout=1.0)


def test_conv_configs_round_trip_through_json(cfg):
    gcfg = conv_genie_cfg(cfg, action_dropout=0.25, guidance=1.5)
    back = GenieConfig.from_dict(json.loads(json.dumps(gcfg.to_dict())))
    assert back == gcfg
    assert back.tokenizer.channels == (8, 8, 16) and back.lam.fsq_levels == (2, 2, 2)  # tuples again


def test_old_configs_without_the_new_fields_load_as_the_st_kinds():
    d = preset("tiny").to_dict()
    for part, names in (("tokenizer", ["kind", "channels", "fsq_levels"]),
                        ("lam", ["kind", "channels", "decoder_channels", "fsq_levels", "var_floor"]),
                        ("dynamics", ["action_dropout", "guidance", "action_source"])):
        for name in names:
            del d[part][name]
    old = GenieConfig.from_dict(d)
    assert old == preset("tiny")
    assert (old.tokenizer.kind, old.lam.kind, old.dynamics.action_source) == ("st_vivit", "st_transformer", "latent")
    assert isinstance(build_tokenizer(old.tokenizer), VideoTokenizer)
    assert isinstance(build_lam(old.lam), LatentActionModel)


def test_conv_tokenizer_channels_must_fit_the_patch(cfg):
    with pytest.raises(ValueError, match=r"2 channel widths downsample by 2, but patch is 4.*log2\(patch\) \+ 1"):
        dataclasses.replace(cfg.tokenizer, kind="conv", channels=(8, 16))
    with pytest.raises(ValueError, match="kind must be 'st_vivit' or 'conv'"):
        dataclasses.replace(cfg.tokenizer, kind="convolutional")
    with pytest.raises(ValueError, match="kind must be 'st_transformer' or 'conv'"):
        dataclasses.replace(cfg.lam, kind="cnn")
    dataclasses.replace(cfg.tokenizer, channels=(8, 16))  # the ST tokenizer ignores `channels`


def test_genie_builds_the_conv_kinds_and_rolls_out(cfg, make_video):
    gcfg = conv_genie_cfg(cfg)
    genie = Genie(gcfg).eval()
    assert isinstance(genie.tokenizer, ConvTokenizer) and isinstance(genie.lam, ConvLatentActionModel)
    cost = model_cost(gcfg)
    for part, module in (("tokenizer", genie.tokenizer), ("lam", genie.lam), ("dynamics", genie.dynamics)):
        assert cost[part]["params"] == sum(p.numel() for p in module.parameters()), part
    assert cost["tokenizer"]["decode_flops_per_frame"] > 0 and cost["lam"]["flops_per_frame"] > 0
    frames, _ = make_video(cfg, B=2, T=3)
    from genie_robot.runtime.world_model import WorldModel

    out = WorldModel.from_genie(genie).rollout(frames.numpy(), np.array([[0], [7]]))
    assert out.shape == (2, 1, 16, 16, 3) and out.dtype == np.uint8


def test_token_input_lam_reads_the_conv_tokenizers_vocabulary(cfg):
    tok = conv_tok_cfg(cfg)
    lam = dataclasses.replace(cfg.lam, input="tokens", patch=4, token_vocab=1000)
    GenieConfig(tok, lam, DynamicsConfig())  # 1000 = 8*5*5*5 codes, not the unused VQ's 32
    with pytest.raises(ValueError, match="LAM token_vocab 32 != tokenizer codes 1000"):
        GenieConfig(tok, dataclasses.replace(lam, token_vocab=32), DynamicsConfig())
