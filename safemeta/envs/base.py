"""What every task suite offers (SPEC §4): a task distribution and envs built from tasks.

A *task* is a small frozen dataclass (printable, JSON-serialisable through
``dataclasses.asdict``). A *suite* samples tasks per split and builds a standard
``gymnasium.Env`` for a task, with the per-step cost in ``info["cost"]``.

Splits: ``train`` is the task distribution meta-training samples (and validation draws
from); ``test`` holds fresh draws of the same distribution, the tasks the paper's
guarantee is about; ``ood`` is a shifted, harder distribution, for measuring what
happens outside it. A suite names the splits it accepts in ``splits``; one written
before ``ood`` existed keeps the default ``("train", "test")`` and refuses ``ood`` in
one line.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:
    from safemeta.nn.scripted import KnownSafe

SPLITS = ("train", "test", "ood")
TEST_SPLITS = ("test", "ood")  # what meta-test may be run on (config `test_split`)


@dataclass(frozen=True)
class Task:
    """Base class of task records. Subclasses add typed fields and `validate`."""

    def validate(self) -> None:
        """Raise ValueError naming the parameter when the task is impossible."""

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class ParamRange:
    """The range of one task parameter in one split, for `safemeta envs`."""

    name: str
    low: float
    high: float
    doc: str = ""


class Suite(abc.ABC):
    """A distribution of constrained tasks and the env for each task."""

    id: ClassVar[str]
    description: ClassVar[str]
    task_type: ClassVar[type[Task]]
    family: ClassVar[str] = "continuous"  # "tabular" or "continuous"
    horizon: int
    cost_limit: float  # per-episode limit d on the declared cost return
    cost_type: str = "undiscounted"  # "undiscounted" | "discounted": which return the limit binds
    num_costs: int = 1
    cost_doc: str = ""
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    """The splits `sample_tasks` and `param_ranges` accept; built-in suites: SPLITS."""

    @abc.abstractmethod
    def sample_tasks(
        self, n: int, rng: np.random.Generator, split: str = "train"
    ) -> list[Task]:
        """`n` tasks from the split's distribution."""

    @abc.abstractmethod
    def make(self, task: Task, **kwargs: Any) -> gym.Env:
        """A gymnasium.Env for `task`; cost in info["cost"]."""

    @abc.abstractmethod
    def param_ranges(self, split: str) -> list[ParamRange]:
        """Task parameters and their ranges in `split`."""

    def known_safe(self, task: Task) -> KnownSafe | None:
        """A policy known to keep `task` within its limit, with a bound on its expected
        episode cost (`nn/scripted.py`), for safemeta's `fallback = known_safe`; None (the
        default) when the suite knows none."""
        return None

    def task_from_dict(self, d: dict[str, Any]) -> Task:
        """A task from its `to_dict` form; ValueError naming what is wrong."""
        if not isinstance(d, dict):
            raise ValueError(f"task: got {type(d).__name__}; accepted an object of task parameters")
        name = self.task_type.__name__
        if d.get("type", name) != name:
            raise ValueError(f"task: type {d['type']!r} is not a task of {self.id}; accepted {name!r}")
        d = {k: v for k, v in d.items() if k != "type"}
        fields = {f.name: f for f in dataclasses.fields(self.task_type)}
        unknown = set(d) - set(fields)
        if unknown:
            raise ValueError(f"task: unknown field(s) {sorted(unknown)}; accepted {sorted(fields)}")
        missing = [k for k, f in fields.items() if k not in d and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"task: missing field(s) {missing}; {name} needs {sorted(fields)}")
        for k, v in d.items():  # JSON true/false are not numbers, whatever Python says
            if isinstance(v, bool) and fields[k].type not in (bool, "bool"):
                raise ValueError(f"{k}: got {v!r}; accepted a number")
            if isinstance(v, int) and abs(v) > 1e300:  # JSON integers are unbounded
                raise ValueError(f"{k}: got an integer of {len(str(abs(v)))} digits; "
                                 "accepted a finite number")
        args = {k: tuple(map(_tuplify, v)) if isinstance(v, list) else v for k, v in d.items()}
        task = self.task_type(**args)
        task.validate()
        return task

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """Observation and action spaces (the same for every task of the suite)."""
        env = self.make(self.sample_tasks(1, np.random.default_rng(0))[0])
        try:
            return env.observation_space, env.action_space
        finally:
            env.close()

    @classmethod
    def check_split(cls, split: str) -> None:
        """ValueError in one line naming the suite and the splits it accepts."""
        if split not in cls.splits:
            raise ValueError(split_refusal(cls, split))


def split_refusal(suite: Suite | type[Suite], split: str, key: str = "split") -> str:
    """The one line that refuses `split` (given as `key`) for `suite`."""
    suite_id = getattr(suite, "id", None)
    accepted = f"suite {suite_id!r} accepts" if suite_id else "accepted"
    why = f" (it declares no {split!r} split)" if split in SPLITS else ""
    return f"{key}: got {split!r}; {accepted} {list(suite.splits)}{why}"


def _tuplify(v: Any) -> Any:
    return tuple(_tuplify(x) for x in v) if isinstance(v, list) else v


class CostTuple(gym.Wrapper):
    """The 6-tuple step of Safety-Gymnasium / OmniSafe:
    ``(obs, reward, cost, terminated, truncated, info)``."""

    def step(self, action: Any) -> tuple[Any, float, Any, bool, bool, dict[str, Any]]:  # type: ignore[override]
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, info["cost"], terminated, truncated, info
