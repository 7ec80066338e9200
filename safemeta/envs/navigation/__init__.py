"""Navigation suites on our own MJCF and lidar (SPEC §4.2): Circle and Button."""

import safemeta.envs.mujoco_log  # noqa: F401  (MuJoCo warnings to logging)
from safemeta.envs.navigation.button import ButtonTask, PointButtonSuite
from safemeta.envs.navigation.circle import (
    CarCircleNoHazardsSuite,
    CarCircleSuite,
    CarCircleTask,
    CircleTask,
    PointCircleSuite,
)

__all__ = [
    "ButtonTask",
    "CarCircleNoHazardsSuite",
    "CarCircleSuite",
    "CarCircleTask",
    "CircleTask",
    "PointButtonSuite",
    "PointCircleSuite",
]
