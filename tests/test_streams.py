"""Per-task random streams and step budgets (the base every algorithm samples through).

A task's data depend only on its own stream: collecting tasks one at a time and
concatenating equals one batched collection, bit for bit, on a locomotion and a
navigation suite, for the meta-policy and for per-task (adapted) policies. A step
budget collects whole episodes until at least N steps per task."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import safemeta
from safemeta.config import build
from safemeta.core.meta import SafeMeta, SafeMetaConfig
from safemeta.nn.policy import GaussianPolicy
from safemeta.rollout.buffer import Rollout, concat
from safemeta.rollout.sampler import Sampler, TaskStream

FIELDS = ("obs", "act", "logp", "reward", "cost", "t", "terminated", "truncated", "final_obs")


def assert_same(a: Rollout, b: Rollout) -> None:
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.slices == b.slices
    for x, y in zip(a.ep_cost + a.ep_return + a.ep_length, b.ep_cost + b.ep_return + b.ep_length):
        np.testing.assert_array_equal(x, y)


def policies(obs_dim: int, act_dim: int, n: int, shared: bool) -> list[GaussianPolicy]:
    torch.manual_seed(0)
    base = GaussianPolicy(obs_dim, act_dim, [64, 64], init_log_std=-0.5)
    base.normalizer.update(np.random.default_rng(0).normal(0.0, 2.0, (64, obs_dim)))
    if shared:
        return [base] * n
    out = []
    for i in range(n):  # adapted policies: their own weights, the meta-policy's normaliser
        p = copy.deepcopy(base)
        with torch.no_grad():
            p.mean_net[-1].bias.add_(0.3 * (i + 1))
            p.log_std.add_(-0.1 * i)
        out.append(p)
    return out


@pytest.mark.parametrize("suite_id", ["hopper-vel", "point-circle"])
@pytest.mark.parametrize("shared", [True, False], ids=["meta-policy", "adapted"])
@pytest.mark.parametrize("budget", ["episodes", "steps"])
def test_tasks_one_at_a_time_equal_one_batched_collection(suite_id: str, shared: bool, budget: str) -> None:
    suite = safemeta.suite(suite_id)
    tasks = suite.sample_tasks(3, np.random.default_rng(1), "train")
    obs_space, act_space = suite.spaces()
    pols = policies(obs_space.shape[0], act_space.shape[0], len(tasks), shared)
    horizon = 40
    kw = {"episodes": 3} if budget == "episodes" else {"steps": 70}
    streams = lambda i: TaskStream.of(7, (1, 0, i))  # noqa: E731 (fresh generators per call)
    batched = Sampler(suite, horizon, 0.99, envs_per_task=2).collect(
        tasks, pols, [streams(i) for i in range(3)], **kw)
    alone = [Sampler(suite, horizon, 0.99, envs_per_task=2).collect([t], [p], [streams(i)], **kw)
             for i, (t, p) in enumerate(zip(tasks, pols))]
    assert_same(concat(alone), batched)
    other = Sampler(suite, horizon, 0.99, envs_per_task=2).collect(
        tasks, pols, [TaskStream.of(8, (1, 0, i)) for i in range(3)], **kw)
    assert not np.array_equal(other.act, batched.act)  # the stream, not the code, makes the draws


def test_step_budget_collects_whole_episodes_until_n_steps_on_a_terminating_suite() -> None:
    """hopper-vel terminates when the Hopper falls: with a wide policy episodes are short
    and of varied length. Per task: whole episodes (each ends terminated or at the
    horizon), at least N steps, and no episode started after the task reached N."""
    suite = safemeta.suite("hopper-vel")
    tasks = suite.sample_tasks(2, np.random.default_rng(0), "train")
    torch.manual_seed(0)
    pol = GaussianPolicy(11, 3, [16], init_log_std=0.0)
    n, k, horizon = 300, 2, 200
    roll = Sampler(suite, horizon, 0.99, envs_per_task=k).collect(
        tasks, [pol, pol], [TaskStream.of(0, (i,)) for i in range(2)], steps=n)
    for i, s in enumerate(roll.slices):
        lengths = roll.ep_length[i]
        assert lengths.sum() == s.stop - s.start >= n
        assert roll.done[s][-1] and roll.done[s].sum() == len(lengths)  # whole episodes only
        assert roll.terminated[s].sum() > 0 and len(set(lengths.tolist())) > 1  # it does terminate
        # no episode starts once the task has N steps: past N, each of its k envs at most
        # finishes the episode it is in
        assert lengths.sum() < n + k * horizon
    assert roll.terminated.sum() + roll.truncated.sum() == sum(len(x) for x in roll.ep_length)


def test_step_budget_reaches_metrics_rows() -> None:
    from safemeta.rollout.toy import PointMassSuite

    suite = PointMassSuite(horizon=8, cost_limit=0.6, terminate_at=0.3)
    cfg = build(SafeMetaConfig, dict(meta_batch=2, steps_per_task=30, val_tasks=2, test_tasks=2,
                                     eval_every=100, eval_episodes=2, proj_epochs=2, hidden=[16],
                                     init_log_std=0.3))
    rng = np.random.default_rng(0)
    tasks = {"val": suite.sample_tasks(2, rng, "train"), "test": suite.sample_tasks(2, rng, "test")}
    algo = SafeMeta(cfg, suite, tasks, np.random.SeedSequence(0))
    seen = []
    collect = algo.collect
    algo.collect = lambda *a, **kw: seen.append(collect(*a, **kw)) or seen[-1]  # type: ignore[method-assign]
    row = algo.train_iteration(1)
    pre, post = seen
    assert row["steps_per_task"] == len(pre.obs) / 2 >= 30
    assert row["env_steps"] == len(pre.obs) + len(post.obs)
    assert all(s.stop - s.start >= 30 for s in pre.slices + post.slices)
    assert pre.terminated.any()  # episodes of varied length: the budget is in steps, not episodes
    seen.clear()
    rows = algo.meta_test(tasks["test"], 1)
    ev0, data0, ev1 = seen
    assert rows[0]["steps_per_task"] == len(data0.obs) / 2 >= 30 and rows[1]["steps_per_task"] is None
    assert rows[0]["env_steps"] == len(ev0.obs) + len(data0.obs) and rows[1]["env_steps"] == len(ev1.obs)
    assert [len(e) for e in ev0.ep_length] == [2, 2]  # evaluation stays in episodes
