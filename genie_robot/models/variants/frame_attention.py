"""The tokenizer ablation (Genie, Table 3): ViT and C-ViViT blocks in place of the ST-Transformer's STBlock.

`TokenizerConfig.attention` chooses what the second attention layer of each block sees; everything
else (parameters, positions, FFN) is shared with STBlock, so the variants differ only in that key set:
    "st"      (ST-ViViT, default) the same token position in this and earlier frames (STBlock, the core)
    "spatial" (ViT)  the tokens of its own frame again: no information crosses frames (ViTBlock)
    "full"    (C-ViViT) every token of this and earlier frames, causal by frame (CViViTBlock)
Both register in `st_transformer.BLOCKS`, so `STTransformer(..., attention="full")` builds them. They
stream with the one cached `step` too: a ViT needs no cache; C-ViViT reads all N tokens of each cached
frame, in the same cache tensor (B, N, G, R, E). docs/ablations.md has the measured comparison.

Shapes as in st_transformer.py: B batch, T frames, N tokens per frame, M width, G heads, R = window
(cache slots), E head dim, J = T*N (C-ViViT's sequence of keys).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..configs import TransformerConfig
from ..st_transformer import BLOCKS, Attention, banded_causal_mask


class FrameBlock(nn.Module):
    """Spatial attention -> a second attention -> FFN. Same parameters as STBlock; the second layer
    (`norm_2`, `attn_2`) is where the subclasses differ."""

    def __init__(self, c: TransformerConfig):
        super().__init__()
        M = c.width
        self.norm_s, self.spatial = nn.LayerNorm(M), Attention(M, c.heads)
        self.norm_2, self.attn_2 = nn.LayerNorm(M), Attention(M, c.heads)
        self.norm_f = nn.LayerNorm(M)
        self.ffn = nn.Sequential(nn.Linear(M, c.ffn_width), nn.GELU(), nn.Linear(c.ffn_width, M))


class ViTBlock(FrameBlock):
    """`attention="spatial"` (ViT): the second attention sees the tokens of its own frame again."""

    @staticmethod
    def mask(T: int, N: int, window: int, device) -> None:
        return None  # frames are independent

    def forward(self, x_BTNM: Tensor, mask: None = None) -> Tensor:
        B, T, N, M = x_BTNM.shape
        x = x_BTNM + self.spatial(self.norm_s(x_BTNM).reshape(B * T, N, M)).view(B, T, N, M)
        x = x + self.attn_2(self.norm_2(x).reshape(B * T, N, M)).view(B, T, N, M)
        return x + self.ffn(self.norm_f(x))

    def step(self, x_BNM: Tensor, keys_BNGRE: Tensor, values_BNGRE: Tensor, bias_111R: Tensor
             ) -> tuple[Tensor, Tensor, Tensor]:
        """One frame, as STBlock.step; ignores the cache and returns zero K/V."""
        B, N, M = x_BNM.shape
        x = x_BNM + self.spatial(self.norm_s(x_BNM))
        x = x + self.attn_2(self.norm_2(x))
        zeros = keys_BNGRE.new_zeros(B * N, *keys_BNGRE.shape[2:3], keys_BNGRE.shape[4])
        return x + self.ffn(self.norm_f(x)), zeros, zeros


class CViViTBlock(FrameBlock):
    """`attention="full"` (C-ViViT): the second attention sees every token of this and earlier frames
    (causal by frame, banded to the window, full within a frame)."""

    @staticmethod
    def mask(T: int, N: int, window: int, device) -> Tensor:
        """(J, J) bool, J = T*N: token (t, n) attends (t', n') for t - window < t' <= t, any n'."""
        mask_TT = banded_causal_mask(T, window, device)
        return mask_TT[:, None, :, None].expand(T, N, T, N).reshape(T * N, T * N)

    def forward(self, x_BTNM: Tensor, mask_JJ: Tensor) -> Tensor:
        B, T, N, M = x_BTNM.shape
        x = x_BTNM + self.spatial(self.norm_s(x_BTNM).reshape(B * T, N, M)).view(B, T, N, M)
        x = x + self.attn_2(self.norm_2(x).reshape(B, T * N, M), mask=mask_JJ).view(B, T, N, M)
        return x + self.ffn(self.norm_f(x))

    def step(self, x_BNM: Tensor, keys_BNGRE: Tensor, values_BNGRE: Tensor, bias_111R: Tensor
             ) -> tuple[Tensor, Tensor, Tensor]:
        """One frame, as STBlock.step: the cache keeps the K/V of all N tokens per frame in the same
        (B, N, G, R, E) layout, and the frame attends over all N*R of them plus its own N."""
        B, N, M = x_BNM.shape
        x = x_BNM + self.spatial(self.norm_s(x_BNM))
        q_BGNE, k_BGNE, v_BGNE = self.attn_2.project(self.norm_2(x))
        G, R, E = q_BGNE.shape[1], keys_BNGRE.shape[3], q_BGNE.shape[3]
        # cached key (r, n) is token n of the frame in slot r; then the frame's own N tokens
        keys = keys_BNGRE.permute(0, 2, 3, 1, 4).reshape(B, G, R * N, E).to(q_BGNE.dtype)
        values = values_BNGRE.permute(0, 2, 3, 1, 4).reshape(B, G, R * N, E).to(q_BGNE.dtype)
        bias_111J = torch.cat([bias_111R[..., None].expand(1, 1, 1, R, N).reshape(1, 1, 1, R * N),
                               bias_111R.new_zeros(1, 1, 1, N)], dim=-1)
        y = F.scaled_dot_product_attention(q_BGNE, torch.cat([keys, k_BGNE], 2), torch.cat([values, v_BGNE], 2),
                                           attn_mask=bias_111J)
        x = x + self.attn_2.merge(y)
        new_k, new_v = (t.transpose(1, 2).reshape(B * N, G, E) for t in (k_BGNE, v_BGNE))
        return x + self.ffn(self.norm_f(x)), new_k, new_v


BLOCKS.update(spatial=ViTBlock, full=CViViTBlock)
