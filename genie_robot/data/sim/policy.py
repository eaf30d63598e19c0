"""Scripted Fetch policy: purposeful pushes / grasps mixed with smooth random arm and gripper motion.

The goal is a varied motion vocabulary for the latent action model (left/right, forward/back, up/down,
gripper open/close, still), plus real object interaction. The policy alternates two kinds of segments:

- task: the scene's script. push: go above and behind the block, descend, push it toward the target,
  lift. pick: open above the block, descend, close, lift, carry toward the target, sometimes release.
  slide: line up behind the puck and strike it toward the target.
- explore: one to three random primitives: a straight move along one axis with a smooth speed
  profile, a wander to a random waypoint with Ornstein-Uhlenbeck jitter, a gripper open/close, or
  keeping still.

Fetch action semantics (gymnasium-robotics): a[:3] in [-1, 1] moves the end-effector target by
0.05 * a metres per step; a[3] is added to the finger position targets, so a small positive value opens
the fingers by about that many metres per step, a negative one closes them (and keeps squeezing
a grasped block), 0 holds them. Push and Slide block the fingers, so a[3] is always 0 there.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from genie_robot.data.sim.scene import SceneSpec

MAX_STEP = 0.05  # metres of end-effector target motion per unit action per step (Fetch's constant)
_AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)

# An action generator yields (xyz command in [-1, 1]^3, gripper command); it reads the latest
# observation from the policy, which `act` refreshes before every step.
Skill = Iterator[tuple[np.ndarray, float]]


class ScriptedPolicy:
    """act(grip_pos, object_pos, goal, gripper_width) -> (4,) float32 action. Deterministic given rng."""

    def __init__(self, scene: str, spec: SceneSpec, rng: np.random.Generator, task_prob: float = 0.5):
        self.scene = scene
        self.spec = spec
        self.rng = rng
        self.task_prob = task_prob
        self.lo = np.array(spec.workspace[0])
        self.hi = np.array(spec.workspace[1])
        self.grip = np.zeros(3)
        self.obj = np.zeros(3)
        self.goal = np.zeros(3)
        self.width = 0.0
        self.table_z = 0.0  # object rest height, learnt at the first observation
        self._plan: Skill | None = None

    # -- the loop ----------------------------------------------------------------------------------

    def act(self, grip_pos: np.ndarray, object_pos: np.ndarray, goal: np.ndarray, gripper_width: float) -> np.ndarray:
        self.grip, self.obj, self.goal = np.asarray(grip_pos), np.asarray(object_pos), np.asarray(goal)
        self.width = float(gripper_width)
        if self._plan is None:
            self.table_z = float(self.obj[2])
            self._plan = self._segments()
        xyz, gripper = next(self._plan)
        # The workspace is a soft wall: never command the target out of it (keeps the arm in view
        # and the object on the table).
        xyz = np.clip(xyz, (self.lo - self.grip) / MAX_STEP, (self.hi - self.grip) / MAX_STEP)
        xyz = np.clip(xyz, -1.0, 1.0)
        if not self.spec.gripper:
            gripper = 0.0
        return np.array([*xyz, gripper], dtype=np.float32)

    def _segments(self) -> Skill:
        # Start somewhere random, quickly: the caller drops these warm-up frames.
        yield from self._move_to(self._random_point(), speed=1.0, max_steps=12)
        while True:
            on_table = self.obj[2] > self.table_z - 0.05
            if on_table and self.rng.random() < self.task_prob:
                segment = {"push": self._push, "pick": self._pick, "slide": self._slide}[self.scene]()
            else:
                segment = (a for _ in range(self.rng.integers(1, 4)) for a in self._explore())
            steps = 0
            for action in segment:
                steps += 1
                yield action
            if steps == 0:  # nothing to do (e.g. the block already sits on the target): pause a step
                yield np.zeros(3), 0.0

    # -- primitives --------------------------------------------------------------------------------

    def _move_to(
        self, target: np.ndarray, speed: float, gripper: float = 0.0, max_steps: int = 25, tol: float = 0.01
    ) -> Skill:
        """Proportional move to `target` (clipped into the workspace), saturating at `speed`."""
        target = np.clip(target, self.lo, self.hi)
        for _ in range(max_steps):
            delta = target - self.grip
            dist = np.linalg.norm(delta)
            if dist < tol:
                return
            cmd = delta / MAX_STEP
            norm = np.linalg.norm(cmd)
            if norm > speed:
                cmd *= speed / norm
            yield cmd, gripper

    def _hold(self, steps: int, gripper: float = 0.0) -> Skill:
        for _ in range(steps):
            yield np.zeros(3), gripper

    def _random_point(self) -> np.ndarray:
        return self.rng.uniform(self.lo, self.hi)

    def _explore(self) -> Skill:
        kinds = ["axis", "wander", "still"] + (["gripper"] if self.spec.gripper else [])
        p = np.array([0.5, 0.25, 0.15] + ([0.25] if self.spec.gripper else []))
        kind = kinds[self.rng.choice(len(kinds), p=p / p.sum())]
        if kind == "axis":
            yield from self._axis_move()
        elif kind == "wander":
            yield from self._wander()
        elif kind == "still":
            yield from self._hold(int(self.rng.integers(3, 9)))
        else:
            yield from self._gripper_move()

    def _axis_move(self) -> Skill:
        """A straight move along one of +-x, +-y, +-z with a smooth (sine) speed profile."""
        steps = int(self.rng.integers(4, 11))
        speed = self.rng.uniform(0.35, 0.9)
        # Only directions with room for most of the move, so the soft wall does not eat it.
        travel = speed * MAX_STEP * steps * 0.5
        room = np.concatenate([[self.hi[i] - self.grip[i], self.grip[i] - self.lo[i]] for i in range(3)])
        ok = np.flatnonzero(room > travel)
        axis = _AXES[self.rng.choice(ok)] if len(ok) else _AXES[int(np.argmax(room))]
        for i in range(steps):
            yield axis * speed * np.sin(np.pi * (i + 0.5) / steps), 0.0

    def _wander(self) -> Skill:
        """Toward a random waypoint, with Ornstein-Uhlenbeck jitter on the command."""
        target = self._random_point()
        speed = self.rng.uniform(0.3, 0.8)
        noise = np.zeros(3)
        for cmd, g in self._move_to(target, speed, max_steps=20, tol=0.02):
            noise += 0.3 * (0.0 - noise) + 0.15 * self.rng.standard_normal(3)
            yield cmd + noise, g

    def _gripper_move(self) -> Skill:
        """Open a closed gripper or close an open one, a few millimetres per step."""
        direction = 1.0 if self.width < 0.05 else -1.0
        rate = self.rng.uniform(0.008, 0.02)
        for _ in range(int(self.rng.integers(4, 9))):
            yield np.zeros(3), direction * rate

    # -- task scripts --------------------------------------------------------------------------------

    def _target_xy(self) -> np.ndarray:
        # Mostly the env's goal; sometimes another spot on the table, for more push directions.
        if self.rng.random() < 0.3:
            return self._random_point()[:2]
        return self.goal[:2].copy()

    def _approach_behind(self, target: np.ndarray, back: float, hover: float):
        """Moves the gripper down to table height `back` metres behind the object on the line to
        `target`; yields the motions. Returns (unit direction d, table z), or None when the object is
        already at the target."""
        d = target - self.obj[:2]
        if np.linalg.norm(d) < 0.03:
            return None
        d /= np.linalg.norm(d)
        z = max(self.table_z - 0.005, self.lo[2])
        behind = self.obj[:2] - back * d
        yield from self._move_to(np.array([*behind, z + hover]), speed=0.8)
        yield from self._move_to(np.array([*behind, z]), speed=0.5, max_steps=10)
        return d, z

    def _push(self) -> Skill:
        target = self._target_xy()
        approach = yield from self._approach_behind(target, back=0.07, hover=0.08)
        if approach is None:
            return
        d, z = approach
        # Stop with the gripper a block's reach short of the target, so the block ends on it.
        yield from self._move_to(np.array([*(target - 0.055 * d), z]), speed=self.rng.uniform(0.3, 0.6), max_steps=30)
        yield from self._move_to(self.grip + [0.0, 0.0, 0.08], speed=0.6, max_steps=8)

    def _pick(self) -> Skill:
        open_rate, close_rate = 0.02, -0.015
        above = self.obj + [0.0, 0.0, 0.08]
        yield from self._move_to(above, speed=0.8, gripper=open_rate)
        for _ in range(6):  # finish opening if the move was short
            if self.width >= 0.08:
                break
            yield np.zeros(3), open_rate
        yield from self._move_to(self.obj + [0.0, 0.0, -0.005], speed=0.4, max_steps=12, tol=0.008)
        yield from self._hold(5, gripper=close_rate)
        yield from self._move_to(self.grip + [0.0, 0.0, 0.12], speed=0.5, gripper=close_rate, max_steps=10)
        goal = np.array([*self._target_xy(), max(self.goal[2], self.table_z) + 0.05])
        yield from self._move_to(goal, speed=self.rng.uniform(0.3, 0.6), gripper=close_rate, max_steps=25)
        if self.rng.random() < 0.6:
            yield from self._hold(4, gripper=open_rate)
            yield from self._move_to(self.grip + [0.0, 0.0, 0.08], speed=0.6, max_steps=6)

    def _slide(self) -> Skill:
        approach = yield from self._approach_behind(self._target_xy(), back=0.08, hover=0.06)
        if approach is None:
            return
        d, _ = approach
        strike = self.rng.uniform(0.5, 1.0)
        for _ in range(int(self.rng.integers(4, 8))):
            yield np.array([*(strike * d), 0.0]), 0.0
        yield from self._hold(2)
        yield from self._move_to(self.grip + [0.0, 0.0, 0.08], speed=0.6, max_steps=8)
