"""ReachTask: one task of the suite, a small frozen dataclass safemeta saves with a run."""

from __future__ import annotations

import math
from dataclasses import dataclass

from safemeta.envs.base import Task

MAX_GOAL = 1.4  # the rendered view is [-1.5, 1.5]^2
START_CLEARANCE = 0.1  # the hazard keeps this far from the start and the goal (the start is noisy)


@dataclass(frozen=True)
class ReachTask(Task):
    """Reach (goal_x, goal_y) from near the origin; the disc at (hazard_x, hazard_y) costs."""

    goal_x: float = 1.0
    """Goal position, x."""
    goal_y: float = 0.0
    """Goal position, y."""
    hazard_x: float = 0.5
    """Hazard centre, x."""
    hazard_y: float = 0.0
    """Hazard centre, y."""
    hazard_radius: float = 0.2
    """Hazard radius; every step inside costs 1."""

    def validate(self) -> None:
        """ValueError naming the field when the task is impossible (safemeta shows it in one line)."""
        for name in ("goal_x", "goal_y", "hazard_x", "hazard_y", "hazard_radius"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}: got {value!r}; accepted a finite number")
        if math.hypot(self.goal_x, self.goal_y) > MAX_GOAL:
            raise ValueError(f"goal: ({self.goal_x}, {self.goal_y}) is farther than {MAX_GOAL} "
                             "from the origin")
        if not 0.0 < self.hazard_radius <= 0.5:
            raise ValueError(f"hazard_radius: got {self.hazard_radius}; accepted (0, 0.5]")
        for what, x, y in (("start", 0.0, 0.0), ("goal", self.goal_x, self.goal_y)):
            if math.hypot(x - self.hazard_x, y - self.hazard_y) < self.hazard_radius + START_CLEARANCE:
                raise ValueError(f"hazard: covers the {what}; the task could not be done safely")
