"""The camera replay node publishes a store's episode at its fps, once or looping, and can prompt the
world-model node through its camera_topic parameter."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import UInt8  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from ros_nodes.camera_replay_node import CameraReplayNode  # noqa: E402
from ros_nodes.world_model_node import WorldModelNode  # noqa: E402


def pixels(msg):
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)


def test_replays_one_episode_once_in_order(ros, tiny_store):
    from genie_robot.data.store import EpisodeStore

    path = tiny_store(3, length=6, resolution=(12, 20), fps=40.0)
    frames = ros.subscribe(Image, f"{ros.ns}/genie_camera_replay/image_raw")
    ros.wait_until(lambda: True)
    node = ros.add(CameraReplayNode, store=path, episode=1, loop=False, frame_id="cam")
    got = ros.take(frames, 6, what="replayed frames")
    ros.wait_until(lambda: node.done, what="the end of the episode")
    assert frames.empty()
    want = EpisodeStore.open(path).episode(1).rgb
    np.testing.assert_array_equal(np.stack([pixels(m) for m in got]), want)
    assert all(m.header.frame_id == "cam" and m.encoding == "rgb8" for m in got)
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in got]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))


def test_loops_and_prompts_the_world_model(ros, tiny_store, tiny_bundle):
    path = tiny_store(2, length=3, resolution=(16, 16), fps=50.0)
    camera = f"{ros.ns}/genie_camera_replay/image_raw"
    raw = ros.subscribe(Image, camera)
    imagined = ros.subscribe(Image, f"{ros.ns}/genie_world_model/imagined_image")
    ros.add(CameraReplayNode, store=path, loop=True)
    got = ros.take(raw, 8, what="looping frames")
    ids = [(int(pixels(m)[0, 0, 0]), int(pixels(m)[0, 0, 1])) for m in got]  # (episode, t) markers
    cycle = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    start = cycle.index(ids[0])
    assert ids == [cycle[(start + i) % 6] for i in range(8)]

    ros.add(WorldModelNode, model=tiny_bundle, backend="torch", camera_topic=camera)
    first = ros.take(imagined, 1, what="the prompt from the camera")[0]
    assert (first.height, first.width) == (16, 16)
    resp = ros.call(Trigger, f"{ros.ns}/genie_world_model/reset", Trigger.Request())
    assert resp.success and "camera" in resp.message
    ros.take(imagined, 1)
    action = ros.publisher(UInt8, f"{ros.ns}/genie_world_model/latent_action")
    action.publish(UInt8(data=0))
    assert ros.take(imagined, 1)[0].height == 16


def test_bad_parameters_fail_with_a_clear_error(ros, tiny_store):
    path = tiny_store(2, length=3)
    with pytest.raises(ValueError, match=r"episode 5 does not exist: the store has episodes 0 \.\. 1"):
        ros.add(CameraReplayNode, store=path, episode=5)
    with pytest.raises(ValueError, match="parameter 'store' is required"):
        ros.add(CameraReplayNode)
