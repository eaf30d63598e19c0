"""The onnxruntime runtime runs on the base install (issue #15): a fresh interpreter in which every
package of the `train` extra (pyproject.toml: torch, MLflow, Zarr, the converters' libraries, ...) fails
to import loads a real bundle with ONNX graphs, rolls it out (resizing a prompt of another size on the
way) and gets the frames recorded in tests/data/formats, the same as with everything installed."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORMATS = ROOT / "tests" / "data" / "formats"
MODULE_OF = {"scikit-image": "skimage", "pyyaml": "yaml"}  # distribution -> import name, where they differ

SCRIPT = textwrap.dedent("""
    import sys
    for name in sys.argv[3].split(","):
        sys.modules[name] = None  # `import name` (and any name.*) now raises ImportError
    import numpy as np
    from genie_robot.runtime import WorldModel

    wm = WorldModel.load(sys.argv[1], backend="onnx", threads=1)
    rec = np.load(sys.argv[2])
    prompt, actions = rec["tiny/prompt"], rec["tiny/actions"]
    np.testing.assert_array_equal(wm.rollout(prompt, actions, seed=7), rec["tiny/onnx/frames"])
    np.testing.assert_array_equal(wm.infer_actions(prompt), rec["tiny/onnx/lam"])
    np.testing.assert_array_equal(wm.decode(wm.encode(prompt)).shape, (1, *prompt.shape))
    assert wm.rollout(np.zeros((40, 30, 3), np.uint8), np.array([[0, 1]])).shape == (1, 2, *wm.resolution, 3)
    assert wm.provider == "CPUExecutionProvider", wm.provider
    assert "training" not in sys.modules
    print("ok")
""")


def train_only_modules() -> list[str]:
    """Import names of the `train` extra's packages."""
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    dists = [re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower() for req in extra]
    return [MODULE_OF.get(d, d.replace("-", "_")) for d in dists]


def test_an_onnx_bundle_runs_on_the_base_install():
    blocked = train_only_modules()
    assert {"torch", "mlflow", "zarr", "onnx", "safetensors"} <= set(blocked)
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(FORMATS / "tiny_bundle"), str(FORMATS / "frames.npz"),
                          ",".join(blocked)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


CLI_SCRIPT = textwrap.dedent("""
    import sys
    for name in sys.argv[1].split(","):
        sys.modules[name] = None
    from genie_robot.cli import build_parser, main

    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)
    assert {"train", "eval", "plan-eval", "agents", "ablate", "rollout", "export"} <= commands, commands
    sys.exit(main(sys.argv[2:]))
""")


def test_the_cli_on_the_base_install_says_which_extra_a_command_needs():
    """Without the `train` extra, `genie-robot` still starts (runtime commands work, --help lists every
    command), and a training or experiment command refuses with one line naming what to install."""
    blocked = ",".join(train_only_modules())
    run = subprocess.run([sys.executable, "-c", CLI_SCRIPT, blocked, "train", "lam", "--store", "x"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-3000:]
    assert run.stderr.strip() == ("genie-robot train: error: needs the 'torch' package, which this install lacks: "
                                  "pip install 'genie-robot[train]' (training, evaluation and the experiments)")
    run = subprocess.run([sys.executable, "-c", CLI_SCRIPT, blocked, "--help"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and "not installed" in run.stdout, run.stderr[-3000:]
    # a command whose module loads without the extra but whose job needs it says the same
    run = subprocess.run([sys.executable, "-c", CLI_SCRIPT, blocked, "eval", "--model", "default", "--store", "x",
                          "--out", "y"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "pip install 'genie-robot[train]'" in run.stderr, run.stderr[-3000:]
