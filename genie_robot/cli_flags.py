"""The flags several `genie-robot` subcommands share, defined once: one name, one default and one
meaning wherever a command takes them. A command adds the ones it takes, then its own.

    from genie_robot import cli_flags as flags
    flags.add_model(p, required=True)       # --model BUNDLE
    flags.add_backend(p)                    # --backend onnx|torch
    flags.add_out(p, "report folder (created)")
    flags.add_mlflow(p, optional=True)      # --experiment, --tracking-uri, --no-mlflow

Help texts have defaults that fit most commands; pass `help=` where a command means something more
specific (what its --seed seeds, what its --out holds).
"""

from __future__ import annotations

import argparse

MODEL_HELP = "model bundle dir (from `genie-robot export`), or 'default': the shipped model"


def add_model(p: argparse.ArgumentParser, *, required: bool = False, default: str | None = "default",
              aliases: tuple[str, ...] = (), help: str = MODEL_HELP) -> None:
    """--model BUNDLE (args.model): a model bundle dir or 'default'; `aliases` keeps an older name working
    (play's --bundle)."""
    p.add_argument("--model", *aliases, dest="model", required=required, default=None if required else default,
                   metavar="BUNDLE", help=help)


def add_backend(p: argparse.ArgumentParser, *, providers: bool = False) -> None:
    """--backend onnx|torch (default onnx), and with `providers` the onnxruntime --providers."""
    p.add_argument("--backend", default="onnx", choices=["onnx", "torch"],
                   help="onnx: the bundle's graphs in onnxruntime (default); torch: its weights in torch")
    if providers:
        p.add_argument("--providers", default="auto", help="onnxruntime providers: auto, cpu or cuda")


def add_threads(p: argparse.ArgumentParser) -> None:
    """--threads N (default 0: the backend's default)."""
    p.add_argument("--threads", type=int, default=0, help="CPU threads for inference (0 = the backend's default)")


def add_device(p: argparse.ArgumentParser) -> None:
    """--device (default None: genie_robot.device.pick_device's automatic choice)."""
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: auto)")


def add_out(p: argparse.ArgumentParser, help: str, *, required: bool = True, default: str | None = None,
            metavar: str | None = None) -> None:
    """--out: every command writes something of its own there, so `help` says what."""
    p.add_argument("--out", required=required, default=default, metavar=metavar, help=help)


def add_store(p: argparse.ArgumentParser, help: str = "episode store (Zarr path or fsspec URL)", *,
              required: bool = False, repeat: bool = False, metavar: str | None = None) -> None:
    """--store PATH (args.store); with `repeat` it may be given several times (a list, None if never)."""
    p.add_argument("--store", required=required, default=None, action="append" if repeat else "store",
                   metavar=metavar, help=help)


def add_episodes(p: argparse.ArgumentParser, default: int, help: str) -> None:
    p.add_argument("--episodes", type=int, default=default, help=help)


def add_seed(p: argparse.ArgumentParser, default: int, help: str) -> None:
    p.add_argument("--seed", type=int, default=default, help=help)


def add_stride(p: argparse.ArgumentParser, *, default: int | None = 0, help: str | None = None) -> None:
    """--stride N: source frames per model step; the default (0 or None) means the model's training
    frame_stride (models.configs.DataConfig), which every tool comparing the model with video reads."""
    p.add_argument("--stride", type=int, default=default,
                   help=help or "source frames per model step: take every n-th frame (default: the model's "
                                "training frame_stride)")


def add_mlflow(p: argparse.ArgumentParser, *, optional: bool = False, experiment: bool = True,
               uri_default: str = "sqlite:///mlflow.db in the working directory") -> None:
    """MLflow: --experiment (default genie-robot), --tracking-uri and, where the report folder is enough
    on its own (`optional`), --no-mlflow."""
    if experiment:
        p.add_argument("--experiment", default="genie-robot", help="MLflow experiment")
    p.add_argument("--tracking-uri", default=None, help=f"MLflow tracking URI (default: {uri_default})")
    if optional:
        p.add_argument("--no-mlflow", action="store_true", help="write the report folder only")
