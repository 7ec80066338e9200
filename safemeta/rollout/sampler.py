"""Batched sampler: whole episodes per task for a batch of tasks, one policy forward per step.

The envs of all tasks are stepped together (`BatchEnv`); per step the tasks' policies
are evaluated as one stacked network (`_actor`). Budgets are N episodes per task, or
whole episodes until at least N steps per task. Each task draws its resets and action
noise from its own `TaskStream`, so results never depend on global RNG state nor on
the other tasks of the batch. Sampling runs on CPU with one torch thread.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import gymnasium as gym
import numpy as np
import torch

from safemeta.envs.base import Suite, Task
from safemeta.nn.policy import GaussianPolicy, StackedGaussian, gaussian_log_prob
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


@dataclass
class TaskStream:
    """One task's randomness for one data collection: its env resets and its action noise.

    Every (iteration, phase, task) has its own stream, so a task's data never depend on
    the tasks collected beside it: collecting tasks one at a time and concatenating
    equals one batched collection, bit for bit (what a remote sampler needs)."""

    rng: np.random.Generator  # reset seeds of the task's envs
    gen: torch.Generator  # action noise of the task's envs

    @classmethod
    def of(cls, root: int, key: Sequence[int]) -> TaskStream:
        """The stream of `key` (e.g. phase, iteration, task index) under the entropy `root`."""
        seq_np = np.random.SeedSequence(root, spawn_key=(*key, 0))
        seq_torch = np.random.SeedSequence(root, spawn_key=(*key, 1))
        gen = torch.Generator().manual_seed(int(seq_torch.generate_state(1, np.uint64)[0]))
        return cls(np.random.default_rng(seq_np), gen)


class Sampler:
    """Collects whole episodes per task with per-task (or one shared) policy."""

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
        streams: Sequence[TaskStream],
        episodes: int = 0,
        steps: int = 0,
        stacked: bool | None = None,
    ) -> Rollout:
        """On each task, `policies[i]` acting with the randomness of `streams[i]`:
        `episodes` episodes, or with `steps` > 0 whole episodes until at least `steps`
        steps (the step budget of the paper's setting: "batch N per task"). `stacked`:
        one stacked forward for all tasks, or one per task; None: `stackable(policies)`
        (a part of a split collection is told what the whole would do, so it acts alike)."""
        if steps > 0:
            k = self.envs_per_task or -(-steps // self.horizon)
        else:
            k = min(self.envs_per_task or episodes, episodes)
        seen: dict[Task, int] = {}
        keys = []
        for task in tasks:  # a task listed twice gets its own envs
            dup = seen[task] = seen.get(task, -1) + 1
            keys += [(task, dup * k + j) for j in range(k)]
        envs = self.pool.get_many(keys)
        task_of_env = np.repeat(np.arange(len(tasks)), k)
        batch = BatchEnv(envs, self.horizon, self.num_costs)
        rngs = [streams[i].rng for i in task_of_env]
        if steps > 0:
            obs = batch.start(np.ones(len(envs), np.int64), rngs, task_of_env, np.full(len(tasks), steps))
        else:
            quota = np.array([len(range(j, episodes, k)) for _ in tasks for j in range(k)])
            obs = batch.start(quota, rngs)
        with single_thread():
            out = self._run(batch, obs, task_of_env, policies, [s.gen for s in streams], stacked)
        return self._assemble(out, task_of_env, len(tasks))

    def _run(
        self,
        batch: BatchEnv,
        obs: np.ndarray,
        task_of_env: np.ndarray,
        policies: Sequence[GaussianPolicy],
        gens: Sequence[torch.Generator],
        stacked: bool | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Step]]:
        act_fn = _actor(policies, task_of_env, gens, stacked)
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


def stackable(policies: Sequence[GaussianPolicy]) -> bool:
    """Whether the policies can act as one stacked network: Gaussian policies sharing one
    normaliser (a scripted, known-safe policy, `nn/scripted.py`, acts on its own)."""
    return not scripted(policies) and all(_same_normalizer(policies[0], p) for p in policies)


def scripted(policies: Sequence[GaussianPolicy]) -> bool:
    """Whether some policy is a scripted controller (sampled in-process by every backend:
    it is code, not parameters to send)."""
    return any(getattr(p, "scripted", False) for p in policies)


def _actor(
    policies: Sequence[GaussianPolicy],
    task_of_env: np.ndarray,
    gens: Sequence[torch.Generator],
    stacked: bool | None = None,
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """One policy forward per step for all envs: the tasks' policies (the meta-policy
    repeated, or the adapted ones sharing one normaliser) as one stacked network on
    obs shaped (tasks, envs per task, d). Each task's block of the forward has the same
    shape whatever its batch-mates, and each task draws its noise from its own generator
    while one of its envs is active, so its actions do not depend on the other tasks.
    Idle envs' actions are discarded. Measured on halfcheetah-vel, 10 tasks x 10 envs: a
    loop over 10 per-task policies costs 1.3 ms per step against 0.3 ms for one forward."""
    n_tasks = len(policies)
    counts = np.bincount(task_of_env, minlength=n_tasks)
    first = policies[0]
    if stacked is None:
        stacked = stackable(policies)
    if np.any(counts != counts[0]) or not stacked:
        return _looped(policies, task_of_env, gens)
    stack, k = StackedGaussian(list(policies)), int(counts[0])

    def stacked(obs: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            mean, log_std = stack(torch.as_tensor(obs.reshape(n_tasks, k, -1)))
            noise = torch.zeros_like(mean)
            for i in np.flatnonzero(active.reshape(n_tasks, k).any(1)):
                noise[i] = torch.randn((k, first.act_dim), generator=gens[i])
            act = mean + noise * log_std.exp()
            logp = gaussian_log_prob(mean, log_std, act)
        return act.reshape(n_tasks * k, -1).numpy(), logp.reshape(-1).numpy()

    return stacked


def _looped(
    policies: Sequence[GaussianPolicy], task_of_env: np.ndarray, gens: Sequence[torch.Generator]
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Fallback (policies with different normalisers): one forward per task, on all its envs."""
    envs_of = [np.flatnonzero(task_of_env == i) for i in range(len(policies))]

    def looped(obs: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        act = np.zeros((len(obs), policies[0].act_dim), np.float32)
        logp = np.zeros(len(obs), np.float32)
        for pol, idx, gen in zip(policies, envs_of, gens):
            if active[idx].any():
                act[idx], logp[idx] = pol.sample(obs[idx], gen)
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
