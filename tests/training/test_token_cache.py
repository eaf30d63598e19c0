"""training/token_cache.py: stage 2 encodes each store frame once, and the tokens it hands out are the
tokenizer's own, whatever frames were encoded together."""

from __future__ import annotations

import torch

from genie_robot.models.configs import preset
from genie_robot.models.genie import build_tokenizer
from training.token_cache import TokenCache


def conv_tokenizer():
    cfg = preset("tiny").tokenizer
    cfg = type(cfg)(**{**cfg.__dict__, "kind": "conv", "channels": (8, 8, 16)})
    torch.manual_seed(0)
    return build_tokenizer(cfg).eval()


def test_each_frame_is_encoded_once_and_the_tokens_are_the_tokenizers():
    tok = conv_tokenizer()
    g = torch.Generator().manual_seed(0)
    store_FHW3 = torch.randint(0, 256, (40, 16, 16, 3), dtype=torch.uint8, generator=g)  # one store's frames
    stride, T = 2, 5
    encoded = []

    def encode(frames_BTHW3):
        encoded.append(frames_BTHW3.shape[1])
        return tok.encode(frames_BTHW3)

    cache = TokenCache(tok.cfg.num_tokens, tok.cfg.num_codes, stride)
    reference_FN = tok.encode(store_FHW3[None])[0]
    for firsts in ([0, 7, 3], [7, 12, 1], [0, 7, 3]):  # overlapping windows, then a repeat
        frame_B = torch.tensor(firsts)
        frames_BTHW3 = torch.stack([store_FHW3[f: f + stride * T: stride] for f in firsts])
        got_BTN = cache.tokens(encode, frames_BTHW3, torch.zeros(3, dtype=torch.long), frame_B)
        want_BTN = torch.stack([reference_FN[f: f + stride * T: stride] for f in firsts])
        assert torch.equal(got_BTN, want_BTN)
    distinct = {f + stride * t for firsts in ([0, 7, 3], [7, 12, 1]) for f in firsts for t in range(T)}
    assert sum(encoded) == cache.misses == len(distinct)  # every distinct frame once, the repeat from the cache
    assert cache.hits == 3 * 3 * T - len(distinct) and encoded[-1:] != [0]
    assert 0 < cache.hit_rate() < 1


def test_stores_are_kept_apart_and_grow_on_demand():
    tok = conv_tokenizer()
    frames_BTHW3 = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    cache = TokenCache(tok.cfg.num_tokens, tok.cfg.num_codes, 1)
    a = cache.tokens(tok.encode, frames_BTHW3, torch.tensor([0, 1]), torch.tensor([500, 500]))
    assert torch.equal(a, tok.encode(frames_BTHW3))
    assert set(cache.tokens_FN) == {0, 1} and len(cache.tokens_FN[0]) >= 503
    b = cache.tokens(tok.encode, frames_BTHW3.flip(0), torch.tensor([1, 0]), torch.tensor([500, 500]))
    assert torch.equal(b, a.flip(0)) and cache.misses == 6
