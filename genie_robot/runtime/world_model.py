"""`WorldModel`: the inference core that ROS nodes, planners, `genie-robot play` and tests call.

It owns the host side of generation -- ring caches, MaskGIT sampling in numpy (the schedule and
sampling rule of genie_robot/models/sampling.py), input checks -- and runs the four single-frame
graphs of torch_backend.py on a backend: "onnx" (onnxruntime, CPU or CUDA provider) or "torch"
(eager). Both backends compute the same graphs, and sampling is the same numpy code, so a seeded
rollout gives the same tokens on either.

    wm = WorldModel.load("bundles/cpu")                 # backend="onnx", providers="auto"
    state = wm.reset(prompt_THW3)                       # uint8 frames; other sizes centre-cropped + resized
    frames_BHW3 = wm.step(state, np.array([3]))         # one latent action per batch row, in [0, A)
    frames_BTHW3 = wm.rollout(prompt_THW3, actions_BT)  # B candidate action sequences (planners: 64+)
    actions_BTm1 = wm.infer_actions(video_BTHW3)         # latent actions of real video (the LAM)
    recon_BTHW3 = wm.decode(wm.encode(video_BTHW3))     # the tokenizer's reconstruction
    wm.precision                                        # "fp32" | "int8" (`genie-robot export --precision`)
    wm.frame_stride, wm.fps, wm.step_seconds            # one model step: frame_stride frames of fps video

Memory is constant over any rollout length: caches hold the last `context` frames in a ring.
Shapes: B batch, T frames, Tm1 = T-1 transitions, H, W pixels, N tokens per frame, V vocabulary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import bundle
from .graphs import cache_shapes
from genie_robot.models.sampling import sample_frame

log = logging.getLogger(__name__)


@dataclass
class WorldState:
    """One batch of rollouts: dynamics and decoder ring caches, the next frame's index, the sampler.

    `step` advances it in place; `copy()` branches it, `repeat(k)` makes k copies of every row
    (planners: prompt once, then evaluate 64 candidate action sequences from the same state)."""

    dyn_kv: object  # (L, 2, B, N, G, R, E), backend array
    dec_kv: object
    pos: int  # absolute index of the next frame
    rng: np.random.Generator
    batch: int
    last_frames_BHW3: np.ndarray  # the latest frame of each row (the prompt's last frame after reset)
    last_tokens_BN: np.ndarray  # its tokens
    _backend: object = None

    def copy(self) -> "WorldState":
        b = self._backend
        rng = np.random.Generator(type(self.rng.bit_generator)())
        rng.bit_generator.state = self.rng.bit_generator.state
        return WorldState(b.copy(self.dyn_kv), b.copy(self.dec_kv), self.pos, rng, self.batch,
                          self.last_frames_BHW3.copy(), self.last_tokens_BN.copy(), b)

    def repeat(self, times: int) -> "WorldState":
        b = self._backend
        return WorldState(b.repeat(self.dyn_kv, times), b.repeat(self.dec_kv, times), self.pos, self.rng,
                          self.batch * times, np.repeat(self.last_frames_BHW3, times, axis=0),
                          np.repeat(self.last_tokens_BN, times, axis=0), b)

    def cache_nbytes(self) -> int:
        return self._backend.nbytes(self.dyn_kv) + self._backend.nbytes(self.dec_kv)


class WorldModel:
    def __init__(self, cfg, backend, *, steps: int | None = None, temperature: float | None = None,
                 order: str | None = None, guidance: float | None = None, seed: int = 0):
        d = cfg.dynamics
        self.cfg, self.backend = cfg, backend
        self.steps = d.maskgit_steps if steps is None else int(steps)
        self.temperature = d.temperature if temperature is None else float(temperature)
        self.order = d.order if order is None else order
        # classifier-free guidance: a second, action-free pass per MaskGIT step, uncond + w * (cond - uncond)
        self.guidance = getattr(d, "guidance", 1.0) if guidance is None else float(guidance)
        if self.steps < 1:
            raise ValueError(f"MaskGIT needs at least 1 step, got steps={self.steps}")
        if self.order not in ("random", "confidence"):
            raise ValueError(f"unknown MaskGIT order {self.order!r}: use 'random' or 'confidence'")
        self.seed = seed
        self.resolution = tuple(cfg.tokenizer.resolution)
        self.num_actions = d.num_actions
        # the ground-truth-action control (dynamics.action_source): robot action vectors (A,) float, not
        # latent action indices; NaN vectors are "no action"
        self.ground_truth = d.action_source == "ground_truth"
        self.action_dim = d.action_dim
        self.num_tokens, self.vocab_size, self.mask_id = d.num_tokens, d.vocab_size, d.vocab_size
        self.context = d.context
        # what one model step is (models.configs.DataConfig): `frame_stride` frames of video recorded at
        # `fps` (0 = not recorded), so imagined frames are `step_seconds` apart (None when unknown)
        self.frame_stride, self.fps, self.step_seconds = cfg.data.frame_stride, cfg.data.fps, cfg.data.step_seconds
        self._cache_shapes = cache_shapes(cfg)

    @property
    def provider(self) -> str:
        """What actually runs the graphs: an onnxruntime provider name, or "torch:<device>"."""
        return self.backend.provider

    @property
    def precision(self) -> str:
        """The precision of what runs: the bundle's ONNX graphs ("fp32" | "int8", from its manifest) on
        the onnx backend; "fp32" on the torch backend (it runs weights.safetensors, always fp32)."""
        return getattr(self.backend, "precision", "fp32")

    @classmethod
    def from_genie(cls, genie, *, steps: int | None = None, temperature: float | None = None,
                   order: str | None = None, guidance: float | None = None, seed: int = 0) -> "WorldModel":
        """A torch Genie in memory (training-time rollouts, eval) on the device it is on; the rollout
        runs the model in eval mode (the caller restores training mode)."""
        from genie_robot.runtime.torch_backend import TorchBackend

        device = next(genie.parameters()).device
        return cls(genie.cfg, TorchBackend(genie, str(device)), steps=steps, temperature=temperature, order=order,
                   guidance=guidance, seed=seed)

    @classmethod
    def load(cls, bundle_dir: str | Path, *, backend: str = "onnx", providers: str | list[str] | None = "auto",
             device: str | None = None, steps: int | None = None, temperature: float | None = None,
             order: str | None = None, guidance: float | None = None, seed: int = 0,
             threads: int | None = None) -> "WorldModel":
        """A bundle written by `genie-robot export` ("default": the shipped model). backend "onnx" (providers: see
        genie_robot.device.onnx_providers) or "torch" (device: see genie_robot.device.pick_device).
        steps / temperature / order override the model config's MaskGIT defaults."""
        from genie_robot.runtime import default_model

        d = default_model.resolve(bundle_dir)  # "default": the model shipped in genie_robot/assets
        cfg = bundle.read_config(d)
        if backend == "onnx":
            from genie_robot.runtime.onnx_backend import OnnxBackend

            d = default_model.onnx_bundle(d)  # a weight-only bundle: its graphs, exported once into the cache

            bundle.require(d, bundle.ONNX_FILES)
            be = OnnxBackend(d, providers, threads=threads)
            _check_onnx_shapes(be, cfg, d)
        elif backend == "torch":
            from genie_robot.runtime.torch_backend import TorchBackend

            be = TorchBackend(bundle.load_genie(d), device)
        else:
            raise ValueError(f"unknown backend {backend!r}: use 'onnx' or 'torch'")
        return cls(cfg, be, steps=steps, temperature=temperature, order=order, guidance=guidance, seed=seed)

    # ----------------------------------------------------------------------------- input checks

    def prepare_frames(self, frames: np.ndarray, what: str = "prompt") -> np.ndarray:
        """(H, W, 3) | (T, H, W, 3) | (B, T, H, W, 3) uint8 -> (B, T, H, W, 3) at the model's resolution.

        Frames of another size are brought to it as the converters bring video into a store (a log line
        says so): the largest centred crop with the model's aspect, resized with cv2.INTER_AREA (INTER_LINEAR
        when growing) by genie_robot.data.convert.images.center_crop_resize, so a 4:3 camera is cropped,
        not stretched.
        No frames, or anything that is not uint8 RGB channels-last, is an error naming the expected layout."""
        H, W = self.resolution
        x = np.asarray(frames)
        expected = f"uint8 RGB frames, channels last: (H, W, 3), (T, H, W, 3) or (B, T, H, W, 3), model size {H}x{W}"
        if x.dtype != np.uint8:
            raise ValueError(f"{what}: expected {expected}; got {x.dtype} {x.shape}"
                             + ("; scale floats in [0, 1] with (x * 255).round().astype(np.uint8)"
                                if np.issubdtype(x.dtype, np.floating) else ""))
        if x.ndim not in (3, 4, 5) or x.shape[-1] != 3:
            hint = "; channels first? use x.transpose(..., 2, 3, 1)-style moves to put channels last" \
                if x.ndim >= 3 and x.shape[-3] == 3 else ""
            raise ValueError(f"{what}: expected {expected}; got {x.dtype} {x.shape}{hint}")
        x = x[None, None] if x.ndim == 3 else x[None] if x.ndim == 4 else x
        if 0 in x.shape:
            raise ValueError(f"{what}: no frames (shape {np.asarray(frames).shape}); expected {expected}, "
                             "with at least one frame of at least 1x1 pixels")
        if tuple(x.shape[2:4]) != (H, W):
            from genie_robot.data.convert.images import center_crop_resize

            log.warning("%s: resizing frames from %dx%d to the model's %dx%d (centred crop to its aspect, then "
                        "resize, as the converters do)", what, x.shape[2], x.shape[3], H, W)
            B, T = x.shape[:2]
            flat = x.reshape(B * T, *x.shape[2:])
            x = np.stack([center_crop_resize(f, (H, W)) for f in flat]).reshape(B, T, H, W, 3)
        return np.ascontiguousarray(x)

    def _check_actions(self, actions: np.ndarray, batch: int | None, what: str) -> np.ndarray:
        if self.ground_truth:
            return self._check_vectors(actions, batch, what)
        a = np.asarray(actions)
        if not np.issubdtype(a.dtype, np.integer):
            if np.issubdtype(a.dtype, np.floating) and a.size and np.all(a == np.round(a)):
                a = a.astype(np.int64)
            else:
                raise ValueError(f"{what}: latent actions are integers in [0, {self.num_actions}), got {a.dtype} {a.tolist() if a.size < 10 else a.shape}")
        bad = (a < 0) | (a >= self.num_actions)
        if bad.any():
            raise ValueError(f"{what}: latent action {a[bad].flat[0]} outside [0, {self.num_actions}) "
                             f"(this model has {self.num_actions} latent actions)")
        if batch is not None and a.shape != (batch,):
            raise ValueError(f"{what}: expected one action per batch row, shape ({batch},), got {a.shape}"
                             + ("; use state.repeat(k) to branch one prompt into k rows" if batch == 1 else ""))
        return a.astype(np.int64)

    def _check_vectors(self, actions: np.ndarray, batch: int | None, what: str) -> np.ndarray:
        """Robot action vectors of a ground-truth-action model: (..., A) float32, NaN rows = none."""
        a = np.asarray(actions)
        A = self.action_dim
        if not np.issubdtype(a.dtype, np.number) or a.ndim < 1 or a.shape[-1] != A:
            raise ValueError(f"{what}: this model is the ground-truth-action control: it takes robot action "
                             f"vectors of {A} floats (the store's actions summed over a model step), got "
                             f"{a.dtype} {a.shape}")
        if batch is not None and a.shape != (batch, A):
            raise ValueError(f"{what}: expected one action vector per batch row, shape ({batch}, {A}), got {a.shape}")
        return a.astype(np.float32)

    def _no_action(self, batch: int) -> np.ndarray:
        """"No action" for `batch` rows: -1, or NaN vectors for a ground-truth-action model."""
        if self.ground_truth:
            return np.full((batch, self.action_dim), np.nan, np.float32)
        return np.full(batch, -1, np.int64)

    # --------------------------------------------------------------------------------- the API

    def reset(self, prompt: np.ndarray, *, prompt_actions_BTm1: np.ndarray | None = None,
              seed: int | None = None) -> WorldState:
        """Prompt frames (uint8, see prepare_frames) -> a state ready for `step`.

        The actions between prompt frames are inferred with the LAM unless given. Sampling is seeded
        with `seed` (default: the model's), so the same prompt, actions and seed give the same frames."""
        frames_BTHW3 = self.prepare_frames(prompt, "prompt")
        B, T = frames_BTHW3.shape[:2]
        be = self.backend
        tokens_BTN = self._encode(frames_BTHW3)
        if prompt_actions_BTm1 is None and self.ground_truth and T > 1:
            raise ValueError(f"prompt: {T} frames, but this ground-truth-action model has no LAM to infer the "
                             f"actions between them: pass prompt_actions_BTm1 ({B}, {T - 1}, {self.action_dim})")
        if prompt_actions_BTm1 is None:
            prompt_actions_BTm1 = self._infer(frames_BTHW3) if T > 1 else np.zeros((B, 0), np.int64)
        else:
            a = np.asarray(prompt_actions_BTm1)
            tail = (self.action_dim,) if self.ground_truth else ()
            if a.shape != (B, T - 1) + tail:
                raise ValueError(f"prompt_actions_BTm1: expected shape {(B, T - 1) + tail} (one per prompt transition), "
                                 f"got {a.shape}")
            prompt_actions_BTm1 = self._check_actions(a.reshape((-1,) + tail), None, "prompt_actions_BTm1"
                                                     ).reshape(a.shape)
        dyn_kv = be.zeros(self._batched(self._cache_shapes["dynamics_step"], B))
        dec_kv = be.zeros(self._batched(self._cache_shapes["tokenizer_decoder"], B))
        for t in range(T):
            action_B = prompt_actions_BTm1[:, t - 1] if t else self._no_action(B)
            _, new = be.run("dynamics_step", tokens_BTN[:, t], action_B, dyn_kv, _pos(t))
            be.write_slot(dyn_kv, new, t % self.context)
            _, new = be.run("tokenizer_decoder", tokens_BTN[:, t], dec_kv, _pos(t))
            be.write_slot(dec_kv, new, t % self.cfg.tokenizer.context)
        rng = np.random.default_rng(self.seed if seed is None else seed)
        return WorldState(dyn_kv, dec_kv, T, rng, B, frames_BTHW3[:, -1].copy(), tokens_BTN[:, -1].copy(), be)

    def step(self, state: WorldState, actions_B: np.ndarray) -> np.ndarray:
        """Latent actions (B,) int in [0, num_actions) -> the next frames (B, H, W, 3) uint8; advances
        `state`. (A ground-truth-action model takes robot action vectors (B, A) float instead.) With B = 1
        a bare int (or one (A,) vector) is accepted."""
        # one action for a batch of one may come bare: an int, or one action vector (A,)
        actions_B = np.atleast_2d(actions_B) if self.ground_truth else np.atleast_1d(actions_B)
        actions_B = self._check_actions(actions_B, state.batch, "step")
        be, B, N = self.backend, state.batch, self.num_tokens
        pos = _pos(state.pos)
        none_B = self._no_action(B)

        def logits_fn(tokens_BN, conditions):  # guided: (True, False), side by side on a two-lane backend
            calls = [(tokens_BN, actions_B if c else none_B, state.dyn_kv, pos) for c in conditions]
            return [out for out, _ in be.run_all("dynamics_step", calls)]

        tokens_BN = sample_frame(logits_fn, B, N, self.mask_id, steps=self.steps, temperature=self.temperature,
                                 order=self.order, guidance=self.guidance, rng=state.rng)
        _, new = be.run("dynamics_step", tokens_BN, actions_B, state.dyn_kv, pos)  # the final frame's K/V
        be.write_slot(state.dyn_kv, new, state.pos % self.context)
        frames_BHW3, new = be.run("tokenizer_decoder", tokens_BN, state.dec_kv, pos)
        be.write_slot(state.dec_kv, new, state.pos % self.cfg.tokenizer.context)
        state.pos += 1
        state.last_frames_BHW3, state.last_tokens_BN = frames_BHW3, tokens_BN
        return frames_BHW3

    def rollout(self, prompt: np.ndarray, actions_BT: np.ndarray, *, seed: int | None = None) -> np.ndarray:
        """Prompt (one clip or B clips) and B action sequences (B, T) -> imagined frames (B, T, H, W, 3).

        A single prompt is encoded once and shared by all B sequences."""
        a = np.asarray(actions_BT)
        k = 3 if self.ground_truth else 2  # (B, T), or (B, T, A) action vectors
        if a.ndim == k - 1:
            a = a[None]
        if a.ndim != k:
            raise ValueError(f"rollout: expected actions {'(B, T, A)' if self.ground_truth else '(B, T)'}, got shape "
                             f"{a.shape}")
        state = self.reset(prompt, seed=seed)
        if state.batch == 1 and a.shape[0] > 1:
            state = state.repeat(a.shape[0])
        if state.batch != a.shape[0]:
            raise ValueError(f"rollout: {state.batch} prompts but {a.shape[0]} action sequences; pass one prompt "
                             "or one per sequence")
        H, W = self.resolution
        out = np.empty((a.shape[0], a.shape[1], H, W, 3), np.uint8)
        for t in range(a.shape[1]):
            out[:, t] = self.step(state, a[:, t])
        return out

    def infer_actions(self, video: np.ndarray) -> np.ndarray:
        """Video (T >= 2 frames, uint8, see prepare_frames) -> latent actions (B, T-1) int64;
        [:, t] labels the transition from frame t to t+1."""
        frames_BTHW3 = self.prepare_frames(video, "video")
        if frames_BTHW3.shape[1] < 2:
            raise ValueError(f"infer_actions needs at least 2 frames, got {frames_BTHW3.shape[1]}")
        return self._infer(frames_BTHW3)

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """Frames -> tokens (B, T, N) int64 (tokenizer encoder, streamed with its cache)."""
        return self._encode(self.prepare_frames(frames, "frames"))

    def decode(self, tokens_BTN: np.ndarray) -> np.ndarray:
        """Tokens (B, T, N) int in [0, V) -> frames (B, T, H, W, 3) uint8 (tokenizer decoder, streamed with
        its cache, as `step` decodes): decode(encode(x)) is the tokenizer's reconstruction of x."""
        t = np.asarray(tokens_BTN)
        if t.ndim != 3 or t.shape[2] != self.num_tokens or not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"decode: expected integer tokens (B, T, {self.num_tokens}), got {t.dtype} {t.shape}")
        if t.size and (t.min() < 0 or t.max() >= self.vocab_size):
            raise ValueError(f"decode: tokens outside [0, {self.vocab_size}) (this tokenizer has {self.vocab_size} codes)")
        be = self.backend
        B, T = t.shape[:2]
        shape = self._batched(self._cache_shapes["tokenizer_decoder"], B)
        kv, R = be.zeros(shape), shape[5]
        H, W = self.resolution
        out = np.empty((B, T, H, W, 3), np.uint8)
        for i in range(T):
            out[:, i], new = be.run("tokenizer_decoder", np.ascontiguousarray(t[:, i], dtype=np.int64), kv, _pos(i))
            be.write_slot(kv, new, i % R)
        return out

    # ----------------------------------------------------------------------------- internals

    def _batched(self, shape, B):
        return shape[:2] + (B,) + shape[3:]

    def _stream(self, graph: str, frames_BTHW3: np.ndarray) -> np.ndarray:
        be = self.backend
        B, T = frames_BTHW3.shape[:2]
        shape = self._batched(self._cache_shapes[graph], B)
        kv, R = be.zeros(shape), shape[5]
        outs = []
        for t in range(T):
            out, new = be.run(graph, frames_BTHW3[:, t], kv, _pos(t))
            be.write_slot(kv, new, t % R)
            outs.append(out)
        return np.stack(outs, 1).astype(np.int64)

    def _encode(self, frames_BTHW3):
        return self._stream("tokenizer_encoder", frames_BTHW3)

    def _infer(self, frames_BTHW3):
        return self._stream("lam_encoder", frames_BTHW3)[:, 1:]  # frame 0's output labels no transition


def _pos(t: int) -> np.ndarray:
    return np.array(t, dtype=np.int64)


def _check_onnx_shapes(be, cfg, d: Path) -> None:
    """The graphs' static dims must match the config (catches a config.json from another export)."""
    for graph, shape in cache_shapes(cfg).items():
        got = be.input_shapes(graph)["kv"]
        want = list(shape[:2]) + ["batch"] + list(shape[3:])
        if [g if isinstance(g, int) else "batch" for g in got] != want:
            raise bundle.BundleError(f"{d / (graph + '.onnx')} expects a cache of shape {got}, but {d / bundle.CONFIG} "
                                     f"implies {want}: graphs and config come from different models; re-export "
                                     f"with `{bundle.EXPORT_HINT.format(dir=d)}`")
