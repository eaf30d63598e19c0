"""Dynamics model: causality, action/frame alignment, MaskGIT training mask, cache, overfitting.

Alignment convention under test: actions[:, t] is the transition x_t -> x_{t+1}; it is added to
slot t+1 (the frame it produces), and the output at slot t+1 predicts frame t+1's tokens.
"""

import dataclasses

import pytest
import torch

from genie_robot.models import DynamicsModel


def data(cfg, B=2, T=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = cfg.dynamics
    tokens = torch.randint(0, d.vocab_size, (B, T, d.num_tokens), generator=g)
    actions = torch.randint(0, d.num_actions, (B, T - 1), generator=g)
    return tokens, actions


def test_logits_shape(cfg, dyn):
    tokens, actions = data(cfg)
    assert dyn(tokens, actions).shape == (2, 4, cfg.dynamics.num_tokens, cfg.dynamics.vocab_size)
    with pytest.raises(ValueError, match="one per transition"):
        dyn(tokens, actions[:, :2])


@pytest.mark.parametrize("t", [0, 1, 2])
def test_causal_in_frames(cfg, dyn, t):
    tokens, actions = data(cfg)
    logits = dyn(tokens, actions)
    later = tokens.clone()
    later[:, t + 1:] = data(cfg, seed=1)[0][:, t + 1:]
    torch.testing.assert_close(dyn(later, actions)[:, : t + 1], logits[:, : t + 1], rtol=0, atol=0)


@pytest.mark.parametrize("t", [0, 1, 2])
def test_action_t_reaches_frame_t_plus_1_and_not_earlier(cfg, dyn, t):
    tokens, actions = data(cfg)
    logits = dyn(tokens, actions)
    other = actions.clone()
    other[:, t] = (other[:, t] + 1) % cfg.dynamics.num_actions
    changed = dyn(tokens, other)
    torch.testing.assert_close(changed[:, : t + 1], logits[:, : t + 1], rtol=0, atol=0)
    assert not torch.allclose(changed[:, t + 1], logits[:, t + 1])


def test_training_mask_is_per_sample_and_spares_the_first_frame(cfg, dyn, monkeypatch):
    tokens, actions = data(cfg, B=32, T=4)
    seen = {}
    forward = dyn.forward

    def spy(tokens_in, actions_in, *rest):
        seen["tokens"] = tokens_in
        return forward(tokens_in, actions_in, *rest)

    monkeypatch.setattr(dyn, "forward", spy)
    embeddings = torch.nn.functional.normalize(torch.randn(cfg.dynamics.num_actions, cfg.dynamics.action_dim), dim=-1)
    loss, metrics = dyn.loss(tokens, actions, embeddings)
    masked = seen["tokens"] == dyn.mask_id
    assert not masked[:, 0].any()
    rate_B = masked[:, 1:].float().mean(dim=(1, 2))
    assert rate_B.min() > 0.35 and rate_B.max() <= 1.0 and rate_B.std() > 0.05  # ~U(0.5, 1) per sample
    assert torch.equal(dyn.action_table, embeddings)  # the LAM codebook is carried for inference
    assert loss.dtype == torch.float32 and set(metrics) >= {"loss", "masked_accuracy", "mask_fraction"}


@pytest.mark.parametrize("T", [5, 11])  # inside the window, and sliding past it (context = 8)
def test_cached_step_equals_full_forward(cfg, dyn, T):
    tokens, actions = data(cfg, T=T)
    tokens[:, -1, ::3] = dyn.mask_id  # a partially generated last frame
    full = dyn(tokens, actions)
    kv, pos = dyn.init_cache(2)
    none = torch.full((2,), -1)
    for t in range(T):
        logits, new = dyn.step(tokens[:, t], actions[:, t - 1] if t else none, kv, pos + t)
        dyn.transformer.write(kv, new, t)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-5, atol=1e-5)


def shift_data(cfg, B=8, T=4, seed=0):
    """Learnable dynamics: frame t+1 is frame t rolled by a_t positions."""
    g = torch.Generator().manual_seed(seed)
    d = cfg.dynamics
    actions = torch.randint(0, d.num_actions, (B, T - 1), generator=g)
    frames = [torch.randint(0, d.vocab_size, (B, d.num_tokens), generator=g)]
    for t in range(T - 1):
        frames.append(torch.stack([frames[-1][b].roll(int(actions[b, t])) for b in range(B)]))
    return torch.stack(frames, 1), actions


def test_overfits_a_tiny_batch(cfg):
    """Masked CE falls at least 5x within 150 Adam steps (measured: ~15x)."""
    tokens, actions = shift_data(cfg)
    dyn = DynamicsModel(cfg.dynamics).train()
    emb = torch.nn.functional.normalize(torch.randn(cfg.dynamics.num_actions, cfg.dynamics.action_dim), dim=-1)
    opt = torch.optim.Adam(dyn.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss, metrics = dyn.loss(tokens, actions, emb)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 5, (first, metrics)


def test_trained_model_generates_the_frame_its_action_asks_for(cfg, sample_next):
    """End-to-end alignment, training and sampling together: frame t+1 is a constant frame of token
    a_t, so only the action at the right slot can explain it. After training, generating from a
    prompt with action k must give the all-k frame, for every k. An off-by-one anywhere (a_t added
    to slot t, or sampling passing the action to the wrong frame) fails this."""
    d = cfg.dynamics
    dyn = DynamicsModel(d).train()
    emb = torch.nn.functional.normalize(torch.randn(d.num_actions, d.action_dim), dim=-1)
    opt = torch.optim.Adam(dyn.parameters(), lr=3e-3)
    for i in range(150):
        g = torch.Generator().manual_seed(i)
        actions = torch.randint(0, d.num_actions, (16, 3), generator=g)
        first = torch.randint(0, d.vocab_size, (16, 1, d.num_tokens), generator=g)
        tokens = torch.cat([first, actions[:, :, None].expand(16, 3, d.num_tokens)], dim=1)
        loss, _ = dyn.loss(tokens, actions, emb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dyn.eval()
    prompt = torch.randint(0, d.vocab_size, (d.num_actions, 2, d.num_tokens))
    prompt[:, 1] = 0  # the prompt's second frame came from action 0
    wanted = torch.arange(d.num_actions)
    tokens = sample_next(dyn, prompt, torch.zeros(d.num_actions, 1, dtype=torch.long), wanted, steps=4, temperature=0.0)
    assert torch.equal(tokens, wanted[:, None].expand_as(tokens))


def _training_inputs(dyn, tokens, actions, monkeypatch):
    """The tokens `dyn.loss` feeds its forward pass, and its loss."""
    seen, forward = {}, dyn.forward

    def spy(tokens_in, actions_in, *rest):
        seen["tokens"] = tokens_in
        return forward(tokens_in, actions_in, *rest)

    monkeypatch.setattr(dyn, "forward", spy)
    loss, _ = dyn.loss(tokens, actions)
    return seen["tokens"], loss


@pytest.mark.parametrize("per", ["sample", "frame"])
def test_mask_rate_per_sample_or_per_frame(cfg, per, monkeypatch):
    """mask_per="frame" draws each frame's rate on its own: frame 1's and frame 2's rates are then
    uncorrelated across samples, where one rate per sample makes them move together."""
    torch.manual_seed(0)
    dyn = DynamicsModel(dataclasses.replace(cfg.dynamics, mask_per=per, mask_rate=(0.0, 1.0)))
    tokens, actions = data(cfg, B=256, T=3)
    inputs, _ = _training_inputs(dyn, tokens, actions, monkeypatch)
    rate_BT = (inputs == dyn.mask_id).float().mean(-1)
    assert not rate_BT[:, 0].any()
    corr = torch.corrcoef(rate_BT[:, 1:].T)[0, 1].item()
    assert (corr > 0.6) if per == "sample" else (abs(corr) < 0.2), corr


def test_context_noise_replaces_visible_tokens_and_trains_on_them(cfg, monkeypatch):
    torch.manual_seed(0)
    tokens, actions = data(cfg, B=64, T=4)
    clean = DynamicsModel(dataclasses.replace(cfg.dynamics, mask_rate=(0.0, 0.0)))
    inputs, loss = _training_inputs(clean, tokens, actions, monkeypatch)
    assert torch.equal(inputs, tokens) and loss.item() == 0.0  # nothing masked, nothing to learn
    noisy = DynamicsModel(dataclasses.replace(cfg.dynamics, mask_rate=(0.0, 0.0), context_noise=0.5))
    inputs, loss = _training_inputs(noisy, tokens, actions, monkeypatch)
    changed_T = (inputs != tokens).float().mean(dim=(0, 2))
    assert changed_T[0] == 0 and 0.15 < changed_T[1:].mean() < 0.35  # ~ U(0, 0.5) x (1 - 1/V), never the prompt
    assert not (inputs == noisy.mask_id).any() and loss.item() > 0


def test_self_context_reads_back_the_models_own_guesses_and_trains_on_them(cfg, monkeypatch):
    """self_context=1: every sample's visible past is the model's one-pass argmax guess of the frames it
    hid (never the prompt); the real tokens stay the target, so the loss also covers the wrong guesses."""
    torch.manual_seed(0)
    tokens, actions = data(cfg, B=64, T=4)
    dyn = DynamicsModel(dataclasses.replace(cfg.dynamics, mask_rate=(0.0, 0.0), self_context=1.0))
    calls, forward = [], dyn.forward

    def spy(tokens_in, actions_in, *rest):
        out = forward(tokens_in, actions_in, *rest)
        calls.append((tokens_in, out.detach()))
        return out

    monkeypatch.setattr(dyn, "forward", spy)
    loss, _ = dyn.loss(tokens, actions)
    (hidden_in, guess_logits), (inputs, _) = calls  # the no-gradient guess, then the training pass
    hidden = hidden_in == dyn.mask_id
    assert not hidden[:, 0].any() and 0.5 < hidden[:, 1:].float().mean() < 0.8  # rate ~ U(0.3, 1)
    assert torch.equal(inputs, torch.where(hidden, guess_logits.argmax(-1), tokens))
    assert (inputs != tokens).any() and not (inputs == dyn.mask_id).any() and loss.item() > 0


def test_training_recipe_fields_are_checked(cfg):
    with pytest.raises(ValueError, match="mask_per"):
        dataclasses.replace(cfg.dynamics, mask_per="clip")
    with pytest.raises(ValueError, match="context_noise"):
        dataclasses.replace(cfg.dynamics, context_noise=1.0)
    with pytest.raises(ValueError, match="self_context"):
        dataclasses.replace(cfg.dynamics, self_context=1.5)
