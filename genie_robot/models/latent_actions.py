"""Latent action model (Genie section 2.1): discovers |A| discrete actions from unlabelled video.

A VQ-VAE over transitions, on pixels (patch 16 in the paper):
  encoder  sees x_1..x_{t+1} (causal ST-Transformer over patches plus one learned "action" token
           per frame) and emits a continuous latent per transition x_t -> x_{t+1}, read from the
           action token of frame t+1; quantized to |A| codes of D dims;
  decoder  sees x_1..x_t and the quantized actions a_1..a_t and predicts x_{t+1} (causal again:
           input slot t holds frame t's patches plus a_t added to every patch embedding).
The decoder exists only to train the LAM. Downstream, `infer_actions` labels videos and the
codebook (`action_embeddings`) becomes the dynamics model's action embedding table.

Failure this guards against: the decoder learns to predict x_{t+1} from x_1..x_t alone and
ignores the action, and the codes collapse (or the encoder spends its bits on appearance, an image
compressor). Guards: the action is only 3 bits (|A| = 8) and is added to *every* patch of the
decoder input, so it cannot be drowned out; the quantizer logs usage/perplexity and re-seeds dead
codes; and `loss` logs `action_sensitivity`, the decoder's MSE with the batch's actions shuffled
divided by its MSE with the true actions. A healthy LAM is well above 1; a value near 1 means the
action carries no information (stop and look at the codebook usage).

This is the paper's pixel-input LAM. Its ablations (Table 2's token input) and this repo's fixes
against collapse (decoder_frames=1, latent_norm="batch", decoder_residual) are subclasses registered
in `LAM_VARIANTS` from models/variants/lam_variants.py; `genie.build_lam(cfg)` builds the one `cfg` asks for.

Convention (shared with the dynamics model): actions_BTm1[:, t] is the transition x_t -> x_{t+1}.
Shapes: B batch, T frames, Tm1 = T-1 transitions, Z = B*(T-1) transitions flattened, N patches per frame,
P pixel values per patch, M width, D code dim.
"""

from __future__ import annotations

import functools
import importlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .configs import LatentActionConfig
from .quantizer import VectorQuantizer
from .st_transformer import STTransformer, init_weights
from .tokenizer import start_at_zero, check_frames, patchify, to_float

# (LatentActionConfig field, value) -> the LatentActionModel subclass that implements that value. The
# ablations register themselves from models/variants/lam_variants.py.
LAM_VARIANTS: dict[tuple[str, object], type["LatentActionModel"]] = {}


def lam_class(cfg: LatentActionConfig) -> type["LatentActionModel"]:
    """The class `cfg` asks for: LatentActionModel, the registered variant its fields name, or a class
    combining several (each is a cooperative subclass). Imports models/variants/ first (they register
    there), so that every way of building a LAM sees them."""
    importlib.import_module(f"{__package__}.variants")
    chosen = tuple(cls for (name, value), cls in LAM_VARIANTS.items() if getattr(cfg, name) == value)
    if len(chosen) > 1:
        return _combined(chosen)
    return chosen[0] if chosen else LatentActionModel


@functools.cache
def _combined(classes: tuple[type, ...]) -> type["LatentActionModel"]:
    return type("+".join(c.__name__ for c in classes), classes, {"__module__": classes[0].__module__})


class LatentActionModel(nn.Module):
    def __init__(self, cfg: LatentActionConfig):
        super().__init__()
        wanted = lam_class(cfg)
        if not issubclass(type(self), wanted):
            raise ValueError(f"this LatentActionConfig asks for the {wanted.__name__} variant, not "
                             f"{type(self).__name__}: build the LAM with genie_robot.models.genie.build_lam(cfg)")
        self.cfg = cfg
        P, N = cfg.patch * cfg.patch * 3, cfg.num_tokens
        enc, dec, D = cfg.encoder, cfg.decoder, cfg.quantizer.code_dim
        self.build_input_embedding(enc.width, "patch_embed")
        self.action_query = nn.Parameter(torch.randn(enc.width) * 0.02)
        self.encoder = STTransformer(enc, N + 1, cfg.context, cfg.random_time_offset)
        self.to_action = nn.Linear(enc.width, D)
        self.vq = VectorQuantizer(cfg.quantizer)
        self.build_input_embedding(dec.width, "dec_patch_embed")
        self.action_embed = nn.Linear(D, dec.width)
        self.decoder = STTransformer(dec, N, cfg.context, cfg.random_time_offset)
        self.to_pixels = nn.Linear(dec.width, P)
        self.apply(init_weights)

    # The steps below are where the variants (models/variants/lam_variants.py) hook in.

    def build_input_embedding(self, width: int, name: str) -> None:
        """The embedding of what the encoder (name "patch_embed") or the decoder ("dec_patch_embed")
        reads: one frame's patch (P pixel values) -> width."""
        setattr(self, name, nn.Linear(self.cfg.patch * self.cfg.patch * 3, width))

    def _inputs(self, frames_BTHW3: Tensor, tokens_BTN: Tensor | None = None) -> Tensor:
        """What the encoder and decoder read: the frames' pixel patches (B, T, N, P). `tokens_BTN`, the
        tokenizer's tokens of the frames (Genie passes them), is for a LAM that reads tokens."""
        return patchify(to_float(frames_BTHW3), self.cfg.patch)

    def _pixel_patches(self, frames_BTHW3: Tensor, x_BTNP: Tensor) -> Tensor:
        """The frames' pixel patches (B, T, N, P), which the decoder predicts: here the inputs themselves."""
        return x_BTNP

    def _embed(self, x_BTNP: Tensor, decoder: bool = False) -> Tensor:
        return (self.dec_patch_embed if decoder else self.patch_embed)(x_BTNP)

    def _latents(self, x_BTNP: Tensor, t0_B: Tensor | None = None) -> Tensor:
        """Continuous latent actions z (B, T-1, D); z[:, t] is read at frame t+1, sees frames <= t+1."""
        h_BTNM = self._embed(x_BTNP)
        B, T, _, M = h_BTNM.shape
        query_BT1M = self.action_query.to(h_BTNM.dtype).expand(B, T, 1, M)
        y_BTNM = self.encoder(torch.cat([query_BT1M, h_BTNM], dim=2), t0_B)
        return self.latent(y_BTNM[:, 1:, 0])

    def latent(self, y_M: Tensor) -> Tensor:
        """Encoder output at the action token (…, M) -> continuous latent action (…, D)."""
        return self.to_action(y_M)

    def _decode(self, h_BTNM: Tensor) -> Tensor:
        """The decoder over the input slots (slot t: x_t + a_t), causal in time: sees x_1..x_t."""
        return self.decoder(h_BTNM)

    def _predict_next(self, x_BTNP: Tensor, aq_BTm1D: Tensor, pixels_BTNP: Tensor | None = None) -> Tensor:
        """Predicted patches of frames 1..T-1 from frames 0..T-2 and actions (slot t: x_t + a_t).
        `pixels_BTNP` (`_pixel_patches`): unused by the paper's decoder; a variant's may add x_t's."""
        h = self._embed(x_BTNP[:, :-1], decoder=True) + self.action_embed(aq_BTm1D)[:, :, None, :]
        return self.to_pixels(self._decode(h))

    def forward(self, frames_BTHW3: Tensor, tokens_BTN: Tensor | None = None) -> tuple[Tensor, dict[str, float], Tensor]:
        """-> (loss, metrics, actions_BTm1). Used by `loss` and by Genie.dynamics_loss (stage 2)."""
        check_frames(frames_BTHW3, self.cfg.resolution, "LatentActionModel", min_frames=2)
        x_BTNP = self._inputs(frames_BTHW3, tokens_BTN)
        z_BTm1D = self._latents(x_BTNP)
        B, Tm1, D = z_BTm1D.shape
        aq_ZD, actions_Z, vq_loss, vq_metrics = self.vq(z_BTm1D.reshape(B * Tm1, D))
        aq_BTm1D = aq_ZD.view(B, Tm1, D)
        pixels_BTNP = self._pixel_patches(frames_BTHW3, x_BTNP)
        target_BTNP = pixels_BTNP[:, 1:]
        mse = F.mse_loss(self._predict_next(x_BTNP, aq_BTm1D, pixels_BTNP).float(), target_BTNP)
        loss = mse + vq_loss
        metrics = dict(zip(["loss", "mse", "vq_loss"], torch.stack([loss.detach(), mse.detach(), vq_loss.detach()]).tolist()))
        metrics.update({f"vq/{k}": v for k, v in vq_metrics.items()})
        if self.cfg.monitor_action_sensitivity and B * Tm1 > 1:
            with torch.no_grad():  # same frames, actions rolled by one across the batch
                shuffled = aq_ZD.detach().roll(1, dims=0).view(B, Tm1, D)
                mse_shuffled = F.mse_loss(self._predict_next(x_BTNP, shuffled, pixels_BTNP).float(), target_BTNP)
            metrics["action_sensitivity"] = mse_shuffled.item() / max(mse.item(), 1e-12)
        return loss, metrics, actions_Z.view(B, Tm1)

    def loss(self, frames_BTHW3: Tensor, tokens_BTN: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """Next-frame MSE (on [-1, 1] pixels) + VQ loss."""
        loss, metrics, _ = self(frames_BTHW3, tokens_BTN)
        return loss, metrics

    @torch.no_grad()
    def infer_actions(self, frames_BTHW3: Tensor, tokens_BTN: Tensor | None = None) -> Tensor:
        """uint8 (B, T, H, W, 3) -> actions (B, T-1) int64 in [0, |A|); [:, t] labels x_t -> x_{t+1}."""
        check_frames(frames_BTHW3, self.cfg.resolution, "LatentActionModel.infer_actions", min_frames=2)
        x_BTNP = self._inputs(frames_BTHW3, tokens_BTN)
        return self.vq.quantize(self._latents(x_BTNP, start_at_zero(x_BTNP)))

    def action_embeddings(self) -> Tensor:
        """(|A|, D) normalised codebook, detached: the dynamics model's action table (stop-gradient)."""
        return self.vq.embeddings().detach()
