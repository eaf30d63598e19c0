"""`genie-world-model-node`: a Genie world model as an imagined camera, for teleoperation and planners.

A thin adapter: parameters build a `WorldModel` (genie_robot.runtime) and an `Imagination` (the rollout
driven by a bounded action queue, ros_nodes/imagination.py); callbacks convert messages and call them.

Interfaces (relative to the node, default name genie_world_model):
    ~/prompt            sensor_msgs/Image in    rgb8/bgr8/mono8/rgba8/bgra8, any size: reset the world to it
    <camera_topic>      sensor_msgs/Image in    optional live camera; ~/reset (or the first frame) prompts from it
    ~/latent_action     std_msgs/UInt8 in       one step with this latent action, 0 .. num_actions-1
    ~/imagined_image    sensor_msgs/Image out   each imagined frame; stamp = prompt stamp + k / fps
    ~/reset             std_srvs/Trigger        start over from the camera's latest frame, or the last prompt
    ~/imagine_rollout   genie_robot_msgs/srv/ImagineRollout   B action sequences -> B*T frames
    ~/plan_to_goal      genie_robot_msgs/srv/PlanToGoal       image + goal -> best latent actions (planner_service.py)
    /diagnostics        diagnostic_msgs/DiagnosticArray       step latency, queue depth, drops
Run: genie-world-model-node --ros-args -p model:=bundles/cpu -p backend:=torch   (docs/ros.md)
"""

from __future__ import annotations

import sys

import numpy as np
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rcl_interfaces.msg import ParameterDescriptor
from sensor_msgs.msg import Image
from std_msgs.msg import UInt8
from std_srvs.srv import Trigger

from ros_nodes.conversions import (
    DEFAULT_MAX_PIXELS,
    OUTPUT_ENCODINGS,
    ImageError,
    image_to_rgb,
    rgb_to_image,
    to_ns,
    to_time,
)
from ros_nodes.imagination import Imagination
from ros_nodes.node_main import help_requested, stop, usage
from ros_nodes.qos import qos_from_string

NODE_NAME = "genie_world_model"

# name: (default, description)
PARAMETERS = {
    "model": ("default", "model bundle directory (genie-robot export --out DIR); 'default' = the shipped model"),
    "backend": ("onnx", "'onnx' (onnxruntime) or 'torch'"),
    "providers": ("auto", "onnxruntime execution providers: 'auto' or a comma-separated list"),
    "device": ("", "torch backend device (cpu, cuda, cuda:1); '' = genie_robot.device's choice"),
    "threads": (0, "CPU threads for inference (onnxruntime intra-op, or torch.set_num_threads); 0 = the backend's default"),
    "steps": (0, "MaskGIT steps per frame; 0 = the model's default"),
    "temperature": (-1.0, "MaskGIT sampling temperature; negative = the model's default"),
    "order": ("", "MaskGIT reveal order: 'random' or 'confidence'; '' = the model's default"),
    "seed": (0, "sampling seed: the same prompt, actions and seed give the same frames"),
    "context": (0, "expected dynamics context in frames (fixed by the exported graphs' caches); 0 = any. "
                "A mismatch stops the node: re-export the bundle to change it"),
    "fps": (0.0, "imagined frame k is stamped prompt stamp + k / fps; 0 = the model's own rate (1 / its "
                 "step_seconds: frame_stride frames of its training video), 10 if the model does not record it"),
    "frame_id": ("genie_imagined_camera", "header.frame_id of imagined images"),
    "publish_prompt": (True, "after a reset, publish the prompt as the model sees it (frame 0, the prompt's stamp)"),
    "output_encoding": ("rgb8", "encoding of ~/imagined_image and rollout frames: rgb8 or bgr8"),
    "mode": ("on_action", "'on_action': one step per ~/latent_action; 'rate': step at rate_hz with the latest action"),
    "rate_hz": (0.0, "step rate in mode 'rate'"),
    "queue_size": (8, "actions waiting for the model (mode on_action); when full the oldest is dropped"),
    "camera_topic": ("", "optional live camera (sensor_msgs/Image) to take prompts from; '' = none"),
    "image_qos": ("sensor_data", "QoS of ~/prompt and camera_topic (ros_nodes/qos.py: reliable|best_effort|sensor_data[:DEPTH])"),
    "action_qos": ("reliable", "QoS of ~/latent_action"),
    "output_qos": ("reliable", "QoS of ~/imagined_image"),
    "max_image_pixels": (DEFAULT_MAX_PIXELS, "input images with more pixels are rejected"),
    "max_batch": (64, "largest batch_size an ImagineRollout request may ask for"),
    "max_horizon": (64, "largest horizon an ImagineRollout request may ask for"),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages; 0 = none"),
}


def load_model(p: dict):
    """WorldModel.load with the node's parameters; unset knobs (0 / negative) keep the model's defaults."""
    from genie_robot.runtime.world_model import WorldModel

    if not p["model"]:
        raise ValueError("parameter 'model' is required: --ros-args -p model:=/path/to/bundle")
    kwargs = {"backend": p["backend"], "seed": p["seed"]}
    if p["backend"] == "onnx":
        providers = [s.strip() for s in p["providers"].split(",") if s.strip()]
        kwargs["providers"] = "auto" if providers in ([], ["auto"]) else providers
        if p["threads"] > 0:
            kwargs["threads"] = p["threads"]
    else:
        if p["device"]:
            kwargs["device"] = p["device"]
        if p["threads"] > 0:
            from genie_robot.device import configure_cpu_threads

            configure_cpu_threads(p["threads"])
    if p["steps"] > 0:
        kwargs["steps"] = p["steps"]
    if p["temperature"] >= 0:
        kwargs["temperature"] = p["temperature"]
    if p["order"]:
        kwargs["order"] = p["order"]
    model = WorldModel.load(p["model"], **kwargs)
    if p["context"] > 0 and p["context"] != model.context:
        raise ValueError(f"parameter context={p['context']}, but {p['model']} was exported with a context of "
                         f"{model.context} frames (its caches' size); re-export to change it, or leave context at 0")
    return model


class WorldModelNode(Node):
    def __init__(self, *, model=None, **node_kwargs):
        """`model`: an already loaded WorldModel (tests, benchmarks); otherwise parameter 'model' is loaded."""
        super().__init__(NODE_NAME, **node_kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        self.p = p
        if p["output_encoding"] not in OUTPUT_ENCODINGS:
            raise ValueError(f"output_encoding {p['output_encoding']!r}: use one of {', '.join(OUTPUT_ENCODINGS)}")
        self.model = model if model is not None else load_model(p)
        if p["fps"] <= 0:  # the model knows what one of its steps is
            step_s = getattr(self.model, "step_seconds", None)
            p["fps"] = 1.0 / step_s if step_s else 10.0
            if not step_s:
                self.get_logger().warning("the model does not record its training video's frame rate: stamping "
                                          "imagined frames at 10 fps; set -p fps:=RATE for the right stamps")
        self.world = Imagination(self.model, fps=p["fps"], on_frame=self._publish_frame, mode=p["mode"],
                                 publish_prompt=p["publish_prompt"],
                                 rate_hz=p["rate_hz"], queue_size=p["queue_size"])
        self._prompt_HW3: np.ndarray | None = None  # the last prompt, for ~/reset
        self._prompt_ns = 0
        self._camera_msg: Image | None = None
        self._rejected = 0
        log = self.get_logger()

        self.pub_image = self.create_publisher(Image, "~/imagined_image", qos_from_string(p["output_qos"]))
        image_qos = qos_from_string(p["image_qos"])
        self.create_subscription(Image, "~/prompt", self._on_prompt, image_qos)
        if p["camera_topic"]:
            self.create_subscription(Image, p["camera_topic"], self._on_camera, image_qos)
        self.create_subscription(UInt8, "~/latent_action", self._on_action, qos_from_string(p["action_qos"]))
        self.create_service(Trigger, "~/reset", self._on_reset)
        self._import_rollout_srv()
        if self._rollout_srv is not None:
            # its own group: a long rollout does not hold up prompts, actions and resets
            self.create_service(self._rollout_srv, "~/imagine_rollout", self._on_rollout,
                                callback_group=MutuallyExclusiveCallbackGroup())
            from ros_nodes.planner_service import add_plan_to_goal_service

            add_plan_to_goal_service(self)  # ~/plan_to_goal: genie_robot.planning over this model
        self._diag_pub = None
        if p["diagnostics_period"] > 0:
            try:
                from diagnostic_msgs.msg import DiagnosticArray

                self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
                self.create_timer(p["diagnostics_period"], self._publish_diagnostics)
            except ImportError:
                log.warning("diagnostic_msgs is not installed: no /diagnostics (pip install ros-jazzy-diagnostic-msgs)")
        H, W = self.model.resolution
        log.info(f"world model {p['model'] or '(given)'} on {self.model.provider}: {W}x{H}, "
                 f"{self.model.num_actions} latent actions, mode {p['mode']}, fps {p['fps']:.4g}; "
                 f"waiting for a prompt on {self.resolve_topic_name('~/prompt')}"
                 + (f" or {p['camera_topic']}" if p["camera_topic"] else ""))

    def _import_rollout_srv(self):
        try:
            from genie_robot_msgs.srv import ImagineRollout

            self._rollout_srv = ImagineRollout
        except ImportError:
            self._rollout_srv = None
            self.get_logger().warning("genie_robot_msgs is not built: no ~/imagine_rollout service "
                                      "(run scripts/build_msgs, docs/ros.md)")

    # ----------------------------------------------------------------------------- callbacks

    def reject(self, what: str, problem: str) -> None:
        """Count and log (throttled) an input the node ignores; the node keeps running."""
        self._rejected += 1
        self.get_logger().warning(f"{what} ignored: {problem}", throttle_duration_sec=1.0)

    def _prompt_from(self, msg: Image, what: str) -> bool:
        try:
            frame_HW3 = image_to_rgb(msg, max_pixels=self.p["max_image_pixels"])
            stamp_ns = to_ns(msg.header.stamp) or self.get_clock().now().nanoseconds
            self.world.reset(frame_HW3, stamp_ns)
        except (ImageError, ValueError) as exc:
            self.reject(what, str(exc))
            return False
        self._prompt_HW3, self._prompt_ns = frame_HW3, stamp_ns
        self.get_logger().info(f"imagined world reset from {what} ({msg.width}x{msg.height} {msg.encoding})")
        return True

    def _on_prompt(self, msg: Image) -> None:
        self._prompt_from(msg, "prompt")

    def _on_camera(self, msg: Image) -> None:
        self._camera_msg = msg  # converted only when it becomes a prompt
        if not self.world.has_world:
            self._prompt_from(msg, f"camera {self.p['camera_topic']}")

    def _on_action(self, msg: UInt8) -> None:
        try:
            self.world.push_action(msg.data)
        except (ValueError, RuntimeError) as exc:
            self.reject(f"latent action {msg.data}", str(exc))

    def _on_reset(self, request, response):
        if self._camera_msg is not None:
            response.success = self._prompt_from(self._camera_msg, f"camera {self.p['camera_topic']}")
            response.message = ("reset to the camera's latest frame" if response.success
                                else "the camera's latest frame was rejected (see the node's log)")
        elif self._prompt_HW3 is not None:
            self.world.reset(self._prompt_HW3, self._prompt_ns)
            response.success, response.message = True, "reset to the last prompt"
        else:
            response.success, response.message = False, "nothing to reset to: no prompt or camera frame received yet"
        return response

    def _on_rollout(self, request, response):
        try:
            prompt_HW3, actions_BT = self._check_rollout(request)
            frames_BTHW3 = self.world.rollout(prompt_HW3, actions_BT)
        except (ImageError, ValueError) as exc:
            response.success, response.message = False, str(exc)
            self.reject("imagine_rollout request", str(exc))
            return response
        except Exception as exc:  # a model failure is an error answer, not a dead node
            self.get_logger().error(f"imagine_rollout failed: {exc!r}")
            response.success, response.message = False, f"rollout failed: {exc!r}"
            return response
        B, T = actions_BT.shape
        prompt_ns = to_ns(request.prompt.header.stamp)
        stamps = [to_time(self.world.stamp_ns(prompt_ns, t + 1)) for t in range(T)]
        enc, frame_id = self.p["output_encoding"], self.p["frame_id"]
        response.frames = [rgb_to_image(frames_BTHW3[b, t], stamp=stamps[t], frame_id=frame_id, encoding=enc)
                           for b in range(B) for t in range(T)]
        response.batch_size, response.horizon = B, T
        response.success, response.message = True, f"imagined {B} x {T} frames"
        return response

    def _check_rollout(self, req) -> tuple[np.ndarray, np.ndarray]:
        B, T, n = int(req.batch_size), int(req.horizon), len(req.actions)
        if B < 1 or T < 1:
            raise ValueError(f"batch_size and horizon must be at least 1, got batch_size={B}, horizon={T}")
        if B > self.p["max_batch"]:
            raise ValueError(f"batch_size {B} is over max_batch={self.p['max_batch']} (node parameter)")
        if T > self.p["max_horizon"]:
            raise ValueError(f"horizon {T} is over max_horizon={self.p['max_horizon']} (node parameter)")
        if n != B * T:
            raise ValueError(f"expected batch_size * horizon = {B} * {T} = {B * T} actions "
                             f"(sequence-major: actions[b * horizon + t]), got {n}")
        actions_BT = np.frombuffer(req.actions, np.uint8).reshape(B, T).astype(np.int64)
        bad = actions_BT >= self.model.num_actions
        if bad.any():
            b, t = np.argwhere(bad)[0]
            raise ValueError(f"action {actions_BT[b, t]} (sequence {b}, step {t}) outside "
                             f"[0, {self.model.num_actions})")
        return image_to_rgb(req.prompt, max_pixels=self.p["max_image_pixels"]), actions_BT

    # ----------------------------------------------------------------------------- outputs

    def _publish_frame(self, frame_HW3: np.ndarray, k: int, stamp_ns: int) -> None:
        self.pub_image.publish(rgb_to_image(frame_HW3, stamp=to_time(stamp_ns), frame_id=self.p["frame_id"],
                                            encoding=self.p["output_encoding"]))

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        s = self.world.stats()
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: imagination",
                                  hardware_id=str(self.model.provider))
        if s["error"]:
            status.level, status.message = DiagnosticStatus.ERROR, s["error"]
        elif not s["has_world"]:
            status.level, status.message = DiagnosticStatus.OK, "waiting for a prompt"
        elif s["queue_depth"] >= s["queue_size"]:
            status.level, status.message = DiagnosticStatus.WARN, "action queue full: actions arrive faster than inference"
        else:
            status.level, status.message = DiagnosticStatus.OK, "imagining"
        values = {**s, "rejected_inputs": self._rejected}
        status.values = [KeyValue(key=k, value=f"{v:.2f}" if isinstance(v, float) else str(v))
                         for k, v in values.items() if k != "error"]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    def destroy_node(self):
        self.world.close()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    argv = argv if argv is not None else sys.argv
    if help_requested(argv):
        print(usage("genie-world-model-node", __doc__, PARAMETERS))
        return 0
    rclpy.init(args=argv)
    try:
        node = WorldModelNode()
    except Exception as exc:  # a bad bundle or parameter: one clear line, no traceback
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 2
    # two threads: the rollout service runs beside prompts, actions and resets
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stop(executor, node)
    return 0


if __name__ == "__main__":
    sys.exit(main())
