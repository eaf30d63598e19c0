"""`genie-camera-replay-node`: a Zarr episode store played back as a camera, to prompt the world model
(or anything else) without a robot.

Publishes `~/image_raw` (sensor_msgs/Image, rgb8 or bgr8) at the store's fps (or `fps`), stamped with the
node's clock at publication, like a camera driver. Plays one episode or all of them in order, once or in a
loop. Frames are read from the store a chunk at a time.

    genie-camera-replay-node --ros-args -p store:=data/sim.zarr -p episode:=0 -p loop:=true
"""

from __future__ import annotations

import sys

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rcl_interfaces.msg import ParameterDescriptor
from sensor_msgs.msg import Image

from ros_nodes.conversions import OUTPUT_ENCODINGS, rgb_to_image
from ros_nodes.node_main import help_requested, stop, usage
from ros_nodes.qos import qos_from_string

NODE_NAME = "genie_camera_replay"

PARAMETERS = {
    "store": ("", "episode store (genie_robot.data.store: local path or fsspec URL); required"),
    "episode": (-1, "episode index to play; -1 = all episodes, one after another"),
    "loop": (True, "start over after the last frame; false: publish once, then stay idle"),
    "fps": (0.0, "publication rate; 0 = the store's fps"),
    "frame_id": ("camera", "header.frame_id"),
    "encoding": ("rgb8", "rgb8 or bgr8"),
    "qos": ("reliable:5", "QoS of ~/image_raw (ros_nodes/qos.py); reliable reaches reliable and best-effort subscribers"),
    "shutdown_when_done": (False, "with loop false: shut the node down after the last frame"),
}
CHUNK = 32  # frames read from the store at once


class EpisodePlayer:
    """The frames to play, in order, read lazily: next() -> (H, W, 3) uint8, or None at the end (no loop)."""

    def __init__(self, store, episode: int = -1, loop: bool = True):
        if store.num_frames == 0:
            raise ValueError("the store has no frames")
        if episode >= store.num_episodes or episode < -1:
            raise ValueError(f"episode {episode} does not exist: the store has episodes 0 .. {store.num_episodes - 1}"
                             " (-1 plays them all)")
        self.store, self.loop = store, loop
        self.start, self.stop = store.episode_bounds(episode) if episode >= 0 else (0, store.num_frames)
        self.pos, self.played = self.start, 0
        self._chunk, self._chunk_start = np.empty((0,), np.uint8), self.start

    def next(self) -> np.ndarray | None:
        if self.pos >= self.stop:
            if not self.loop:
                return None
            self.pos = self.start
        i = self.pos - self._chunk_start
        if not 0 <= i < len(self._chunk):
            self._chunk_start = self.pos
            self._chunk = self.store.frames(self.pos, min(self.pos + CHUNK, self.stop))
            i = 0
        self.pos += 1
        self.played += 1
        return self._chunk[i]


class CameraReplayNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        p = self.p = {name: self.get_parameter(name).value for name in PARAMETERS}
        if not p["store"]:
            raise ValueError("parameter 'store' is required: --ros-args -p store:=/path/to/store.zarr")
        if p["encoding"] not in OUTPUT_ENCODINGS:
            raise ValueError(f"encoding {p['encoding']!r}: use one of {', '.join(OUTPUT_ENCODINGS)}")
        from genie_robot.data.store import EpisodeStore

        store = EpisodeStore.open(p["store"])
        self.player = EpisodePlayer(store, p["episode"], p["loop"])
        fps = p["fps"] if p["fps"] > 0 else store.fps
        self.pub = self.create_publisher(Image, "~/image_raw", qos_from_string(p["qos"]))
        self.timer = self.create_timer(1.0 / fps, self._tick)
        self.done = False
        H, W = store.resolution
        which = f"episode {p['episode']}" if p["episode"] >= 0 else f"all {store.num_episodes} episodes"
        self.get_logger().info(f"replaying {which} of {p['store']} ({self.player.stop - self.player.start} frames, "
                               f"{W}x{H}) at {fps:g} fps on {self.pub.topic_name}"
                               + (", looping" if p["loop"] else ", once"))

    def _tick(self) -> None:
        frame = self.player.next()
        if frame is None:
            self.timer.cancel()
            self.done = True
            self.get_logger().info(f"replay finished after {self.player.played} frames")
            return
        self.pub.publish(rgb_to_image(frame, stamp=self.get_clock().now().to_msg(), frame_id=self.p["frame_id"],
                                      encoding=self.p["encoding"]))


def main(argv: list[str] | None = None) -> int:
    argv = argv if argv is not None else sys.argv
    if help_requested(argv):
        print(usage("genie-camera-replay-node", __doc__, PARAMETERS))
        return 0
    rclpy.init(args=argv)
    try:
        node = CameraReplayNode()
    except Exception as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok() and not (node.done and node.p["shutdown_when_done"]):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stop(executor, node)
    return 0


if __name__ == "__main__":
    sys.exit(main())
