"""Rollout storage, GAE for reward and every cost, episode statistics (SPEC §2.4 step 1).

Transitions are stored flat, env-major: the transitions of one env are contiguous in
time order and the envs of one task are contiguous, so each task is a slice. The
time-limit bootstrap: at a truncated step the next value is V(final observation); at a
terminated step it is 0; otherwise it is V of the next stored observation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import lfilter


def discount_cumsum(x: np.ndarray, discount: float) -> np.ndarray:
    """y[t] = Σ_k discount^k x[t+k] along axis 0 (one episode)."""
    return lfilter([1.0], [1.0, -discount], x[::-1], axis=0)[::-1]


def gae(
    reward: np.ndarray,
    value: np.ndarray,
    next_value: np.ndarray,
    terminated: np.ndarray,
    done: np.ndarray,
    gamma: float,
    lam: float,
) -> np.ndarray:
    """GAE(γ, λ) over flat transitions; `reward`, `value`, `next_value` are (n,) or (n, k).

    δ_t = r_t + γ(1 − terminated_t) V_next,t − V_t;  A_t = δ_t + γλ(1 − done_t) A_{t+1},
    with V_next,t = V(s_{t+1}), or V(final obs) at a truncation (the time-limit bootstrap).
    """
    keep = (1.0 - terminated.astype(np.float64)).reshape(-1, *([1] * (reward.ndim - 1)))
    delta = reward + gamma * keep * next_value - value
    adv = np.zeros_like(delta, dtype=np.float64)
    for start, stop in episode_bounds(done):
        adv[start:stop] = discount_cumsum(delta[start:stop], gamma * lam)
    return adv


def episode_bounds(done: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each episode in flat transitions (an unfinished tail counts too)."""
    ends = np.flatnonzero(done) + 1
    if ends.size == 0 or ends[-1] != done.size:
        ends = np.append(ends, done.size)
    starts = np.concatenate([[0], ends[:-1]])
    return list(zip(starts.tolist(), ends.tolist()))


def discounted_returns(x: np.ndarray, done: np.ndarray, gamma: float) -> np.ndarray:
    """Monte-Carlo discounted return-to-go per episode (no bootstrap)."""
    out = np.zeros_like(x, dtype=np.float64)
    for start, stop in episode_bounds(done):
        out[start:stop] = discount_cumsum(x[start:stop], gamma)
    return out


@dataclass
class Rollout:
    """Flat transitions of a batch of tasks, with per-task slices and episode stats."""

    obs: np.ndarray  # (n, d) float32
    act: np.ndarray  # (n, a) float32, unclipped
    logp: np.ndarray  # (n,) log π_k(a|s) of the behaviour policy
    reward: np.ndarray  # (n,)
    cost: np.ndarray  # (n, p)
    t: np.ndarray  # (n,) step index within the episode
    terminated: np.ndarray  # (n,) bool
    truncated: np.ndarray  # (n,) bool
    final_obs: np.ndarray  # (n_trunc, d): final observation of each truncated step, in order
    slices: list[slice]  # per task
    ep_return: list[np.ndarray]  # per task (N,)
    ep_cost: list[np.ndarray]  # per task (N, p) undiscounted episode cost
    ep_disc_cost: list[np.ndarray]  # per task (N, p) discounted episode cost
    ep_length: list[np.ndarray]  # per task (N,)
    extras: dict = field(default_factory=dict)
    advantages: list | None = None  # per task `rollout.advantages.Advantages`, filled once by the learner
    critics: list | None = None  # per task, the critics those advantages came from

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated

    @property
    def num_tasks(self) -> int:
        return len(self.slices)

    def task(self, i: int) -> Rollout:
        """The transitions of task i as a one-task Rollout."""
        s = self.slices[i]
        trunc_before = int(self.truncated[: s.start].sum())
        n_trunc = int(self.truncated[s].sum())
        return Rollout(
            obs=self.obs[s],
            act=self.act[s],
            logp=self.logp[s],
            reward=self.reward[s],
            cost=self.cost[s],
            t=self.t[s],
            terminated=self.terminated[s],
            truncated=self.truncated[s],
            final_obs=self.final_obs[trunc_before : trunc_before + n_trunc],
            slices=[slice(0, s.stop - s.start)],
            ep_return=[self.ep_return[i]],
            ep_cost=[self.ep_cost[i]],
            ep_disc_cost=[self.ep_disc_cost[i]],
            ep_length=[self.ep_length[i]],
        )

    def cost_return(self, kind: str) -> np.ndarray:
        """(tasks, p) mean episode cost per task: "undiscounted" or "discounted" (SPEC §2.4)."""
        src = self.ep_cost if kind == "undiscounted" else self.ep_disc_cost
        return np.stack([c.mean(0) for c in src])

    def reward_return(self) -> np.ndarray:
        return np.array([r.mean() for r in self.ep_return])


def concat(rolls: list[Rollout]) -> Rollout:
    """The rollouts of disjoint task batches as one rollout, tasks in the given order."""
    offsets = np.cumsum([0] + [len(r.obs) for r in rolls])
    slices = [slice(s.start + int(o), s.stop + int(o)) for r, o in zip(rolls, offsets) for s in r.slices]
    extras: dict = {}
    for r in rolls:
        for k, v in r.extras.items():
            extras[k] = extras.get(k, 0) + v

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(r, name) for r in rolls])

    return Rollout(
        obs=cat("obs"), act=cat("act"), logp=cat("logp"), reward=cat("reward"), cost=cat("cost"), t=cat("t"),
        terminated=cat("terminated"), truncated=cat("truncated"), final_obs=cat("final_obs"), slices=slices,
        ep_return=[x for r in rolls for x in r.ep_return], ep_cost=[x for r in rolls for x in r.ep_cost],
        ep_disc_cost=[x for r in rolls for x in r.ep_disc_cost],
        ep_length=[x for r in rolls for x in r.ep_length], extras=extras,
    )


def episode_index(roll: Rollout) -> list[np.ndarray]:
    """Per task, the episode (0, 1, ...) of each of its transitions, in the order of `ep_cost`."""
    out = []
    for s in roll.slices:
        done = roll.done[s]
        out.append(np.concatenate([[0], np.cumsum(done[:-1])]).astype(np.int64) if len(done) else
                   np.zeros(0, np.int64))
    return out


def select_episodes(roll: Rollout, keep: list[np.ndarray]) -> Rollout:
    """The rollout of the same tasks with only the episodes `keep[i]` (indices into task i's
    episodes, increasing) of each task: whole episodes, transitions and statistics."""
    mask = np.zeros(len(roll.obs), bool)
    for s, ep, k in zip(roll.slices, episode_index(roll), keep):
        mask[s] = np.isin(ep, k)
    trunc_kept = mask[roll.truncated]  # the final observations follow the truncated steps in order
    counts = [int(mask[s].sum()) for s in roll.slices]
    offsets = np.cumsum([0] + counts)
    return Rollout(
        obs=roll.obs[mask], act=roll.act[mask], logp=roll.logp[mask], reward=roll.reward[mask],
        cost=roll.cost[mask], t=roll.t[mask], terminated=roll.terminated[mask],
        truncated=roll.truncated[mask], final_obs=roll.final_obs[trunc_kept],
        slices=[slice(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])],
        ep_return=[x[k] for x, k in zip(roll.ep_return, keep)],
        ep_cost=[x[k] for x, k in zip(roll.ep_cost, keep)],
        ep_disc_cost=[x[k] for x, k in zip(roll.ep_disc_cost, keep)],
        ep_length=[x[k] for x, k in zip(roll.ep_length, keep)],
    )


def next_values(value: np.ndarray, final_value: np.ndarray, truncated: np.ndarray) -> np.ndarray:
    """V_next per transition: V of the next stored obs, V(final obs) at truncations.

    (At terminations and at the last transition of an unfinished tail the value is
    unused or masked: GAE multiplies it by 1 − terminated and resets at `done`.)
    """
    nxt = np.concatenate([value[1:], np.zeros_like(value[:1])], axis=0)
    nxt[truncated] = final_value
    return nxt
