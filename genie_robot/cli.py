"""`genie-robot <subcommand>`: one subcommand per job.

Each module listed below owns its subcommand through `register_cli(subparsers)`, which adds a parser
and sets `func(args) -> int | None`. Modules keep heavy imports (torch, MuJoCo, MLflow) inside their
functions so that `genie-robot --help` stays fast. The flags several commands share are defined once,
in cli_flags.py; every `func` runs its job through `run_reporting_errors`, the one place that turns an
input the user must fix (genie_robot.errors) into exit status 2.

The trainer's subcommands (`train`) and the experiments' (`ablate`, `eval`, `plan-eval`, `agents`)
are not named here: the library never imports `training/` or `experiments/`. They come in as
plugins, the modules pyproject.toml lists under the entry-point group `genie_robot.commands`, so an
install without them simply has no such subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys

from genie_robot.errors import InputError

PLUGIN_GROUP = "genie_robot.commands"  # entry points: name = module with register_cli (pyproject.toml)

# Order here is the order in `genie-robot --help`: data -> (plugins: training, experiments) -> runtime.
COMMAND_MODULES = [
    "genie_robot.data.sim.simulate",  # simulate
    "genie_robot.data.convert.cli",  # convert rlds|video|rosbag
    "genie_robot.data.info",  # info
    "genie_robot.runtime.export",  # export
    "genie_robot.play",  # play
    "genie_robot.rollout",  # rollout
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genie-robot",
        description="Genie world model for robot manipulation: data, training, export, rollouts.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # the plugins' entry points are numbered ("1-train", "2-ablate", ...) only to keep their help order
    plugins = {ep.value: ep.name.split("-", 1)[1]
               for ep in sorted(importlib.metadata.entry_points(group=PLUGIN_GROUP), key=lambda e: e.name)}
    after_data = COMMAND_MODULES.index("genie_robot.data.info") + 1
    for name in COMMAND_MODULES[:after_data] + list(plugins) + COMMAND_MODULES[after_data:]:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # the optional part itself is not installed
                continue
            if name not in plugins:  # a core command missing a dependency is a real error
                raise
            # a plugin whose extra is not installed (a runtime-only install has no torch): the
            # command is still listed, and says what to install instead of breaking every command
            _register_missing(sub, plugins[name], exc.name)
            continue
        module.register_cli(sub)
    return parser


def _register_missing(sub, command: str, missing: str) -> None:
    message = missing_package(missing)
    p = sub.add_parser(command, help=f"(not installed: {message})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda args: report_error(f"genie-robot {command}", message))


def setup_logging(level: int = 20, *, others: int = 30) -> None:
    """The commands' logging: this project's own messages (`genie_robot.*`, `training.*`, `experiments.*`,
    `ros_nodes.*`) at `level` (INFO), everything else at `others` (WARNING), so a library's INFO chatter (PyOpenGL,
    onnx, mlflow) stays out of the output; `--verbose` passes others=INFO or DEBUG."""
    import logging

    logging.basicConfig(level=others, format="%(message)s")
    logging.getLogger().setLevel(others)
    for name in ("genie_robot", "training", "experiments", "ros_nodes"):
        logging.getLogger(name).setLevel(level)


def report_error(prog: str, exc: BaseException) -> int:
    """One `PROG: error: message` line on stderr, as argparse prints a bad flag, and exit status 2
    instead of a traceback. Commands reach it through `run_reporting_errors`; the ROS executables,
    which are not subcommands, call it directly."""
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return 2


# What a command refuses with exit status 2: the project's InputError (SetupError included); a plain
# ValueError, which is what numpy, the standard library and the library's own argument checks (the
# WorldModel's frame layout, the planners' settings) raise for a bad value; and a file that is missing
# or already there. Anything else is a bug and keeps its traceback.
REFUSED = (InputError, ValueError, FileNotFoundError, FileExistsError)


def run_reporting_errors(job, args: argparse.Namespace, prog: str = "genie-robot") -> int:
    """`job(args)`, with an input the user must fix (REFUSED) reported through `report_error` as
    `PROG: error: ...` and exit status 2. The one error wrapper: every subcommand's `func` runs its job
    through it."""
    try:
        return job(args)
    except REFUSED as exc:
        return report_error(prog, exc)
    except ModuleNotFoundError as exc:  # an extra this install lacks (a runtime-only install: no torch)
        if exc.name is None or exc.name.split(".")[0] in ("genie_robot", "training", "experiments", "ros_nodes"):
            raise
        return report_error(prog, missing_package(exc.name))


def missing_package(name: str) -> str:
    return (f"needs the '{name}' package, which this install lacks: "
            "pip install 'genie-robot[train]' (training, evaluation and the experiments)")


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
