"""Dynamics-model actions beyond latent indices: ground-truth action vectors (NaN = none), action
dropout, classifier-free guidance, and Genie.dynamics_loss in its three modes (ground truth, LAM
co-trained, LAM frozen)."""

import dataclasses

import pytest
import torch

from genie_robot.models import DynamicsModel, Genie, GenieConfig

A = 4  # ground-truth action dim (the simulator's xyz + gripper)


@pytest.fixture
def gt_cfg(cfg):
    """The tiny preset with the dynamics model reading A-dim ground-truth action vectors."""
    return GenieConfig(cfg.tokenizer, cfg.lam,
                       dataclasses.replace(cfg.dynamics, action_source="ground_truth", action_dim=A), name="tiny-gt")


@pytest.fixture
def gt_dyn(gt_cfg):
    return DynamicsModel(gt_cfg.dynamics).eval()


def tokens_and_vectors(d, B=2, T=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, d.vocab_size, (B, T, d.num_tokens), generator=g),
            torch.randn(B, T - 1, A, generator=g))


def test_no_action_keeps_the_form_of_the_actions(dyn):
    ints = torch.tensor([[3, 0], [1, 2]])
    none = dyn.no_action(ints)
    assert none.dtype == torch.int64 and torch.equal(none, torch.full((2, 2), -1))
    vecs = torch.randn(2, 3, A)
    none = dyn.no_action(vecs)
    assert none.shape == vecs.shape and none.dtype == vecs.dtype and torch.isnan(none).all()


def test_nan_vectors_embed_to_zero_like_index_minus_one(gt_dyn, dyn):
    vecs = torch.randn(3, A)
    vecs[1] = float("nan")
    emb = gt_dyn.embed_actions(vecs)
    assert emb.shape == (3, gt_dyn.cfg.transformer.width) and not torch.isnan(emb).any()
    assert torch.equal(emb[1], torch.zeros_like(emb[1]))
    torch.testing.assert_close(emb[[0, 2]], gt_dyn.action_embed(vecs[[0, 2]]))
    assert torch.equal(dyn.embed_actions(torch.tensor([-1]))[0], torch.zeros_like(emb[1]))


def test_vector_actions_all_none_give_the_same_logits_as_indices_all_none(gt_dyn):
    d = gt_dyn.cfg
    tokens, _ = tokens_and_vectors(d)
    as_vectors = gt_dyn(tokens, torch.full((2, 3, A), float("nan")))
    as_indices = gt_dyn(tokens, torch.full((2, 3), -1))
    torch.testing.assert_close(as_vectors, as_indices, rtol=0, atol=0)
    assert not torch.isnan(as_vectors).any()


@pytest.mark.parametrize("t", [0, 1, 2])
def test_action_vector_t_reaches_frame_t_plus_1_and_not_earlier(gt_dyn, t):
    tokens, vecs = tokens_and_vectors(gt_dyn.cfg)
    logits = gt_dyn(tokens, vecs)
    assert logits.shape == (2, 4, gt_dyn.cfg.num_tokens, gt_dyn.cfg.vocab_size)
    other = vecs.clone()
    other[:, t] += 1.0
    changed = gt_dyn(tokens, other)
    torch.testing.assert_close(changed[:, : t + 1], logits[:, : t + 1], rtol=0, atol=0)
    assert not torch.allclose(changed[:, t + 1], logits[:, t + 1])
    with pytest.raises(ValueError, match="one per transition"):
        gt_dyn(tokens, vecs[:, :2])


def test_cached_step_with_vectors_equals_full_forward(gt_dyn):
    tokens, vecs = tokens_and_vectors(gt_dyn.cfg, T=5)
    vecs[0, 1] = float("nan")  # one transition without a known action
    full = gt_dyn(tokens, vecs)
    kv, pos = gt_dyn.init_cache(2)
    for t in range(5):
        action = vecs[:, t - 1] if t else torch.full((2, A), float("nan"))
        logits, new = gt_dyn.step(tokens[:, t], action, kv, pos + t)
        gt_dyn.transformer.write(kv, new, t)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-5, atol=1e-5)


def _actions_seen_by_forward(model, monkeypatch):
    seen = []
    forward = model.forward

    def spy(tokens_in, actions_in, *rest):
        seen.append(actions_in)
        return forward(tokens_in, actions_in, *rest)

    monkeypatch.setattr(model, "forward", spy)
    return seen


@pytest.mark.parametrize("vectors", [False, True])
def test_action_dropout_replaces_all_actions_of_some_samples(cfg, monkeypatch, vectors):
    d = dataclasses.replace(cfg.dynamics, action_dropout=0.3, **({"action_dim": A} if vectors else {}))
    model = DynamicsModel(d).train()
    seen = _actions_seen_by_forward(model, monkeypatch)
    B = 400
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, d.vocab_size, (B, 3, d.num_tokens), generator=g)
    actions = torch.randn(B, 2, A, generator=g) if vectors else torch.randint(0, d.num_actions, (B, 2), generator=g)
    model.loss(tokens, actions)
    got = seen[-1]
    none = torch.isnan(got) if vectors else got == -1
    dropped = none.flatten(1).all(1)
    assert torch.equal(none.flatten(1).any(1), dropped)  # a sample loses all its actions or none
    assert 0.22 < dropped.float().mean() < 0.38  # ~ action_dropout
    assert torch.equal(got[~dropped], actions[~dropped])
    # without dropout, the actions pass untouched
    model.cfg = dataclasses.replace(d, action_dropout=0.0)
    model.loss(tokens, actions)
    assert torch.equal(seen[-1], actions)


def test_guidance_without_an_action_is_plain_sampling_and_with_one_changes_it(cfg, sample_next):
    """uncond + w * (cond - uncond) = cond when the action is none, for any w."""
    d = cfg.dynamics
    torch.manual_seed(0)
    model = DynamicsModel(d).eval()
    with torch.no_grad():
        model.action_table.copy_(torch.randn_like(model.action_table))
        model.action_embed.weight.mul_(20)  # actions that matter, so guidance has something to scale
    prompt = torch.randint(0, d.vocab_size, (4, 2, d.num_tokens), generator=torch.Generator().manual_seed(1))

    def sample(action, guidance):
        return sample_next(model, prompt, torch.zeros(4, 1, dtype=torch.long), action, steps=3, temperature=1.0,
                        guidance=guidance, seed=2)

    none = torch.full((4,), -1)
    assert torch.equal(sample(none, 3.0), sample(none, 1.0))
    act = torch.tensor([0, 1, 2, 3])
    assert not torch.equal(sample(act, 3.0), sample(act, 1.0))


# ------------------------------------------------------------------------------ Genie.dynamics_loss


def _spy_dynamics_loss(genie, monkeypatch):
    seen = {}
    loss = genie.dynamics.loss

    def spy(tokens, actions, table=None):
        seen.update(tokens=tokens, actions=actions, table=table)
        return loss(tokens, actions, table)

    monkeypatch.setattr(genie.dynamics, "loss", spy)
    return seen


def test_ground_truth_mode_feeds_the_store_actions_and_leaves_the_lam_out(gt_cfg, make_random_frames, monkeypatch):
    genie = Genie(gt_cfg).train()
    frames = make_random_frames(gt_cfg, B=2, T=4)
    with pytest.raises(ValueError, match="transition_actions"):
        genie.dynamics_loss(frames)
    seen = _spy_dynamics_loss(genie, monkeypatch)
    actions = torch.randn(2, 3, A, dtype=torch.float64)
    loss, metrics = genie.dynamics_loss(frames, transition_actions=actions)
    assert seen["actions"].dtype == torch.float32 and torch.equal(seen["actions"], actions.float())
    assert seen["table"] is None
    assert not any(k.startswith("lam/") for k in metrics) and "dynamics/loss" in metrics
    loss.backward()
    assert all(p.grad is None for p in genie.lam.parameters())
    assert all(p.grad is None for p in genie.tokenizer.parameters())
    assert genie.dynamics.action_embed.weight.grad.abs().sum() > 0


def test_trainable_lam_is_co_trained(cfg, make_random_frames, monkeypatch):
    genie = Genie(cfg).train()
    frames = make_random_frames(cfg, B=2, T=4)
    seen = _spy_dynamics_loss(genie, monkeypatch)
    loss, metrics = genie.dynamics_loss(frames, transition_actions=torch.randn(2, 3, A))  # ignored: latent mode
    assert seen["actions"].shape == (2, 3) and seen["actions"].dtype == torch.int64
    assert torch.equal(seen["table"], genie.lam.action_embeddings())
    assert "lam/loss" in metrics and "dynamics/loss" in metrics
    assert metrics["loss"] == pytest.approx(metrics["lam/loss"] + metrics["dynamics/loss"], rel=1e-4)
    loss.backward()
    assert sum(p.grad.abs().sum() for p in genie.lam.parameters() if p.grad is not None) > 0


def test_frozen_lam_only_labels_the_transitions(cfg, make_random_frames, monkeypatch):
    genie = Genie(cfg).train()
    genie.lam.requires_grad_(False).eval()
    before = {k: v.clone() for k, v in genie.lam.state_dict().items()}
    frames = make_random_frames(cfg, B=2, T=4)
    seen = _spy_dynamics_loss(genie, monkeypatch)
    loss, metrics = genie.dynamics_loss(frames)
    assert torch.equal(seen["actions"], genie.lam.infer_actions(frames))
    assert torch.equal(seen["table"], genie.lam.action_embeddings())
    assert not any(k.startswith("lam/") for k in metrics)
    assert metrics["loss"] == pytest.approx(metrics["dynamics/loss"], rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in genie.lam.parameters())
    assert all(torch.equal(v, genie.lam.state_dict()[k]) for k, v in before.items())  # no stats, no resets
