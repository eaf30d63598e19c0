"""The shared ST-Transformer: causality, cache == full recompute, sliding window, time encoding."""

import pytest
import torch

from genie_robot.models.configs import TransformerConfig
from genie_robot.models.st_transformer import STTransformer


def make(window=4, depth=2):
    torch.manual_seed(0)
    return STTransformer(TransformerConfig(width=32, depth=depth, heads=4, ffn_width=48), num_tokens=5, window=window).eval()


def test_shapes_and_block_structure():
    st = make()
    x = torch.randn(2, 3, 5, 32)
    assert st(x).shape == (2, 3, 5, 32)
    block = st.blocks[0]
    # spatial attention, temporal attention, exactly one FFN per block; positions only at the input
    assert {n for n, _ in block.named_children()} == {"norm_s", "spatial", "norm_t", "temporal", "norm_f", "ffn"}
    assert not any("pos" in n for n, _ in block.named_parameters())


@pytest.mark.parametrize("t", [0, 1, 2])
def test_causal_in_time(t):
    st = make(window=8)
    x = torch.randn(2, 4, 5, 32)
    y = st(x)
    x2 = x.clone()
    x2[:, t + 1:] += torch.randn_like(x2[:, t + 1:])
    y2 = st(x2)
    torch.testing.assert_close(y2[:, : t + 1], y[:, : t + 1], rtol=0, atol=0)
    assert not torch.allclose(y2[:, t + 1:], y[:, t + 1:])


@pytest.mark.parametrize("T,window", [(4, 4), (3, 6), (9, 4)])  # within the window, and sliding past it
def test_cached_steps_equal_full_recompute(T, window):
    st = make(window=window)
    x = torch.randn(2, T, 5, 32)
    full = st(x)
    kv = st.init_cache(2)
    assert kv.shape == (2, 2, 2, 5, 4, window, 8)  # (L, 2, B, N, heads, window, head_dim)
    for t in range(T):
        y, new = st.step(x[:, t], kv, torch.tensor(t))
        assert new.shape == (2, 2, 2, 5, 4, 8)  # this frame's K/V, for its ring slot
        assert st.write(kv, new, t).data_ptr() == kv.data_ptr()  # in place: constant memory
        torch.testing.assert_close(y, full[:, t], rtol=1e-5, atol=1e-5)


def test_step_reads_the_cache_and_takes_layer_views_alike():
    st = make(window=3)
    x = torch.randn(1, 5, 5, 32)
    kv = st.init_cache(1)
    for t in range(4):
        st.write(kv, st.step(x[:, t], kv, t)[1], t)
    before = kv.clone()
    y, new = st.step(x[:, 4], kv, 4)
    torch.testing.assert_close(kv, before, rtol=0, atol=0)  # read-only: the caller writes
    views = list(kv.flatten(0, 1).unbind(0))  # [k0, v0, k1, v1]: how the exported graphs take it
    y_views, new_views = st.step(x[:, 4], views, 4)
    torch.testing.assert_close(y_views, y, rtol=0, atol=0)
    torch.testing.assert_close(new_views, new, rtol=0, atol=0)


def test_repeated_step_at_same_position_only_recomputes_new_frame():
    """MaskGIT refines frame t several times: past K/V must stay fixed, the last write wins."""
    st = make(window=4)
    x = torch.randn(1, 3, 5, 32)
    kv = st.init_cache(1)
    st.write(kv, st.step(x[:, 0], kv, 0)[1], 0)
    st.write(kv, st.step(x[:, 1], kv, 1)[1], 1)
    st.step(torch.randn(1, 5, 32), kv, 2)  # a draft of frame 2: computed, not written
    y, _ = st.step(x[:, 2], kv, 2)  # the final frame 2
    torch.testing.assert_close(y, st(x)[:, 2], rtol=1e-5, atol=1e-5)


def test_time_encoding_is_periodic_and_offsets_are_random_only_in_training():
    st = make()
    P = st.time_period
    t = torch.arange(0, 50)
    torch.testing.assert_close(st.time_embedding(t), st.time_embedding(t + 7 * P), rtol=0, atol=0)
    x = torch.randn(1, 3, 5, 32)
    torch.testing.assert_close(st(x), st(x))  # eval: deterministic, starts at frame 0
    st.train()
    assert not torch.allclose(st(x), st(x))  # random absolute start frame per clip
    # a start one full period later is the same clip (no jump where the encoding wraps around)
    st.eval()
    torch.testing.assert_close(st(x, torch.tensor([P])), st(x, torch.tensor([0])), rtol=1e-5, atol=1e-5)
