"""Frame metrics: PSNR and SSIM per frame, tokenizer reconstruction quality, and Genie's ΔPSNR.

ΔPSNR (Genie, arXiv 2402.15391, section 3): how much the latent actions control the generation.
    Δ_t PSNR = PSNR(x_t, x̂_t) − PSNR(x_t, x̂'_t)
x̂_t is generated from the real first frame with the latent actions the LAM infers from the real
clip; x̂'_t from the same frame with latent actions drawn uniformly at random (seeded). Both rollouts
share the MaskGIT sampling seed, so the actions are the only difference. The paper reports t = 4.

Frames are uint8 RGB (…, H, W, 3); PSNR uses a peak of 255 and is capped at `PSNR_CAP` dB so that
identical frames (MSE 0) do not turn averages into infinity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

PSNR_CAP = 100.0  # dB; the PSNR of identical frames


def _check_pair(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim < 3 or a.shape[-1] != 3 or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"{what}: expected two uint8 arrays (…, H, W, 3) of one shape, got "
                         f"{a.dtype} {a.shape} and {b.dtype} {b.shape}")
    return a, b


def psnr(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """PSNR in dB per frame: uint8 (…, H, W, 3) x2 -> float64 (…), capped at PSNR_CAP."""
    real, fake = _check_pair(real, fake, "psnr")
    mse = ((real.astype(np.float64) - fake.astype(np.float64)) ** 2).mean(axis=(-3, -2, -1))
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(255.0**2 / mse)
    return np.minimum(out, PSNR_CAP)


def ssim(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """SSIM per frame (skimage, Gaussian-free 7x7 window or the largest odd window that fits, over
    RGB channels): uint8 (…, H, W, 3) x2 -> float64 (…) in [-1, 1]."""
    from skimage.metrics import structural_similarity

    real, fake = _check_pair(real, fake, "ssim")
    lead = real.shape[:-3]
    H, W = real.shape[-3:-1]
    win = min(7, H, W)
    win -= 1 - win % 2  # odd
    if win < 3:
        raise ValueError(f"ssim: frames of {H}x{W} are too small (need at least 3x3)")
    r, f = real.reshape(-1, H, W, 3), fake.reshape(-1, H, W, 3)
    vals = [structural_similarity(r[i], f[i], channel_axis=-1, data_range=255, win_size=win) for i in range(len(r))]
    return np.asarray(vals, dtype=np.float64).reshape(lead)


@torch.no_grad()
def tokenizer_reconstruction(tokenizer, frames_BTHW3: torch.Tensor) -> dict:
    """Encode + decode real clips. Returns {"recon": uint8 (B, T, H, W, 3), "psnr": (B, T), "ssim": (B, T),
    "token_change", "patch_change"}: the share of tokens whose code differs from the previous frame's,
    and the share of p x p patches with a pixel that changed by more than 16 of 255 (what a tokenizer
    whose codes follow their own pixels would change; the dynamics model has to predict every flip)."""
    tokens_BTN = tokenizer.encode(frames_BTHW3)
    recon = tokenizer.decode(tokens_BTN).cpu().numpy()
    real = frames_BTHW3.cpu().numpy()
    B, T, H, W, _ = real.shape
    p = tokenizer.cfg.patch
    diff = np.abs(real[:, 1:].astype(np.int16) - real[:, :-1]).max(axis=-1)  # (B, T-1, H, W)
    patches = diff.reshape(B, T - 1, H // p, p, W // p, p).max(axis=(3, 5))
    changed = (tokens_BTN[:, 1:] != tokens_BTN[:, :-1]).float().mean().item() if T > 1 else float("nan")
    return {"recon": recon, "psnr": psnr(real, recon), "ssim": ssim(real, recon), "token_change": changed,
            "patch_change": float((patches > 16).mean()) if T > 1 else float("nan")}


def no_motion_psnr(frames_BTHW3: np.ndarray) -> np.ndarray:
    """(B, T-1) PSNR of the first frame held still against frames 1.. : the floor a generation PSNR
    has to rise above (a model that imagines no motion scores this)."""
    real = np.asarray(frames_BTHW3)
    return psnr(real[:, 1:], np.broadcast_to(real[:, :1], real[:, 1:].shape))


@dataclass
class DeltaPSNR:
    """Per-step results of `delta_psnr`; index t is the frame index in the clip (0 = the prompt)."""

    psnr_inferred_BT: np.ndarray  # (B, T), column 0 is the prompt frame (NaN: not generated)
    psnr_random_BT: np.ndarray
    frames_inferred_BTHW3: np.ndarray  # uint8, frame 0 = the real prompt
    frames_random_BTHW3: np.ndarray
    actions_inferred_BT: np.ndarray  # (B, T-1) int64, [:, t] drives x_t -> x_{t+1}
    actions_random_BT: np.ndarray

    @property
    def delta_T(self) -> np.ndarray:
        """(T,) mean over the batch of PSNR(inferred) - PSNR(random); NaN at t = 0."""
        d = (self.psnr_inferred_BT[:, 1:] - self.psnr_random_BT[:, 1:]).mean(axis=0)
        return np.concatenate([[np.nan], d])

    @classmethod
    def averaged(cls, runs: list["DeltaPSNR"]) -> "DeltaPSNR":
        """Several sampling seeds of the same clips as one: PSNRs averaged per clip and step (the expected
        PSNR of one sampled rollout, with less of the sampler's noise); frames and actions of the first."""
        if not runs:
            raise ValueError("DeltaPSNR.averaged: no runs")
        return dataclasses.replace(runs[0], psnr_inferred_BT=np.mean([r.psnr_inferred_BT for r in runs], axis=0),
                                   psnr_random_BT=np.mean([r.psnr_random_BT for r in runs], axis=0))

    def at(self, t: int = 4) -> float:
        """Δ_t PSNR (the paper's t = 4); t must lie in [1, T)."""
        T = self.psnr_inferred_BT.shape[1]
        if not 1 <= t < T:
            raise ValueError(f"ΔPSNR at t={t} needs clips of more than {t} frames, got {T}")
        return float(self.delta_T[t])


@torch.no_grad()
def delta_psnr(genie, clips_BTHW3: torch.Tensor | np.ndarray, *, seed: int = 0,
               actions_BTm1: torch.Tensor | None = None, **sampling) -> DeltaPSNR:
    """ΔPSNR of a Genie model on real clips uint8 (B, T, H, W, 3), T >= 2.

    Both rollouts start from the real frame 0 (`WorldModel.from_genie`: the runtime's inference path
    on this torch model) and generate frames 1..T-1: one driven by `genie.lam.infer_actions(clips)`,
    the other by actions drawn uniformly from [0, num_actions) with `seed`. MaskGIT sampling uses the
    same `seed` in both. `sampling` goes to the WorldModel (steps, temperature, order, guidance).

    `actions_BTm1`: given actions instead of the LAM's, e.g. the store's (B, T-1, A) float for the
    ground-truth-action control; the baseline is then the same actions shuffled across the batch
    (rolled by one clip), so both rollouts see actions from the same distribution."""
    from genie_robot.runtime.world_model import WorldModel

    clips = torch.as_tensor(np.asarray(clips_BTHW3)) if not isinstance(clips_BTHW3, torch.Tensor) else clips_BTHW3
    if clips.dtype != torch.uint8 or clips.ndim != 5 or clips.shape[1] < 2:
        raise ValueError(f"delta_psnr: expected uint8 clips (B, T>=2, H, W, 3), got {clips.dtype} {tuple(clips.shape)}")
    device = next(genie.parameters()).device
    clips = clips.to(device)
    was_training = genie.training
    genie.eval()
    try:
        if actions_BTm1 is not None:
            inferred = actions_BTm1.to(device)
            random = inferred.roll(1, dims=0)
        else:
            inferred = genie.lam.infer_actions(clips)  # (B, T-1)
            g = torch.Generator(device="cpu").manual_seed(seed)
            random = torch.randint(0, genie.cfg.dynamics.num_actions, inferred.shape, generator=g).to(device)

        real_BTHW3 = clips.cpu().numpy()

        def rollout(actions_BT: torch.Tensor) -> np.ndarray:
            wm = WorldModel.from_genie(genie, seed=seed, **sampling)
            imagined_BTHW3 = wm.rollout(real_BTHW3[:, :1], actions_BT.cpu().numpy())
            return np.concatenate([real_BTHW3[:, :1], imagined_BTHW3], 1)

        fake_inf, fake_rand = rollout(inferred), rollout(random)
    finally:
        genie.train(was_training)
    real = clips.cpu().numpy()
    p_inf, p_rand = psnr(real, fake_inf), psnr(real, fake_rand)
    p_inf[:, 0] = p_rand[:, 0] = np.nan
    return DeltaPSNR(p_inf, p_rand, fake_inf, fake_rand, inferred.cpu().numpy(), random.cpu().numpy())
