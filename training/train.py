"""The training loop: `genie-robot train tokenizer|dynamics`, a plain loop in one file.

Stage 1 trains the video tokenizer; stage 2 trains the latent action model and the dynamics model
jointly with the tokenizer frozen (Genie's recipe). Both stages run the same loop below:

    for step in range(start, max_steps):
        lr = warmup + cosine(step); batch = next(windows); loss = model.loss(frames)
        backward; clip grad norm; AdamW step; EMA update
        log every step (MLflow), validate / preview / checkpoint at intervals

Runs on one process or under `torchrun` (DistributedDataParallel: NCCL on GPUs, gloo on CPU). The
data stream is indexed by sample: global batch b holds samples [b*B, (b+1)*B) and rank r of N takes
every N-th of those, so N processes see the same global batch as one; the sample index is also the
data position saved in checkpoints, which makes resuming exact.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from genie_robot.artifacts import checkpoints as ckpt_io
from genie_robot.errors import InputError
from training.configs import TrainConfig, apply_model_overrides, flatten, load_config, resume_changes

# ------------------------------------------------------------------------------------------------
# process setup: allocator, distributed, seeds


class StopRequest:
    """SIGTERM (a scheduler's preemption, `kill`) or SIGINT (Ctrl-C, also for a run started in the
    background, where SIGINT is otherwise ignored) asks the loop to stop after the step in progress and
    save a checkpoint at that step, so nothing is lost; a second signal stops at once. The handlers are
    installed only in the main thread, and `restore` puts the previous ones back."""

    def __init__(self):
        self.signum: int | None = None
        self._saved: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second one: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def install(self) -> "StopRequest":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        import signal

        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    @property
    def name(self) -> str:
        import signal

        return signal.Signals(self.signum).name if self.signum is not None else ""


def tune_cpu_allocator() -> str:
    """Tell glibc malloc to keep freed memory instead of unmapping and re-faulting it every step.

    Equivalent to starting the process with MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>: glibc
    reads those variables once at start-up into the parameters that mallopt() sets, so setting them here
    takes effect for every allocation from now on (tensors of the training step included) without a
    re-exec. Worth ~1.4x on CPU training. Variables already set by the user win; GENIE_MALLOC=default
    turns this off. Returns the mode, which is recorded with the run.
    """
    if os.environ.get("GENIE_MALLOC", "") == "default":
        mode = "default"
    elif "MALLOC_MMAP_MAX_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        mode = "env"
    else:
        try:
            libc = ctypes.CDLL("libc.so.6")
            M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
            ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1
            mode = "keep (mallopt)" if ok else "default"
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
            mode = "default"
    os.environ["GENIE_MALLOC_MODE"] = mode
    return mode


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_request: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE set), and pick this rank's device."""
    from genie_robot.device import configure_cpu_threads, pick_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        device = pick_device(device_request)
        if device.type == "cpu":
            configure_cpu_threads()
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_request)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        # Processes on one host share its cores.
        configure_cpu_threads(share=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return info, device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """This process's RNG states as tensors and plain types (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------
# schedule, EMA, data order


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay from lr to min_lr at max_steps.

    A pure function of the step, so the schedule's only state is the step itself.
    """
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


class EMA:
    """Exponential moving average of the trainable parameters: shadow = d*shadow + (1-d)*param, in fp32.

    The decay warms up as d_t = min(decay, (1 + t) / (10 + t)): a plain EMA at 0.999 still holds
    0.999^500 = 61 % of the random initialisation after 500 steps (measured: 12 dB validation PSNR
    against 24.6 dB for the raw weights of the same tokenizer), which poisons short CPU runs."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = [params[n].detach().float().clone() for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """`step`: optimizer steps taken so far (1 after the first)."""
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        params = dict(model.named_parameters())
        torch._foreach_lerp_(self.shadow, [params[n].detach().float() for n in self.names], 1.0 - decay)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """A full state dict of `model` with the averaged values in place of the trainable parameters."""
        sd = dict(model.state_dict())
        for n, s in zip(self.names, self.shadow):
            sd[n] = s.to(sd[n].dtype)
        return sd

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        for i, n in enumerate(self.names):
            self.shadow[i].copy_(sd[n].float())

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module):
        """Temporarily run `model` with the EMA weights (for validation and previews)."""
        params = dict(model.named_parameters())
        backup = [params[n].detach().clone() for n in self.names]
        with torch.no_grad():
            for n, s in zip(self.names, self.shadow):
                params[n].copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for n, b in zip(self.names, backup):
                    params[n].copy_(b)


class StreamSampler(torch.utils.data.Sampler):
    """Batches of sample indices for one rank: global batch b is [b*B, (b+1)*B), rank r takes r, r+N, ..."""

    def __init__(self, global_batch: int, first_batch: int, num_batches: int, rank: int = 0, world: int = 1):
        self.B, self.first, self.last, self.rank, self.world = global_batch, first_batch, num_batches, rank, world

    def __iter__(self):
        for b in range(self.first, self.last):
            yield list(range(b * self.B + self.rank, (b + 1) * self.B, self.world))

    def __len__(self) -> int:
        return max(0, self.last - self.first)


# ------------------------------------------------------------------------------------------------
# what is trained: a Stage


class ConfigError(InputError):
    """A problem with the config, the data or a checkpoint, found before training starts."""


@dataclass
class Stage:
    """What the loop trains. `loss(model, frames_BTHW3)` -> (scalar fp32 loss, {name: float}).

    `model` is what the checkpoint's weights are (its trainable parameters are optimised; frozen
    sub-modules have requires_grad=False and are listed in `frozen` so they stay in eval mode).
    `preview(model, frames_BTHW3, out_dir, step)` writes pictures and returns their paths.
    """

    name: str
    model: nn.Module
    loss: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, dict]]
    model_config: dict
    window: int
    resolution: tuple[int, int] | None = None  # (H, W) the model expects; stores are checked against it
    preview: Callable[[nn.Module, torch.Tensor, Path, int], list[Path]] | None = None
    frozen: list[nn.Module] | None = None
    # batch keys besides "frames" that `loss` takes as keyword arguments (e.g. "transition_actions")
    batch_keys: tuple[str, ...] = ()
    # `monitor(model, val_set, device)` -> {name: float}: held-out behaviour beyond the loss (code usage,
    # NMI with the ground truth, ΔPSNR), logged as "monitor/<name>" at every validation
    monitor: Callable[[nn.Module, object, torch.device], dict] | None = None

    def train_mode(self) -> None:
        self.model.train()
        for m in self.frozen or []:
            m.eval()


class _LossForward(nn.Module):
    """Routes Stage.loss through forward(), so DistributedDataParallel can hook the backward pass."""

    def __init__(self, model: nn.Module, loss: Callable):
        super().__init__()
        self.model, self._loss = model, loss

    def forward(self, frames_BTHW3: torch.Tensor, **extra):
        return self._loss(self.model, frames_BTHW3, **extra)


def resolve_model_config(cfg: TrainConfig):
    """The GenieConfig of a run: preset(cfg.preset) with cfg.model applied."""
    from genie_robot.models.configs import GenieConfig, preset

    try:
        base = preset(cfg.preset).to_dict()
        d = apply_model_overrides(copy.deepcopy(base), cfg.model)
        # Fields that only mirror another model follow it unless set explicitly: a new tokenizer
        # codebook size or resolution needs no matching --set for the LAM and the dynamics model.
        tok, lam, dyn = d["tokenizer"], d["lam"], d["dynamics"]
        if lam["resolution"] == base["lam"]["resolution"]:
            lam["resolution"] = tok["resolution"]
        from genie_robot.models.configs import LatentActionConfig, TokenizerConfig, derived_dynamics_fields

        tok_cfg = TokenizerConfig(**_plain(tok, TokenizerConfig))
        if lam.get("input") == "tokens":  # the token-input LAM reads the tokenizer's grid and vocabulary
            if lam["patch"] == base["lam"]["patch"]:
                lam["patch"] = tok["patch"]
            if lam["token_vocab"] == base["lam"]["token_vocab"]:
                lam["token_vocab"] = tok_cfg.num_codes
        lam_cfg = LatentActionConfig(**_plain(lam, LatentActionConfig))
        # the dynamics fields that mirror the tokenizer and the LAM are GenieConfig's to compute
        mirrored = derived_dynamics_fields(tok_cfg, lam_cfg, dyn.get("action_source", "latent"))
        for key in mirrored:
            if dyn[key] != base["dynamics"][key] and list(np.atleast_1d(dyn[key])) != list(np.atleast_1d(mirrored[key])):
                source = "tokenizer" if key in ("vocab_size", "grid") else "LAM"
                raise ValueError(f"model.dynamics.{key} follows the {source} (here {mirrored[key]}): set the "
                                 f"{source}'s size instead (e.g. model.tokenizer.fsq_levels, model.lam.fsq_levels)")
        # what a model step is, recorded with the model (its stores' fps is added by build_datasets)
        d["data"] = {"frame_stride": cfg.frame_stride, "val_fraction": cfg.val_fraction}
        return GenieConfig.from_dict(d)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model config: {exc}") from None


def _plain(d: dict, cls) -> dict:
    """A config dict's top-level scalar fields only (enough to compute derived counts)."""
    import dataclasses

    nested = {f.name for f in dataclasses.fields(cls) if f.default_factory is not dataclasses.MISSING
              and dataclasses.is_dataclass(f.default_factory())}
    out = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k not in nested}
    if "quantizer" in d:
        from genie_robot.models.configs import QuantizerConfig

        out["quantizer"] = QuantizerConfig(**d["quantizer"])
    return out


def _load_frozen(path_spec: str, stage_name: str, ema: bool, ours: dict, what: str):
    """Weights of a finished `train <stage_name>` run, or the `what` part of an exported bundle
    ("default": the shipped model), whose `what` part of the model config equals `ours` -> (path,
    state dict). Raises ConfigError naming the fix."""
    from genie_robot.runtime import bundle, default_model

    try:
        source = default_model.resolve(path_spec)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    if (source / bundle.MANIFEST).is_file():  # a bundle: its weights are hash-checked before use
        try:
            genie = bundle.load_genie(source)
        except bundle.BundleError as exc:
            raise ConfigError(str(exc)) from None
        path, config = source, genie.cfg.to_dict()
        weights = getattr(genie, what).state_dict()
        hint = f"the bundle's model.{what}.* fields (its config.json)"
    else:
        try:
            ck = ckpt_io.load_stage(path_spec, stage_name, what=f"{what} checkpoint")
        except FileNotFoundError as exc:
            raise ConfigError(str(exc).replace(" checkpoint: ", " checkpoint missing: ", 1)) from None
        except ckpt_io.CheckpointError as exc:
            raise ConfigError(str(exc)) from None
        path, config = ck.path, ck.config["model"]
        weights = ck.ema if (ema and ck.ema is not None) else ck.weights
        hint = (f"that run's preset and model.{what}.* overrides (preset {ck.config['train']['preset']!r}, "
                f"overrides {ck.config['train']['model'].get(what, {})})")
    theirs, mine = _weight_fields(_normalised(config)[what], what), _weight_fields(ours, what)
    if theirs != mine:
        diff = {k: (theirs.get(k), mine.get(k)) for k in sorted(set(theirs) | set(mine)) if theirs.get(k) != mine.get(k)}
        raise ConfigError(
            f"{what} checkpoint {path} was trained with another {what} config; differing fields "
            f"(checkpoint, this run): {diff}. Use {hint}"
        )
    return path, weights


def _warm_start(stage: Stage, init: str) -> None:
    """Load the trained part of `stage` (the tokenizer, the LAM, or stage 2's dynamics model; stage 2's
    frozen parts come from --tokenizer/--lam) from `init`, a bundle or a run of the same stage."""
    what = stage.name
    ours = stage.model_config[what]
    if what == "dynamics":  # the Genie of stage 2 trains only its dynamics model
        _, weights = _load_frozen(init, what, True, ours, what)
        weights = {k.removeprefix("dynamics."): v for k, v in weights.items() if not k.startswith(("tokenizer.", "lam."))}
        target = stage.model.dynamics
    else:
        _, weights = _load_frozen(init, what, True, ours, what)
        target = stage.model
    try:
        target.load_state_dict(weights)
    except RuntimeError as exc:
        raise ConfigError(f"--init {init} does not fit this version of the {what} model ({exc})") from None


def build_stage(cfg: TrainConfig) -> Stage:
    """The real models for `cfg.stage`, with the checks that must fail before any training starts."""
    from training import previews

    model_cfg = resolve_model_config(cfg)
    cfg_dict = model_cfg.to_dict()
    resolution = tuple(model_cfg.tokenizer.resolution)
    if cfg.stage == "tokenizer":
        from genie_robot.models.genie import build_tokenizer

        model = build_tokenizer(model_cfg.tokenizer)
        per_frame = model_cfg.tokenizer.kind == "conv"  # frames are independent: windows of one frame
        return Stage(
            name="tokenizer",
            model=model,
            loss=lambda m, frames: m.loss(frames),
            model_config=cfg_dict,
            window=cfg.window or (1 if per_frame else model_cfg.tokenizer.context),
            resolution=resolution,
            preview=previews.tokenizer_preview,
        )
    if cfg.stage == "lam":
        from genie_robot.models.genie import build_lam
        from training import monitors

        if model_cfg.lam.kind != "conv" and model_cfg.lam.input == "tokens":
            raise ConfigError("`train lam` trains a pixel-input LAM; the token-input ablation co-trains in stage 2")
        model = build_lam(model_cfg.lam)
        return Stage(
            name="lam",
            model=model,
            loss=lambda m, frames: m.loss(frames),
            model_config=cfg_dict,
            window=cfg.window or (2 if model_cfg.lam.kind == "conv" else model_cfg.lam.context),
            resolution=resolution,
            preview=previews.lam_preview,
            monitor=monitors.lam_monitor,
        )

    from genie_robot.models.genie import Genie
    from training import monitors

    if not cfg.tokenizer:
        raise ConfigError(
            "stage 2 needs the stage-1 tokenizer: pass --tokenizer runs/tokenizer (a run dir) "
            "or --tokenizer runs/tokenizer/checkpoints/step_N"
        )
    # EMA weights when stage 1 kept them, unless tokenizer_weights="raw"
    path, tok_weights = _load_frozen(cfg.tokenizer, "tokenizer", cfg.tokenizer_weights == "ema",
                                     cfg_dict["tokenizer"], "tokenizer")
    genie = Genie(model_cfg)
    try:
        genie.tokenizer.load_state_dict(tok_weights)
    except RuntimeError as exc:  # same config, but weights from another version of the model code
        raise ConfigError(f"tokenizer checkpoint {path} does not fit this version of VideoTokenizer ({exc}); "
                          "retrain stage 1 with this code") from None
    genie.tokenizer.requires_grad_(False)
    frozen = [genie.tokenizer]
    ground_truth = model_cfg.dynamics.action_source == "ground_truth"
    if cfg.lam and not ground_truth:
        _, lam_weights = _load_frozen(cfg.lam, "lam", cfg.lam_weights == "ema", cfg_dict["lam"], "lam")
        try:
            genie.lam.load_state_dict(lam_weights)
        except RuntimeError as exc:
            raise ConfigError(f"LAM checkpoint {cfg.lam} does not fit this version of the LAM ({exc}); "
                              "retrain it with this code") from None
        genie.lam.requires_grad_(False)
        frozen.append(genie.lam)
    elif ground_truth:
        genie.lam.requires_grad_(False)  # unused: the control reads the store's actions
        frozen.append(genie.lam)
    elif model_cfg.lam.kind == "conv":
        raise ConfigError("the conv LAM is trained on its own: run `genie-robot train lam` first and pass "
                          "--lam runs/lam (co-training in stage 2 is the paper's ST-Transformer LAM only)")
    batch_keys = ("transition_actions",) if ground_truth else ()
    if model_cfg.tokenizer.kind == "conv":  # frames are tokenized alone: each one once per run (token_cache.py)
        from training.token_cache import TokenCache

        cache = TokenCache(model_cfg.tokenizer.num_tokens, model_cfg.tokenizer.num_codes, cfg.frame_stride)
        batch_keys += ("store", "frame")

        def loss(m, frames, store, frame, **kw):
            tokens_BTN = cache.tokens(m.tokenizer.encode, frames, store, frame)
            total, metrics = m.dynamics_loss(frames, tokens_BTN=tokens_BTN, **kw)
            return total, {**metrics, "token_cache_hit_rate": cache.hit_rate()}
    else:
        def loss(m, frames, **kw):
            return m.dynamics_loss(frames, **kw)
    return Stage(
        name="dynamics",
        model=genie,
        loss=loss,
        model_config=cfg_dict,
        window=cfg.window or model_cfg.dynamics.context,
        resolution=resolution,
        preview=None if ground_truth else previews.rollout_preview,
        frozen=frozen,
        batch_keys=batch_keys,
        monitor=monitors.dynamics_monitor,
    )


def build_datasets(cfg: TrainConfig, stage: Stage):
    """(train, val) WindowDatasets over cfg.stores (val is None when val_fraction is 0), after checking
    that every store matches the model's resolution and has episodes long enough for the window."""
    from genie_robot.data.store import EpisodeStore, StoreError
    from genie_robot.data.windows import WindowDataset, split_episodes

    if not cfg.stores:
        raise ConfigError("no stores given: pass --store PATH (repeat for several; PATH:WEIGHT to weight them)")
    span = (stage.window - 1) * cfg.frame_stride + 1  # frames one window covers
    splits = ["train", "val"] if cfg.val_fraction > 0 else ["all"]
    fps = set()
    for path in cfg.stores:
        try:
            store = EpisodeStore.open(path)
        except StoreError as exc:
            raise ConfigError(str(exc)) from None
        fps.add(store.fps)
        res = stage.resolution
        if res is not None and tuple(store.resolution) != tuple(res):
            raise ConfigError(
                f"store resolution {store.resolution[0]}x{store.resolution[1]} ({path}) differs from the model "
                f"config's {res[0]}x{res[1]}: use a store at {res[0]}x{res[1]} (genie-robot simulate/convert "
                f"--resolution {res[0]}), or a preset at the store's resolution (--preset)"
            )
        if "transition_actions" in stage.batch_keys:  # the ground-truth-action control reads the store's actions
            want = stage.model.cfg.dynamics.action_dim
            if store.action_dim != want:
                has = f"{store.action_dim}-dim actions" if store.action_dim else "no actions"
                raise ConfigError(
                    f"dynamics.action_source=ground_truth needs every store's actions: {path} has {has}, the "
                    f"model has action_dim {want}"
                    + (f"; set model.dynamics.action_dim={store.action_dim}" if store.action_dim else "")
                )
        for split in splits:
            lengths = store.episode_lengths[split_episodes(store.num_episodes, split, cfg.val_fraction)]
            if not (lengths >= span).any():
                raise ConfigError(
                    f"dataset too small for the window length: {path} has no {split} episode with the {span} "
                    f"frames a window of {stage.window} (frame_stride {cfg.frame_stride}) needs ({len(lengths)} "
                    f"{split} episodes of {store.num_episodes}, longest {int(lengths.max()) if len(lengths) else 0} "
                    "frames); use a shorter window (--set window=N) or longer/more episodes"
                    + ("; or train without validation: --set val_fraction=0" if split == "val" else "")
                )
    if "data" in stage.model_config:  # a Genie model records its video's frame rate (0: stores disagree)
        stage.model_config["data"]["fps"] = fps.pop() if len(fps) == 1 else 0.0
    common = dict(window=stage.window, stride=cfg.frame_stride, val_fraction=cfg.val_fraction,
                  seed=cfg.seed, weights=cfg.store_weights)
    try:
        train_set = WindowDataset(cfg.stores, split=splits[0], length=cfg.max_steps * cfg.batch_size, **common)
        val_set = None
        if cfg.val_fraction > 0:
            val_set = WindowDataset(cfg.stores, split="val", length=cfg.val_batches * cfg.batch_size, **common)
    except StoreError as exc:
        raise ConfigError(str(exc)) from None
    return train_set, val_set


# ------------------------------------------------------------------------------------------------
# the loop


def _weight_fields(part_config: dict, what: str) -> dict:
    """The flattened fields of one model part's config that shape its weights: the dynamics model's
    sampling settings (SAMPLING_FIELDS, set at export) and training recipe (TRAINING_FIELDS) are left out."""
    from genie_robot.models.configs import SAMPLING_FIELDS, TRAINING_FIELDS

    skip = SAMPLING_FIELDS + TRAINING_FIELDS if what == "dynamics" else ()
    return {k: v for k, v in flatten(part_config).items() if k not in skip}


def _normalised(model_config: dict) -> dict:
    """A saved model config with the defaults of fields added since it was written (older checkpoints
    lack them), so that configs compare equal when they build the same model."""
    from genie_robot.models.configs import GenieConfig

    try:
        return GenieConfig.from_dict(model_config).to_dict()
    except (TypeError, ValueError, KeyError):
        return model_config


def _resume_config_check(path: Path, cfg: TrainConfig, allow: bool) -> dict:
    """{field: (saved, now)} of the run-changing fields a resume changes; ConfigError unless `allow`."""
    try:
        saved = json.loads((path / ckpt_io.CONFIG).read_text()).get("train") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"--resume: {path / ckpt_io.CONFIG} cannot be read ({exc})") from None
    changed = resume_changes(saved, cfg)
    if changed and not allow:
        listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ConfigError(
            f"cannot resume from {path} with a changed config ({listed}; saved -> now): these change what "
            "is trained, so the run would no longer be the one its record describes. Resume with the saved "
            "values, start a new --run-dir, or pass --allow-changes to continue with the new ones (logged "
            "to MLflow as resume.* params)"
        )
    return changed


def _model_check(saved: dict, stage: Stage, cfg: TrainConfig, path: Path) -> None:
    saved_model = dict(saved.get("model") or {})
    if "data" not in saved_model and "data" in stage.model_config:
        # a run from before the model recorded its data facts: they follow from the training config,
        # whose changes _resume_config_check has already judged
        saved_model["data"] = stage.model_config["data"]
    if _normalised(saved_model) != stage.model_config or saved.get("stage") != stage.name:
        raise ConfigError(
            f"cannot resume from {path}: it was trained with another model config or stage; "
            "resume with the same --preset/--set model.* (or start a new --run-dir)"
        )
    if saved["train"]["batch_size"] != cfg.batch_size:
        raise ConfigError(
            f"cannot resume from {path}: it was trained with batch_size {saved['train']['batch_size']}, "
            f"this run has {cfg.batch_size}; the data position is counted in samples of that batch size"
        )


@torch.no_grad()
def validation_metrics(model: nn.Module, val_set, cfg: TrainConfig, info: DistInfo, device: torch.device,
             batch_keys: tuple[str, ...] = ()) -> dict:
    """Mean loss and metrics over the same `val_batches` windows every time (RNG forked: training's
    random stream is untouched, so validating does not change what training does)."""
    from genie_robot.device import autocast

    sampler = StreamSampler(cfg.batch_size, 0, cfg.val_batches, info.rank, info.world)
    loader = torch.utils.data.DataLoader(val_set, batch_sampler=sampler, num_workers=0,
                                         generator=torch.Generator().manual_seed(0))
    totals: dict[str, float] = {}
    n = 0
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed + 12345)
        for batch in loader:
            frames = batch["frames"].to(device)
            extra = {k: batch[k].to(device) for k in batch_keys}
            with autocast(device, cfg.precision):
                loss, metrics = model(frames, **extra)
            k = frames.shape[0]
            totals["loss"] = totals.get("loss", 0.0) + float(loss) * k
            for name, v in metrics.items():
                if name != "loss":  # models repeat their loss in the metrics
                    totals[name] = totals.get(name, 0.0) + float(v) * k
            n += k
    names = sorted(totals)
    vec = torch.tensor([totals[k] for k in names] + [n], dtype=torch.float64)
    if info.world > 1:
        vec = vec.to(device)
        dist.all_reduce(vec)
        vec = vec.cpu()
    return {f"val/{k}": float(v) / float(vec[-1]) for k, v in zip(names, vec[:-1].tolist())}


def train(cfg: TrainConfig, stage: Stage | None = None, train_set=None, val_set=None,
          resume: str | bool | None = None, allow_changes: bool = False) -> Path:
    """Run (or resume) training; returns the final checkpoint's path.

    `stage`, `train_set` and `val_set` default to the real models and WindowDatasets for `cfg`; tests
    pass small stand-ins. `resume`: True/"auto" (latest intact checkpoint in the run dir, if any) or a
    checkpoint path. A resumed run must keep the saved config, except the fields in
    configs.RESUME_SAFE_FIELDS; `allow_changes` accepts other changes and logs them to MLflow as
    `resume.step_<N>.<field>` params and a `resume.changed` tag.
    """
    from tqdm import tqdm

    from genie_robot.artifacts.tracking import NullTracker, system_info
    from genie_robot.device import autocast, autocast_dtype

    malloc_mode = tune_cpu_allocator()
    info, device = setup_distributed(cfg.device)
    if cfg.batch_size % info.world:
        raise ConfigError(f"batch_size {cfg.batch_size} is the global batch; it must divide by the {info.world} processes")
    run_dir = cfg.resolved_run_dir
    resume_path = _find_resume(run_dir, resume)
    changed = _resume_config_check(resume_path, cfg, allow_changes) if resume_path is not None else {}

    seed_everything(cfg.seed)  # the same initial weights on every rank and every run
    if stage is None:
        stage = build_stage(cfg)
    if train_set is None:
        train_set, val_set = build_datasets(cfg, stage)

    if cfg.init and resume_path is None:  # a resumed run already holds its weights
        _warm_start(stage, cfg.init)
    model = stage.model.to(device)
    stage.train_mode()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]  # matmul weights and embeddings; not norms or biases
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda",
    )
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    config_record = {"stage": stage.name, "train": cfg.to_dict(), "model": stage.model_config}

    step, run_id = 0, None
    seed_everything(cfg.seed * 1000 + info.rank)  # per-rank randomness (masking, dropout) from here on
    if resume_path is not None:
        try:
            ck = ckpt_io.load_checkpoint(resume_path, map_location="cpu")
        except ckpt_io.CheckpointError as exc:
            raise ConfigError(f"--resume: {exc}") from None
        _model_check(ck.config, stage, cfg, resume_path)
        model.load_state_dict(ck.weights)
        optimizer.load_state_dict(ck.state["optimizer"])
        if ema is not None and ck.ema is not None:
            ema.load_state_dict(ck.ema)
        step, run_id = ck.state["step"], ck.state.get("mlflow_run_id")
        rngs = ck.state["rng"]
        if len(rngs) == info.world:
            set_rng_state(rngs[info.rank])
        elif info.is_main:
            print(f"note: checkpoint saved by {len(rngs)} processes, resuming on {info.world}: RNG streams reseeded")
        if info.is_main:
            print(f"resuming from {resume_path} at step {step} (sample {step * cfg.batch_size})", flush=True)

    precision_name = "bf16" if autocast_dtype(device, cfg.precision) is not None else "fp32"
    tracker = NullTracker()
    if info.is_main:
        tracker = _open_tracker(cfg, stage, run_id)
        tags = system_info(device, info.world)
        tags[f"precision.from_step_{step:08d}"] = precision_name
        tags["sys.malloc"] = malloc_mode
        if resume_path is not None:
            tags["resumed_from"] = str(resume_path)
        if changed:  # --allow-changes: the record says what changed, from which step
            tags["resume.changed"] = "; ".join(f"{k}: {old!r} -> {new!r} from step {step}"
                                               for k, (old, new) in changed.items())
        tracker.set_tags(tags)
        if tracker.run_id != run_id:  # a new MLflow run (also when the checkpoint's run is gone)
            tracker.log_params(flatten({"train": cfg.to_dict(), "model": stage.model_config}))
        if changed:
            tracker.log_params({f"resume.step_{step:08d}.train.{k}": new for k, (_, new) in changed.items()})
        print(f"{stage.name}: {sum(p.numel() for p in params) / 1e6:.2f} M trainable parameters on {device} "
              f"x{info.world} ({precision_name}); run {tracker.run_id} ({tracker.tracking_uri}); run dir {run_dir}", flush=True)

    wrapped: nn.Module = _LossForward(model, stage.loss)
    if info.world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        wrapped = torch.compile(wrapped)

    num_workers = cfg.num_workers if cfg.num_workers is not None else (4 if device.type == "cuda" else 0)
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_sampler=StreamSampler(cfg.batch_size, step, cfg.max_steps, info.rank, info.world),
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        # Its own generator: a DataLoader otherwise draws a worker seed from the global RNG when it
        # starts iterating, which would shift a resumed run's random stream by one draw.
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    preview_frames = None
    if stage.preview is not None and info.is_main:
        preview_set = val_set if val_set is not None else train_set
        preview_frames = torch.stack([preview_set[i]["frames"] for i in range(min(4, cfg.batch_size))])

    def save(step: int) -> Path | None:
        rngs = [rng_state()]
        if info.world > 1:
            rngs = [None] * info.world
            dist.all_gather_object(rngs, rng_state())
        if not info.is_main:
            return None
        state = {
            "step": step,
            "samples_seen": step * cfg.batch_size,  # the data position
            "optimizer": optimizer.state_dict(),
            "schedule": {"step": step},  # lr_at() is a pure function of the step
            "rng": rngs,
            "mlflow_run_id": tracker.run_id,
            "world_size": info.world,
        }
        return ckpt_io.save_checkpoint(
            run_dir, step, weights=model.state_dict(), config=config_record, state=state,
            ema=ema.state_dict(model) if ema is not None else None, keep_last=cfg.keep_last,
        )

    def validate_and_preview(step: int, final: bool = False) -> None:
        ema_ctx = ema.swapped_in(model) if ema is not None else contextlib.nullcontext()
        with ema_ctx:
            model.eval()
            if val_set is not None and (step % cfg.val_every == 0 or final):
                metrics = validation_metrics(_LossForward(model, stage.loss), val_set, cfg, info, device, stage.batch_keys)
                if stage.monitor is not None and info.is_main:
                    devices = [device.index or 0] if device.type == "cuda" else []
                    with torch.no_grad(), torch.random.fork_rng(devices=devices):
                        torch.manual_seed(cfg.seed)
                        metrics.update({f"monitor/{k}": v for k, v in stage.monitor(model, val_set, device).items()})
                tracker.log_metrics(metrics, step)
                if info.is_main:
                    tqdm.write(f"step {step}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            if preview_frames is not None and cfg.sample_every and (step % cfg.sample_every == 0 or final):
                devices = [device.index or 0] if device.type == "cuda" else []
                with torch.no_grad(), torch.random.fork_rng(devices=devices):
                    torch.manual_seed(cfg.seed)
                    for path in stage.preview(model, preview_frames.to(device), run_dir / "samples", step):
                        tracker.log_artifact(path, "samples")
            stage.train_mode()

    status = "FAILED"
    pbar = tqdm(total=cfg.max_steps, initial=step, disable=not info.is_main, dynamic_ncols=True,
                mininterval=1.0, desc=stage.name)
    frames_per_step = cfg.batch_size * stage.window
    stop = StopRequest().install()
    try:
        last_saved = step if resume_path is not None else None
        t_last = time.perf_counter()
        for batch in loader:
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            frames = batch["frames"].to(device, non_blocking=True)
            extra = {k: batch[k].to(device, non_blocking=True) for k in stage.batch_keys}
            with autocast(device, cfg.precision):
                loss, metrics = wrapped(frames, **extra)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            optimizer.step()
            step += 1
            if ema is not None:
                ema.update(model, step)

            # Log the global-batch mean (the same numbers 1 process would print).
            names = sorted(k for k in metrics if k != "loss")
            vec = torch.tensor([loss.item()] + [float(metrics[k]) for k in names] + [stop.signum is not None],
                               dtype=torch.float64)
            if info.world > 1:  # every rank stops at the same step when any was signalled
                vec = vec.to(device)
                dist.all_reduce(vec)
                vec = vec.cpu() / info.world
            stopping, vec = bool(vec[-1] > 0), vec[:-1]
            now = time.perf_counter()
            dt, t_last = now - t_last, now
            logged = {"train/loss": float(vec[0]), "train/lr": lr, "train/grad_norm": float(grad_norm),
                      "perf/step_s": dt, "perf/frames_per_s": frames_per_step / dt}
            logged.update({f"train/{k}": float(v) for k, v in zip(names, vec[1:].tolist())})
            tracker.log_metrics(logged, step)
            pbar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                tracker.flush()
                postfix = {"loss": f"{logged['train/loss']:.4f}", "fps": f"{logged['perf/frames_per_s']:.1f}"}
                usage = next((k for k in names if "usage" in k), None)
                if usage:
                    postfix["usage"] = f"{logged['train/' + usage]:.2f}"
                pbar.set_postfix(postfix, refresh=False)
            if not math.isfinite(logged["train/loss"]):
                raise FloatingPointError(f"loss is {logged['train/loss']} at step {step}; lower lr or check the data")

            if stopping:
                if last_saved != step:
                    save(step)
                if info.is_main:
                    tqdm.write(f"{stage.name}: stopped by {stop.name or 'a signal on another rank'} after step {step}; "
                               f"checkpoint saved in {run_dir}: continue with --resume")
                raise KeyboardInterrupt
            try:
                validate_and_preview(step, final=step == cfg.max_steps)
            except Exception:
                # a bug or a bad clip in a monitor or preview must not cost the steps since the last
                # checkpoint: the weights themselves are sound (the loss was finite), keep them first
                if last_saved != step:
                    save(step)
                    last_saved = step
                    if info.is_main:
                        tqdm.write(f"{stage.name}: validation failed after step {step}; checkpoint saved in "
                                   f"{run_dir}: fix the error below, then continue with --resume")
                raise
            if step % cfg.ckpt_every == 0 or step == cfg.max_steps:
                save(step)
                last_saved = step
            t_last = time.perf_counter()  # do not count validation or checkpointing as step time
        if last_saved != step:  # resumed at (or past) max_steps: nothing ran, make sure a final one exists
            save(step)
        final = ckpt_io.latest_checkpoint(run_dir) if info.is_main else None
        if info.is_main and final is not None:
            for name in (ckpt_io.WEIGHTS, ckpt_io.EMA_WEIGHTS, ckpt_io.CONFIG):
                if (final / name).is_file():
                    tracker.log_artifact(final / name, "final")
        status = "FINISHED"
        return final
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        stop.restore()
        pbar.close()
        tracker.finish(status)
        if info.world > 1 and dist.is_initialized():
            if status == "FINISHED":  # leave together: rank 0 may still be logging artifacts (a rank that tore
                dist.barrier()        # its gloo group down first aborted once at exit, "terminate called")
            dist.destroy_process_group()


def _find_resume(run_dir: Path, resume: str | bool | None) -> Path | None:
    if resume in (None, False, ""):
        existing = ckpt_io.list_checkpoints(run_dir)
        if existing:
            raise ConfigError(
                f"run dir {run_dir} already holds checkpoints (latest {existing[-1].name}); pass --resume to "
                "continue it, or choose another --run-dir"
            )
        return None
    try:
        if resume in (True, "auto"):
            # the newest intact checkpoint (damaged newer ones are skipped with a warning); None: start fresh
            return ckpt_io.latest_checkpoint(run_dir)
        return ckpt_io.resolve_checkpoint(resume)
    except (FileNotFoundError, ckpt_io.CheckpointError) as exc:
        raise ConfigError(f"--resume{'' if resume in (True, 'auto') else ' ' + str(resume)}: {exc}") from None


def _open_tracker(cfg: TrainConfig, stage: Stage, run_id: str | None):
    from mlflow.exceptions import MlflowException

    from genie_robot.artifacts.tracking import Tracker

    kwargs = dict(experiment=cfg.experiment, run_name=cfg.run_name or f"{stage.name}-{cfg.preset}",
                  tracking_uri=cfg.tracking_uri, tags={"stage": stage.name, "run_dir": str(cfg.resolved_run_dir)})
    if run_id is not None:
        try:
            return Tracker(run_id=run_id, **kwargs)
        except MlflowException as exc:  # e.g. resumed on another machine with another tracking store
            print(f"warning: MLflow run {run_id} not found in {cfg.tracking_uri or 'the local store'} "
                  f"({type(exc).__name__}); logging to a new run", file=sys.stderr)
    return Tracker(**kwargs)


# ------------------------------------------------------------------------------------------------
# command line


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from genie_robot import cli_flags as flags

    flags.add_store(p, "episode store (Zarr path or URL); repeat for several, optional sampling weight",
                    repeat=True, metavar="PATH[:WEIGHT]")
    p.add_argument("--config", default=None, metavar="YAML", help="YAML file of TrainConfig keys (see training/configs/)")
    p.add_argument("--preset", default=None, help="model preset: tiny | cpu | paper (default: cpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config value, e.g. --set lr=3e-4 --set model.dynamics.transformer.depth=4 "
                        "(model.dynamics.depth=4 also works: a field name unique within its group)")
    p.add_argument("--run-dir", default=None, help="checkpoints and samples go here (default: runs/<stage>)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                   help="continue from the latest checkpoint in the run dir (or the given one), same MLflow run")
    flags.add_mlflow(p, experiment=False)
    flags.add_device(p)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--init", default=None, metavar="BUNDLE|RUN",
                   help="warm start: this stage's model from a bundle ('default': the shipped model) or a run or "
                        "checkpoint of this stage with the same model config; optimizer and schedule start fresh")
    p.add_argument("--allow-changes", action="store_true",
                   help="with --resume: accept config changes that alter the run (lr, max_steps, seed, "
                        "stores, ...); they are logged to MLflow as resume.* params")


def _split_store(spec: str) -> tuple[str, float | None]:
    # "path:2.5" weights a store; URLs keep their "scheme://" colon.
    head, sep, tail = spec.rpartition(":")
    if sep and head and "/" not in tail:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return spec, None


def config_from_args(args: argparse.Namespace, stage: str) -> TrainConfig:
    fields: dict = {"stage": stage, "preset": args.preset, "run_dir": args.run_dir, "device": args.device,
                    "tracking_uri": args.tracking_uri, "max_steps": args.max_steps}
    if getattr(args, "tokenizer", None):
        fields["tokenizer"] = args.tokenizer
    if getattr(args, "lam", None):
        fields["lam"] = args.lam
    if args.init:
        fields["init"] = args.init
    if args.store:
        specs = [_split_store(s) for s in args.store]
        fields["stores"] = [p for p, _ in specs]
        if any(w is not None for _, w in specs):
            fields["store_weights"] = [1.0 if w is None else w for _, w in specs]
    try:
        return load_config(args.config, args.overrides, **fields)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, args.stage)
    final = train(cfg, resume=args.resume, allow_changes=args.allow_changes)
    if final is not None:
        print(f"final checkpoint: {final}")
    return 0


def run_cli(args: argparse.Namespace) -> int:
    """Config, data and checkpoint problems (ConfigError, StoreError: a damaged chunk found while
    training, a missing file) end in one error line and exit status 2, not a traceback."""
    from genie_robot.cli import run_reporting_errors

    return run_reporting_errors(run, args, f"genie-robot train {args.stage}")


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the tokenizer (stage 1) or LAM + dynamics (stage 2)",
                              description="Train a stage; the config is a preset plus --config YAML and --set overrides.")
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    tok = stages.add_parser("tokenizer", help="stage 1: the video tokenizer")
    _add_train_args(tok)
    dyn = stages.add_parser("dynamics", help="stage 2: latent action model + dynamics, tokenizer frozen")
    _add_train_args(dyn)
    dyn.add_argument("--tokenizer", default=None, metavar="CKPT",
                     help="stage-1 checkpoint dir or run dir (latest checkpoint), or a bundle whose tokenizer to "
                          "reuse ('default': the shipped model's); required")
    dyn.add_argument("--lam", default=None, metavar="CKPT",
                     help="a `train lam` checkpoint or run dir, or a bundle ('default'): its LAM is frozen "
                          "(the default recipe)")
    lam = stages.add_parser("lam", help="the latent action model on its own (frozen for stage 2)")
    _add_train_args(lam)
    for sp in (tok, lam, dyn):
        sp.set_defaults(func=run_cli)


def main(argv: list[str] | None = None) -> int:
    """`python -m training.train tokenizer|dynamics ...` (what torchrun launches)."""
    parser = argparse.ArgumentParser(prog="python -m training.train")
    sub = parser.add_subparsers(dest="command")
    register_cli(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
