"""How sure is a meta-test about a task's cost? (issue 14)

A task's cost at a meta-test step is the mean episode cost of the policy of that step
over every episode it ran there (evaluation and exploration). With a handful of
episodes, sparse costs make that mean very noisy, so each one comes with a two-sided
95% Student-t interval, and a task is

- *over* the limit when the interval's lower end exceeds d (the data say so),
- *possibly over* when only the estimate does.

Sequential evaluation: evaluate in batches until the interval decides (excludes d) or
is precise enough (half-width ≤ `rel_width`·d), or the episodes reach a cap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class CostInterval:
    """One task's mean episode cost (constraint 0) with its 95% interval."""

    mean: float
    low: float
    high: float
    episodes: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def interval(costs: np.ndarray) -> CostInterval:
    """Mean and two-sided 95% Student-t interval of the episode costs (N,) (constraint 0 of
    (N, p)); with one episode the interval is unbounded."""
    c = np.asarray(costs, np.float64)
    c = c[:, 0] if c.ndim == 2 else c
    n, mean = len(c), float(c.mean())
    if n < 2:
        return CostInterval(mean, -np.inf, np.inf, n)
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1) * c.std(ddof=1) / np.sqrt(n))
    return CostInterval(mean, mean - half, mean + half, n)


def over(ci: CostInterval, limit: float) -> bool:
    return ci.low > limit


def possibly_over(ci: CostInterval, limit: float) -> bool:
    return ci.mean > limit and not ci.low > limit


def decided(ci: CostInterval, limit: float, rel_width: float) -> bool:
    """The stopping rule of sequential evaluation: the interval excludes the limit, or its
    half-width is at most rel_width·limit."""
    return ci.low > limit or ci.high <= limit or ci.half_width <= rel_width * limit


def episodes_needed(sequence: np.ndarray, first: int, batch: int, cap: int, limit: float,
                    rel_width: float) -> int:
    """How many episodes of `sequence` sequential evaluation uses: `first`, then `batch` more
    at a time until `decided` or the cap (the meta-test's loop follows this rule)."""
    n = min(first, cap, len(sequence))
    while n < min(cap, len(sequence)) and not decided(interval(sequence[:n]), limit, rel_width):
        n = min(n + batch, cap, len(sequence))
    return n
