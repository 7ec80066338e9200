"""Meta-CRPO (baselines/meta_crpo.py): CRPO's switch per task, the step's direction on a
constructed sample, and the Reptile meta-step by hand."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from safemeta.baselines.meta_crpo import MetaCRPO, MetaCRPOConfig
from safemeta.config import build
from safemeta.meta_learner import Phase, TaskPolicy
from safemeta.rollout.toy import PointMassSuite


def make(**over: object) -> MetaCRPO:
    suite = PointMassSuite(horizon=8, cost_limit=0.6)
    cfg = build(MetaCRPOConfig, {"meta_batch": 2, "episodes_per_task": 4, "val_tasks": 2, "test_tasks": 2,
                                 "hidden": [16], "eval_every": 100, **over})
    rng = np.random.default_rng(0)
    tasks = {"val": suite.sample_tasks(2, rng, "train"), "test": suite.sample_tasks(2, rng, "test")}
    return MetaCRPO(cfg, suite, tasks, np.random.SeedSequence(0))


def test_the_crpo_switch_steps_on_the_cost_only_over_the_limit() -> None:
    """The task whose estimated cost is over the limit takes a cost step that lowers
    Ê[(π/π_k) A_c]; the other, under it, a reward step that raises Ê[(π/π_k) A]."""
    algo = make(episodes_per_task=20, init_log_std=0.0)
    policy = algo.policy
    data = algo.collect(algo.suite.sample_tasks(2, np.random.default_rng(3)), algo.meta_policies(2),
                        Phase.PRE, 0)
    advs = algo.estimate(data)
    costs = [a.cost_value[0] for a in advs]
    algo.cost_limit[:] = np.mean(costs)  # between the two tasks' estimates
    over = [c > algo.cost_limit[0] for c in costs]
    assert sorted(over) == [False, True]
    new = algo.adapt(data, [TaskPolicy(policy)] * 2)
    assert [t.log["cost_step"] for t in new] == [float(o) for o in over]
    for i, (t, a) in enumerate(zip(new, advs)):
        task = data.task(i)
        obs, act = torch.as_tensor(task.obs), torch.as_tensor(task.act)
        with torch.no_grad():
            ratio = torch.exp(t.policy.log_prob(obs, act) - policy.log_prob(obs, act)).double().numpy()
        assert 0 < t.log["kl"] <= 1.5 * algo.cfg.inner_max_kl
        if over[i]:
            assert ratio @ a.cost_adv[:, 0] / len(ratio) < -1e-3  # the cost surrogate fell
        else:
            assert ratio @ a.adv / len(ratio) > 1e-3  # the reward surrogate rose


@pytest.mark.parametrize("meta_init", ["reptile", "none"])
def test_reptile_meta_step_by_hand(meta_init: str) -> None:
    algo = make(meta_init=meta_init, meta_lr=0.5)
    phi = algo.policy.flat_params().clone()
    adapted = []
    for shift in (1.0, 3.0):
        p = copy.deepcopy(algo.policy)
        p.set_flat_params(phi + shift)
        adapted.append(TaskPolicy(p))
    info = algo.meta_step(None, None, adapted)  # type: ignore[arg-type]
    want = phi + 0.5 * 2.0 if meta_init == "reptile" else phi  # mean shift 2, half of it
    torch.testing.assert_close(algo.policy.flat_params(), want)
    assert info["meta_shift"] == pytest.approx(float((want - phi).norm()), rel=1e-5)
