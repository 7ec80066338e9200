"""Task suites (SPEC §4)."""

from safemeta.envs.base import CostTuple, ParamRange, Suite, Task
from safemeta.envs.registry import register, suite, suite_ids

__all__ = ["CostTuple", "ParamRange", "Suite", "Task", "register", "suite", "suite_ids"]
