"""onnxruntime backend: one InferenceSession per exported graph (see torch_backend.py for the graphs).

Providers come from `genie_robot.device.onnx_providers`; after the sessions exist we read back which
provider is really active, because onnxruntime falls back to CPU silently when CUDA cannot be used
(e.g. the CUDA libraries are missing), and warn when CUDA was asked for but is not active.
Caches are host numpy arrays; onnxruntime reads them in place on CPU.

`precision` is the bundle's (manifest "precision", quantize.py): the graphs are loaded as they are, an
int8 bundle's quantized dynamics graph included; int8 graphs are for the CPU provider, and asking for
CUDA with one is warned about.

Threads on the CPU provider: a `cpu`-preset pass over one frame is too small for onnxruntime to
share between threads (batch 1, guidance 2: 2 intra-op threads imagined 1.4x slower than 1,
bench/RESULTS.md), so with 2 or more threads the backend also runs two *lanes*: independent runs side
by side on single-threaded sessions, one per core (onnxruntime releases the GIL while it runs): the
guided and unguided pass of a MaskGIT step (`run_all`), and the two halves of a batch. A lone run of
batch 1 has nothing to share and runs on the sessions with all the threads, which pays for larger
models (the peers' comparison config: 0.62 against 0.49 frames/s on one thread). Every graph takes
its batch on axis 0 of its inputs and of its output, and on axis 2 of the caches (graphs.py), so the
halves are plain slices.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import bundle
from .graphs import INPUTS

log = logging.getLogger(__name__)



def session_options(threads: int | None = None):
    import onnxruntime as ort

    from genie_robot.device import cpu_threads

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = cpu_threads(threads)
    opts.inter_op_num_threads = 1
    # no busy-waiting between ops: on a shared CPU a spinning second thread made a pass 2x slower
    # (measured: 26 ms with spinning vs 13.5 ms without, cpu preset, batch 1, loaded 2-core machine)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: the fused-node notices are noise
    return opts


class OnnxBackend:
    name = "onnx"

    def __init__(self, bundle_dir: str | Path, providers: str | list[str] | None = "auto", threads: int | None = None):
        import onnxruntime as ort

        from genie_robot.device import onnx_providers

        from genie_robot.device import cpu_threads

        asked = onnx_providers(providers)
        self.precision = bundle.precision(bundle.read_manifest(bundle_dir), bundle_dir)
        n = cpu_threads(threads)
        self.lanes = 2 if (n >= 2 and asked[0] == "CPUExecutionProvider") else 1
        self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="onnx-lane") if self.lanes > 1 else None
        paths = {graph: str(Path(bundle_dir) / f"{graph}.onnx") for graph in INPUTS}
        opts = session_options(n)
        self.sessions = {g: ort.InferenceSession(p, sess_options=opts, providers=asked) for g, p in paths.items()}
        one = session_options(1)  # the lanes' sessions: one thread each
        self._lane_sessions = ({g: ort.InferenceSession(p, sess_options=one, providers=asked) for g, p in paths.items()}
                               if self.lanes > 1 else {})
        active = self.sessions["dynamics_step"].get_providers()
        self.provider = active[0]
        if "CUDAExecutionProvider" in asked and self.provider != "CUDAExecutionProvider":
            msg = (f"CUDAExecutionProvider was asked for but onnxruntime is running on {self.provider} "
                   "(CUDA/cuDNN libraries missing or not matching onnxruntime-gpu?)")
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            log.warning(msg)
        if self.precision == "int8" and self.provider == "CUDAExecutionProvider":
            msg = (f"{bundle_dir} holds int8 graphs, made for CPUs: the CUDA provider has no kernel for their "
                   "quantized MatMuls, so onnxruntime runs those on the CPU; on a GPU load an fp32 bundle "
                   "(`genie-robot export ... --precision fp32`), or pass providers='cpu'")
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            log.warning(msg)
        log.debug("onnxruntime %s, providers asked %s, active %s, precision %s", ort.__version__, asked, active,
                  self.precision)

    def input_shapes(self, graph: str) -> dict[str, list]:
        """Graph input shapes, with the per-layer cache inputs folded back into "kv": (L, 2, *k0's shape)."""
        shapes = {i.name: i.shape for i in self.sessions[graph].get_inputs()}
        layers = sum(1 for n in shapes if n.startswith("k") and n[1:].isdigit())
        if layers:
            shapes["kv"] = [layers, 2] + list(shapes["k0"])
        return shapes

    def run(self, graph: str, *inputs):
        """One run of `graph` -> (output, new_kv); with two lanes a batch of 2 or more runs as two halves."""
        return self.run_all(graph, [inputs])[0]

    def run_all(self, graph: str, calls: list[tuple]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Independent runs of `graph` (each a tuple of its inputs) -> their (output, new_kv), in order;
        with two lanes they run side by side, and a lone call's batch is split in two."""
        session = self.sessions[graph]
        if self._pool is None or (len(calls) == 1 and len(calls[0][0]) == 1):  # nothing to run side by side
            return [tuple(session.run(None, self._feed(graph, inputs))) for inputs in calls]
        session = self._lane_sessions[graph]
        pieces = []  # (call, feed): a lone call of batch >= 2 in two halves, else each call whole
        for c, inputs in enumerate(calls):
            B = len(inputs[0])
            cuts = [0, (B + 1) // 2, B] if (len(calls) == 1 and B >= 2) else [0, B]
            pieces += [(c, self._feed(graph, inputs, a, b)) for a, b in zip(cuts, cuts[1:])]
        done = [self._pool.submit(session.run, None, feed) for _, feed in pieces]
        parts: list[list] = [[] for _ in calls]
        for (c, _), future in zip(pieces, done):
            parts[c].append(future.result())
        return [tuple(p[0]) if len(p) == 1 else (np.concatenate([o for o, _ in p], 0),
                                                 np.concatenate([n for _, n in p], 2)) for p in parts]

    @staticmethod
    def _feed(graph: str, inputs: tuple, a: int = 0, b: int | None = None) -> dict:
        """Graph inputs by name for batch rows a:b; the cache as per-layer views of the host array (no
        copy: a row range of (B, ...) is contiguous)."""
        feed = {}
        for name, x in zip(INPUTS[graph], inputs):
            if name == "kv":
                for l in range(x.shape[0]):
                    feed[f"k{l}"], feed[f"v{l}"] = x[l, 0, a:b], x[l, 1, a:b]
            elif name == "pos":
                feed[name] = np.ascontiguousarray(x)
            else:
                feed[name] = np.ascontiguousarray(x[a:b])
        return feed

    @staticmethod
    def zeros(shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    @staticmethod
    def write_slot(kv: np.ndarray, new: np.ndarray, slot: int) -> None:
        kv[:, :, :, :, :, slot] = new

    @staticmethod
    def repeat(kv: np.ndarray, times: int) -> np.ndarray:
        return np.repeat(kv, times, axis=2)

    @staticmethod
    def copy(kv: np.ndarray) -> np.ndarray:
        return kv.copy()

    @staticmethod
    def nbytes(kv: np.ndarray) -> int:
        return kv.nbytes
