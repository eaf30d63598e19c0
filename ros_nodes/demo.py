"""`genie-ros-demo`: the whole ROS 2 chain without a robot, written as a GIF.

Starts two real node processes (what a launch file would do; the PyPI ROS wheels have no `launch`):
`genie-camera-replay-node` plays a store episode as a camera, `genie-world-model-node` listens to
that camera; this process is the client: it prompts the node with the camera's latest frame on
`~/prompt`, sends N latent actions on `~/latent_action`, collects the frames published on
`~/imagined_image` over DDS, and writes them as a GIF (camera frame | imagined frames) with the step
latencies it saw.

    genie-ros-demo --store outputs/demo/sim.zarr --out outputs/demo/ros_imagined.gif
    genie-ros-demo --store data/sim.zarr --episode 3 --actions 0,0,5,5,2,2 --model bundles/cpu

Everything stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST unless set) under a
namespace of its own, so it does not disturb other ROS graphs.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from genie_robot.cli import report_error


def _ros_args(ns: str, params: dict) -> list[str]:
    out = ["--ros-args", "-r", f"__ns:={ns}"]
    for k, v in params.items():
        out += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
    return out


def _alive(procs: list[subprocess.Popen], what: str) -> None:
    for p in procs:
        if p.poll() is not None:
            raise RuntimeError(f"{p.args[2]} exited with status {p.returncode} while waiting for {what}; "
                               "its log is above")


def _take(q: queue.Queue, deadline: float, what: str, procs: list[subprocess.Popen]):
    while True:
        _alive(procs, what)
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out waiting for {what}")
        try:
            return q.get(timeout=min(left, 0.5))
        except queue.Empty:
            pass


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from std_msgs.msg import UInt8

    from genie_robot.data.preview import enlarge, frame_grid, save_gif, save_image
    from ros_nodes.conversions import image_to_rgb
    from ros_nodes.node_main import stop
    from ros_nodes.qos import qos_from_string

    try:
        actions = [int(a) for a in args.actions.split(",") if a.strip()]
    except ValueError:
        actions = []
    if not actions or min(actions) < 0 or max(actions) > 255:
        raise ValueError(f"--actions {args.actions!r}: give comma-separated latent actions such as 0,3,3,7")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ns = f"/genie_demo_{os.getpid()}"
    camera_topic = f"{ns}/genie_camera_replay/image_raw"
    py = sys.executable
    procs = [
        subprocess.Popen([py, "-m", "ros_nodes.camera_replay_node"] + _ros_args(
            ns, {"store": args.store, "episode": args.episode, "loop": True})),
        subprocess.Popen([py, "-m", "ros_nodes.world_model_node"] + _ros_args(
            ns, {"model": args.model, "backend": args.backend, "camera_topic": camera_topic, "seed": args.seed,
                 "steps": args.steps, "queue_size": max(8, len(actions))})),
    ]
    rclpy.init()
    node = rclpy.create_node("genie_demo_client", namespace=ns)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    imagined_q: queue.Queue = queue.Queue()
    camera: list = [None]  # the camera's latest frame
    node.create_subscription(Image, f"{ns}/genie_world_model/imagined_image",
                             lambda m: imagined_q.put((time.perf_counter(), m)), qos_from_string("reliable:50"))
    node.create_subscription(Image, camera_topic, lambda m: camera.__setitem__(0, m), qos_from_string("sensor_data"))
    pub = node.create_publisher(UInt8, f"{ns}/genie_world_model/latent_action", qos_from_string("reliable"))
    prompt_pub = node.create_publisher(Image, f"{ns}/genie_world_model/prompt", qos_from_string("reliable"))
    spinning = True

    def spin():
        while spinning and rclpy.ok():
            executor.spin_once(timeout_sec=0.05)

    import threading

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        # Prompt: once the node is up (the first run of a weight-only bundle exports its ONNX graphs first,
        # about a minute), send it the camera's latest frame on ~/prompt; it publishes that frame as frame 0
        # with the camera's stamp. The node also prompts itself from the first camera frame it sees, and
        # that frame 0 may reach this client at any time before ours: frame 0 is the one carrying our
        # prompt's stamp, and every later frame must be stamped after it (imagined frame k: + k / fps).
        from ros_nodes.conversions import to_ns

        deadline = time.monotonic() + args.timeout
        prompt_msg = None
        while prompt_msg is None:
            _alive(procs, "the world-model node to start")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no prompt after {args.timeout:.0f} s (--timeout)")
            sent = camera[0]
            if sent is None or pub.get_subscription_count() < 1 or prompt_pub.get_subscription_count() < 1:
                time.sleep(0.2)
                continue
            prompt_pub.publish(sent)
            wait_until = min(deadline, time.monotonic() + 10)  # then send it again (best-effort QoS)
            while prompt_msg is None and time.monotonic() < wait_until:
                try:
                    _, msg = _take(imagined_q, min(deadline, time.monotonic() + 1.0), "the prompt frame", procs)
                except TimeoutError:
                    continue
                if to_ns(msg.header.stamp) == to_ns(sent.header.stamp):
                    prompt_msg = msg
        prompt_ns = to_ns(prompt_msg.header.stamp)
        frames = [image_to_rgb(prompt_msg)]
        stamps = [1e-9 * prompt_ns]
        latency_ms = []
        for k, a in enumerate(actions, 1):
            t0 = time.perf_counter()
            pub.publish(UInt8(data=a))
            t1, msg = _take(imagined_q, time.monotonic() + 60, f"imagined frame {k}", procs)
            while to_ns(msg.header.stamp) <= prompt_ns:  # a late frame 0 (the node's own prompt, a resend)
                t1, msg = _take(imagined_q, time.monotonic() + 60, f"imagined frame {k}", procs)
            latency_ms.append(1e3 * (t1 - t0))
            frames.append(image_to_rgb(msg))
            stamps.append(1e-9 * to_ns(msg.header.stamp))
    finally:
        spinning = False
        thread.join(2.0)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        stop(executor, node)

    video = np.stack(frames)
    scale = max(1, 256 // video.shape[1])
    out = Path(args.out)
    save_gif(enlarge(video, scale), out, fps=args.fps)
    rows = [video[i: i + 8] for i in range(0, len(video), 8)]
    save_image(frame_grid(rows, scale=max(1, scale // 2)), out.with_suffix(".png"))
    lat = np.array(latency_ms)
    print(f"camera {camera_topic} -> {ns}/genie_world_model -> {len(actions)} imagined frames "
          f"({video.shape[2]}x{video.shape[1]}), actions {','.join(map(str, actions))}")
    print(f"step latency over DDS (publish action -> frame received): p50 {np.percentile(lat, 50):.0f} ms, "
          f"max {lat.max():.0f} ms; stamps advance by {np.mean(np.diff(stamps)):.3f} s per frame")
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="genie-ros-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True, help="episode store to replay as the camera")
    p.add_argument("--episode", type=int, default=0, help="episode to replay (default 0)")
    p.add_argument("--model", default="default", help="model bundle (default: the shipped model)")
    p.add_argument("--backend", default="onnx", choices=["onnx", "torch"])
    p.add_argument("--steps", type=int, default=0, help="MaskGIT steps (0: the model's default)")
    p.add_argument("--actions", default="0,0,1,1,2,2,3,3,4,4,5,5,6,6,7,7",
                   help="latent actions to send, one imagined frame each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the first frame")
    p.add_argument("--fps", type=float, default=4.0, help="GIF frame rate")
    p.add_argument("--out", default="outputs/ros_imagined.gif")
    args = p.parse_args(argv)
    try:
        return run(args)
    except (ValueError, RuntimeError, TimeoutError, FileNotFoundError) as exc:
        return report_error("genie-ros-demo", exc)


if __name__ == "__main__":
    sys.exit(main())
