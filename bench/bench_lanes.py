"""Two cores for one robot: onnxruntime's intra-op threads against two lanes (issue #16, inference half).

A MaskGIT pass over one 8x8-token frame is too small for onnxruntime to share between threads, so
`OnnxBackend` with threads >= 2 runs two lanes instead: the guided and unguided pass of each step side
by side, and the halves of a batch (genie_robot/runtime/onnx_backend.py). Measured here, in one
process, blocks of about --block seconds alternating for --rounds rounds (median reported):

  1 thread               WorldModel.load(threads=1)
  2 intra-op threads     the backend as it was before lanes: one session pool of 2 threads, the
                         passes one after another (rebuilt here as the baseline)
  2 lanes                WorldModel.load(threads=2)

Frames/s of `WorldModel.step` after a 15-frame prompt (full context), at the bundle's guidance (the
shipped model: 2) and at guidance 1, at 25 and 8 MaskGIT steps, batch 1 and 16. The lanes give
the same frames as one thread, bit for bit (tests/runtime/test_world_model.py).

    python bench/bench_lanes.py                       # the shipped model, fp32 and int8 graphs
    python bench/bench_lanes.py --precision int8 --steps 25
    python bench/bench_lanes.py --model compare --steps 25 --batches 1 --block 6
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_int8 import frames_per_second  # noqa: E402


def intra_op_baseline(wm, bundle_dir: Path, threads: int):
    """`wm` with its backend turned back into the pre-lanes one: sessions of `threads` intra-op threads
    and no lanes."""
    import onnxruntime as ort

    from genie_robot.runtime.onnx_backend import session_options

    be = wm.backend
    opts = session_options(threads)
    for graph in be.sessions:
        be.sessions[graph] = ort.InferenceSession(str(Path(bundle_dir) / f"{graph}.onnx"), sess_options=opts,
                                                  providers=["CPUExecutionProvider"])
    be.lanes, be._pool = 1, None
    return wm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default", help="an fp32 bundle, 'default' (the shipped model), or 'compare' "
                                                        "(the peers' comparison config, random weights)")
    ap.add_argument("--precision", default="fp32,int8", help="graphs to measure: fp32, int8 or both")
    ap.add_argument("--steps", default="25,8")
    ap.add_argument("--guidance", default=None, help="comma list (default: the model's, then 1)")
    ap.add_argument("--batches", default="1,16", help="batch sizes (16: a planner's rollouts)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--block", type=float, default=3.0, help="seconds per timed block")
    args = ap.parse_args()

    import onnxruntime as ort

    from genie_robot.runtime import bundle, default_model
    from genie_robot.runtime.export import export_from_bundle
    from genie_robot.runtime.world_model import WorldModel

    tmp_root = tempfile.TemporaryDirectory()
    if args.model == "compare":  # width 256, 8 layers, 16x16 tokens, vocabulary 1024 (bench_runtime.py)
        from bench_runtime import compare_config, make_bundle

        src = Path(tmp_root.name) / "compare"
        make_bundle(compare_config(), src)
    else:
        src = default_model.resolve(args.model)
    cfg = bundle.read_config(src)
    guidances = [float(g) for g in args.guidance.split(",")] if args.guidance else sorted({cfg.dynamics.guidance, 1.0},
                                                                                         reverse=True)
    rng = np.random.default_rng(0)
    H, W = cfg.tokenizer.resolution
    prompt = rng.integers(0, 256, (cfg.dynamics.context - 1, H, W, 3), dtype=np.uint8)
    print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; load average {tuple(round(x, 2) for x in os.getloadavg())}; "
          f"onnxruntime {ort.__version__}; model {args.model} ({cfg.name} preset)")
    print()
    print("| graphs | MaskGIT steps | guidance | batch | 1 thread | 2 intra-op threads | 2 lanes "
          "| lanes / 2 intra-op | lanes / 1 thread |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tmp_root as tmp:
        graphs = {}
        for p in args.precision.split(","):
            graphs[p] = ((src if args.model == "compare" else default_model.onnx_bundle(src)) if p == "fp32" else
                         export_from_bundle(src, Path(tmp) / p, precision=p)[0])
        for p, d in graphs.items():
            for steps in map(int, args.steps.split(",")):
                for guidance in guidances:
                    for batch in map(int, args.batches.split(",")):
                        def load(threads):
                            return WorldModel.load(d, backend="onnx", providers="cpu", threads=threads, steps=steps,
                                                   guidance=guidance)
                        wms = {"1 thread": load(1), "2 intra-op": intra_op_baseline(load(2), d, 2), "2 lanes": load(2)}
                        states = {k: wm.reset(prompt).repeat(batch) for k, wm in wms.items()}
                        runs = {k: [] for k in wms}
                        for _ in range(args.rounds):
                            for k, wm in wms.items():
                                runs[k].append(batch * frames_per_second(wm, states[k], args.block))
                        fps = {k: float(np.median(v)) for k, v in runs.items()}
                        print(f"| {p} | {steps} | {guidance:g} | {batch} | {fps['1 thread']:.2f} | {fps['2 intra-op']:.2f} "
                              f"| {fps['2 lanes']:.2f} | {fps['2 lanes'] / fps['2 intra-op']:.2f}× "
                              f"| {fps['2 lanes'] / fps['1 thread']:.2f}× |", flush=True)
    print()
    print(f"frames/s = imagined frames per second summed over the batch; load average after: "
          f"{tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
