"""Variants of the paper's latent action model (latent_actions.py), each a subclass that overrides one
of its steps, registered in `latent_actions.LAM_VARIANTS` under the config value that asks for it:

  input="tokens"        TokenInputLAM        the paper's input ablation (Genie, Table 2)
  decoder_frames=1      OneFrameDecoderLAM   not in the paper: fixes tried against code collapse on
  latent_norm="batch"   BatchNormLatentLAM   smooth robot video (LatentActionConfig's comments and
  decoder_residual=True ResidualDecoderLAM   docs/latent_actions.md have the measurements)

A config may ask for several: `lam_class` then builds a class combining them (they cooperate through
super()), and `build_lam(cfg)` returns an instance of it. Parameters and
state_dict keys are those of the single model these flags used to switch.

Shapes as in latent_actions.py: B batch, T frames, Tm1 = T-1 transitions, N patches (or tokens) per
frame, P pixel values per patch, M width, D code dim.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..latent_actions import LAM_VARIANTS, LatentActionModel
from ..tokenizer import patchify, to_float


class TokenInputLAM(LatentActionModel):
    """Input ablation (Genie, Table 2), `input="tokens"`: the LAM reads the frozen tokenizer's token ids,
    embedded by a table (`token_embed`, `dec_token_embed`, V = `token_vocab` rows) on the tokenizer's
    grid (so `cfg.patch` = the tokenizer's patch), instead of the pixels. The decoder still predicts
    next-frame pixels with the same MSE, so the two variants differ only in what the LAM sees. The
    tokens come from `tokens_BTN` (Genie.dynamics_loss passes the ones it computed) or from the
    tokenizer given to `attach_tokenizer` (Genie does it), so `infer_actions(frames)` keeps its
    signature. The runtime's ONNX `lam_encoder` graph reads pixels and supports only "pixels"."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.tokenizer = None  # see attach_tokenizer (a reference, not a sub-module)

    def build_input_embedding(self, width: int, name: str) -> None:
        """A table of V = token_vocab rows, named token_embed / dec_token_embed (the checkpoints' keys)."""
        setattr(self, name.replace("patch", "token"), nn.Embedding(self.cfg.token_vocab, width))

    def attach_tokenizer(self, tokenizer: nn.Module) -> None:
        """The (frozen) tokenizer whose `encode` gives the tokens when a caller passes frames only. Kept
        outside the module tree: its weights belong to the tokenizer, not the LAM."""
        object.__setattr__(self, "tokenizer", tokenizer)

    def _inputs(self, frames_BTHW3: Tensor, tokens_BTN: Tensor | None = None) -> Tensor:
        """The tokens (B, T, N) int64 of the frames."""
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

    def _pixel_patches(self, frames_BTHW3: Tensor, x_BTN: Tensor) -> Tensor:
        return patchify(to_float(frames_BTHW3), self.cfg.patch)

    def _embed(self, x_BTN: Tensor, decoder: bool = False) -> Tensor:
        return (self.dec_token_embed if decoder else self.token_embed)(x_BTN)


class OneFrameDecoderLAM(LatentActionModel):
    """`decoder_frames=1`: the decoder sees x_t only (each transition on its own: x_t + a_t -> x_{t+1}),
    not x_1..x_t. On smooth scripted robot motion the history already predicts the next frame, so the
    paper's decoder could ignore the action; with x_t only, the motion must go through it (as in
    LAPO-style forward models)."""

    def _decode(self, h_BTNM: Tensor) -> Tensor:
        B, Tm1, N, M = h_BTNM.shape
        return self.decoder(h_BTNM.reshape(B * Tm1, 1, N, M)).reshape(B, Tm1, N, M)


class BatchNormLatentLAM(LatentActionModel):
    """`latent_norm="batch"`: the continuous latents are standardised per dimension (BatchNorm without
    affine, running statistics at inference) before the l2-normalised lookup, so that a fresh encoder's
    latents, which all point the same way, spread over the codes from the first step."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.latent_norm = nn.BatchNorm1d(cfg.quantizer.code_dim, affine=False)

    def latent(self, y_M: Tensor) -> Tensor:
        z = super().latent(y_M)
        return self.latent_norm(z.reshape(-1, z.shape[-1])).reshape(z.shape)


class ResidualDecoderLAM(LatentActionModel):
    """`decoder_residual=True`: the decoder predicts the change x_{t+1} - x_t, added to x_t's pixels, so
    its width-M bottleneck spends nothing on re-drawing the static scene. `pixels_BTNP`: the frames'
    pixel patches (default: the inputs, which are pixels unless the LAM reads tokens)."""

    def _predict_next(self, x_BTNP: Tensor, aq_BTm1D: Tensor, pixels_BTNP: Tensor | None = None) -> Tensor:
        out = super()._predict_next(x_BTNP, aq_BTm1D, pixels_BTNP)
        return out + (x_BTNP if pixels_BTNP is None else pixels_BTNP)[:, :-1]


LAM_VARIANTS.update({
    ("input", "tokens"): TokenInputLAM,
    ("decoder_frames", 1): OneFrameDecoderLAM,
    ("latent_norm", "batch"): BatchNormLatentLAM,
    ("decoder_residual", True): ResidualDecoderLAM,
})
