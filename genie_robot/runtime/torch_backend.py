"""The four single-frame graphs of the runtime as torch modules, and the backend that runs them eagerly.

The same modules are what `export.py` hands to `torch.onnx.export`, so the torch and onnxruntime
backends compute the same function and the host code in `world_model.py` cannot tell them apart.

The graphs' contract with the host (names, inputs, cache layouts) is graphs.py. Each processes ONE frame
at absolute index `pos` against a read-only ring cache and returns that frame's new keys/values instead
of writing them: the host writes them into ring slot `pos % R` only when the frame is final. That way
the MaskGIT passes over a frame never copy the cache (at batch 64 the `cpu` dynamics cache is ~300 MB),
and the per-frame cost is constant. The host keeps one array per graph, and the graphs take its
per-layer views as separate inputs (`k0, v0, k1, v1, ...`), so nothing slices or copies the cache
inside the graph. Attention of frame `pos` over the cache: slots j <= pos except slot pos % R (it holds
frame pos - R, which leaves the window as this one enters), plus the frame itself.

Conv kinds (TokenizerConfig.kind / LatentActionConfig.kind == "conv") keep the same four graphs and the
same cache protocol, with small caches that fit it (`cache_shapes`):
    conv tokenizer encoder / decoder: frames are independent; a dummy cache (1, 2, B, 1, 1, context, 1)
        that the graph ignores, and new_kv zeros (1, 2, B, 1, 1, 1). R stays the tokenizer's context, so
        the host's ring arithmetic (slot pos % context) is the same for every kind.
    conv LAM encoder: the action of frame pos labels the pair (frame pos-1, frame pos), so the cache
        (1, 2, B, 1, 1, 1, H*W*3) holds the previous frame's float pixels in its key slot (value slot:
        zeros) and new_kv is this frame's. At pos 0 there is no previous frame: the frame is paired
        with itself (an action the host discards, as it discards the ST LAM's output for frame 0).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from genie_robot.models.conv_latent_actions import ConvLatentActionModel
from genie_robot.models.conv_tokenizer import ConvTokenizer
from genie_robot.models.genie import Genie
from genie_robot.models.tokenizer import patchify, to_float, to_uint8, unpatchify
from genie_robot.runtime.graphs import GRAPHS


def layer_views(kv: Tensor) -> list[Tensor]:
    """(L, 2, B, N, G, R, E) -> [k0, v0, k1, v1, ...] views, each (B, N, G, R, E)."""
    return list(kv.flatten(0, 1).unbind(0))


def _no_cache(kv: list[Tensor]) -> Tensor:
    """new_kv zeros (1, 2, B, 1, 1, 1) for the conv tokenizer's dummy cache (shaped like one slot of
    the cache inputs, so the batch axis is theirs in the exported graph)."""
    k, v = kv[0][:, :, :, 0], kv[1][:, :, :, 0]  # (B, 1, 1, 1)
    return torch.zeros_like(torch.stack((k, v))[None])


class ConvTokenizerEncoderStep(nn.Module):
    """ConvTokenizer.encode of one frame; the cache is a dummy (frames are independent)."""

    def __init__(self, genie: Genie):
        super().__init__()
        self.tok = genie.tokenizer

    def forward(self, frames_BHW3: Tensor, kv: list[Tensor], pos: Tensor) -> tuple[Tensor, Tensor]:
        z_BhwD = self.tok._latents(frames_BHW3[:, None])
        return self.tok.fsq.quantize(z_BhwD).flatten(1), _no_cache(kv)


class ConvTokenizerDecoderStep(nn.Module):
    """ConvTokenizer.decode of one frame; the cache is a dummy (frames are independent)."""

    def __init__(self, genie: Genie):
        super().__init__()
        self.tok = genie.tokenizer
        # the FSQ code table as a constant: fsq.embeddings() sizes an arange with a .item(), which the
        # exporter can only trace as a data-dependent size
        self.register_buffer("codes_VD", self.tok.fsq.embeddings(), persistent=False)

    def forward(self, tokens_BN: Tensor, kv: list[Tensor], pos: Tensor) -> tuple[Tensor, Tensor]:
        tok = self.tok
        h, w = tok.cfg.grid
        codes_BhwD = self.codes_VD[tokens_BN.view(tokens_BN.shape[0], h, w)]
        return to_uint8(tok._pixels(codes_BhwD)), _no_cache(kv)


class ConvLamEncoderStep(nn.Module):
    """ConvLatentActionModel.infer_actions of the pair (frame pos-1, frame pos); the cache holds frame
    pos-1's float pixels (key slot), new_kv frame pos's."""

    def __init__(self, genie: Genie):
        super().__init__()
        self.lam = genie.lam

    def forward(self, frames_BHW3: Tensor, kv: list[Tensor], pos: Tensor) -> tuple[Tensor, Tensor]:
        x_BHW3 = to_float(frames_BHW3)
        B = x_BHW3.shape[0]
        x_BD = x_BHW3.reshape(B, -1)
        prev_BD = torch.where(pos > 0, kv[0].reshape(B, -1), x_BD)  # frame 0: paired with itself (discarded)
        x_t = prev_BD.view(x_BHW3.shape).permute(0, 3, 1, 2)
        x_next = x_BHW3.permute(0, 3, 1, 2)
        action_B = self.lam.fsq.quantize(self.lam.encoder(x_t, x_next))
        new_kv = torch.stack((x_BD, torch.zeros_like(x_BD))).view(1, 2, B, 1, 1, -1).to(kv[0].dtype)
        return action_B, new_kv


class TokenizerEncoderStep(nn.Module):
    def __init__(self, genie: Genie):
        super().__init__()
        self.tok = genie.tokenizer

    def forward(self, frames_BHW3: Tensor, kv: list[Tensor], pos: Tensor) -> tuple[Tensor, Tensor]:
        x_BNP = patchify(to_float(frames_BHW3)[:, None], self.tok.cfg.patch)[:, 0]
        y_BNM, new = self.tok.encoder.step(self.tok.patch_embed(x_BNP), kv, pos)
        return self.tok.vq.quantize(self.tok.to_code(y_BNM)), new


class TokenizerDecoderStep(nn.Module):
    def __init__(self, genie: Genie):
        super().__init__()
        self.tok = genie.tokenizer

    def forward(self, tokens_BN: Tensor, kv: list[Tensor], pos: Tensor) -> tuple[Tensor, Tensor]:
        tok = self.tok
        y_BNM, new = tok.decoder.step(tok.from_code(tok.vq.embeddings()[tokens_BN]), kv, pos)
        frames = unpatchify(tok.to_pixels(y_BNM)[:, None], tok.cfg.patch, tok.cfg.grid)[:, 0]
        return to_uint8(frames), new


class LamEncoderStep(nn.Module):
    def __init__(self, genie: Genie):
        super().__init__()
        if genie.lam.cfg.input != "pixels":
            raise NotImplementedError(
                f"this latent action model reads tokenizer tokens (input={genie.lam.cfg.input!r}): the runtime's "
                "lam_encoder graph and export support only input='pixels'; use the torch model "
                "(LatentActionModel.infer_actions)")
        self.lam = genie.lam

    def forward(self, frames_BHW3: Tensor, kv: list[Tensor], pos: Tensor) -> tuple[Tensor, Tensor]:
        lam = self.lam
        h_BNM = lam.patch_embed(patchify(to_float(frames_BHW3)[:, None], lam.cfg.patch)[:, 0])
        query_B1M = lam.action_query.to(h_BNM.dtype).expand(h_BNM.shape[0], 1, h_BNM.shape[2])
        y_BNM, new = lam.encoder.step(torch.cat([query_B1M, h_BNM], dim=1), kv, pos)
        return lam.vq.quantize(lam.latent(y_BNM[:, 0])), new


class DynamicsStep(nn.Module):
    def __init__(self, genie: Genie):
        super().__init__()
        self.dyn = genie.dynamics

    def forward(self, tokens_BN: Tensor, action_B: Tensor, kv: list[Tensor], pos: Tensor) -> tuple[Tensor, Tensor]:
        logits_BNV, new = self.dyn.step(tokens_BN, action_B, kv, pos)
        return logits_BNV.float(), new


def step_module(genie: Genie, graph: str) -> nn.Module:
    """The torch module of one graph (graphs.GRAPHS), in eval mode."""
    conv_tok = isinstance(genie.tokenizer, ConvTokenizer)
    conv_lam = isinstance(genie.lam, ConvLatentActionModel)
    make = {
        "tokenizer_encoder": ConvTokenizerEncoderStep if conv_tok else TokenizerEncoderStep,
        "tokenizer_decoder": ConvTokenizerDecoderStep if conv_tok else TokenizerDecoderStep,
        "lam_encoder": ConvLamEncoderStep if conv_lam else LamEncoderStep,
        "dynamics_step": DynamicsStep,
    }[graph]
    return make(genie).eval()


def step_modules(genie: Genie) -> dict[str, nn.Module]:
    """All four graphs' modules (what export writes)."""
    return {graph: step_module(genie, graph) for graph in GRAPHS}


class TorchBackend:
    """Runs the step modules eagerly on the device `genie_robot.device.pick_device` chooses.

    Caches stay on that device as torch tensors; frames, tokens and logits cross to the host as numpy.
    """

    name = "torch"

    def __init__(self, genie: Genie, device: str | None = None):
        from genie_robot.device import pick_device

        self.device = pick_device(device)
        self.genie = genie.to(self.device).eval()
        # built on first use: a model whose LAM has no graph (input="tokens", an ablation) still rolls out
        # from given actions; only inferring actions with it fails, naming why
        self.modules: dict[str, nn.Module] = {}
        self.provider = f"torch:{self.device}"

    @torch.no_grad()
    def run(self, graph: str, *inputs):
        """inputs: numpy arrays / ints (host) or cache tensors -> (host output as numpy, new_kv on device)."""
        args = [layer_views(x) if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x), device=self.device)
                for x in inputs]
        if graph not in self.modules:
            self.modules[graph] = step_module(self.genie, graph)
        out, new = self.modules[graph](*args)
        return out.cpu().numpy(), new

    def run_all(self, graph: str, calls: list[tuple]) -> list[tuple]:
        """Independent runs of `graph`, one after another (torch shares its threads within each op)."""
        return [self.run(graph, *inputs) for inputs in calls]

    def zeros(self, shape: tuple[int, ...]) -> Tensor:
        return torch.zeros(shape, dtype=torch.float32, device=self.device)

    @staticmethod
    def write_slot(kv: Tensor, new: Tensor, slot: int) -> None:
        kv[:, :, :, :, :, slot] = new

    @staticmethod
    def repeat(kv: Tensor, times: int) -> Tensor:
        return kv.repeat_interleave(times, dim=2)

    @staticmethod
    def copy(kv: Tensor) -> Tensor:
        return kv.clone()

    @staticmethod
    def nbytes(kv: Tensor) -> int:
        return kv.numel() * kv.element_size()
