"""A tiny continuous task suite for tests and smoke runs: a 1-D point mass.

State x (start near 0), action a ∈ [−1, 1], x' = x + 0.2·a. Task: a goal g;
reward −|x' − g|; cost a² per step (control energy), limit per episode. The
observation is (x, t/H): the goal must be inferred from reward, as in the
velocity suites. With `terminate_at` an episode also ends when |x| exceeds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from safemeta.envs.base import SPLITS, ParamRange, Suite, Task
from safemeta.nn.scripted import KnownSafe, zero_action


@dataclass(frozen=True)
class GoalTask(Task):
    goal: float = 0.5


class PointMassEnv(gym.Env):
    def __init__(self, task: GoalTask, horizon: int, terminate_at: float | None = None) -> None:
        self.task, self.horizon, self.terminate_at = task, horizon, terminate_at
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.x, self.t = 0.0, 0

    def set_task(self, task: GoalTask) -> None:
        self.task = task

    def _obs(self) -> np.ndarray:
        return np.array([self.x, self.t / self.horizon], np.float32)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.x, self.t = float(self.np_random.uniform(-0.1, 0.1)), 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = float(np.clip(action, -1, 1)[0])
        self.x += 0.2 * a
        self.t += 1
        reward = -abs(self.x - self.task.goal)
        term = self.terminate_at is not None and abs(self.x) > self.terminate_at
        return self._obs(), reward, term, self.t >= self.horizon, {"cost": a * a}


class PointMassSuite(Suite):
    """Goals g ~ U[0.2, 1] (train and test) or U[1, 1.5] (ood: farther than any training
    goal, so reaching it costs more energy); energy cost Σ a² ≤ cost_limit."""

    id = "toy-point"
    description = "1-D point mass reaching a goal with an energy budget (tests)"
    task_type = GoalTask
    splits = SPLITS
    GOALS = {"train": (0.2, 1.0), "test": (0.2, 1.0), "ood": (1.0, 1.5)}

    def __init__(self, horizon: int = 10, cost_limit: float = 1.0, terminate_at: float | None = None) -> None:
        self.horizon, self.cost_limit, self.terminate_at = horizon, cost_limit, terminate_at

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        self.check_split(split)
        return [GoalTask(float(g)) for g in rng.uniform(*self.GOALS[split], n)]

    def make(self, task: Task, **kwargs: Any) -> gym.Env:
        assert isinstance(task, GoalTask)
        return PointMassEnv(task, self.horizon, self.terminate_at)

    def param_ranges(self, split: str) -> list[ParamRange]:
        self.check_split(split)
        return [ParamRange("goal", *self.GOALS[split], "goal position")]

    def known_safe(self, task: Task) -> KnownSafe:
        """The zero action: no energy, cost exactly 0."""
        return KnownSafe(zero_action(1), np.zeros(1), "zero action: a² = 0")
