"""A batch of gymnasium envs stepped in lock-step, one call per step (SPEC §9).

Each env runs a quota of episodes, or, with a step budget, whole episodes until its
group (a task's envs) has taken at least that many steps; an env whose episode ends is
reset at once (its true final observation is returned separately, for the time-limit
bootstrap), and an env whose quota is used up goes idle. Each env draws its reset seeds
from its own generator (its task's stream), so a group's episodes do not depend on the
other groups stepped beside it. On the 2-core machine a synchronous loop beats
subprocess vector envs: MuJoCo stepping dominates and the loop adds microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import mujoco
import numpy as np

# MuJoCo's divergence warnings (bad qpos, qvel, qacc, ctrl) are contiguous in mjtWarning.
_BAD = slice(int(mujoco.mjtWarning.mjWARN_BADQPOS), int(mujoco.mjtWarning.mjWARN_BADCTRL) + 1)


@dataclass
class Step:
    """One lock-step over the batch; rows of envs that were not stepped are zero."""

    stepped: np.ndarray  # (E,) bool: env was active and stepped
    obs: np.ndarray  # (E, d) next observation (after auto-reset when the episode ended)
    reward: np.ndarray  # (E,)
    cost: np.ndarray  # (E, p)
    terminated: np.ndarray  # (E,) bool
    truncated: np.ndarray  # (E,) bool (time limit `horizon` or the env's own)
    final_obs: dict[int, np.ndarray]  # env -> true last observation, where the episode ended
    unstable: np.ndarray  # (E,) bool: physics diverged; the episode was truncated here (SPEC §8)


def cost_vector(info: dict, num_costs: int) -> np.ndarray:
    """info["cost"] as a (p,) array (a float when p = 1, an array when p > 1)."""
    c = np.asarray(info.get("cost", 0.0), dtype=np.float64).reshape(-1)
    if c.size != num_costs:
        raise ValueError(f"info['cost']: expected {num_costs} value(s), got {c.size}")
    return c


class BatchEnv:
    """Lock-step envs with per-env episode quotas and auto-reset."""

    def __init__(self, envs: list[gym.Env], horizon: int, num_costs: int = 1) -> None:
        if not envs:
            raise ValueError("envs: expected at least one env")
        self.envs, self.horizon, self.num_costs = envs, int(horizon), num_costs
        space = envs[0].action_space
        assert isinstance(space, gym.spaces.Box)
        self.act_low, self.act_high = space.low, space.high
        self.obs_dim = int(np.prod(envs[0].observation_space.shape))
        n = len(envs)
        self.active = np.zeros(n, bool)
        self.remaining = np.zeros(n, np.int64)
        self.t = np.zeros(n, np.int64)  # step index within the current episode
        self._obs = np.zeros((n, self.obs_dim), np.float32)
        self._rngs = [np.random.default_rng(0)] * n
        self.group = np.zeros(n, np.int64)  # env -> its group (task)
        self.budget: np.ndarray | None = None  # (groups,) step budget; None: episode quotas
        self.group_steps = np.zeros(1, np.int64)
        self.unstable = 0  # episodes truncated because the physics diverged
        # MuJoCo resets a diverging simulation inside mj_step and counts a warning: the
        # counters are how the sampler sees it (about a microsecond per step).
        self._data = [getattr(env.unwrapped, "data", None) for env in envs]
        self._warnings = np.zeros(n, np.int64)

    def __len__(self) -> int:
        return len(self.envs)

    def start(
        self,
        episodes: np.ndarray,
        rngs: list[np.random.Generator],
        group: np.ndarray | None = None,
        step_budget: np.ndarray | None = None,
    ) -> np.ndarray:
        """Begin: env e will run `episodes[e]` episodes, drawing its reset seeds from
        `rngs[e]`; with `step_budget`, env e instead starts episodes while its group
        `group[e]` has taken fewer than `step_budget[group[e]]` steps (every env runs at
        least one). Returns the first observations."""
        self._rngs = list(rngs)
        self.group = np.zeros(len(self.envs), np.int64) if group is None else np.asarray(group, np.int64)
        self.budget = None if step_budget is None else np.asarray(step_budget, np.int64)
        self.group_steps = np.zeros(int(self.group.max()) + 1, np.int64)
        self.remaining = np.asarray(episodes, np.int64).copy()
        self.active = self.remaining > 0
        self.t[:] = 0
        for e in np.flatnonzero(self.active):
            self._obs[e] = self._reset(e)
        return self._obs.copy()

    def _reset(self, e: int) -> np.ndarray:
        obs, _ = self.envs[e].reset(seed=int(self._rngs[e].integers(2**31 - 1)))
        self._warnings[e] = self._sim_warnings(e)
        return np.asarray(obs, np.float32).reshape(-1)

    def step(self, actions: np.ndarray) -> Step:
        n, p = len(self.envs), self.num_costs
        out = Step(
            stepped=self.active.copy(),
            obs=np.zeros((n, self.obs_dim), np.float32),
            reward=np.zeros(n),
            cost=np.zeros((n, p)),
            terminated=np.zeros(n, bool),
            truncated=np.zeros(n, bool),
            final_obs={},
            unstable=np.zeros(n, bool),
        )
        clipped = np.clip(actions, self.act_low, self.act_high)
        for e in np.flatnonzero(self.active):
            obs, r, term, trunc, info = self.envs[e].step(clipped[e])
            self.t[e] += 1
            self.group_steps[self.group[e]] += 1
            cost = cost_vector(info, p)
            obs = np.asarray(obs, np.float32).reshape(-1)
            if self._diverged(e, obs, r, cost):
                # MuJoCo instability: keep the last good observation, truncate, count.
                self.unstable += 1
                out.unstable[e] = True
                obs, r, cost, term, trunc = self._obs[e].copy(), 0.0, np.zeros(p), False, True
            out.reward[e], out.cost[e] = r, cost
            out.terminated[e] = term
            out.truncated[e] = (trunc or self.t[e] >= self.horizon) and not term
            if term or out.truncated[e]:
                out.final_obs[e] = obs
                obs = self._end_episode(e, obs)
            self._obs[e] = out.obs[e] = obs
        return out

    def _sim_warnings(self, e: int) -> int:
        data = self._data[e]
        return int(data.warning.number[_BAD].sum()) if data is not None else 0

    def _diverged(self, e: int, obs: np.ndarray, reward: float, cost: np.ndarray) -> bool:
        before, self._warnings[e] = self._warnings[e], self._sim_warnings(e)
        finite = math.isfinite(float(obs.sum()) + float(reward) + float(cost.sum()))
        return self._warnings[e] > before or not finite

    def _end_episode(self, e: int, obs: np.ndarray) -> np.ndarray:
        self.remaining[e] -= 1
        self.t[e] = 0
        g = self.group[e]
        more = self.remaining[e] > 0 if self.budget is None else self.group_steps[g] < self.budget[g]
        if more:
            return self._reset(e)
        self.active[e] = False
        return obs

    def close(self) -> None:
        for env in self.envs:
            env.close()

