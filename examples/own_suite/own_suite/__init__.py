"""An example safemeta task suite, `reach-hazard` (docs/own-suite.md)."""

from own_suite.env import ReachHazardEnv
from own_suite.suite import ReachHazardSuite
from own_suite.task import ReachTask

__all__ = ["ReachHazardEnv", "ReachHazardSuite", "ReachTask"]
