"""~/plan_to_goal over real DDS: a client asks the world-model node for a plan and gets what
genie_robot.planning.plan gives in Python for the same model, request and seed (actions, score,
imagined frames), with frame sizes and stamps as documented; bad requests are answered with a message
and leave the node serving."""

from __future__ import annotations

import array

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ros_nodes.world_model_node import WorldModelNode  # noqa: E402

PlanToGoal = pytest.importorskip("genie_robot_msgs.srv", reason="genie_robot_msgs is not built (scripts/build_msgs)"
                                 ).PlanToGoal
FPS = 5.0
STAMP = Time(sec=42, nanosec=0)


def rgb_image(frame_HW3, stamp=STAMP, encoding="rgb8"):
    f = frame_HW3[..., ::-1] if encoding == "bgr8" else frame_HW3
    msg = Image(height=f.shape[0], width=f.shape[1], encoding=encoding, step=f.shape[1] * 3)
    msg.header.stamp = stamp
    msg.data = array.array("B", np.ascontiguousarray(f).tobytes())
    return msg


def frames_pair(h=16, w=16):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([(xx * 16) % 256, (yy * 16) % 256, np.full_like(xx, 60)], -1).astype(np.uint8)
    goal = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return image, goal


def request(image, goal, **kw):
    req = PlanToGoal.Request(image=image if isinstance(image, Image) else rgb_image(image),
                             goal=goal if isinstance(goal, Image) else rgb_image(goal))
    req.horizon, req.samples, req.iterations = kw.get("horizon", 3), kw.get("samples", 8), kw.get("iterations", 2)
    req.method, req.score, req.seed = kw.get("method", ""), kw.get("score", ""), kw.get("seed", 0)
    return req


@pytest.fixture
def planner(ros, tiny_bundle):
    ros.add(WorldModelNode, model=tiny_bundle, backend="torch", fps=FPS, frame_id="imagined", max_batch=16,
            max_horizon=6, diagnostics_period=0.0)
    return ros, f"{ros.ns}/genie_world_model/plan_to_goal"


@pytest.mark.parametrize("method, score", [("", ""), ("random", "token")])
def test_the_service_plans_what_the_library_plans(planner, tiny_bundle, method, score):
    from genie_robot.planning import plan
    from genie_robot.runtime.world_model import WorldModel

    ros, name = planner
    image, goal = frames_pair()
    res = ros.call(PlanToGoal, name, request(image, goal, method=method, score=score, seed=7))
    assert res.success, res.message
    want = plan(WorldModel.load(tiny_bundle, backend="torch"), image, goal, 3, samples=8, iterations=2, elites=1,
                method=method or "cem", score=score or "pixel", seed=7)
    assert list(np.frombuffer(bytes(res.actions), np.uint8)) == want.actions_T.tolist()
    assert res.score == pytest.approx(want.score, rel=1e-5)
    assert res.candidates == 16 and res.seconds > 0
    assert len(res.frames) == 3
    for t, (msg, frame) in enumerate(zip(res.frames, want.frames_THW3)):
        assert (msg.height, msg.width, msg.encoding, msg.header.frame_id) == (16, 16, "rgb8", "imagined")
        np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), np.uint8).reshape(16, 16, 3), frame)
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == 42 * 10**9 + round((t + 1) * 1e9 / FPS)


def test_camera_sized_bgr_images_are_converted_and_resized(planner):
    ros, name = planner
    image, goal = frames_pair(32, 48)
    res = ros.call(PlanToGoal, name, request(rgb_image(image, encoding="bgr8"), rgb_image(goal, encoding="bgr8")))
    assert res.success, res.message
    assert (res.frames[0].height, res.frames[0].width) == (16, 16)
    assert all(a < 4 for a in bytes(res.actions))  # the tiny model has 4 latent actions


@pytest.mark.parametrize("change, message", [
    ({"horizon": 0}, "horizon must be at least 1"),
    ({"horizon": 7}, "over max_horizon=6"),
    ({"samples": 17}, "over max_batch=16"),
    ({"iterations": 21}, "iterations 21 is over 20"),
    ({"method": "mppi"}, "unknown method 'mppi'"),
    ({"score": "lpips"}, "unknown score 'lpips'"),
    ({"goal_size": (8, 8)}, "same camera at the same size"),
    ({"encoding": "yuv422"}, "unsupported image encoding"),
])
def test_bad_requests_get_a_message_and_the_node_keeps_serving(planner, change, message):
    ros, name = planner
    image, goal = frames_pair()
    change = dict(change)
    if "goal_size" in change:
        goal = frames_pair(*change.pop("goal_size"))[1]
    req = request(image, goal, **change)
    if "encoding" in change:
        req.goal.encoding = change.pop("encoding")
    res = ros.call(PlanToGoal, name, req)
    assert not res.success and message in res.message, res.message
    assert len(res.actions) == 0 and len(res.frames) == 0
    ok = ros.call(PlanToGoal, name, request(image, frames_pair()[1], samples=4, iterations=1))
    assert ok.success, ok.message
