"""Known-safe policies: fixed controllers whose expected episode cost has a known bound.

A suite may offer one per task (`Suite.known_safe`); safemeta's fallback (`fallback =
known_safe`, `core/fallback.py`) mixes it, episode by episode, into a policy whose own
cost bound exceeds the limit. The controller acts deterministically from the
observation, in the sampler's policy interface (`sample(obs, gen) -> (act, logp)`); its
episodes are never used to adapt (its log-probabilities are not those of a Gaussian and
are reported as 0). The sampler runs such a policy in-process (`ScriptedPolicy.scripted`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


class ScriptedPolicy:
    """act = fn(obs), batched: obs (n, obs_dim) -> actions (n, act_dim)."""

    scripted = True  # the sampler's sign: no Gaussian, sample in-process

    def __init__(self, act_dim: int, fn: Callable[[np.ndarray], np.ndarray], name: str) -> None:
        self.act_dim, self.fn, self.name = act_dim, fn, name

    def sample(self, obs: np.ndarray, gen: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        act = np.asarray(self.fn(np.asarray(obs, np.float64)), np.float32).reshape(len(obs), self.act_dim)
        return act, np.zeros(len(obs), np.float32)

    def __repr__(self) -> str:
        return f"ScriptedPolicy({self.name})"


def zero_action(act_dim: int) -> ScriptedPolicy:
    """All actuators off (a locomotion robot whose cost is control energy spends none)."""
    return ScriptedPolicy(act_dim, lambda obs: np.zeros((len(obs), act_dim)), "zero action")


@dataclass
class KnownSafe:
    """A task's known-safe policy and a known upper bound on its expected episode cost (p,),
    of the type the limit binds, and how that bound was established."""

    policy: ScriptedPolicy
    cost_bound: np.ndarray
    why: str
