"""Do onnxruntime's transformer fusions speed up the dynamics graph? (issue #16, inference half)

The shipped model's fp32 `dynamics_step` graph (exported to the cache on first use) against the same
graph after `onnxruntime.transformers.optimizer.optimize_model` (model_type "bert": it fuses the
bias + GELU and the residual + LayerNorm pairs it finds; the custom cached attention it leaves alone).
One pass at batch 1 with a full 16-frame cache of random values, --threads threads; the two sessions
alternate blocks of --passes passes for --rounds rounds in one process; the table gives the median
milliseconds per pass of each and their ratio, and the check that both give the same logits.

    python bench/bench_ort_fusion.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--passes", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    import onnxruntime as ort
    from onnxruntime.transformers import optimizer

    from genie_robot.runtime.default_model import onnx_bundle, resolve

    src = onnx_bundle(resolve("default")) / "dynamics_step.onnx"
    fused_path = Path(tempfile.mkdtemp()) / "dynamics_step_fused.onnx"
    fused = optimizer.optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, opt_level=1)
    stats = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
    fused.save_model_to_file(str(fused_path))

    def session(path):
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    sessions = {"fp32 graph": session(src), "fused": session(fused_path)}
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sessions["fp32 graph"].get_inputs():
        shape = [1 if isinstance(d, str) else d for d in i.shape]
        feeds[i.name] = (rng.integers(0, 8, shape).astype(np.int64) if "int64" in i.type and shape
                         else np.array(5, np.int64) if "int64" in i.type
                         else (rng.standard_normal(shape) * 0.1).astype(np.float32))
    outs = {name: s.run(None, feeds)[0] for name, s in sessions.items()}
    diff = float(np.abs(outs["fp32 graph"] - outs["fused"]).max())
    agree = float((outs["fp32 graph"].argmax(-1) == outs["fused"].argmax(-1)).mean())
    times = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, s in sessions.items():
            t = time.perf_counter()
            for _ in range(args.passes):
                s.run(None, feeds)
            times[name].append((time.perf_counter() - t) / args.passes * 1e3)
    base = statistics.median(times["fp32 graph"])
    print(f"fusions applied: {stats}")
    print(f"logits: max |diff| {diff:.2e}, argmax agreement {agree:.3f}")
    print("| graph | ms / pass (median) | vs fp32 graph |\n| --- | ---: | ---: |")
    for name in sessions:
        ms = statistics.median(times[name])
        print(f"| {name} | {ms:.2f} | {base / ms:.2f}x |")


if __name__ == "__main__":
    main()
