"""The onnxruntime runtime runs where torch is not installed (issue #15): a fresh interpreter in which
`import torch` fails loads a real bundle with ONNX graphs, rolls it out and gets the frames recorded
in tests/data/formats (the same frames as with torch installed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

FORMATS = Path(__file__).resolve().parents[1] / "data" / "formats"

SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # `import torch` (and any torch.*) now raises ImportError
    import numpy as np
    from genie_robot.runtime import WorldModel

    wm = WorldModel.load(sys.argv[1], backend="onnx", threads=1)
    rec = np.load(sys.argv[2])
    prompt, actions = rec["tiny/prompt"], rec["tiny/actions"]
    np.testing.assert_array_equal(wm.rollout(prompt, actions, seed=7), rec["tiny/onnx/frames"])
    np.testing.assert_array_equal(wm.infer_actions(prompt), rec["tiny/onnx/lam"])
    np.testing.assert_array_equal(wm.decode(wm.encode(prompt)).shape, (1, *prompt.shape))
    assert wm.provider == "CPUExecutionProvider", wm.provider
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "mlflow", "zarr", "training"))
    assert loaded == ["torch"] and sys.modules["torch"] is None, loaded
    print("ok")
""")


def test_an_onnx_bundle_loads_and_rolls_out_without_torch():
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(FORMATS / "tiny_bundle"), str(FORMATS / "frames.npz")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
