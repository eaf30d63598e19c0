"""WorldModel.decode: the tokenizer decoder streamed over frames, so decode(encode(x)) is the runtime's
tokenizer reconstruction (bench/bench_int8.py measures its PSNR per bundle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def test_decode_of_encode_equals_the_tokenizers_own_reconstruction(onnx_wm, torch_wm, tiny_export, prompt):
    genie = tiny_export[2]
    tokens_BTN = onnx_wm.encode(prompt)
    with torch.no_grad():
        ref = genie.tokenizer.decode(torch.from_numpy(tokens_BTN)).numpy()
    for wm in (onnx_wm, torch_wm):
        got = wm.decode(tokens_BTN)
        assert got.shape == prompt[None].shape and got.dtype == np.uint8
        assert np.abs(got.astype(int) - ref).max() <= 1  # fp32 rounding at the uint8 boundary


def test_decode_refuses_what_is_not_tokens(onnx_wm):
    N, V = onnx_wm.num_tokens, onnx_wm.vocab_size
    with pytest.raises(ValueError, match=rf"expected integer tokens \(B, T, {N}\)"):
        onnx_wm.decode(np.zeros((2, N)))
    with pytest.raises(ValueError, match=rf"outside \[0, {V}\)"):
        onnx_wm.decode(np.full((1, 2, N), V))
