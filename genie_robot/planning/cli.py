"""The planning subcommands, registered with `genie-robot` through one entry of cli.COMMAND_MODULES:
`plan-eval` (evaluate.py) and `agents` (agents.py). Both keep torch, MuJoCo and MLflow imports inside
their functions."""

from __future__ import annotations


def register_cli(subparsers) -> None:
    from genie_robot.planning import agents, evaluate

    evaluate.register_cli(subparsers)
    agents.register_cli(subparsers)
