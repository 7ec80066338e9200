"""Batched sampler: N episodes per task for a batch of tasks, one policy forward per step.

The envs of all tasks are stepped together (`BatchEnv`); per step the policy is
evaluated once for all active envs that share it (the meta-policy: one forward for
the whole batch; adapted policies differ per task: one forward per task, which on
small MLPs costs tens of microseconds). Sampling runs on CPU with one torch thread
and its own `torch.Generator`, so results never depend on global RNG state.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Callable, Iterator, Sequence

import gymnasium as gym
import numpy as np
import torch

from safemeta.envs.base import Suite, Task
from safemeta.nn.policy import GaussianPolicy, StackedGaussian
from safemeta.rollout.batch import BatchEnv, Step
from safemeta.rollout.buffer import Rollout


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """`torch.set_num_threads(1)` while sampling; restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class EnvPool:
    """Envs kept across calls (LRU), so a reset never rebuilds a model (SPEC §4.2).

    On a miss the least recently used env not needed by the current call is re-targeted
    with `set_task(task)` when the suite's env has it (SPEC §4), else a new env is built.
    """

    def __init__(self, suite: Suite, capacity: int = 256) -> None:
        self.suite, self.capacity = suite, capacity
        self._envs: OrderedDict[tuple[Task, int], gym.Env] = OrderedDict()

    def get_many(self, keys: list[tuple[Task, int]]) -> list[gym.Env]:
        wanted = set(keys)
        out = []
        for key in keys:
            if key in self._envs:
                self._envs.move_to_end(key)
                out.append(self._envs[key])
                continue
            env = self._reuse(wanted, key[0]) or self.suite.make(key[0])
            self._envs[key] = env
            out.append(env)
        return out

    def _reuse(self, wanted: set, task: Task) -> gym.Env | None:
        """Evict the oldest env not wanted now when full; re-target it if it can be."""
        if len(self._envs) < self.capacity:
            return None
        for key in self._envs:
            if key not in wanted:
                env = self._envs.pop(key)
                if hasattr(env.unwrapped, "set_task"):
                    env.unwrapped.set_task(task)  # type: ignore[attr-defined]
                    return env
                env.close()
                return None
        return None

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


class Sampler:
    """Collects `episodes` episodes per task with per-task (or one shared) policy."""

    def __init__(
        self,
        suite: Suite,
        horizon: int,
        gamma: float,
        envs_per_task: int = 0,
        pool_capacity: int = 256,
    ) -> None:
        self.suite, self.horizon, self.gamma = suite, horizon, gamma
        self.envs_per_task = envs_per_task
        self.num_costs = int(getattr(suite, "num_costs", 1))
        self.pool = EnvPool(suite, pool_capacity)

    def collect(
        self,
        tasks: Sequence[Task],
        policies: Sequence[GaussianPolicy],
        episodes: int,
        rng: np.random.Generator,
        generator: torch.Generator,
    ) -> Rollout:
        """`episodes` episodes on each task; `policies[i]` acts on task i."""
        k = self.envs_per_task or episodes
        k = min(k, episodes)
        seen: dict[Task, int] = {}
        keys = []
        for task in tasks:  # a task listed twice gets its own envs
            dup = seen[task] = seen.get(task, -1) + 1
            keys += [(task, dup * k + j) for j in range(k)]
        envs = self.pool.get_many(keys)
        quota = np.array([len(range(j, episodes, k)) for _ in tasks for j in range(k)])
        batch = BatchEnv(envs, self.horizon, self.num_costs)
        task_of_env = np.repeat(np.arange(len(tasks)), k)
        with single_thread():
            steps = self._run(batch, quota, task_of_env, policies, rng, generator)
        return self._assemble(steps, task_of_env, len(tasks))

    def _run(
        self,
        batch: BatchEnv,
        quota: np.ndarray,
        task_of_env: np.ndarray,
        policies: Sequence[GaussianPolicy],
        rng: np.random.Generator,
        generator: torch.Generator,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Step]]:
        act_fn = _actor(policies, task_of_env, generator)
        obs = batch.start(quota, rng)
        out = []
        while batch.active.any():
            act, logp = act_fn(obs, batch.active)
            t = batch.t.copy()
            step = batch.step(act)
            out.append((obs, act, logp, t, step))
            obs = step.obs
        return out

    def _assemble(self, steps: list, task_of_env: np.ndarray, n_tasks: int) -> Rollout:
        """(steps, envs) records -> flat env-major transitions and per-task statistics."""
        mask = np.stack([s.stepped for *_, s in steps], axis=1)  # (E, S)

        def flat(x: list[np.ndarray]) -> np.ndarray:
            return np.stack(x, axis=1)[mask]  # (E, S, ...) indexed env-major

        obs = flat([o for o, *_ in steps])
        act, logp, t = (
            flat([a for _, a, *_ in steps]),
            flat([lp for _, _, lp, *_ in steps]),
            flat([tt for *_, tt, _ in steps]),
        )
        reward = flat([s.reward for *_, s in steps])
        cost = flat([s.cost for *_, s in steps])
        terminated, truncated = (
            flat([s.terminated for *_, s in steps]),
            flat([s.truncated for *_, s in steps]),
        )
        # final observations of truncated steps, in the env-major order of `truncated`
        final = sorted((e, j) for j, (*_, s) in enumerate(steps) for e in s.final_obs if s.truncated[e])
        final_obs = np.array([steps[j][-1].final_obs[e] for e, j in final], np.float32)
        final_obs = final_obs.reshape(len(final), obs.shape[1])
        env_of = np.repeat(np.arange(mask.shape[0]), mask.sum(1))
        task_of = task_of_env[env_of]
        bounds = np.searchsorted(task_of, np.arange(n_tasks + 1))
        roll = Rollout(
            obs=obs,
            act=act,
            logp=logp,
            reward=reward,
            cost=cost,
            t=t,
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            slices=[slice(int(bounds[i]), int(bounds[i + 1])) for i in range(n_tasks)],
            ep_return=[],
            ep_cost=[],
            ep_disc_cost=[],
            ep_length=[],
            extras={"unstable": int(sum(s.unstable.sum() for *_, s in steps))},
        )
        _episode_stats(roll, self.gamma)
        return roll

    def close(self) -> None:
        self.pool.close()


def _actor(
    policies: Sequence[GaussianPolicy], task_of_env: np.ndarray, generator: torch.Generator
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """One policy forward per step for all envs: the shared policy on the active envs, or,
    when tasks have their own policies (adapted ones, one normaliser), one batched forward
    of the stacked per-task networks on all envs (idle envs' actions are discarded).
    Measured on halfcheetah-vel, 10 tasks x 10 envs: a loop over 10 per-task policies
    costs 1.3 ms per step against 0.3 ms for one forward."""
    first = policies[0]
    if all(p is first for p in policies):

        def shared(obs: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            act = np.zeros((len(obs), first.act_dim), np.float32)
            logp = np.zeros(len(obs), np.float32)
            act[active], logp[active] = first.sample(obs[active], generator)
            return act, logp

        return shared
    counts = np.bincount(task_of_env, minlength=len(policies))
    same_norm = all(_same_normalizer(first, p) for p in policies)
    if not same_norm or np.any(counts != counts[0]):
        return _looped(policies, task_of_env, generator)
    stack = StackedGaussian(list(policies))
    n_tasks, k = len(policies), int(counts[0])

    def stacked(obs: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        act, logp = stack.sample(obs.reshape(n_tasks, k, -1), generator)
        return act.reshape(n_tasks * k, -1), logp.reshape(-1)

    return stacked


def _looped(
    policies: Sequence[GaussianPolicy], task_of_env: np.ndarray, generator: torch.Generator
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Fallback: one forward per task."""

    def looped(obs: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        act = np.zeros((len(obs), policies[0].act_dim), np.float32)
        logp = np.zeros(len(obs), np.float32)
        for i, pol in enumerate(policies):
            idx = np.flatnonzero((task_of_env == i) & active)
            if idx.size:
                act[idx], logp[idx] = pol.sample(obs[idx], generator)
        return act, logp

    return looped


def _same_normalizer(a: GaussianPolicy, b: GaussianPolicy) -> bool:
    na, nb = a.normalizer, b.normalizer
    return bool(torch.equal(na.mean, nb.mean) and torch.equal(na.var, nb.var))


def _episode_stats(roll: Rollout, gamma: float) -> None:
    """Per task: episode return, undiscounted and discounted cost, length."""
    done = roll.done
    for s in roll.slices:
        ends = np.flatnonzero(done[s]) + 1
        starts = np.concatenate([[0], ends[:-1]])
        rew, cost, t = roll.reward[s], roll.cost[s], roll.t[s]
        disc = gamma ** t.astype(np.float64)
        roll.ep_return.append(np.add.reduceat(rew, starts) if ends.size else np.zeros(0))
        roll.ep_cost.append(
            np.add.reduceat(cost, starts, axis=0) if ends.size else np.zeros((0, cost.shape[1]))
        )
        roll.ep_disc_cost.append(
            np.add.reduceat(cost * disc[:, None], starts, axis=0)
            if ends.size
            else np.zeros((0, cost.shape[1]))
        )
        roll.ep_length.append(ends - starts)
