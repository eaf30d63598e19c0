"""The node entry points (issue #14): -h/--help prints usage and exits 0 without starting a node (item 2);
stopping a node leaves no callback to fail on destroyed handles, which rclpy printed at exit as "The
following exception was never retrieved: cannot use Destroyable ..." (item 5); a prompt of another
aspect is centre-cropped by the node as by the runtime and the converters (item 14)."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from ros_nodes.node_main import help_requested, stop


def _entry_point(name: str, module: str) -> list[str]:
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.is_file() else [sys.executable, "-m", module]


@pytest.mark.parametrize("name, module, flag, parameter", [
    ("genie-world-model-node", "ros_nodes.world_model_node", "--help", "model"),
    ("genie-camera-replay-node", "ros_nodes.camera_replay_node", "-h", "store"),
])
def test_help_prints_usage_and_exits_0_without_starting_the_node(name, module, flag, parameter):
    run = subprocess.run(_entry_point(name, module) + [flag], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"usage: {name}" in run.stdout and "parameters (--ros-args -p NAME:=VALUE)" in run.stdout
    assert f"\n  {parameter} (str, default " in run.stdout
    assert "--ros-args -p" in run.stdout  # the docstring's example
    assert "[INFO]" not in run.stdout + run.stderr and "cannot start" not in run.stderr


def test_help_flags_after_ros_args_belong_to_ros():
    assert help_requested(["node", "--help"]) and help_requested(["node", "-h", "--ros-args", "-p", "a:=1"])
    assert not help_requested(["node", "--ros-args", "--help"]) and not help_requested(["node"])


def test_stop_leaves_no_callback_to_fail_on_destroyed_handles(capsys):
    """Busy callbacks on a MultiThreadedExecutor with more queued behind them, as a node has when
    SIGINT arrives: stopping must not let the queued ones run into the destroyed guard condition."""
    import rclpy
    from rclpy.callback_groups import ReentrantCallbackGroup
    from rclpy.executors import MultiThreadedExecutor

    gc.collect()  # what earlier tests left is theirs: only this test's executor is under test
    capsys.readouterr()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("stop_test", context=context)
    group = ReentrantCallbackGroup()
    started = threading.Semaphore(0)

    def busy():
        started.release()
        time.sleep(0.2)

    for _ in range(4):
        node.create_timer(0.001, busy, callback_group=group)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(node)
    for _ in range(20):  # both threads busy, more handlers queued behind them
        executor.spin_once(timeout_sec=0.01)
    assert started.acquire(timeout=10)
    stop(executor, node, context=context)
    time.sleep(0.5)  # anything left would now run and fail
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del executor, node
        gc.collect()
    assert "never retrieved" not in capsys.readouterr().err
    assert not [w for w in caught if "never awaited" in str(w.message)]  # no callback dropped unrun


def test_the_prompt_echo_is_centre_cropped_like_the_runtimes_prompt():
    from genie_robot.data.convert.images import center_crop_resize
    from ros_nodes.imagination import Imagination

    class Model:
        resolution, num_actions = (16, 16), 4

        def reset(self, prompt):
            return object()

    frame = np.zeros((48, 64, 3), np.uint8)  # 4:3
    frame[:, 8:56] = 90
    frame[:, :8] = (255, 0, 0)  # the left 1/8: outside the centred square crop
    shown = []
    world = Imagination(Model(), fps=10, on_frame=lambda f, k, ns: shown.append(f), publish_prompt=True)
    try:
        world.reset(frame, 0)
    finally:
        world.close()
    (echo,) = shown
    assert echo.shape == (16, 16, 3) and not (echo[..., 0] > 200).any(), "the prompt was stretched"
    np.testing.assert_array_equal(echo, center_crop_resize(frame, (16, 16)))


def test_usage_lists_every_parameter():
    from ros_nodes import camera_replay_node, world_model_node
    from ros_nodes.node_main import usage

    for module in (world_model_node, camera_replay_node):
        text = usage("prog", module.__doc__, module.PARAMETERS)
        assert all(f"\n  {name} (" in text for name in module.PARAMETERS)
