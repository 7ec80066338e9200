"""The four locomotion task suites (SPEC §4.1, §7 ids).

Splits: `test` draws from the same range as `train` (the MAML / ProMP / Meta-CPO
locomotion protocol: meta-test tasks are fresh draws of P(Γ), held out by sampling,
not by range). `ood` extrapolates: the range just above train's upper end, a quarter
of its width long, so every ood task asks for more than any training task did:

    suite            train            ood
    halfcheetah-vel  v* in [0, 2]     v* in [2, 2.5] m/s
    hopper-vel       v* in [0, 1]     v* in [1, 1.25] m/s
    swimmer-vel      v* in [0, 1]     v* in [1, 1.25] m/s
    humanoid-dir     θ in [0, 0.9]    θ in [0.9, 1.125] rad

Default cost limits d (undiscounted episode cost over the horizon; they scale with
the horizon and are quoted per 200 steps) bind: a policy trained for reward alone
exceeds them. Evidence (``benchmarks/locomotion_limits.py``: a task-conditioned
PPO on reward only, 1M env steps, 10 test tasks; energy = Σ‖a‖² per episode):

    suite            energy d   zero policy   uniform random   reward-only PPO (mean policy)
    halfcheetah-vel     200          0            401              815  (min 759 over tasks)
    hopper-vel           80          0             31              285  (min 259)
    swimmer-vel         100          0            133              226  (min 185)
    humanoid-dir        100          0             18              287  (min 217)

(Random Hopper/Humanoid fall within tens of steps, hence their small totals.)
Velocity cost: d = 25 steps over the threshold per 200 steps. It binds where
the task asks for speeds above the threshold: Hopper v* > 0.74 and Swimmer
v* > 0.23 (every ood task of both); it cannot bind for HalfCheetah-Vel (v* <= 2.5 < 3.2096).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from safemeta.envs.base import SPLITS, ParamRange, Suite, Task
from safemeta.envs.locomotion.envs import (
    HalfCheetahVelEnv,
    HopperVelEnv,
    HumanoidDirEnv,
    SwimmerVelEnv,
    TaskEnvMixin,
    check_options,
)
from safemeta.envs.locomotion.tasks import DirectionTask, VelocityTask
from safemeta.nn.scripted import KnownSafe, zero_action

PAPER_HORIZON = 200  # SPEC §4.1: the episode length the velocity tasks' limits are quoted for


class LocomotionSuite(Suite):
    """A one-parameter locomotion task distribution (uniform per split)."""

    family: ClassVar[str] = "continuous"
    splits = SPLITS
    env_class: ClassVar[type[TaskEnvMixin]]
    param: ClassVar[str]  # the task field
    param_doc: ClassVar[str]
    train_range: ClassVar[tuple[float, float]]  # (low, high) of the uniform distribution; test too
    ood_range: ClassVar[tuple[float, float]]  # beyond train's upper end (module docstring)
    # Default limits per PAPER_HORIZON steps, per cost kind (see module docstring).
    energy_limit: ClassVar[float]
    velocity_limit: ClassVar[float]

    def __init__(
        self, cost: str = "energy", horizon: int = PAPER_HORIZON, cost_limit: float | None = None
    ) -> None:
        check_options(cost, horizon)
        self.cost = cost
        self.horizon = horizon
        self.cost_type = "undiscounted"
        self.cost_limit = self._limit(cost_limit)
        self.cost_doc = self._cost_doc()

    def _limit(self, cost_limit: float | None) -> float:
        if cost_limit is None:
            default = self.energy_limit if self.cost == "energy" else self.velocity_limit
            return default * self.horizon / PAPER_HORIZON
        ok = isinstance(cost_limit, (int, float)) and not isinstance(cost_limit, bool)
        if not ok or not math.isfinite(cost_limit) or cost_limit < 0:
            raise ValueError(f"cost_limit: got {cost_limit!r}; accepted a finite number >= 0")
        return float(cost_limit)

    def _cost_doc(self) -> str:
        limit = f"; limit {self.cost_limit:g} per {self.horizon} steps"
        if self.cost == "energy":
            return "per-step control energy ||a||^2 (action clipped to the actuator range)" + limit
        threshold = self.env_class.velocity_threshold
        speed = "centre-of-mass xy speed" if self.id == "humanoid-dir" else "forward velocity v_x"
        return f"1 per step while {speed} > {threshold} m/s (Safety-Gymnasium v1)" + limit

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        self.check_split(split)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n: got {n!r}; accepted an integer >= 0")
        low, high = self.split_range(split)
        values = rng.uniform(low, high, size=n)
        return [self.task_type(**{self.param: float(v)}) for v in values]

    def make(self, task: Task, render_mode: str | None = None, **kwargs: Any) -> Any:
        """The env for `task` (extra kwargs, e.g. width/height, go to the v5 env)."""
        return self.env_class(  # type: ignore[call-arg]
            task, cost=self.cost, horizon=self.horizon, render_mode=render_mode, **kwargs
        )

    def known_safe(self, task: Task) -> KnownSafe | None:
        """With the energy cost, the zero action: it spends no energy, so its episode cost
        is exactly 0 whatever the robot does (with the velocity cost nothing is known)."""
        if self.cost != "energy":
            return None
        if not hasattr(self, "_zero"):
            self._zero = zero_action(int(self.spaces()[1].shape[0]))
        return KnownSafe(self._zero, np.zeros(1), "zero action: control energy ||a||^2 = 0")

    def split_range(self, split: str) -> tuple[float, float]:
        self.check_split(split)
        return self.ood_range if split == "ood" else self.train_range

    def param_ranges(self, split: str) -> list[ParamRange]:
        """The uniform range of the task parameter: train's for `train` and `test`, the
        extrapolated one for `ood` (module docstring)."""
        low, high = self.split_range(split)
        doc = self.param_doc
        if split == "ood":
            doc += f"; beyond the training range [{self.train_range[0]:g}, {self.train_range[1]:g}]"
        return [ParamRange(self.param, low, high, doc)]


class HalfCheetahVelSuite(LocomotionSuite):
    id = "halfcheetah-vel"
    description = "HalfCheetah-v5 tracking a target forward velocity; reward -|v_x - v*|"
    task_type = VelocityTask
    env_class = HalfCheetahVelEnv
    param = "target_velocity"
    param_doc = "target forward velocity v* (m/s), uniform"
    train_range = (0.0, 2.0)
    ood_range = (2.0, 2.5)
    energy_limit = 200.0
    velocity_limit = 25.0


class HopperVelSuite(LocomotionSuite):
    id = "hopper-vel"
    description = (
        "Hopper-v5 tracking a target forward velocity; reward -|v_x - v*| + healthy bonus"
        " - control cost; terminates when unhealthy"
    )
    task_type = VelocityTask
    env_class = HopperVelEnv
    param = "target_velocity"
    param_doc = "target forward velocity v* (m/s), uniform"
    train_range = (0.0, 1.0)
    ood_range = (1.0, 1.25)
    energy_limit = 80.0
    velocity_limit = 25.0


class SwimmerVelSuite(LocomotionSuite):
    id = "swimmer-vel"
    description = "Swimmer-v5 tracking a target forward velocity; reward -|v_x - v*|"
    task_type = VelocityTask
    env_class = SwimmerVelEnv
    param = "target_velocity"
    param_doc = "target forward velocity v* (m/s), uniform"
    train_range = (0.0, 1.0)
    ood_range = (1.0, 1.25)
    energy_limit = 100.0
    velocity_limit = 25.0


class HumanoidDirSuite(LocomotionSuite):
    id = "humanoid-dir"
    description = (
        "Humanoid-v5 running along direction theta; reward 1.25*(speed along theta)"
        " + alive bonus - control cost; terminates when unhealthy"
    )
    task_type = DirectionTask
    env_class = HumanoidDirEnv
    param = "direction"
    param_doc = "running direction theta (rad from +x), uniform"
    train_range = (0.0, 0.9)
    ood_range = (0.9, 1.125)
    energy_limit = 100.0
    velocity_limit = 25.0
