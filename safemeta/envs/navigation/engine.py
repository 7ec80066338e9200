"""The navigation env skeleton shared by Circle and Button (SPEC §4, §4.2, §6).

A `NavEnv` compiles its MuJoCo model once, in `__init__`; `set_task` and `reset` only
write numbers into the model and data (positions, sizes), never recompile (SPEC §4.2:
Safety-Gymnasium spends ~1 s per reset recompiling). Stepping is one
``mj_step(model, data, nstep=substeps)`` call plus a few scalar formulas, to stay near
the speed of a bare MuJoCo loop (SPEC §6).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from safemeta.envs.base import Task
from safemeta.envs.navigation.robots import Robot, read_sensors

_COMPILES = [0]


def compile_count() -> int:
    """How many MuJoCo models this process has compiled here (tests: reset never compiles)."""
    return _COMPILES[0]


def check_no_kwargs(kwargs: dict[str, Any]) -> None:
    """`Suite.make` accepts only render_mode here; name anything else."""
    if kwargs:
        raise ValueError(f"make: unknown argument(s) {sorted(kwargs)}; accepted ['render_mode']")


def compile_model(xml: str) -> mujoco.MjModel:
    _COMPILES[0] += 1
    return mujoco.MjModel.from_xml_string(xml)


class NavEnv(gym.Env[np.ndarray, np.ndarray]):
    """A navigation task env; subclasses define the task's objects, reward and cost."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 25}
    view_distance: float = 6.0  # overhead camera distance for rendering

    def __init__(self, robot: Robot, xml: str, obs_dim: int, horizon: int,
                 render_mode: str | None = None) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: got {render_mode!r}; accepted [None, 'rgb_array']")
        self.robot = robot
        self.model = compile_model(xml)
        self.data = mujoco.MjData(self.model)
        self.horizon = horizon
        self.render_mode = render_mode
        # Sensors unbounded, lidar readings in [0, 1]: Safety-Gymnasium's bounds.
        low = np.zeros(obs_dim)
        low[:robot.sensor_dim] = -np.inf
        high = np.ones(obs_dim)
        high[:robot.sensor_dim] = np.inf
        self.observation_space = gym.spaces.Box(low, high, (obs_dim,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.model.nu,), np.float32)
        agent = self.model.body("agent").id
        self._xpos = self.data.xpos[agent]  # views into MjData, valid for its lifetime
        self._xmat = self.data.xmat[agent]
        self._substeps = robot.substeps
        self._obs_dim = obs_dim
        self._steps = 0
        self._renderer: mujoco.Renderer | None = None
        self.dt = robot.timestep * robot.substeps

    # -- the task interface subclasses fill in ---------------------------------------
    def set_task(self, task: Task) -> None:
        """Move the task's objects into place (model numbers only; no recompilation)."""
        raise NotImplementedError

    def _place(self) -> None:
        """Reset hook: put the agent (and task state) at a start drawn from np_random."""
        raise NotImplementedError

    def _lidars(self, obs: np.ndarray) -> None:
        """Write the task's lidars into obs[sensor_dim:]."""
        raise NotImplementedError

    def _reward_cost(self) -> tuple[float, dict[str, Any]]:
        """Reward of the step just taken and the info dict (with info["cost"])."""
        raise NotImplementedError

    def _physics(self) -> None:
        """One env step of physics: `substeps` MuJoCo steps (tasks with moving obstacles
        override this to move them between substeps)."""
        mujoco.mj_step(self.model, self.data, nstep=self._substeps)

    # -- gymnasium.Env ----------------------------------------------------------------
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self._place()
        mujoco.mj_forward(self.model, self.data)
        self._steps = 0
        return self._observe(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.data.ctrl[:] = action  # ctrllimited actuators clamp to [-1, 1]
        self._physics()
        # Positions, sensors and contacts of the new state, as Safety-Gymnasium's
        # calculate_cost does with its own mj_forward.
        mujoco.mj_forward(self.model, self.data)
        self._steps += 1
        reward, info = self._reward_cost()
        return self._observe(), reward, False, self._steps >= self.horizon, info

    def _observe(self) -> np.ndarray:
        obs = np.empty(self._obs_dim)
        read_sensors(self.robot, self.data.sensordata, obs)
        self._lidars(obs)
        return obs

    def agent_pose(self) -> tuple[list[float], list[float]]:
        """Agent position (3) and orientation (3×3 row by row), as Python floats."""
        return self._xpos.tolist(), self._xmat.tolist()

    # -- rendering ----------------------------------------------------------------------
    def render(self) -> np.ndarray | None:  # type: ignore[override]
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = make_renderer(self.model, 240, 320)
            self._camera = mujoco.MjvCamera()
            self._camera.lookat[:] = (0.0, 0.0, 0.0)
            self._camera.distance = self.view_distance
            self._camera.elevation = -70.0
            self._camera.azimuth = 90.0
        self._renderer.update_scene(self.data, camera=self._camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def make_renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    """An offscreen renderer. MuJoCo fixes its default GL backend when imported (GLFW,
    which needs a display, unless MUJOCO_GL was set then). Use the backend MUJOCO_GL
    names now (another part of the process may have set it later), else EGL, then
    OSMesa, for this renderer only."""
    requested = os.environ.get("MUJOCO_GL", "").lower()
    if os.environ.get("DISPLAY") and not requested:
        return mujoco.Renderer(model, height, width)
    gl = sys.modules[mujoco.Renderer.__module__].gl_context
    backends = [requested] if requested in ("egl", "osmesa", "glfw") else []
    backends += [b for b in ("egl", "osmesa") if b not in backends]
    errors = []
    for backend in backends:
        saved = gl.GLContext
        try:
            gl.GLContext = importlib.import_module(f"mujoco.{backend}").GLContext
            return mujoco.Renderer(model, height, width)
        except Exception as exc:  # noqa: BLE001 - try the next backend, report all
            errors.append(f"{backend}: {exc}")
        finally:
            gl.GLContext = saved
    raise RuntimeError("offscreen rendering needs EGL or OSMesa (or set MUJOCO_GL): "
                       + "; ".join(errors))
