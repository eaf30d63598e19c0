"""`genie-robot <subcommand>`: one subcommand per job.

Each module listed below owns its subcommand through `register_cli(subparsers)`, which adds a parser
and sets `func(args) -> int | None`. Modules keep heavy imports (torch, MuJoCo, MLflow) inside their
functions so that `genie-robot --help` stays fast.

The trainer's subcommands (`train`, `ablate`) are not named here: the library never imports
`training/`. They come in as plugins, the modules pyproject.toml lists under the entry-point group
`genie_robot.commands`, so an install without the trainer simply has no `train` subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys

PLUGIN_GROUP = "genie_robot.commands"  # entry points: name = module with register_cli (pyproject.toml)

# Order here is the order in `genie-robot --help`: data -> (plugins: training) -> evaluation -> runtime.
COMMAND_MODULES = [
    "genie_robot.data.sim.simulate",  # simulate
    "genie_robot.data.convert.cli",  # convert rlds|video|rosbag
    "genie_robot.data.info",  # info
    "genie_robot.eval.report",  # eval
    "genie_robot.runtime.export",  # export
    "genie_robot.play",  # play
    "genie_robot.planning.cli",  # plan-eval, agents
    "genie_robot.rollout",  # rollout
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genie-robot",
        description="Genie world model for robot manipulation: data, training, export, rollouts.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # the plugins' entry points are numbered ("1-train", "2-ablate") only to keep their help order
    plugins = [ep.value for ep in sorted(importlib.metadata.entry_points(group=PLUGIN_GROUP), key=lambda e: e.name)]
    after_data = COMMAND_MODULES.index("genie_robot.data.info") + 1
    for name in COMMAND_MODULES[:after_data] + plugins + COMMAND_MODULES[after_data:]:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only tolerate the module itself being absent (optional part not installed);
            # a missing dependency inside it is a real error.
            if exc.name != name:
                raise
            continue
        module.register_cli(sub)
    return parser


def setup_logging(level: int = 20, *, others: int = 30) -> None:
    """The commands' logging: this project's own messages (`genie_robot.*`, `training.*`, `ros_nodes.*`)
    at `level` (INFO), everything else at `others` (WARNING), so a library's INFO chatter (PyOpenGL,
    onnx, mlflow) stays out of the output; `--verbose` passes others=INFO or DEBUG."""
    import logging

    logging.basicConfig(level=others, format="%(message)s")
    logging.getLogger().setLevel(others)
    for name in ("genie_robot", "training", "ros_nodes"):
        logging.getLogger(name).setLevel(level)


def report_error(prog: str, exc: BaseException) -> int:
    """The one way a command reports an input the user must fix (a missing file, a wrong value, a store
    or checkpoint that does not fit): one `PROG: error: message` line on stderr, as argparse prints a
    bad flag, and exit status 2 instead of a traceback."""
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return 2


def run_reporting_errors(job, args: argparse.Namespace, prog: str = "genie-robot") -> int:
    """Run `job(args)` with this project's INFO logging; a bad input (FileNotFoundError, ValueError,
    RuntimeError) goes through `report_error`."""
    setup_logging()
    try:
        return job(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        return report_error(prog, exc)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
