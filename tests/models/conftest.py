"""Shared fixtures for the model tests: tiny preset, one thread, fixed seeds."""

import pytest
import torch

from genie_robot.models import DynamicsModel, preset


@pytest.fixture(autouse=True)
def _determinism():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture
def cfg():
    return preset("tiny")


@pytest.fixture
def dyn(cfg):
    """A tiny dynamics model with a random unit-norm action table (as the LAM codebook would give)."""
    model = DynamicsModel(cfg.dynamics).eval()
    with torch.no_grad():
        model.action_table.copy_(torch.nn.functional.normalize(torch.randn_like(model.action_table), dim=-1))
    return model


@torch.no_grad()
def generate(dyn, tokens_BTN, actions_BTm1, action_B, *, steps, temperature, order="random", guidance=1.0, seed=0):
    """The next frame's tokens from a bare DynamicsModel: the prompt's K/V into a cache with the model's
    own cached step, then the library's one MaskGIT sampler (models/sampling.py) -> (B, N) int64."""
    import numpy as np

    from genie_robot.models.sampling import sample_frame

    B, T, N = tokens_BTN.shape
    kv, _ = dyn.init_cache(B)
    for t in range(T):
        action = actions_BTm1[:, t - 1] if t else dyn.no_action(action_B)
        dyn.transformer.write(kv, dyn.step(tokens_BTN[:, t], action, kv, t)[1], t)

    def logits_fn(tokens_BN, conditions):
        return [dyn.step(torch.from_numpy(tokens_BN), action_B if c else dyn.no_action(action_B), kv, T)[0].float().numpy()
                for c in conditions]

    return torch.from_numpy(sample_frame(logits_fn, B, N, dyn.mask_id, steps=steps, temperature=temperature,
                                         order=order, guidance=guidance, rng=np.random.default_rng(seed)))


@pytest.fixture
def sample_next():
    """`generate` above: the next frame's tokens from a bare DynamicsModel."""
    return generate


def random_frames(cfg, B=2, T=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    H, W = cfg.tokenizer.resolution
    return torch.randint(0, 256, (B, T, H, W, 3), dtype=torch.uint8, generator=g)


MOVES = ((0, 0), (1, 0), (0, 1), (-1, 0), (0, -1))  # stay, down, right, up, left (pixels per frame)


def moving_square_video(cfg, B=2, T=4, seed=0, step=1, moves_BTm1=None):
    """Learnable clips: a bright square on a dark gradient; between frames t and t+1 it makes move
    `moves_BTm1[b, t]` (an index into MOVES, default random in 1..4) of `step` pixels.
    Returns (uint8 frames (B, T, H, W, 3), moves (B, T-1))."""
    g = torch.Generator().manual_seed(seed)
    H, W = cfg.tokenizer.resolution
    if moves_BTm1 is None:
        moves_BTm1 = torch.randint(1, len(MOVES), (B, T - 1), generator=g)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    frames = torch.zeros(B, T, H, W, 3)
    for b in range(B):
        y, x = torch.randint(4, H - 8, (2,), generator=g).tolist()
        for t in range(T):
            if t > 0:
                dy, dx = MOVES[int(moves_BTm1[b, t - 1])]
                y, x = (y + dy * step) % (H - 4), (x + dx * step) % (W - 4)
            frames[b, t, ..., 0] = xx / W * 0.3
            frames[b, t, ..., 2] = yy / H * 0.3
            frames[b, t, y:y + 4, x:x + 4, :] = 0.9
    return (frames * 255).round().to(torch.uint8), moves_BTm1


@pytest.fixture
def make_random_frames():
    return random_frames


@pytest.fixture
def make_video():
    return moving_square_video
