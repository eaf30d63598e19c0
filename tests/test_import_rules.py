"""Import rules between the top-level packages, checked on the source (AST; nothing is imported).

The library (`genie_robot/`) owns the formats that cross stages (`genie_robot/artifacts/`:
checkpoints, tracking); `training/` uses the library, never the reverse. The ROS nodes
(`ros_nodes/`) run the library's runtime and never import the trainer either. The experiments
(`experiments/`: sweeps, studies, reports) sit downstream of both the library and the trainer: they
may import them, and nothing imports the experiments.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXPERIMENTS_RULE = ("experiments/ (sweeps, studies, reports) use the library and the trainer; nothing imports "
                    "them: what others reuse belongs in genie_robot/ (or training/)")
# package -> [(a package it must never import, why)]
RULES = {
    "genie_robot": [("training", "the library (genie_robot/) never imports training/: training uses the library, "
                                 "the formats that cross stages live in genie_robot/artifacts/"),
                    ("experiments", EXPERIMENTS_RULE)],
    "ros_nodes": [("training", "ros_nodes/ never imports training/: nodes use the library (genie_robot/) only"),
                  ("experiments", EXPERIMENTS_RULE)],
    "training": [("experiments", EXPERIMENTS_RULE)],
}
CASES = [(package, forbidden, rule) for package, rules in sorted(RULES.items()) for forbidden, rule in rules]


def _names(node: ast.AST) -> list[str]:
    """The absolute module names an import statement imports ([] for anything else, and for relative
    imports, which stay inside their own package)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def forbidden_imports(source: str, forbidden: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, statement) of every import of package `forbidden` or a submodule of it, anywhere in the
    file: top level, inside functions, classes, `if TYPE_CHECKING:` or `try:` blocks; and of every
    string that is nothing but such a module path (what importlib.import_module would be given)."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        names = _names(node)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and not node.value.isidentifier() \
                and all(part.isidentifier() for part in node.value.split(".")):
            names = [node.value]  # a dotted module path in a string
        for name in names:
            if name == forbidden or name.startswith(forbidden + "."):
                found.append((node.lineno, ast.get_source_segment(source, node) or name))
                break
    return sorted(found)


@pytest.mark.parametrize("package,forbidden,rule", CASES, ids=[f"{p}-{f}" for p, f, _ in CASES])
def test_package_never_imports_a_forbidden_package(package, forbidden, rule):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no .py files under {package}/"
    problems = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for line, statement in forbidden_imports(path.read_text(encoding="utf-8"), forbidden, rel):
            problems.append(f"{rel}:{line}: `{statement}` breaks the rule: {rule}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_the_check_finds_every_form_of_import():
    source = "\n".join([
        "import training",                                 # 1
        "import os, training.train as t",                  # 2
        "from training import checkpoints",                # 3
        "from training.configs import TrainConfig",        # 4
        "def f():",
        "    from training.tracking import Tracker",       # 6
        "class C:",
        "    def g(self):",
        "        import training.ablate",                  # 9
        "if TYPE_CHECKING:",
        "    from training.train import Stage",            # 11
        "import training_extras",                          # not the package
        "from trainingx import y",                         # not the package
        "from .training import z",                         # relative: inside its own package
        "from genie_robot.artifacts import checkpoints",   # the library's own module
        "x = 'import training'",                           # a string, not an import
        "m = importlib.import_module('training.train')",   # 17: a module path in a string
        "doc = 'see training.train for the loop'",          # prose, not a module path
    ])
    assert [line for line, _ in forbidden_imports(source, "training")] == [1, 2, 3, 4, 6, 9, 11, 17]


def test_the_trainer_and_experiment_subcommands_come_in_as_plugins():
    """genie-robot still has `train` (training/) and `ablate`, `eval`, `plan-eval`, `agents`
    (experiments/): pyproject.toml's entry points bring them in, in this order after the data commands."""
    from genie_robot.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"train", "ablate", "eval", "plan-eval", "agents", "export"} <= set(commands)
    order = list(commands)
    assert order.index("info") < order.index("train") < order.index("ablate") < order.index("eval") \
        < order.index("plan-eval") < order.index("agents") < order.index("export")
    for name, module in (("ablate", "experiments.ablate"), ("eval", "experiments.eval_report"),
                         ("plan-eval", "experiments.plan_report"), ("agents", "experiments.agents")):
        assert commands[name].get_default("func").__module__ == module, name


def test_the_planner_service_does_not_import_the_node_that_hosts_it():
    """world_model_node adds ~/plan_to_goal from planner_service; the reverse import made a cycle."""
    source = (ROOT / "ros_nodes" / "planner_service.py").read_text(encoding="utf-8")
    assert not forbidden_imports(source, "ros_nodes.world_model_node")
