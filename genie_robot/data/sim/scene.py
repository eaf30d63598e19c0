"""The MuJoCo Fetch scenes (gymnasium-robotics Push / PickAndPlace / Slide) as a camera-ready simulator.

`FetchScene` wraps one gymnasium-robotics env with its own offscreen renderer and a fixed free camera,
hides the debugging geometry (mocap crosshair, target and object sites), colours the object so it
stands out at 64x64, and exposes the robot state as a float32 vector (`STATE_NAMES`).

MuJoCo picks its OpenGL backend (`mujoco.gl_context.GLContext`) when it is first imported, from
MUJOCO_GL; unset, that is GLFW, which needs a display. `configure_gl()` picks an offscreen backend
(FetchScene calls it), and FetchScene builds its renderer with that backend's context whatever mujoco
picked at import, so a process that imported mujoco first (a notebook, a test session, another
library) renders too. Nothing here imports mujoco or gymnasium at module level.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np

from genie_robot.errors import SetupError

# Per-frame robot state, in this order (metres, world frame).
STATE_NAMES = ("grip_x", "grip_y", "grip_z", "gripper_width", "object_x", "object_y", "object_z")
ACTION_NAMES = ("dx", "dy", "dz", "gripper")  # the 4-D Fetch env action, each in [-1, 1]
STATE_DIM = len(STATE_NAMES)
ACTION_DIM = len(ACTION_NAMES)
# One env step is n_substeps (20) x timestep (0.002 s) = 0.04 s.
FPS = 25.0
# The object is recoloured from the XML's dark grey, which at 64x64 is hard to tell from the grey
# gripper fingers and the floor.
OBJECT_RGBA = (0.85, 0.12, 0.08, 1.0)


class RenderBackendError(SetupError):
    """No offscreen OpenGL backend works in this process; the message says what to install."""


@dataclass(frozen=True)
class Camera:
    """A MuJoCo free camera: looks at `lookat` from `distance` metres; angles in degrees."""

    lookat: tuple[float, float, float]
    distance: float
    azimuth: float
    elevation: float


@dataclass(frozen=True)
class SceneSpec:
    env_id: str
    instruction: str
    camera: Camera
    gripper: bool  # False where the env blocks the fingers (Push, Slide): the 4th action does nothing
    # End-effector workspace the scripted policy stays in: (low xyz, high xyz), metres.
    workspace: tuple[tuple[float, float, float], tuple[float, float, float]]


# Cameras sit on the +y side of the table looking across it (azimuth 270), 40-45 degrees down: the
# image's left/right is the robot's x, up/down mixes z and y, and y also shows as size. Each camera
# frames its workspace plus the wrist above it; the block is ~5 px wide at 64x64 in push/pick. The
# slide table is twice as long, so its puck is only ~3 px.
SCENES: dict[str, SceneSpec] = {
    "push": SceneSpec(
        env_id="FetchPush-v4",
        instruction="push the block to the target",
        camera=Camera(lookat=(1.3, 0.9, 0.7), distance=0.64, azimuth=270.0, elevation=-40.0),
        gripper=False,
        workspace=((1.1, 0.5, 0.415), (1.5, 1.0, 0.6)),
    ),
    "pick": SceneSpec(
        env_id="FetchPickAndPlace-v4",
        instruction="pick up the block and place it at the target",
        camera=Camera(lookat=(1.3, 0.9, 0.7), distance=0.64, azimuth=270.0, elevation=-40.0),
        gripper=True,
        workspace=((1.1, 0.5, 0.42), (1.5, 1.0, 0.65)),
    ),
    "slide": SceneSpec(
        env_id="FetchSlide-v4",
        instruction="slide the puck to the target",
        camera=Camera(lookat=(1.2, 0.75, 0.5), distance=1.3, azimuth=270.0, elevation=-45.0),
        gripper=False,
        workspace=((0.8, 0.5, 0.415), (1.5, 1.0, 0.55)),
    ),
}
# "mix" cycles through these by episode seed (seed % 3), so a mixed store is balanced and reproducible.
MIX_ORDER = ("push", "pick", "slide")
SCENE_CHOICES = (*SCENES, "mix")


def scene_for_seed(scene: str, seed: int) -> str:
    """Resolves "mix" to a concrete scene for one episode; other names pass through after a check."""
    if scene == "mix":
        return MIX_ORDER[seed % len(MIX_ORDER)]
    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}; choose one of {', '.join(SCENE_CHOICES)}")
    return scene


_GL_PROBE = (
    "import mujoco; c = mujoco.GLContext(16, 16); c.make_current(); "
    "m = mujoco.MjModel.from_xml_string('<mujoco/>'); r = mujoco.Renderer(m, 16, 16); r.render(); r.close()"
)


_OFFSCREEN = ("egl", "osmesa")


def _imported_backend() -> str | None:
    """The offscreen backend whose context class mujoco, already imported here, uses (None: none, or
    mujoco is not imported)."""
    gl = getattr(sys.modules.get("mujoco"), "gl_context", None)
    module = getattr(getattr(gl, "GLContext", None), "__module__", "")
    name = module.rpartition(".")[2]
    return name if module.startswith("mujoco.") and name in _OFFSCREEN else None


def configure_gl() -> str:
    """Chooses MuJoCo's offscreen OpenGL backend (EGL, else OSMesa) and returns its name.

    Respects a MUJOCO_GL the user already set, then an offscreen backend mujoco was already imported
    with. Otherwise probes each backend in a subprocess (a failing backend can crash or hang the
    process that tries it); the choice is written to os.environ so that spawned worker processes
    inherit it without probing again. If mujoco was imported before, FetchScene still renders with
    the chosen backend (`gl_context_class`).
    """
    os.environ.setdefault("LP_NUM_THREADS", "1")  # Mesa llvmpipe: one render thread per worker
    chosen = os.environ.get("MUJOCO_GL") or _imported_backend()
    if chosen:
        os.environ["MUJOCO_GL"] = chosen
        return chosen
    errors = {}
    for backend in ("egl", "osmesa"):
        env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _GL_PROBE], env=env, capture_output=True, text=True, timeout=120
            )
        except subprocess.TimeoutExpired:
            errors[backend] = "the probe hung for 120 s"
            continue
        if proc.returncode == 0:
            os.environ["MUJOCO_GL"] = backend
            os.environ["PYOPENGL_PLATFORM"] = backend
            return backend
        errors[backend] = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    raise RenderBackendError(
        "MuJoCo offscreen rendering works with neither EGL nor OSMesa here "
        f"(egl: {errors['egl']}; osmesa: {errors['osmesa']}). Install a software renderer with "
        "`apt-get install libosmesa6` (or libegl1 with Mesa's EGL), or set MUJOCO_GL yourself."
    )


def gl_context_class(backend: str):
    """The GLContext class mujoco.Renderer should use for `backend` in this process: mujoco's own
    when it was imported with that backend (or `backend` is not an offscreen one MuJoCo ships),
    else that backend's module, imported now. PyOpenGL fixes its platform at import, so a process
    whose PyOpenGL already runs on another platform cannot switch: RenderBackendError says so."""
    from mujoco import gl_context

    if backend not in _OFFSCREEN or _imported_backend() == backend:
        return gl_context.GLContext
    platform = os.environ.get("PYOPENGL_PLATFORM")
    if "OpenGL" in sys.modules and platform not in (None, backend):
        raise RenderBackendError(
            f"mujoco was imported before MUJOCO_GL was set and PyOpenGL already runs on {platform!r}, so "
            f"rendering cannot switch to {backend!r} in this process; set MUJOCO_GL={platform} (or "
            f"MUJOCO_GL={backend} before anything imports mujoco)"
        )
    try:
        module = importlib.import_module(f"mujoco.{backend}")
    except (ImportError, OSError, RuntimeError) as exc:
        raise RenderBackendError(
            f"MuJoCo's {backend} backend does not load in this process ({type(exc).__name__}: {exc}); set "
            f"MUJOCO_GL to a backend that works here before importing mujoco (egl or osmesa)"
        ) from None
    return module.GLContext


@contextlib.contextmanager
def _renderer_backend(backend: str):
    """mujoco.Renderer makes its context with mujoco.gl_context.GLContext, fixed at mujoco's import:
    for the renderer built inside this block it is `backend`'s class; mujoco's own choice is restored
    after it, for the rest of the process."""
    from mujoco import gl_context

    cls, saved = gl_context_class(backend), gl_context.GLContext
    gl_context.GLContext = cls
    try:
        yield
    finally:
        gl_context.GLContext = saved


class FetchScene:
    """One Fetch env plus an offscreen renderer at a fixed resolution.

    reset(seed) and step(action) return the raw env observation dict; render() gives (H, W, 3) uint8;
    state() gives (S,) float32 in the order of STATE_NAMES. Episodes are a pure function of the reset
    seed and the actions, whatever ran in this scene before.
    """

    def __init__(self, name: str, resolution: int | tuple[int, int] = 64):
        backend = configure_gl()
        import gymnasium as gym
        import mujoco

        with _quiet_import():
            import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
        self.name = name
        self.spec = SCENES[name]
        h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
        # Build the env directly (no TimeLimit/OrderEnforcing wrappers): episodes run as long as asked.
        self.env = gym.make(self.spec.env_id).unwrapped
        m = self.model = self.env.model
        self.data = self.env.data
        self._mujoco = mujoco

        mocap = m.body("robot0:mocap").id
        m.geom_rgba[m.geom_bodyid == mocap, 3] = 0.0  # the green mocap crosshair
        obj = m.geom("object0").id
        m.geom_matid[obj] = -1  # use geom_rgba, not the shared dark material
        m.geom_rgba[obj] = OBJECT_RGBA
        m.vis.quality.shadowsize = 512  # the XML lights cast no shadows; keep any that do cheap
        m.vis.global_.offwidth = max(int(m.vis.global_.offwidth), w)
        m.vis.global_.offheight = max(int(m.vis.global_.offheight), h)

        with _renderer_backend(backend):
            self.renderer = mujoco.Renderer(m, height=h, width=w)
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        cam = self.spec.camera
        self.camera.lookat[:] = cam.lookat
        self.camera.distance = cam.distance
        self.camera.azimuth = cam.azimuth
        self.camera.elevation = cam.elevation
        self.option = mujoco.MjvOption()
        self.option.sitegroup[:] = 0  # target sphere, object and grip sites

        self._grip_site = m.site("robot0:grip").id
        self._obj_site = m.site("object0").id
        self._fingers = [m.joint(f"robot0:{s}_gripper_finger_joint").qposadr[0] for s in ("l", "r")]

    def reset(self, seed: int) -> dict:
        obs, _ = self.env.reset(seed=int(seed))
        return obs

    def step(self, action: np.ndarray) -> dict:
        obs, _, _, _, _ = self.env.step(np.asarray(action, dtype=np.float64))
        return obs

    @property
    def goal(self) -> np.ndarray:
        """(3,) target position (hidden in the images)."""
        return np.array(self.env.goal, dtype=np.float64)

    def grip_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._grip_site].copy()

    def object_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._obj_site].copy()

    def gripper_width(self) -> float:
        return float(sum(self.data.qpos[i] for i in self._fingers))

    def state(self) -> np.ndarray:
        """(S,) float32: gripper xyz, finger opening, object xyz (see STATE_NAMES)."""
        return np.concatenate([self.grip_pos(), [self.gripper_width()], self.object_pos()]).astype(np.float32)

    def render(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB from the scene's fixed camera."""
        self.renderer.update_scene(self.data, camera=self.camera, scene_option=self.option)
        return self.renderer.render().copy()

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None
        self.env.close()


def _quiet_import():
    """gymnasium_robotics prints a notice about Adroit reward versions to stderr on import, once per
    worker process; it does not concern the Fetch scenes."""
    return contextlib.redirect_stderr(io.StringIO())
