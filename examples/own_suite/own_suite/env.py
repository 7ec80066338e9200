"""ReachHazardEnv: a point in the plane reaches a goal; a disc-shaped hazard costs.

A standard `gymnasium.Env` (5-tuple `step`) with the per-step cost in `info["cost"]`, which
is all safemeta's sampler needs. Plain numpy, so it runs anywhere and renders without GL.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from own_suite.task import ReachTask

HORIZON = 50
STEP = 0.1  # distance moved per step at full action
START_NOISE = 0.1  # the point starts uniform in [-0.1, 0.1]^2
VIEW = 1.5  # rendered square: [-VIEW, VIEW]^2
SIZE = 128  # rendered image, pixels per side


class ReachHazardEnv(gym.Env[np.ndarray, np.ndarray]):
    """Move by `STEP · action`; reward = progress toward the goal; cost 1 inside the hazard."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: ReachTask, render_mode: str | None = None) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: got {render_mode!r}; accepted [None, 'rgb_array']")
        self.render_mode = render_mode
        # observation: position, goal − position, hazard centre − position
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (6,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.pos = np.zeros(2)
        self._steps = 0
        self.set_task(task)

    def set_task(self, task: ReachTask) -> None:
        """Re-target the env to another task (safemeta's env pool reuses envs this way)."""
        self.task = task
        self.goal = np.array([task.goal_x, task.goal_y])
        self.hazard = np.array([task.hazard_x, task.hazard_y])

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-START_NOISE, START_NOISE, 2)
        self._steps = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        before = np.linalg.norm(self.goal - self.pos)
        self.pos = self.pos + STEP * np.clip(action, -1.0, 1.0)
        self._steps += 1
        reward = float(before - np.linalg.norm(self.goal - self.pos))
        inside = np.linalg.norm(self.pos - self.hazard) < self.task.hazard_radius
        info = {"cost": float(inside)}  # the per-step cost safemeta reads
        return self._obs(), reward, False, self._steps >= HORIZON, info

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.pos, self.goal - self.pos, self.hazard - self.pos])

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """A SIZE x SIZE RGB image: hazard red, goal green, the point blue."""
        if self.render_mode != "rgb_array":
            return None
        xs = np.linspace(-VIEW, VIEW, SIZE)
        x, y = np.meshgrid(xs, xs[::-1])  # image rows run top to bottom
        img = np.full((SIZE, SIZE, 3), 245, np.uint8)
        for centre, radius, colour in ((self.hazard, self.task.hazard_radius, (230, 120, 120)),
                                       (self.goal, 0.08, (60, 180, 75)), (self.pos, 0.05, (40, 80, 220))):
            img[(x - centre[0]) ** 2 + (y - centre[1]) ** 2 < radius**2] = colour
        return img
