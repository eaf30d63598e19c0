"""Stage 2's tokens of the frozen per-frame tokenizer, kept per store frame as the windows arrive.

The conv tokenizer encodes every frame on its own, and stage 2 keeps it frozen, so a frame's tokens
never change during a run. Encoding each frame once instead of at every visit takes the tokenizer out
of most training steps: it was 1.1 s of a 3.8 s `cpu` dynamics step (batch 8 x 16 frames, one
thread, bf16), and 6,000 such steps visit each frame of the 2,000-episode default data ~6 times.

The cache lives in memory (N tokens per store frame, int16: 16 MB for 2,000 episodes of 64 frames)
and starts empty in every process, a resumed run's included. A frame's tokens do not depend on which
frames are encoded with it (tests/training/test_token_cache.py), so a run's numbers are the same with
or without the cache. Tokenizers with temporal context (the paper's ST-ViViT) are not cached: there a
frame's tokens depend on the frames before it in the window.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor


class TokenCache:
    """`tokens(encode, frames_BTHW3, store_B, frame_B)`: the windows' tokens, encoding only the frames
    not seen before; `stride`: store frames per window frame. Stores are the datasets' store indices;
    each one's table grows to the highest frame seen."""

    def __init__(self, num_tokens: int, vocab_size: int, stride: int):
        self.dtype = np.int16 if vocab_size <= np.iinfo(np.int16).max else np.int32
        self.num_tokens, self.stride = num_tokens, stride
        self.tokens_FN: dict[int, np.ndarray] = {}
        self.hits = self.misses = 0

    def _table(self, store: int, frames: int) -> np.ndarray:
        """Store `store`'s (F, N) table, -1 where unknown, with at least `frames` rows."""
        table = self.tokens_FN.get(store)
        if table is None or len(table) < frames:
            grown = np.full((max(frames, 2 * len(table) if table is not None else frames), self.num_tokens), -1,
                            self.dtype)
            if table is not None:
                grown[: len(table)] = table
            table = self.tokens_FN[store] = grown
        return table

    def tokens(self, encode: Callable[[Tensor], Tensor], frames_BTHW3: Tensor, store_B: Tensor, frame_B: Tensor
               ) -> Tensor:
        """frames (B, T, H, W, 3) of windows starting at store frame `frame_B` of store `store_B`, every
        `stride`-th frame -> tokens_BTN int64 (on the frames' device)."""
        B, T = frames_BTHW3.shape[:2]
        stores, firsts = store_B.cpu().numpy(), frame_B.cpu().numpy()
        index_BT = firsts[:, None] + self.stride * np.arange(T)
        out_BTN = np.stack([self._table(s, i[-1] + 1)[i] for s, i in zip(stores, index_BT)]).astype(np.int64)
        b, t = np.nonzero(out_BTN[..., 0] < 0)
        encoded = 0
        if len(b):  # encode each missing frame once, also when two windows of the batch share it
            keys = stores[b].astype(np.int64) << 40 | index_BT[b, t]
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            new_MN = encode(frames_BTHW3[torch.from_numpy(b[first]), torch.from_numpy(t[first])][None])[0].cpu().numpy()
            out_BTN[b, t] = new_MN[inverse]
            for s, i, tokens_N in zip(stores[b[first]], index_BT[b[first], t[first]], new_MN):
                self.tokens_FN[s][i] = tokens_N
            encoded = len(first)
        self.misses += encoded
        self.hits += B * T - encoded
        return torch.from_numpy(out_BTN).to(frames_BTHW3.device)

    def hit_rate(self) -> float:
        seen = self.hits + self.misses
        return self.hits / seen if seen else 0.0
