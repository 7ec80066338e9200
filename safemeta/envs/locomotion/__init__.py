"""Locomotion task suites on Gymnasium's v5 MuJoCo models (SPEC §4.1)."""

import safemeta.envs.mujoco_log  # noqa: F401  (MuJoCo warnings to logging)
from safemeta.envs.locomotion.envs import (
    HalfCheetahVelEnv,
    HopperVelEnv,
    HumanoidDirEnv,
    SwimmerVelEnv,
)
from safemeta.envs.locomotion.suites import (
    HalfCheetahVelSuite,
    HopperVelSuite,
    HumanoidDirSuite,
    LocomotionSuite,
    SwimmerVelSuite,
)
from safemeta.envs.locomotion.tasks import DirectionTask, VelocityTask

__all__ = [
    "DirectionTask",
    "HalfCheetahVelEnv",
    "HalfCheetahVelSuite",
    "HopperVelEnv",
    "HopperVelSuite",
    "HumanoidDirEnv",
    "HumanoidDirSuite",
    "LocomotionSuite",
    "SwimmerVelEnv",
    "SwimmerVelSuite",
    "VelocityTask",
]
