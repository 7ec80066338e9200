"""Task records of the locomotion suites (SPEC §4.1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from safemeta.envs.base import Task


@dataclass(frozen=True)
class VelocityTask(Task):
    """Track a forward target velocity v* (m/s) along +x (HalfCheetah, Hopper, Swimmer)."""

    target_velocity: float

    def validate(self) -> None:
        v = self.target_velocity
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"target_velocity: got {v!r}; accepted a finite number >= 0 (m/s, forward)")


@dataclass(frozen=True)
class DirectionTask(Task):
    """Run along the planar direction θ (radians from +x, counter-clockwise) (Humanoid-Dir)."""

    direction: float

    def validate(self) -> None:
        d = self.direction
        if not isinstance(d, (int, float)) or not math.isfinite(d) or abs(d) > math.pi:
            raise ValueError(f"direction: got {d!r}; accepted a finite angle in [-pi, pi] rad")
