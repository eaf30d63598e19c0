"""docs/ros.md run as written (tests/doc_blocks.py reads it; tests/test_docs_examples.py runs the other
docs): `genie-world-model-node --help` runs; every `-p NAME:=VALUE` of the doc's node commands names a
parameter that node declares (the commands themselves start nodes that run until stopped; the other
tests here start the nodes); the two service examples are exec'd against a real world-model node over
DDS, given `client`, `image_msg`, `camera_msg` and `goal_msg`; and the parameter table lists every
parameter of the node with its real default."""

from __future__ import annotations

import array
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(180)]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import doc_blocks as db  # noqa: E402

DOC = db.ROOT / "docs" / "ros.md"
NODES = ("genie-world-model-node", "genie-camera-replay-node")


def _blocks(lang: set[str]) -> list[db.Block]:
    return [b for b in db.read_blocks(DOC) if b.runnable and b.skip is None and b.lang in lang]


def _run(argv: list[str]) -> str:
    script = Path(sys.executable).with_name(argv[0])
    exe = [str(script)] if script.is_file() else [argv[0]]
    run = subprocess.run(exe + argv[1:], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"`{' '.join(argv)}` exited {run.returncode}:\n{run.stdout}{run.stderr}"
    return run.stdout


def test_node_commands_name_parameters_the_nodes_declare():
    commands = [c for b in _blocks(db.SHELL) for c in db.shell_commands(b)]
    assert commands, f"no node commands found in {DOC}"
    helps: dict[str, str] = {}
    problems = []
    for cmd in commands:
        exe = cmd.program[0]
        if exe not in NODES:
            problems.append(f"{cmd.where}: `{cmd.text}`: only {NODES} are known to this test")
            continue
        if "--help" in cmd.program or "-h" in cmd.program:
            helps[exe] = _run(cmd.program)  # run as written: it must exit without starting the node
            continue
        if exe not in helps:
            helps[exe] = _run([exe, "--help"])
        if cmd.program[1:2] != ["--ros-args"]:
            problems.append(f"{cmd.where}: `{cmd.text}`: node arguments go after --ros-args")
        declared = set(re.findall(r"^  (\w+) \(", helps[exe], re.M))
        for word, nxt in zip(cmd.program, cmd.program[1:]):
            if word == "-p" and nxt.split(":=")[0] not in declared:
                problems.append(f"{cmd.where}: {exe} has no parameter {nxt.split(':=')[0]!r} "
                                f"(it declares {', '.join(sorted(declared))})")
            if word in ("-p", "-r") and ":=" not in nxt:
                problems.append(f"{cmd.where}: `{word} {nxt}` is not NAME:=VALUE")
    assert not problems, "\n".join(problems)


def _image(seed: int, h: int = 24, w: int = 32):
    from sensor_msgs.msg import Image

    pixels = np.random.default_rng(seed).integers(0, 256, h * w * 3, dtype=np.uint8)
    return Image(height=h, width=w, encoding="rgb8", step=w * 3, data=array.array("B", pixels.tobytes()))


def test_service_examples_run_against_a_real_node(ros, tiny_bundle):
    from genie_robot_msgs.srv import ImagineRollout, PlanToGoal

    from ros_nodes.world_model_node import WorldModelNode

    ros.add(WorldModelNode, model=tiny_bundle, backend="torch", diagnostics_period=0.0)
    base = f"{ros.ns}/genie_world_model"
    services = {"ImagineRollout": (ImagineRollout, f"{base}/imagine_rollout"),
                "PlanToGoal": (PlanToGoal, f"{base}/plan_to_goal")}
    blocks = _blocks({"python"})
    assert len(blocks) == 2, [b.where for b in blocks]
    for block in blocks:
        (name,) = [n for n in services if n in block.text]
        srv, service = services[name]
        client = ros.client.create_client(srv, service)
        assert client.wait_for_service(timeout_sec=10.0), f"{service} did not appear"
        namespace = {"client": client, "image_msg": _image(0), "camera_msg": _image(1), "goal_msg": _image(2)}
        exec(compile(block.text, block.where, "exec"), namespace)  # noqa: S102 - the doc's own code
        resp = namespace["resp"]
        assert resp.success, f"{block.where}: {resp.message}"
        if name == "ImagineRollout":
            req = namespace["req"]
            assert len(resp.frames) == req.batch_size * req.horizon == 6
        else:
            assert len(resp.actions) == len(resp.frames) == 4  # horizon=4 in the doc


def test_the_parameter_table_lists_every_parameter_with_its_default():
    from ros_nodes.world_model_node import PARAMETERS

    def shown(value) -> str:  # how the table writes a default
        return ("true" if value else "false") if isinstance(value, bool) else "''" if value == "" else str(value)

    lines = DOC.read_text().splitlines()
    start = lines.index("Parameters (`--ros-args -p name:=value`):") + 4  # the heading, a blank, the header, ---
    documented, wrong = set(), []
    for row in lines[start:]:
        if not row.startswith("|"):
            break
        first, default = (cell.strip() for cell in row.strip("|").split("|")[:2])
        names = re.findall(r"`(\w+)`", first)
        documented.update(names)
        if default == "model's":  # steps, temperature, order: "use the model config's" sentinels
            continue
        defaults = re.findall(r"`([^`]*)`", default)
        if defaults != [shown(PARAMETERS[n][0]) if n in PARAMETERS else "?" for n in names]:
            actual = [PARAMETERS.get(n, ("(no such parameter)",))[0] for n in names]
            wrong.append(f"{row}\n    the node's defaults: {actual}")
    assert not wrong, "docs/ros.md parameter rows that differ from ros_nodes/world_model_node.py:\n" + "\n".join(wrong)
    assert documented == set(PARAMETERS), (f"missing from the table: {sorted(set(PARAMETERS) - documented)}; "
                                           f"not parameters: {sorted(documented - set(PARAMETERS))}")
