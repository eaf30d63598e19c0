"""Convolutional building blocks shared by the conv tokenizer and the conv latent action model.

`ResBlock`: GroupNorm -> SiLU -> 3x3 conv, twice, with a skip; optionally FiLM-conditioned (a
vector sets a per-channel scale and shift between the two convs). FiLM weights start near zero, so a
fresh block ignores its condition and learns how much to listen (the LAM decoder's action input).

Shapes: B batch, C channels, H, W pixels, D condition dim.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, cond_dim: int = 0):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.film = None
        if cond_dim:
            self.film = nn.Linear(cond_dim, 2 * c_out)
            nn.init.normal_(self.film.weight, std=1e-3)
            nn.init.zeros_(self.film.bias)

    def forward(self, x_BCHW: Tensor, cond_BD: Tensor | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x_BCHW)))
        h = self.norm2(h)
        if self.film is not None:
            scale, shift = self.film(cond_BD).chunk(2, dim=-1)
            h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        return self.skip(x_BCHW) + self.conv2(F.silu(h))
