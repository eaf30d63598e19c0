"""Vector quantizer shared by the video tokenizer and the latent action model.

Straight-through VQ-VAE quantizer (van den Oord et al. 2017) with the two fixes that keep codebooks
alive (ViT-VQGAN, Yu et al. 2022): the lookup happens in a low-dimensional space (the model projects
to `code_dim` first) and both inputs and codes are l2-normalised, so the nearest code is the one with
the largest cosine similarity and no code can drift far away from the data.

Codebook collapse is the most reported failure of Genie reimplementations, so health is built in:
- every training step logs the batch `perplexity`, the fraction of codes used in the batch
  (`usage`), the perplexity of the EMA usage counters (`usage_perplexity`), the number of codes
  unused for over half of `dead_after` steps (`stale_codes`) and of codes re-seeded (`codes_reset`);
- a code unused for `dead_after` training steps is re-seeded from an encoder output of the current
  batch, drawn in proportion to its quantization error (dead-code reset), so capacity that
  collapsed comes back where it is most needed.
Statistics and resets happen only in training mode when `update` is not False; `quantize` (used by
encode / infer_actions) never changes state. Under torch.distributed the counts are summed over
ranks and rank 0's re-seeded codebook is broadcast, so replicas stay identical.

Shapes: Z vectors (any flattened batch), D code dim, V codes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .configs import QuantizerConfig


class VectorQuantizer(nn.Module):
    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        self.cfg = cfg
        V, D = cfg.num_codes, cfg.code_dim
        self.codebook = nn.Parameter(F.normalize(torch.randn(V, D), dim=-1))
        self.register_buffer("usage", torch.full((V,), 1.0 / V))  # EMA of the share of assignments
        self.register_buffer("last_used", torch.zeros(V, dtype=torch.long))  # step a code was last used
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training steps seen

    def embeddings(self) -> Tensor:
        """(V, D) normalised codes: what downstream models embed (e.g. latent actions for dynamics)."""
        return F.normalize(self.codebook, dim=-1)

    def quantize(self, z_ZD: Tensor) -> Tensor:
        """Nearest code (max cosine similarity) per vector -> codes_Z int64. No state change."""
        return (F.normalize(z_ZD.float(), dim=-1) @ self.embeddings().float().t()).argmax(dim=-1)

    def forward(self, z_ZD: Tensor, update: bool = True) -> tuple[Tensor, Tensor, Tensor, dict[str, float]]:
        """-> (z_q_ZD straight-through, codes_Z, vq loss (fp32 scalar), metrics).

        loss = ||sg(z) - e||^2 (moves codes) + beta * ||z - sg(e)||^2 (commitment), on unit vectors.
        """
        z = F.normalize(z_ZD.float(), dim=-1)
        codes = self.quantize(z)
        e = self.embeddings().float()[codes]
        loss = F.mse_loss(e, z.detach()) + self.cfg.beta * F.mse_loss(z, e.detach())
        z_q = z + (e - z).detach()
        metrics = self._update(z.detach(), codes) if (update and self.training) else self._stats(codes)
        return z_q.to(z_ZD.dtype), codes, loss, metrics

    # --------------------------------------------------------------------------- codebook health

    @torch.no_grad()
    def _stats(self, codes: Tensor, extra: Tensor | None = None) -> dict[str, float]:
        counts = torch.bincount(codes, minlength=self.cfg.num_codes).float()
        return self._metrics(counts, extra)

    def _metrics(self, counts: Tensor, extra: Tensor | None) -> dict[str, float]:
        p = counts / counts.sum().clamp(min=1)
        perplexity = torch.exp(-(p * torch.log(p.clamp(min=1e-10))).sum())
        u = self.usage / self.usage.sum()
        usage_perplexity = torch.exp(-(u * torch.log(u.clamp(min=1e-10))).sum())
        used = (counts > 0).float().mean()
        values = [perplexity, used, usage_perplexity]
        names = ["perplexity", "usage", "usage_perplexity"]
        if extra is not None:
            values += list(extra)
            names += ["stale_codes", "codes_reset"]
        return dict(zip(names, torch.stack([v.float() for v in values]).tolist()))

    @torch.no_grad()
    def _update(self, z: Tensor, codes: Tensor) -> dict[str, float]:
        cfg = self.cfg
        counts = torch.bincount(codes, minlength=cfg.num_codes).float()
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.all_reduce(counts)
        self.steps += 1
        self.usage.mul_(cfg.usage_decay).add_(counts / counts.sum().clamp(min=1), alpha=1 - cfg.usage_decay)
        self.last_used[counts > 0] = self.steps
        dead = (self.steps - self.last_used) > cfg.dead_after
        n_dead = int(dead.sum())
        if n_dead:
            # Re-seed from encoder outputs of this batch, drawn in proportion to their quantization
            # error (k-means++ style): new codes go where the data is and is worst represented.
            error = 1 - (z * self.embeddings().float()[codes]).sum(-1)  # 1 - cosine similarity
            pick = torch.multinomial(error.clamp(min=1e-6), n_dead, replacement=True)
            # Jitter (to split repeated picks) far smaller than the spread of the batch: early in
            # training a LAM's outputs all lie within ~0.02 of their mean (cosine 0.9997), and a fixed
            # 0.01-per-dim jitter (norm 0.06 at D=32) put every re-seeded code farther from the data than
            # the one code in use, so none was ever picked and the LAM stayed collapsed.
            spread = (z - z.mean(0)).norm(dim=-1).mean()
            seeds = z[pick] + (0.05 * spread / z.shape[-1] ** 0.5) * torch.randn_like(z[pick])
            self.codebook.data[dead] = F.normalize(seeds, dim=-1).to(self.codebook.dtype)
            self.last_used[dead] = self.steps
            if distributed:
                dist.broadcast(self.codebook.data, src=0)
        stale = ((self.steps - self.last_used) > cfg.dead_after // 2).sum()  # heading for a reset
        return self._metrics(counts, torch.stack([stale.float(), torch.tensor(float(n_dead), device=stale.device)]))


class FSQ(nn.Module):
    """Finite scalar quantisation (Mentzer et al. 2023): each of the D latent dims is bounded by tanh
    and rounded to `levels[d]` values; the codebook is the implicit grid of prod(levels) points.

    There is no codebook to learn, so nothing can collapse onto one entry: with levels (2, 2, 2) the
    code is the sign of each of 3 dims (8 codes), with (8, 5, 5, 5) a 1000-code image tokenizer.
    What can still happen is that the encoder parks a dim on one side; `var_floor` adds
    `var_weight * relu(var_floor - batch variance)` per dim of the bounded latent to the loss
    (measured: needed for the 8-action LAM, see docs/latent_actions.md).

    Rounding uses a straight-through gradient. Code values lie in [-1, 1] per dim; `embeddings()`
    lists all of them in index order (mixed radix, first dim most significant).
    Shapes: Z vectors, D = len(levels), V = prod(levels).
    """

    def __init__(self, levels: tuple[int, ...], var_floor: float = 0.0, var_weight: float = 100.0):
        super().__init__()
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ levels must be integers >= 2, got {tuple(levels)}")
        self.levels = tuple(int(x) for x in levels)
        self.var_floor, self.var_weight = float(var_floor), float(var_weight)
        levels_D = torch.tensor(self.levels, dtype=torch.float32)
        self.register_buffer("_half", (levels_D - 1) / 2, persistent=False)  # bound: (-half, half)
        self.register_buffer("_even", (1 - levels_D % 2) * 0.5, persistent=False)  # 0.5 for even levels, else 0
        radix = [1]
        for n in reversed(self.levels[1:]):
            radix.insert(0, radix[0] * n)
        self.register_buffer("_radix", torch.tensor(radix, dtype=torch.long), persistent=False)

    @property
    def num_codes(self) -> int:
        return int(torch.tensor(self.levels).prod())

    def bound(self, z_ZD: Tensor) -> Tensor:
        return torch.tanh(z_ZD.float()) * self._half

    def _round(self, b_ZD: Tensor) -> Tensor:
        """Bounded values -> grid values in [-half, half] (half-integers for even levels)."""
        return torch.round(b_ZD - self._even) + self._even

    def codes_to_indices(self, q_ZD: Tensor) -> Tensor:
        digits = (q_ZD.float() + self._half).round().long()  # 0 .. levels-1
        return (digits * self._radix).sum(-1)

    def quantize(self, z_ZD: Tensor) -> Tensor:
        """Continuous latents (..., D) -> code indices (...) int64. No state."""
        return self.codes_to_indices(self._round(self.bound(z_ZD)))

    def embeddings(self) -> Tensor:
        """(V, D) every code's value, scaled to [-1, 1], in index order."""
        idx = torch.arange(self.num_codes, device=self._radix.device)
        digits = (idx[:, None] // self._radix) % torch.tensor(self.levels, device=idx.device)
        return (digits.float() - self._half) / self._half

    def forward(self, z_ZD: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, float]]:
        """-> (z_q_ZD in [-1, 1] straight-through, codes_Z, loss (variance floor, fp32), metrics)."""
        b = self.bound(z_ZD)
        q = self._round(b)
        codes = self.codes_to_indices(q)
        z_q = (b + (q - b).detach()) / self._half
        if self.var_floor > 0 and b.shape[0] > 1:
            var_D = (b / self._half).var(dim=0)
            loss = self.var_weight * F.relu(self.var_floor - var_D).sum()
        else:
            loss = b.new_zeros(())
        with torch.no_grad():
            counts = torch.bincount(codes, minlength=self.num_codes).float()
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(counts)
            p = counts / counts.sum().clamp(min=1)
            perplexity = torch.exp(-(p * torch.log(p.clamp(min=1e-10))).sum())
            stats = torch.stack([perplexity, (counts > 0).float().mean()]).tolist()
        return z_q.to(z_ZD.dtype), codes, loss, dict(zip(["perplexity", "usage"], stats))
