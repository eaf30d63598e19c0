"""Does the world-model node hold up under a steady stream of actions, and what does ROS add to a step?

The node runs as its own process (`python -m ros_nodes.world_model_node`, the executable's code) on a
random-weight bundle of the `cpu` preset (64x64, 8 latent actions, 8 MaskGIT steps); this process is
the client: one prompt, then latent actions at --rate Hz for --seconds, over FastDDS on this machine.
Measured:
  bare      WorldModel.step in this process, same bundle and backend, no ROS (the baseline)
  node      the node's own step latency (its /diagnostics: model.step inside the node)
  e2e       action published -> imagined frame received, in this client, measured in a second phase
            at --e2e-rate (below the model's speed, so no action is dropped and frames match actions
            in order): step + queue + DDS + conversions
  RSS       the node process's resident memory after warm-up, at the end, and its peak
Actions faster than the model are the point: the node keeps a bounded queue and drops the oldest.

    python bench/bench_ros.py [--seconds 60] [--rate 50] [--backend onnx] [--threads 2] [--preset cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_bundle(preset_name: str, out: Path) -> Path:
    """A random-weight bundle through the runtime's export (checkpoint -> export_bundle)."""
    import torch

    from genie_robot.artifacts import checkpoints
    from genie_robot.models import Genie, preset
    from genie_robot.runtime.export import export_bundle

    if (out / "bundle" / "manifest.json").exists():
        return out / "bundle"
    torch.manual_seed(0)
    genie = Genie(preset(preset_name))
    with torch.no_grad():
        genie.dynamics.action_table.copy_(genie.lam.action_embeddings())
    config = {"train": {"preset": preset_name, "model": {}}, "model": genie.cfg.to_dict(), "stage": "dynamics"}
    checkpoints.save_checkpoint(out / "dynamics", 1, weights=genie.state_dict(), config=config,
                                state={"step": 1, "mlflow_run_id": None})
    bundle, _, _ = export_bundle(str(out / "dynamics"), out / "bundle", overwrite=True)
    return bundle


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(x, q):
    return float(np.percentile(x, q)) if len(x) else float("nan")


def bare_steps(bundle: Path, backend: str, threads: int, n: int) -> tuple[np.ndarray, int, tuple[int, int]]:
    """-> (step latencies ms, num_actions, resolution)"""
    import torch

    from genie_robot.runtime.world_model import WorldModel

    torch.set_num_threads(threads)
    kwargs = {"threads": threads} if backend == "onnx" else {}
    wm = WorldModel.load(bundle, backend=backend, **kwargs)
    state = wm.reset(np.random.default_rng(0).integers(0, 256, (*wm.resolution, 3), dtype=np.uint8))
    rng = np.random.default_rng(1)
    ms = []
    for i in range(n + 5):
        t = time.perf_counter()
        wm.step(state, rng.integers(0, wm.num_actions, 1))
        if i >= 5:
            ms.append((time.perf_counter() - t) * 1e3)
    return np.array(ms), wm.num_actions, wm.resolution


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=50.0, help="actions per second")
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--queue-size", type=int, default=8)
    ap.add_argument("--bare-steps", type=int, default=100)
    ap.add_argument("--e2e-rate", type=float, default=5.0, help="actions per second of the latency phase")
    ap.add_argument("--e2e-seconds", type=float, default=10.0)
    ap.add_argument("--cache", default=str(ROOT / "build" / "bench_ros"), help="where the bundle is kept")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    os.environ.setdefault("ROS_DOMAIN_ID", str(90 + os.getpid() % 10))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    import rclpy
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from std_msgs.msg import UInt8

    from ros_nodes.conversions import rgb_to_image
    from ros_nodes.qos import qos_from_string

    t0 = time.perf_counter()
    bundle = make_bundle(args.preset, Path(args.cache) / args.preset)
    print(f"bundle {bundle} ({time.perf_counter() - t0:.0f} s)", flush=True)
    bare, num_actions, (H, W) = bare_steps(bundle, args.backend, args.threads, args.bare_steps)
    print(f"bare WorldModel.step: p50 {pct(bare, 50):.1f} ms, p99 {pct(bare, 99):.1f} ms", flush=True)

    ns = f"/bench{os.getpid()}"
    node_cmd = [sys.executable, "-m", "ros_nodes.world_model_node", "--ros-args",
                "-p", f"model:={bundle}", "-p", f"backend:={args.backend}", "-p", f"threads:={args.threads}",
                "-p", f"queue_size:={args.queue_size}", "-p", "diagnostics_period:=1.0", "-r", f"__ns:={ns}"]
    log = open(Path(tempfile.gettempdir()) / f"bench_ros_node_{os.getpid()}.log", "w")
    proc = subprocess.Popen(node_cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    rclpy.init()
    client = rclpy.create_node("bench_client", namespace=ns)
    frames: queue.Queue = queue.Queue()
    diags: list[dict] = []

    def on_diag(msg):
        for s in msg.status:
            if s.name.startswith(f"{ns}/genie_world_model"):
                diags.append({kv.key: kv.value for kv in s.values})

    client.create_subscription(Image, f"{ns}/genie_world_model/imagined_image",
                               lambda m: frames.put((time.perf_counter(), m.header.stamp)), qos_from_string("reliable"))
    client.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    prompt_pub = client.create_publisher(Image, f"{ns}/genie_world_model/prompt", qos_from_string("reliable"))
    action_pub = client.create_publisher(UInt8, f"{ns}/genie_world_model/latent_action", qos_from_string("reliable"))
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    result: dict = {}
    try:
        deadline = time.monotonic() + 120
        while (prompt_pub.get_subscription_count() == 0 or action_pub.get_subscription_count() == 0
               or client.count_publishers(f"{ns}/genie_world_model/imagined_image") == 0):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not come up (exit {proc.poll()}); log: {log.name}")
            time.sleep(0.05)
        prompt = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
        prompt_pub.publish(rgb_to_image(prompt, stamp=Time(sec=1), encoding="rgb8"))
        frames.get(timeout=60)  # frame 0: the world is ready

        rng = np.random.default_rng(2)
        period = 1.0 / args.rate
        sent: list[float] = []
        rss: list[tuple[float, float]] = []
        start = time.perf_counter()
        next_t, next_rss = start, start
        while (now := time.perf_counter()) - start < args.seconds:
            if proc.poll() is not None:
                raise RuntimeError(f"the node died (exit {proc.returncode}); log: {log.name}")
            if now >= next_rss:
                rss.append((now - start, rss_mib(proc.pid)))
                next_rss += 1.0
            action_pub.publish(UInt8(data=int(rng.integers(0, num_actions))))
            sent.append(now)
            next_t += period
            time.sleep(max(0.0, next_t - time.perf_counter()))
        # let the queue drain, then the last diagnostics
        time.sleep(3.0 + args.queue_size * pct(bare, 99) / 1e3)
        n_diag = len(diags)
        end = time.monotonic() + 5
        while len(diags) == n_diag and time.monotonic() < end:
            time.sleep(0.05)
        rss.append((time.perf_counter() - start, rss_mib(proc.pid)))
        received = []
        while not frames.empty():
            received.append(frames.get())
        d = diags[-1] if diags else {}
        dropped = int(d.get("dropped", -1))

        # latency phase: slow enough that every action gets its own frame, in order
        e2e_sent = []
        next_t = time.perf_counter()
        for _ in range(int(args.e2e_rate * args.e2e_seconds)):
            e2e_sent.append(time.perf_counter())
            action_pub.publish(UInt8(data=int(rng.integers(0, num_actions))))
            next_t += 1.0 / args.e2e_rate
            time.sleep(max(0.0, next_t - time.perf_counter()))
        e2e_got = []
        try:
            while len(e2e_got) < len(e2e_sent):
                e2e_got.append(frames.get(timeout=10)[0])
        except queue.Empty:
            pass
        n_diag = len(diags)
        end = time.monotonic() + 5
        while len(diags) == n_diag and time.monotonic() < end:
            time.sleep(0.05)
        e2e_dropped = int(diags[-1].get("dropped", -1)) - dropped if diags else -1
        e2e = [(g - s) * 1e3 for s, g in zip(e2e_sent, e2e_got)] if e2e_dropped == 0 else []
        alive = proc.poll() is None
        warm = [m for t, m in rss if t >= 5.0] or [m for _, m in rss]
        result = {
            "host": platform.node(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
            "preset": args.preset, "backend": args.backend, "threads": args.threads, "rate_hz": args.rate,
            "seconds": args.seconds, "queue_size": args.queue_size,
            "bare_ms_p50": pct(bare, 50), "bare_ms_p99": pct(bare, 99),
            "node_ms_p50": float(d.get("step_ms_p50", "nan")), "node_ms_p99": float(d.get("step_ms_p99", "nan")),
            "node_wait_ms_p50": float(d.get("wait_ms_p50", "nan")), "node_wait_ms_p99": float(d.get("wait_ms_p99", "nan")),
            "actions_sent": len(sent), "actions_taken": int(d.get("actions", -1)), "steps": int(d.get("steps", -1)),
            "dropped": dropped, "rejected": int(d.get("rejected_inputs", -1)), "frames_received": len(received),
            "e2e_rate_hz": args.e2e_rate, "e2e_actions": len(e2e_sent), "e2e_frames": len(e2e_got),
            "e2e_dropped": e2e_dropped, "e2e_ms_p50": pct(e2e, 50), "e2e_ms_p99": pct(e2e, 99),
            "rss_mib_warm": warm[0], "rss_mib_end": rss[-1][1], "rss_mib_max": max(m for _, m in rss),
            "node_alive": alive,
        }
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown()
        spinner.join(5)
    r = result
    print()
    print(f"{args.preset} preset, {args.backend} backend, {args.threads} threads; {r['actions_sent']} actions at "
          f"{args.rate:g} Hz over {args.seconds:g} s; load average {r['load_avg'][0]:.1f} on {r['cpus']} CPUs")
    print(f"| {'measure':<42} | {'p50 ms':>8} | {'p99 ms':>8} | {'p50 / bare':>10} |")
    print(f"|{'-' * 44}|{'-' * 10}|{'-' * 10}|{'-' * 12}|")
    for name, key in [("bare WorldModel.step (baseline)", "bare"), ("node step (its /diagnostics)", "node"),
                      ("node queue wait (action in -> step start)", "node_wait"), (f"action -> frame, client, at {args.e2e_rate:g} Hz", "e2e")]:
        p50, p99 = r[f"{key}_ms_p50"], r[f"{key}_ms_p99"]
        print(f"| {name:<42} | {p50:8.1f} | {p99:8.1f} | {p50 / r['bare_ms_p50']:10.2f} |")
    print(f"steps {r['steps']}, dropped {r['dropped']} (oldest first, queue {args.queue_size}), frames received "
          f"{r['frames_received']}; node RSS {r['rss_mib_warm']:.0f} MiB after warm-up -> {r['rss_mib_end']:.0f} MiB "
          f"at the end (peak {r['rss_mib_max']:.0f}); node alive at the end: {r['node_alive']}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0 if r["node_alive"] and r["steps"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
