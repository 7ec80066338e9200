"""The contract between the run driver (`experiment/runner.py`) and an algorithm.

It lives outside `experiment/` so that the algorithms know nothing of runs.

The driver owns the run directory, the iteration loop, checkpoints, metrics,
progress, signals and resume. An algorithm owns learning. It is constructed from
its config, the suite, the fixed task lists of the run and a `numpy.random.SeedSequence`
derived from the root seed, and exposes:

- `train_iteration(it)`  one meta-training iteration; returns one metrics row
  (`MetricRow`) for the meta-training curves (one-step adapted policy on the
  validation tasks when `it % eval_every == 0`, else the batch's post-adaptation data);
- `meta_test(tasks, steps)`  SPEC §2.7: rows for step 0..steps (step 0 is the
  meta-policy), each with reward mean over tasks, max cost over tasks, violation rate;
- `state_dict()` / `load_state_dict()`  everything needed to continue exactly,
  every RNG state included (numpy Generator states, torch generator states);
- `close()`  release what it holds (envs, workers).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from safemeta.config import CommonConfig
from safemeta.envs.base import Suite, Task

# Columns every metrics row has; algorithms may add more (dual, kl, phase times).
METRIC_COLUMNS = (
    "phase",
    "iteration",
    "step",
    "reward_mean",
    "cost_mean",
    "cost_max",
    "cost_limit",
    "violation_rate",
    "time_s",
)

MetricRow = dict[str, Any]


class Algorithm(abc.ABC):
    """A (safe) meta-RL algorithm the run driver can train, test, save and resume."""

    id: ClassVar[str]
    Config: ClassVar[type[CommonConfig]]
    extra_columns: ClassVar[tuple[str, ...]] = ()  # metrics.csv columns beyond METRIC_COLUMNS

    def __init__(
        self,
        cfg: CommonConfig,
        suite: Suite,
        tasks: dict[str, list[Task]],
        seed: np.random.SeedSequence,
    ) -> None:
        self.cfg = cfg
        self.suite = suite
        self.tasks = tasks  # "val" and "test" lists, fixed for the run (saved in tasks.json)
        self.seed = seed

    @classmethod
    def presets(cls, suite_id: str) -> dict[str, dict[str, Any]]:
        """Preset name -> config overrides for `suite_id` (quick, medium and paper)."""
        return {"quick": {}, "medium": {}, "paper": {}}

    @abc.abstractmethod
    def train_iteration(self, iteration: int) -> MetricRow: ...

    @abc.abstractmethod
    def meta_test(self, tasks: list[Task], steps: int) -> list[MetricRow]: ...

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None:  # noqa: B027 (optional hook: most algorithms hold nothing)
        """Release envs and workers; the algorithm is not used afterwards."""

    def finite(self) -> bool:
        """False when a parameter became non-finite (the driver then restores the last
        good checkpoint and skips the iteration)."""
        return True
