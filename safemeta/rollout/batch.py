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

from dataclasses import dataclass

import gymnasium as gym
import mujoco
import numpy as np

# MuJoCo's divergence warnings (bad qpos, qvel, qacc, ctrl) are contiguous in mjtWarning.
_BAD = tuple(range(int(mujoco.mjtWarning.mjWARN_BADQPOS), int(mujoco.mjtWarning.mjWARN_BADCTRL) + 1))


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
    c = info.get("cost", 0.0)
    if num_costs == 1 and type(c) is float:  # the common case, without numpy's conversions
        return np.array((c,))
    c = np.asarray(c, dtype=np.float64).reshape(-1)
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
        # The warning counts are read through views kept from the start (live: MjData's own
        # memory), summed index by index: a few microseconds less per step than a fresh view.
        data = [getattr(env.unwrapped, "data", None) for env in envs]
        self._warning_counts = [d.warning.number if d is not None else None for d in data]
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
        active = np.flatnonzero(self.active)
        diverged = []  # the simulation's own divergence warnings, env by env
        for e in active:
            obs, r, term, trunc, info = self.envs[e].step(clipped[e])
            out.obs[e] = np.asarray(obs, np.float32).reshape(-1)
            out.reward[e], out.cost[e] = r, cost_vector(info, p)
            out.terminated[e], out.truncated[e] = term, trunc
            before, self._warnings[e] = self._warnings[e], self._sim_warnings(e)
            if self._warnings[e] > before:
                diverged.append(e)
        self.t[active] += 1
        # An env whose episode ends sees its group's steps up to itself in this lock-step
        # (envs in order): the budget rule of an env-by-env loop.
        steps_before = self.group_steps.copy()
        np.add.at(self.group_steps, self.group[active], 1)
        # Non-finite values, for the whole batch at once (a step's obs, reward or cost).
        # (obs summed in float32, as a single env's check would: a huge obs overflows to inf)
        total = out.obs[active].sum(1).astype(np.float64) + out.reward[active] + out.cost[active].sum(1)
        finite = np.isfinite(total)
        for e in sorted({*diverged, *active[~finite].tolist()}):
            # MuJoCo instability: keep the last good observation, truncate, count.
            self.unstable += 1
            out.unstable[e] = True
            out.obs[e], out.reward[e], out.cost[e] = self._obs[e], 0.0, 0.0
            out.terminated[e], out.truncated[e] = False, True
        ended_by_time = out.truncated[active] | (self.t[active] >= self.horizon)
        out.truncated[active] = ended_by_time & ~out.terminated[active]
        for e in active[out.terminated[active] | out.truncated[active]]:
            out.final_obs[e] = out.obs[e].copy()
            g = self.group[e]
            seen = steps_before[g] + np.count_nonzero(self.group[active[active <= e]] == g)
            out.obs[e] = self._end_episode(e, out.obs[e], seen)
        self._obs[active] = out.obs[active]
        return out

    def _sim_warnings(self, e: int) -> int:
        counts = self._warning_counts[e]
        return sum(int(counts[i]) for i in _BAD) if counts is not None else 0

    def _end_episode(self, e: int, obs: np.ndarray, group_steps: int) -> np.ndarray:
        """Env e's episode ended, its group having taken `group_steps` steps: reset it for
        another episode (its quota, or its group's step budget, not yet met), else idle."""
        self.remaining[e] -= 1
        self.t[e] = 0
        g = self.group[e]
        more = self.remaining[e] > 0 if self.budget is None else group_steps < self.budget[g]
        if more:
            return self._reset(e)
        self.active[e] = False
        return obs

    def close(self) -> None:
        for env in self.envs:
            env.close()

