"""The node's ROS-free core: stamps, the bounded drop-oldest queue, reset discarding pending actions,
rate mode, and a failing model step that leaves the worker running."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

from ros_nodes.imagination import Imagination  # noqa: E402


class FakeModel:
    """WorldModel's contract with a frame whose pixel [0, 0, 0] is the action and a settable step time."""

    resolution, num_actions = (4, 4), 8

    def __init__(self, step_s=0.0):
        self.step_s, self.gate = step_s, threading.Event()
        self.gate.set()

    def reset(self, prompt):
        return {"prompt": prompt}

    def rollout(self, prompt, actions_BT):
        return np.zeros((*actions_BT.shape, 4, 4, 3), np.uint8)

    def step(self, state, actions_B):
        self.gate.wait()
        time.sleep(self.step_s)
        if actions_B[0] == 7:
            raise RuntimeError("boom")
        f = np.zeros((1, 4, 4, 3), np.uint8)
        f[0, 0, 0, 0] = actions_B[0]
        return f


def collect():
    out, lock = [], threading.Lock()

    def on_frame(frame, k, stamp):
        with lock:
            out.append((int(frame[0, 0, 0]), k, stamp))
    return out, on_frame


def wait(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_frames_are_stamped_prompt_plus_k_over_fps_and_the_prompt_is_frame_0():
    out, on_frame = collect()
    w = Imagination(FakeModel(), fps=3.0, on_frame=on_frame, publish_prompt=True)
    w.reset(np.zeros((8, 8, 3), np.uint8), 10**9)
    for a in (1, 2, 3):
        w.push_action(a)
    wait(lambda: len(out) == 4)
    assert out == [(0, 0, 10**9), (1, 1, 10**9 + 333_333_333), (2, 2, 10**9 + 666_666_667), (3, 3, 2 * 10**9)]
    w.close()


def test_a_full_queue_drops_the_oldest_action():
    out, on_frame = collect()
    m = FakeModel()
    w = Imagination(m, fps=10, on_frame=on_frame, queue_size=3)
    w.reset(np.zeros((4, 4, 3), np.uint8), 0)
    m.gate.clear()  # the model is busy
    w.push_action(0)
    wait(lambda: w.stats()["queue_depth"] == 0)  # the worker holds action 0
    for a in range(1, 7):
        w.push_action(a)
    s = w.stats()
    assert (s["queue_depth"], s["dropped"], s["actions"]) == (3, 3, 7)
    m.gate.set()
    wait(lambda: len(out) == 4)
    assert [a for a, _, _ in out] == [0, 4, 5, 6]
    w.close()


def test_reset_discards_pending_actions_and_errors_name_the_problem():
    out, on_frame = collect()
    m = FakeModel()
    w = Imagination(m, fps=10, on_frame=on_frame)
    with pytest.raises(RuntimeError, match="send a prompt"):
        w.push_action(1)
    w.reset(np.zeros((4, 4, 3), np.uint8), 0)
    with pytest.raises(ValueError, match=r"latent action 8 outside \[0, 8\)"):
        w.push_action(8)
    m.gate.clear()
    for a in (1, 2, 3):
        w.push_action(a)
    wait(lambda: w.stats()["queue_depth"] == 2)  # 1 is being imagined, 2 and 3 wait
    resetting = threading.Thread(target=w.reset, args=(np.zeros((4, 4, 3), np.uint8), 0))
    resetting.start()  # waits for the step in flight
    time.sleep(0.05)
    m.gate.set()
    resetting.join(5)
    time.sleep(0.1)
    assert [a for a, _, _ in out] == [1] and w.stats()["queue_depth"] == 0  # 2 and 3 were discarded
    w.push_action(7)  # the fake model fails on 7
    w.push_action(5)
    wait(lambda: len(out) == 2)
    assert out[1][:2] == (5, 1) and "boom" in w.stats()["error"]
    w.close()


def test_rate_mode_repeats_the_latest_action():
    out, on_frame = collect()
    w = Imagination(FakeModel(), fps=10, on_frame=on_frame, mode="rate", rate_hz=50)
    w.reset(np.zeros((4, 4, 3), np.uint8), 0)
    time.sleep(0.1)
    assert out == []
    w.push_action(2)
    wait(lambda: len(out) >= 3)
    w.push_action(6)
    wait(lambda: out[-1][0] == 6)
    w.close()
    assert {a for a, _, _ in out} == {2, 6}
    with pytest.raises(ValueError, match="rate_hz > 0"):
        Imagination(FakeModel(), fps=10, on_frame=on_frame, mode="rate")


def test_a_busy_action_stream_does_not_starve_rollouts_and_resets():
    out, on_frame = collect()
    w = Imagination(FakeModel(step_s=0.01), fps=10, on_frame=on_frame, queue_size=4)
    w.reset(np.zeros((4, 4, 3), np.uint8), 0)
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            w.push_action(1)
            time.sleep(0.002)
    t = threading.Thread(target=flood)
    t.start()
    try:
        wait(lambda: len(out) >= 3)
        for _ in range(5):
            t0 = time.monotonic()
            assert w.rollout(None, np.ones((2, 3), int)).shape == (2, 3, 4, 4, 3)
            w.reset(np.zeros((4, 4, 3), np.uint8), 0)
            assert time.monotonic() - t0 < 0.5  # one step in flight at most, not the whole stream
    finally:
        stop.set()
        t.join()
        w.close()
