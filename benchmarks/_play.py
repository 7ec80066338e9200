"""One policy's episodes in one environment, step by step, sampled as the meta-test samples
them: the loop of the benchmarks that look inside episodes (velocity_reach, circle_radius)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def steps(env, policy, episodes: int, seed: int) -> Iterator[tuple[int, float, dict[str, Any]]]:  # type: ignore[no-untyped-def]
    """(episode, reward, info) after every step of `episodes` episodes reset with seeds
    seed, seed + 1, ...; actions sampled from `policy` with a generator seeded `seed` and
    clipped to the action box. When the caller sees a step, `env` is in that step's state."""
    gen = torch.Generator().manual_seed(seed)
    low, high = env.action_space.low, env.action_space.high
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        done = False
        while not done:
            with torch.no_grad():
                act = policy.sample(np.asarray(obs, np.float32).reshape(1, -1), gen)[0]
            obs, reward, terminated, truncated, info = env.step(np.clip(act[0], low, high))
            yield e, float(reward), info
            done = terminated or truncated
