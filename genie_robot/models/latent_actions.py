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

Input ablation (Genie, Table 2), `cfg.input`:
  "pixels"  (default, the paper's choice) patches of the frames, linearly embedded;
  "tokens"  the frozen tokenizer's token ids, embedded by a table, on the tokenizer's grid (so
            `cfg.patch` = the tokenizer's patch). The decoder still predicts next-frame pixels with the
            same MSE, so the two variants differ only in what the LAM sees. The tokens come from
            `tokens_BTN` (Genie.dynamics_loss passes the ones it computed) or from the tokenizer given
            to `attach_tokenizer` (Genie does it), so `infer_actions(frames)` keeps its signature.
            The runtime's ONNX `lam_encoder` graph reads pixels and supports only "pixels".

Convention (shared with the dynamics model): actions_BT1[:, t] is the transition x_t -> x_{t+1}.
Shapes: B batch, T frames, N patches (or tokens) per frame, P pixel values per patch, M width, D code dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .configs import LatentActionConfig
from .quantizer import VectorQuantizer
from .st_transformer import STTransformer, init_weights
from .tokenizer import start_at_zero, check_frames, patchify, to_float


class LatentActionModel(nn.Module):
    def __init__(self, cfg: LatentActionConfig):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = None  # input="tokens": see attach_tokenizer (a reference, not a sub-module)
        P, N = cfg.patch * cfg.patch * 3, cfg.num_tokens
        enc, dec, D = cfg.encoder, cfg.decoder, cfg.quantizer.code_dim
        # The input embedding is the one thing the "tokens" ablation swaps (pixels -> token embeddings).
        pixels = cfg.input == "pixels"
        if pixels:
            self.patch_embed = nn.Linear(P, enc.width)
        else:
            self.token_embed = nn.Embedding(cfg.token_vocab, enc.width)
        self.action_query = nn.Parameter(torch.randn(enc.width) * 0.02)
        self.encoder = STTransformer(enc, N + 1, cfg.context, cfg.random_time_offset)
        self.to_action = nn.Linear(enc.width, D)
        if cfg.latent_norm == "batch":
            self.latent_norm = nn.BatchNorm1d(D, affine=False)
        self.vq = VectorQuantizer(cfg.quantizer)
        if pixels:
            self.dec_patch_embed = nn.Linear(P, dec.width)
        else:
            self.dec_token_embed = nn.Embedding(cfg.token_vocab, dec.width)
        self.action_embed = nn.Linear(D, dec.width)
        self.decoder = STTransformer(dec, N, cfg.context, cfg.random_time_offset)
        self.to_pixels = nn.Linear(dec.width, P)
        self.apply(init_weights)

    def attach_tokenizer(self, tokenizer: nn.Module) -> None:
        """input="tokens": the (frozen) tokenizer whose `encode` gives the tokens when a caller passes
        frames only. Kept outside the module tree: its weights belong to the tokenizer, not the LAM."""
        object.__setattr__(self, "tokenizer", tokenizer)

    def _inputs(self, frames_BTHW3: Tensor, tokens_BTN: Tensor | None = None) -> Tensor:
        """What the encoder and decoder read: pixel patches (B, T, N, P) or token ids (B, T, N) int64."""
        if self.cfg.input == "pixels":
            return patchify(to_float(frames_BTHW3), self.cfg.patch)
        if tokens_BTN is None:
            if self.tokenizer is None:
                raise ValueError("LatentActionModel(input='tokens') needs tokenizer tokens: pass "
                                 "tokens_BTN=tokenizer.encode(frames), or attach_tokenizer(tokenizer) first")
            tokens_BTN = self.tokenizer.encode(frames_BTHW3)
        B, T = frames_BTHW3.shape[:2]
        if tuple(tokens_BTN.shape) != (B, T, self.cfg.num_tokens):
            raise ValueError(f"expected tokens (B, T, N) = {(B, T, self.cfg.num_tokens)} for these frames, "
                             f"got {tuple(tokens_BTN.shape)}")
        return tokens_BTN

    def _embed(self, x: Tensor, decoder: bool = False) -> Tensor:
        if self.cfg.input == "pixels":
            return (self.dec_patch_embed if decoder else self.patch_embed)(x)
        return (self.dec_token_embed if decoder else self.token_embed)(x)

    def _latents(self, x_BTNP: Tensor, t0_B: Tensor | None = None) -> Tensor:
        """Continuous latent actions z (B, T-1, D); z[:, t] is read at frame t+1, sees frames <= t+1."""
        h_BTNM = self._embed(x_BTNP)
        B, T, _, M = h_BTNM.shape
        query_BT1M = self.action_query.to(h_BTNM.dtype).expand(B, T, 1, M)
        y_BTNM = self.encoder(torch.cat([query_BT1M, h_BTNM], dim=2), t0_B)
        return self.latent(y_BTNM[:, 1:, 0])

    def latent(self, y_M: Tensor) -> Tensor:
        """Encoder output at the action token (…, M) -> continuous latent action (…, D)."""
        z = self.to_action(y_M)
        if self.cfg.latent_norm == "batch":
            z = self.latent_norm(z.reshape(-1, z.shape[-1])).reshape(z.shape)
        return z

    def _predict_next(self, x_BTNP: Tensor, aq_BT1D: Tensor, pixels_BTNP: Tensor | None = None) -> Tensor:
        """Predicted patches of frames 1..T-1 from frames 0..T-2 and actions (slot t: x_t + a_t).
        `pixels_BTNP`: the frames' pixel patches (decoder_residual adds x_t's to the prediction)."""
        h = self._embed(x_BTNP[:, :-1], decoder=True) + self.action_embed(aq_BT1D)[:, :, None, :]
        if self.cfg.decoder_frames == 1:  # each transition on its own: x_t + a_t -> x_{t+1}
            B, T1, N, M = h.shape
            out = self.to_pixels(self.decoder(h.reshape(B * T1, 1, N, M))).reshape(B, T1, N, -1)
        else:
            out = self.to_pixels(self.decoder(h))
        if self.cfg.decoder_residual:
            out = out + (x_BTNP if pixels_BTNP is None else pixels_BTNP)[:, :-1]
        return out

    def forward(self, frames_BTHW3: Tensor, tokens_BTN: Tensor | None = None) -> tuple[Tensor, dict[str, float], Tensor]:
        """-> (loss, metrics, actions_BT1). Used by `loss` and by Genie.dynamics_loss (stage 2).
        `tokens_BTN`: the tokenizer's tokens of the frames (input="tokens"; ignored for pixels)."""
        check_frames(frames_BTHW3, self.cfg.resolution, "LatentActionModel", min_frames=2)
        x_BTNP = self._inputs(frames_BTHW3, tokens_BTN)
        z_BT1D = self._latents(x_BTNP)
        B, T1, D = z_BT1D.shape
        aq_LD, actions_L, vq_loss, vq_metrics = self.vq(z_BT1D.reshape(B * T1, D))
        aq_BT1D = aq_LD.view(B, T1, D)
        pixels_BTNP = x_BTNP if self.cfg.input == "pixels" else patchify(to_float(frames_BTHW3), self.cfg.patch)
        target_BTNP = pixels_BTNP[:, 1:]
        mse = F.mse_loss(self._predict_next(x_BTNP, aq_BT1D, pixels_BTNP).float(), target_BTNP)
        loss = mse + vq_loss
        metrics = dict(zip(["loss", "mse", "vq_loss"], torch.stack([loss.detach(), mse.detach(), vq_loss.detach()]).tolist()))
        metrics.update({f"vq/{k}": v for k, v in vq_metrics.items()})
        if self.cfg.monitor_action_sensitivity and B * T1 > 1:
            with torch.no_grad():  # same frames, actions rolled by one across the batch
                shuffled = aq_LD.detach().roll(1, dims=0).view(B, T1, D)
                mse_shuffled = F.mse_loss(self._predict_next(x_BTNP, shuffled, pixels_BTNP).float(), target_BTNP)
            metrics["action_sensitivity"] = mse_shuffled.item() / max(mse.item(), 1e-12)
        return loss, metrics, actions_L.view(B, T1)

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
