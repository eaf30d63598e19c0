"""The world-model node's ~/plan_to_goal service (genie_robot_msgs/srv/PlanToGoal): a thin adapter.

It converts the two images, checks the request against the node's limits (max_horizon, max_batch),
takes the model away from the live imagined world for the duration of the search (the same way
~/imagine_rollout does), calls `genie_robot.planning.plan`, and converts the result back. Bad requests
get success=False and a message naming the problem; the node keeps running.

    add_plan_to_goal_service(node)   # called by WorldModelNode.__init__; a no-op without the srv
"""

from __future__ import annotations

import array

import numpy as np

DEFAULT_SAMPLES = 64
DEFAULT_ITERATIONS = 3
MAX_ITERATIONS = 20


def add_plan_to_goal_service(node) -> bool:
    """Registers ~/plan_to_goal on a WorldModelNode (its own callback group, so a long search does not
    hold up prompts and actions). False (with a warning) when genie_robot_msgs lacks PlanToGoal."""
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

    try:
        from genie_robot_msgs.srv import PlanToGoal
    except ImportError:
        node.get_logger().warning("genie_robot_msgs has no PlanToGoal: no ~/plan_to_goal service "
                                  "(run scripts/build_msgs, docs/ros.md)")
        return False
    node.create_service(PlanToGoal, "~/plan_to_goal", PlanToGoalHandler(node),
                        callback_group=MutuallyExclusiveCallbackGroup())
    return True


class PlanToGoalHandler:
    def __init__(self, node):
        self.node = node

    def __call__(self, request, response):
        from ros_nodes.conversions import ImageError

        try:
            image_HW3, goal_HW3, kwargs = self._check(request)
            with self.node.world.exclusive():  # the live world pauses between two of its steps
                result = self._plan(image_HW3, goal_HW3, kwargs)
        except (ImageError, ValueError) as exc:
            response.success, response.message = False, str(exc)
            self.node.reject("plan_to_goal request", str(exc))
            return response
        except Exception as exc:  # a model failure is an error answer, not a dead node
            self.node.get_logger().error(f"plan_to_goal failed: {exc!r}")
            response.success, response.message = False, f"planning failed: {exc!r}"
            return response
        return self._respond(request, response, result)

    def _check(self, req):
        from ros_nodes.conversions import image_to_rgb

        p = self.node.p
        H = int(req.horizon)
        samples = int(req.samples) or DEFAULT_SAMPLES
        iterations = int(req.iterations) or DEFAULT_ITERATIONS
        if H < 1:
            raise ValueError("horizon must be at least 1 (steps to plan)")
        if H > p["max_horizon"]:
            raise ValueError(f"horizon {H} is over max_horizon={p['max_horizon']} (node parameter)")
        if samples > p["max_batch"]:
            raise ValueError(f"samples {samples} is over max_batch={p['max_batch']} (node parameter); "
                             "ask for fewer samples and more iterations")
        if iterations > MAX_ITERATIONS:
            raise ValueError(f"iterations {iterations} is over {MAX_ITERATIONS}; a receding-horizon loop "
                             "re-plans every step instead")
        image = image_to_rgb(req.image, max_pixels=p["max_image_pixels"])
        goal = image_to_rgb(req.goal, max_pixels=p["max_image_pixels"])
        kwargs = {"horizon": H, "samples": samples, "iterations": iterations, "elites": max(1, samples // 8),
                  "method": req.method or "cem", "score": req.score or "pixel", "seed": int(req.seed)}
        return image, goal, kwargs

    def _plan(self, image_HW3, goal_HW3, kwargs):
        from genie_robot.planning import plan

        h = kwargs.pop("horizon")
        return plan(self.node.model, image_HW3, goal_HW3, h, **kwargs)

    def _respond(self, req, response, result):
        from ros_nodes.conversions import rgb_to_image, to_ns, to_time

        prompt_ns = to_ns(req.image.header.stamp)
        enc, frame_id = self.node.p["output_encoding"], self.node.p["frame_id"]
        response.actions = array.array("B", result.actions_T.astype(np.uint8).tobytes())
        response.frames = [rgb_to_image(f, stamp=to_time(self.node.world.stamp_ns(prompt_ns, t + 1)),
                                        frame_id=frame_id, encoding=enc) for t, f in enumerate(result.frames_THW3)]
        response.score = float(result.score)
        response.candidates = int(result.candidates)
        response.seconds = float(result.seconds)
        response.success = True
        response.message = (f"{result.method} over {result.candidates} imagined rollouts: {result.score_name} "
                            f"distance {result.score:.4g} in {result.seconds:.2f} s")
        return response
