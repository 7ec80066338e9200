"""ReachHazardSuite: the task distribution, its splits, and the env of a task."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from own_suite.env import HORIZON, ReachHazardEnv
from own_suite.task import ReachTask
from safemeta.envs.base import ParamRange, Suite, Task

# Goal direction (radians) per split: training and held-out test tasks point up (test tasks
# are fresh draws of the training distribution), out-of-distribution tasks point down.
ANGLE = {"train": (0.0, math.pi), "test": (0.0, math.pi), "ood": (math.pi, 2.0 * math.pi)}
DISTANCE = (0.8, 1.2)  # goal distance from the origin
RADIUS = (0.1, 0.25)  # hazard radius; the hazard sits halfway to the goal, across the straight path


class ReachHazardSuite(Suite):
    """Reach a goal in the plane around a hazard; goal direction varies per task."""

    id = "reach-hazard"  # the same as the entry-point name in pyproject.toml
    description = "Point in the plane reaches a goal; a hazard halfway there costs 1 per step inside."
    task_type = ReachTask
    family = "continuous"
    horizon = HORIZON
    # per 50-step episode: the straight path crosses the disc, 2 to 5 steps inside, so the limit binds
    cost_limit = 2.0
    cost_type = "undiscounted"
    cost_doc = "1 per step inside the hazard disc; limit 2 per 50 steps"
    # the splits sample_tasks takes (without this line: train and test; ood is then refused)
    splits = ("train", "test", "ood")

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        self.check_split(split)
        tasks: list[Task] = []
        for _ in range(n):
            angle, dist = rng.uniform(*ANGLE[split]), rng.uniform(*DISTANCE)
            gx, gy = dist * math.cos(angle), dist * math.sin(angle)
            tasks.append(ReachTask(goal_x=gx, goal_y=gy, hazard_x=gx / 2, hazard_y=gy / 2,
                                   hazard_radius=float(rng.uniform(*RADIUS))))
        return tasks

    def make(self, task: Task, render_mode: str | None = None, **kwargs: Any) -> ReachHazardEnv:
        if not isinstance(task, ReachTask):
            raise TypeError(f"task: got {type(task).__name__}; accepted ReachTask")
        if kwargs:  # safemeta's renderer asks for width/height first and falls back without
            raise ValueError(f"make: unknown argument(s) {sorted(kwargs)}; accepted ['render_mode']")
        return ReachHazardEnv(task, render_mode=render_mode)

    def param_ranges(self, split: str) -> list[ParamRange]:
        self.check_split(split)
        return [ParamRange("goal angle", *ANGLE[split], doc="direction of the goal (rad)"),
                ParamRange("goal distance", *DISTANCE, doc="from the origin"),
                ParamRange("hazard_radius", *RADIUS, doc="halfway to the goal")]
