"""The imagined world behind the world-model node, free of ROS: one `WorldModel` rollout driven by a
bounded queue of latent actions on a worker thread.

    world = Imagination(model, fps=10, on_frame=publish)   # publish(frame_HW3, k, stamp_ns)
    world.reset(prompt_HW3, stamp_ns)      # the imagined world starts over at this frame
    world.push_action(3)                   # the worker steps once per action (mode "on_action")
    frames_BTHW3 = world.rollout(prompt_HW3, actions_BT)   # planners; shares the model lock
    with world.exclusive(): plan(model, ...)                # any other use of the model between steps

Frame k after a reset (k = 1, 2, ...) represents time stamp_ns + round(k * 1e9 / fps) (integer ns).

Queue policy ("on_action"): a FIFO of at most `queue_size` actions; when it is full the oldest action is
dropped (counted in `stats()["dropped"]`), so a burst never grows memory and the world follows the newest
commands. Mode "rate": the worker steps at `rate_hz` with the latest action received (latest wins; no
queue), and idles until the first action after a reset.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from typing import Callable

import numpy as np

from genie_robot.data.convert.images import center_crop_resize

log = logging.getLogger(__name__)

MODES = ("on_action", "rate")


class Imagination:
    def __init__(self, model, *, fps: float, on_frame: Callable[[np.ndarray, int, int], None],
                 mode: str = "on_action", rate_hz: float = 0.0, queue_size: int = 8, publish_prompt: bool = False,
                 latency_window: int = 2000):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        if mode == "rate" and rate_hz <= 0:
            raise ValueError(f"mode 'rate' needs rate_hz > 0, got {rate_hz}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self.model, self.fps, self.on_frame = model, float(fps), on_frame
        self.mode, self.rate_hz, self.publish_prompt = mode, float(rate_hz), publish_prompt
        self.model_lock = threading.Lock()  # one model call at a time: steps, resets, rollouts
        self._cv = threading.Condition()
        self._queue: collections.deque[tuple[int, float]] = collections.deque()  # (action, enqueue time)
        self._queue_size = int(queue_size)
        self._held: int | None = None  # mode "rate": the action to repeat
        self._state = None
        self._prompt_stamp = 0
        self._k = 0
        self._generation = 0
        self._steps = self._dropped = self._actions = 0
        self._step_ms: collections.deque[float] = collections.deque(maxlen=latency_window)
        self._wait_ms: collections.deque[float] = collections.deque(maxlen=latency_window)
        self._closed = False
        self._waiters = 0  # resets and rollouts waiting for the model; they go before queued actions
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="imagination", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------------------- commands

    def reset(self, prompt_HW3: np.ndarray, stamp_ns: int) -> None:
        """Start the imagined world over at this frame (uint8, any size: the model centre-crops it to its
        aspect and resizes it, as the converters do; see WorldModel.prepare_frames).
        Pending actions are discarded. With publish_prompt, on_frame gets the prompt at the model's
        resolution as frame 0 (subscribers then know the world is ready). Raises ValueError for
        frames the model rejects."""
        with self.exclusive(new_world=True):
            state = self.model.reset(prompt_HW3)
            with self._cv:
                self._state, self._prompt_stamp, self._k = state, int(stamp_ns), 0
            if self.publish_prompt:
                self.on_frame(center_crop_resize(prompt_HW3, self.model.resolution), 0, int(stamp_ns))

    def push_action(self, action: int) -> None:
        """Queue one latent action (checked against the model's range; ValueError names it)."""
        a = int(action)
        if not 0 <= a < self.model.num_actions:
            raise ValueError(f"latent action {a} outside [0, {self.model.num_actions}) "
                             f"(this model has {self.model.num_actions} latent actions)")
        with self._cv:
            if self._state is None:
                raise RuntimeError("no imagined world yet: send a prompt image first")
            self._actions += 1
            if self.mode == "rate":
                self._held = a
            else:
                if len(self._queue) >= self._queue_size:
                    self._queue.popleft()
                    self._dropped += 1
                self._queue.append((a, time.perf_counter()))
            self._cv.notify()

    def rollout(self, prompt_HW3: np.ndarray, actions_BT: np.ndarray) -> np.ndarray:
        """B action sequences of T steps from one prompt -> frames (B, T, H, W, 3) uint8. Waits for
        the model between two steps of the live world, which it leaves alone."""
        with self.exclusive():
            return self.model.rollout(prompt_HW3, actions_BT)

    @contextlib.contextmanager
    def exclusive(self, new_world: bool = False):
        """The model for a reset, a rollout or an outside caller (`with world.exclusive(): ...`, as the
        ~/plan_to_goal service plans): the worker takes no new action until it is done (a plain
        lock would let a busy worker take it back between steps and starve the caller). new_world:
        drop the queued actions, and skip the one the worker may have taken but not started."""
        with self._cv:
            self._waiters += 1
            if new_world:
                self._generation += 1
                self._queue.clear()
                self._held = None
        try:
            with self.model_lock:
                yield
        finally:
            with self._cv:
                self._waiters -= 1
                self._cv.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)

    # ----------------------------------------------------------------------------- state

    def stamp_ns(self, prompt_ns: int, k: int) -> int:
        """The time frame k after a prompt stamped prompt_ns represents."""
        return int(prompt_ns) + round(k * 1e9 / self.fps)

    @property
    def has_world(self) -> bool:
        return self._state is not None

    def stats(self) -> dict:
        """Counters and latencies (ms) over the last `latency_window` steps: step = one model.step,
        wait = enqueue to step start (on_action mode)."""
        with self._cv:
            step, wait = np.array(self._step_ms), np.array(self._wait_ms)
            out = {"actions": self._actions, "steps": self._steps, "dropped": self._dropped, "queue_depth": len(self._queue),
                   "queue_size": self._queue_size, "frame_index": self._k, "has_world": self._state is not None,
                   "error": self._error}
        for name, x in (("step", step), ("wait", wait)):
            out[f"{name}_ms_p50"] = float(np.percentile(x, 50)) if x.size else float("nan")
            out[f"{name}_ms_p99"] = float(np.percentile(x, 99)) if x.size else float("nan")
            out[f"{name}_ms_max"] = float(x.max()) if x.size else float("nan")
        out["step_ms_last"] = float(step[-1]) if step.size else float("nan")
        return out

    # ----------------------------------------------------------------------------- worker

    def _next_action(self) -> tuple[int, float, int] | None:
        """Block until there is an action to run: (action, enqueue time, generation); None when closed."""
        with self._cv:
            while not self._closed:
                if self._state is not None and not self._waiters:
                    if self.mode == "on_action" and self._queue:
                        a, t = self._queue.popleft()
                        return a, t, self._generation
                    if self.mode == "rate" and self._held is not None:
                        return self._held, time.perf_counter(), self._generation
                self._cv.wait()
            return None

    def _run(self) -> None:
        period = 1.0 / self.rate_hz if self.mode == "rate" else 0.0
        while True:
            item = self._next_action()
            if item is None:
                return
            action, t_enqueued, generation = item
            tick = time.perf_counter()
            with self.model_lock:
                with self._cv:
                    if generation != self._generation:  # a reset came between pop and lock
                        continue
                    state = self._state
                t0 = time.perf_counter()
                try:
                    frame_HW3 = self.model.step(state, np.array([action]))[0]
                except Exception as exc:  # keep the worker alive; the node reports it
                    log.exception("world model step failed")
                    with self._cv:
                        self._error = f"step failed: {exc}"
                    continue
                t1 = time.perf_counter()
                with self._cv:
                    self._k += 1
                    self._steps += 1
                    self._step_ms.append((t1 - t0) * 1e3)
                    if self.mode == "on_action":
                        self._wait_ms.append((t0 - t_enqueued) * 1e3)
                    k, stamp = self._k, self.stamp_ns(self._prompt_stamp, self._k)
                try:
                    self.on_frame(frame_HW3, k, stamp)  # under the model lock: frames leave in order
                except Exception:
                    log.exception("publishing an imagined frame failed")
            if period:
                rest = period - (time.perf_counter() - tick)
                if rest > 0:
                    with self._cv:
                        self._cv.wait_for(lambda: self._closed, rest)
