"""Locomotion envs on Gymnasium's v5 MuJoCo models, one task each (SPEC §4.1).

Each env subclasses the Gymnasium v5 class (same model, observation, reset noise,
health checks) and replaces `step` with the task's reward, the per-step cost in
``info["cost"]`` and a built-in time limit (``truncated`` at ``horizon`` steps).
`set_task` changes the target in place: neither it nor `reset` recompiles the model.

Costs (SPEC §4.1):
- ``"energy"``: ‖a‖² of the applied control, i.e. the action clipped to the
  actuator range, as MuJoCo applies it;
- ``"velocity"``: Safety-Gymnasium v1's indicator 1[speed > threshold], speed = the
  signed forward velocity v_x (HalfCheetah, Hopper, Swimmer) or the centre-of-mass
  xy speed (Humanoid).
"""

from __future__ import annotations

import ctypes.util
import math
import os
from typing import Any, ClassVar

import mujoco
import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv, mass_center
from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv
from gymnasium.utils import EzPickle

from safemeta.envs.base import Task
from safemeta.envs.locomotion.assets import asset_path, compile_model
from safemeta.envs.locomotion.tasks import DirectionTask, VelocityTask

COSTS = ("energy", "velocity")
StepResult = tuple[np.ndarray, float, bool, bool, dict[str, Any]]


def check_options(cost: str, horizon: int) -> None:
    """ValueError naming the option for a bad cost kind or horizon."""
    if cost not in COSTS:
        raise ValueError(f"cost: got {cost!r}; accepted {list(COSTS)}")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon: got {horizon!r}; accepted an integer >= 1")


class TaskEnvMixin:
    """Task, cost and time limit shared by the locomotion envs (goes before the v5 class)."""

    xml_name: ClassVar[str]
    task_type: ClassVar[type[Task]]
    velocity_threshold: ClassVar[float]  # Safety-Gymnasium v1 threshold (SPEC §4.1)

    # Attributes of the v5 MujocoEnv this mixin relies on.
    model: mujoco.MjModel
    data: mujoco.MjData
    width: int
    height: int

    def _init_task(self, task: Task, cost: str, horizon: int) -> None:
        check_options(cost, horizon)
        self.cost_kind = cost
        self.horizon = horizon
        self._elapsed = 0
        self.set_task(task)

    def _init_cost_buffers(self) -> None:
        low, high = self.model.actuator_ctrlrange.T
        self._ctrl_low, self._ctrl_high = low.copy(), high.copy()
        self._clipped = np.zeros(self.model.nu)
        # The env step's duration, cached: Gymnasium's `dt` property costs a microsecond
        # a call, and the timestep never changes after construction.
        self._dt = self.model.opt.timestep * self.frame_skip  # type: ignore[attr-defined]

    def _advance(self, action: np.ndarray) -> float:
        """One env step of physics; returns the root's forward velocity v_x."""
        x_before = self.data.qpos[0]
        self.do_simulation(action, self.frame_skip)  # type: ignore[attr-defined]
        # float64 on purpose: with a Python float, NumPy 2 would compute the reward in the
        # float32 of the action's control cost.
        return (self.data.qpos[0] - x_before) / self._dt  # type: ignore[attr-defined,no-any-return]

    def set_task(self, task: Task) -> None:
        """Switch to `task` in place (no model rebuild)."""
        if not isinstance(task, self.task_type):  # ValueError for all bad input (SPEC §8)
            got, accepted = type(task).__name__, self.task_type.__name__
            raise ValueError(f"task: got {got}; accepted {accepted}")  # noqa: TRY004
        task.validate()
        self.task = task
        if hasattr(self, "_ezpickle_args"):  # a pickled copy rebuilds with the current task
            self._ezpickle_args = (task, *self._ezpickle_args[1:])
        self._on_task()

    def _on_task(self) -> None:
        """Cache what the reward needs from the task."""

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        # Patched XML: no settotalmass warning, no MUJOCO_LOG.TXT (see assets.py).
        model = compile_model(self.xml_name)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        self._elapsed = 0
        return super().reset(seed=seed, options=options)  # type: ignore[misc]

    def _cost(self, action: Any, speed: float) -> float:
        if self.cost_kind == "energy":
            # np.clip's values, without its Python wrapper (a few microseconds a step)
            a = np.maximum(action, self._ctrl_low, out=self._clipped)
            np.minimum(a, self._ctrl_high, out=a)
            return float(a @ a)
        return float(speed > self.velocity_threshold)

    def _finish(
        self, obs: np.ndarray, reward: float, terminated: bool, cost: float, info: dict[str, Any]
    ) -> StepResult:
        self._elapsed += 1
        info["cost"] = cost
        return obs, float(reward), bool(terminated), self._elapsed >= self.horizon, info


def default_headless_gl(render_mode: str | None) -> None:
    """Offscreen rendering without a display: pick EGL (else OSMesa) when MUJOCO_GL is unset.

    Gymnasium tries GLFW first, which needs a display; an explicit MUJOCO_GL wins.
    """
    headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if render_mode in (None, "human") or "MUJOCO_GL" in os.environ or not headless:
        return
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = backend
            return


def _env_init(env: Any, base: type, task: Task, cost: str, horizon: int, **kw: Any) -> None:
    """Shared constructor: v5 init on our patched model, then task and cost state."""
    default_headless_gl(kw.get("render_mode"))
    env._init_task(task, cost, horizon)
    base.__init__(env, xml_file=asset_path(env.xml_name), **kw)
    EzPickle.__init__(env, task, cost, horizon, **kw)
    env._init_cost_buffers()


class VelocityTracking(TaskEnvMixin):
    """Reward −|v_x − v*| for the task's target velocity v* (SPEC §4.1)."""

    _target: float

    def _on_task(self) -> None:
        self._target = float(self.task.target_velocity)  # type: ignore[attr-defined]

    def step(self, action: np.ndarray) -> StepResult:
        x_velocity = self._advance(action)
        reward = -abs(x_velocity - self._target)
        info = {"x_velocity": x_velocity, "target_velocity": self._target}
        return self._finish(self._get_obs(), reward, False, self._cost(action, x_velocity), info)  # type: ignore[attr-defined]


class HalfCheetahVelEnv(VelocityTracking, HalfCheetahEnv):
    """HalfCheetah-Vel: reward −|v_x − v*| (SPEC §4.1)."""

    xml_name = "half_cheetah.xml"
    task_type = VelocityTask
    velocity_threshold = 3.2096

    def __init__(self, task: VelocityTask, cost: str = "energy", horizon: int = 200, **kw: Any):
        _env_init(self, HalfCheetahEnv, task, cost, horizon, **kw)



class HopperVelEnv(VelocityTracking, HopperEnv):
    """Hopper-Vel: reward −|v_x − v*| + healthy bonus − 1e-3‖a‖² (v5 weights; SPEC §4.1)."""

    xml_name = "hopper.xml"
    task_type = VelocityTask
    velocity_threshold = 0.7402

    def __init__(self, task: VelocityTask, cost: str = "energy", horizon: int = 200, **kw: Any):
        _env_init(self, HopperEnv, task, cost, horizon, **kw)

    def step(self, action: np.ndarray) -> StepResult:
        x_velocity = self._advance(action)
        healthy = self.is_healthy  # v5: healthy bonus while healthy, terminate when not
        reward = -abs(x_velocity - self._target) + healthy * self._healthy_reward - self.control_cost(action)
        info = {"x_velocity": x_velocity, "target_velocity": self._target}
        cost = self._cost(action, x_velocity)
        return self._finish(self._get_obs(), reward, not healthy, cost, info)


class SwimmerVelEnv(VelocityTracking, SwimmerEnv):
    """Swimmer-Vel: reward −|v_x − v*| (SPEC §4.1)."""

    xml_name = "swimmer.xml"
    task_type = VelocityTask
    velocity_threshold = 0.2282

    def __init__(self, task: VelocityTask, cost: str = "energy", horizon: int = 200, **kw: Any):
        _env_init(self, SwimmerEnv, task, cost, horizon, **kw)



class HumanoidDirEnv(TaskEnvMixin, HumanoidEnv):
    """Humanoid-Dir: reward 1.25·(v_com · (cos θ, sin θ)) + 5·healthy − 0.1‖ctrl‖².

    Weights are Humanoid-v5's forward_reward_weight, healthy_reward and
    ctrl_cost_weight; v5's contact cost is not part of the reward (SPEC §4.1 lists
    forward speed, alive bonus and control cost only).
    """

    xml_name = "humanoid.xml"
    task_type = DirectionTask
    velocity_threshold = 1.4149

    def __init__(self, task: DirectionTask, cost: str = "energy", horizon: int = 200, **kw: Any):
        _env_init(self, HumanoidEnv, task, cost, horizon, **kw)

    def _on_task(self) -> None:
        theta = float(self.task.direction)  # type: ignore[attr-defined]
        self._unit = (math.cos(theta), math.sin(theta))

    def step(self, action: np.ndarray) -> StepResult:
        xy_before = mass_center(self.model, self.data)
        self.do_simulation(action, self.frame_skip)
        vx, vy = (mass_center(self.model, self.data) - xy_before) / self._dt
        forward = vx * self._unit[0] + vy * self._unit[1]
        healthy = self.is_healthy
        reward = (
            self._forward_reward_weight * forward + healthy * self._healthy_reward - self.control_cost(action)
        )
        info = {"x_velocity": vx, "y_velocity": vy, "forward_velocity": forward}
        cost = self._cost(action, math.hypot(vx, vy))
        return self._finish(self._get_obs(), reward, not healthy, cost, info)
