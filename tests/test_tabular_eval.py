"""Exact tabular evaluation against Monte Carlo rollouts of the suites' gymnasium envs."""

from __future__ import annotations

import numpy as np
import pytest

import safemeta
from safemeta.tabular.cmdp import evaluate, softmax


def mc_returns(env, pi: np.ndarray, gamma: float, episodes: int, rng: np.random.Generator):
    """Discounted reward and cost returns of `episodes` rollouts (horizon: γ^H < 1e-6)."""
    R = np.empty(episodes)
    Cs = np.empty(episodes)
    cdf = np.cumsum(pi, axis=1)
    for k in range(episodes):
        s, _ = env.reset(seed=int(rng.integers(2**31)))
        ret = cost = 0.0
        disc = 1.0
        while True:
            a = int(np.searchsorted(cdf[s], rng.random(), side="right"))
            s, r, term, trunc, info = env.step(min(a, pi.shape[1] - 1))
            ret += disc * r
            cost += disc * info["cost"]
            disc *= gamma
            if term or trunc:
                break
        R[k], Cs[k] = ret, cost
    return R, Cs


@pytest.mark.parametrize("suite_id", ["tabular-grid", "tabular-random"])
def test_exact_evaluation_matches_monte_carlo(suite_id: str) -> None:
    suite = safemeta.suite(suite_id)
    rng = np.random.default_rng(0)
    task = suite.sample_tasks(1, rng)[0]
    m = suite.cmdp(task)
    pi = softmax(rng.normal(size=m.r.shape))
    ev = evaluate(m, pi)
    env = suite.make(task, horizon=140)  # 0.9^140 < 1e-6
    R, Cs = mc_returns(env, pi, m.gamma, 3000, rng)
    # Within 4 standard errors of the exact values.
    assert abs(R.mean() - ev.J) < 4 * R.std() / np.sqrt(len(R)) + 1e-6
    assert abs(Cs.mean() - ev.Jc[0]) < 4 * Cs.std() / np.sqrt(len(Cs)) + 1e-6


def test_evaluation_identities() -> None:
    """Bellman identities and the performance-difference lemma, exactly."""
    suite = safemeta.suite("tabular-random", n_costs=2)
    rng = np.random.default_rng(1)
    m = suite.cmdp(suite.sample_tasks(1, rng)[0])
    pi, pi2 = softmax(rng.normal(size=m.r.shape)), softmax(rng.normal(size=m.r.shape))
    ev, ev2 = evaluate(m, pi), evaluate(m, pi2)
    np.testing.assert_allclose((pi * ev.A).sum(1), 0.0, atol=1e-12)
    np.testing.assert_allclose(ev.nu.sum(), 1.0)
    # J(π') − J(π) = E_{ν^{π'}, π'}[A^π]/(1−γ), for reward and each cost.
    pdl = ev2.nu @ (pi2 * ev.A).sum(1) / (1 - m.gamma)
    assert ev2.J - ev.J == pytest.approx(pdl, abs=1e-10)
    for i in range(2):
        pdl_c = ev2.nu @ (pi2 * ev.Ac[i]).sum(1) / (1 - m.gamma)
        assert ev2.Jc[i] - ev.Jc[i] == pytest.approx(pdl_c, abs=1e-10)


def test_grid_limit_binds() -> None:
    """A reward-only optimal policy exceeds the grid's limit; the safe detour meets it."""
    suite = safemeta.suite("tabular-grid")
    for task in suite.sample_tasks(5, np.random.default_rng(2), "train"):
        m = suite.cmdp(task)
        Q = np.zeros(m.r.shape)
        for _ in range(400):
            Q = m.r + m.gamma * m.P @ Q.max(1)
        greedy = np.eye(m.n_actions)[Q.argmax(1)]
        assert evaluate(m, greedy).Jc[0] > m.d[0]


def test_task_validation_names_the_parameter() -> None:
    grid = safemeta.suite("tabular-grid")
    with pytest.raises(ValueError, match="^goal_x"):
        grid.task_from_dict({"goal_x": 7, "goal_y": 4, "slip": 0.0})
    with pytest.raises(ValueError, match="^slip"):
        grid.task_from_dict({"goal_x": 1, "goal_y": 4, "slip": 0.9})
    with pytest.raises(ValueError, match="hazard"):
        grid.task_from_dict({"goal_x": 1, "goal_y": 2, "slip": 0.0})
    rnd = safemeta.suite("tabular-random")
    with pytest.raises(ValueError, match="^noise"):
        rnd.task_from_dict({"seed": 1, "noise": -0.1})


@pytest.mark.parametrize("suite_id", ["tabular-grid", "tabular-random"])
def test_task_sampling_stays_in_declared_ranges(suite_id: str) -> None:
    suite = safemeta.suite(suite_id)
    rng = np.random.default_rng(3)
    for split in ("train", "test", "ood"):
        ranges = {p.name: p for p in suite.param_ranges(split)}
        for task in suite.sample_tasks(200, rng, split):
            for name, pr in ranges.items():
                assert pr.low <= getattr(task, name) <= pr.high
            assert suite.task_from_dict(task.to_dict()) == task
