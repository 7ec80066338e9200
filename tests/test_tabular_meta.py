"""The Hessian-free meta-gradient (SPEC §2.6) against finite differences, exact tabular
meta-training and meta-test (SPEC §2.7)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import safemeta
from safemeta.config import build
from safemeta.tabular.cmdp import evaluate, softmax
from safemeta.tabular.meta import TabularSafeMeta, TabularSafeMetaConfig
from safemeta.tabular.meta_grad import (
    adapt_exact,
    adapted_return_t,
    full_grad,
    hessian_free_grad,
)


def fd_grad(F, f: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(f)
    for i in np.ndindex(f.shape):
        e = np.zeros_like(f)
        e[i] = h
        g[i] = (F(f + e) - F(f - e)) / (2 * h)
    return g


def cases():
    suite = safemeta.suite("tabular-random", n_costs=2)
    rng = np.random.default_rng(0)
    for k, task in enumerate(suite.sample_tasks(4, rng)):
        m = suite.cmdp(task)
        f = rng.normal(size=m.r.shape)
        ev = evaluate(m, softmax(f))
        # Half the cases with binding limits (u > 0), half feasible at u = 0.
        d = ev.Jc - 0.05 if k % 2 else ev.Jc + 5.0
        yield dataclasses.replace(m, d=d), f, 1.0, np.array([0.5, 0.3]), np.zeros(2)


@pytest.mark.parametrize("case", list(cases()), ids=lambda c: "")
def test_hessian_free_equals_fd_with_advantages_and_u_fixed(case) -> None:
    m, f, lam, lam_c, delta = case
    ev = evaluate(m, softmax(f))
    _, u, eta = adapt_exact(m, f, lam, lam_c, delta)
    step = (ev.A - np.tensordot(u, ev.Ac, axes=1)) / eta  # held fixed

    def F(ff: np.ndarray) -> float:
        return evaluate(m, softmax(ff + step)).J

    hf, _ = hessian_free_grad(m, f, lam, lam_c, delta)
    np.testing.assert_allclose(hf, fd_grad(F, f), atol=1e-7)


@pytest.mark.parametrize("case", list(cases()), ids=lambda c: "")
def test_full_gradient_equals_fd_of_true_map(case) -> None:
    m, f, lam, lam_c, delta = case

    def F(ff: np.ndarray) -> float:
        new, _, _ = adapt_exact(m, ff, lam, lam_c, delta)
        return evaluate(m, softmax(new)).J

    full = full_grad(m, f, lam, lam_c, delta)
    np.testing.assert_allclose(full, fd_grad(F, f), atol=2e-6)
    # The torch map agrees with the numpy map in value.
    J = adapted_return_t(m, torch.tensor(f), lam, lam_c, delta).item()
    assert J == pytest.approx(F(f), abs=1e-10)
    # The hold-fixed torch gradient is the Hessian-free one.
    np.testing.assert_allclose(full_grad(m, f, lam, lam_c, delta, hold_fixed=True),
                               hessian_free_grad(m, f, lam, lam_c, delta)[0], atol=1e-12)


def test_gap_between_hessian_free_and_full_is_measured() -> None:
    """The approximation is not exact: the gap is nonzero but the directions agree."""
    cos = []
    for m, f, lam, lam_c, delta in cases():
        hf = hessian_free_grad(m, f, lam, lam_c, delta)[0].ravel()
        full = full_grad(m, f, lam, lam_c, delta).ravel()
        cos.append(hf @ full / np.linalg.norm(hf) / np.linalg.norm(full))
        assert np.linalg.norm(hf - full) > 1e-6
    assert min(cos) > 0.0  # an ascent direction of the true objective in every case


def make_algo(suite_id: str = "tabular-grid", **over):
    suite = safemeta.suite(suite_id)
    rng = np.random.default_rng(1)
    tasks = {"val": suite.sample_tasks(4, rng, "train"), "test": suite.sample_tasks(6, rng, "test")}
    cfg = build(TabularSafeMetaConfig, TabularSafeMeta.presets(suite_id)["quick"], over)
    return TabularSafeMeta(cfg, suite, tasks, np.random.SeedSequence(cfg.seed)), tasks


def test_meta_training_improves_adapted_return_and_meta_test_is_anytime_safe() -> None:
    algo, tasks = make_algo()
    rows = [algo.train_iteration(i) for i in range(algo.cfg.iterations)]
    assert rows[-1]["reward_mean"] > rows[0]["reward_mean"] + 1.0
    test = algo.meta_test(tasks["test"], 8)
    assert [r["step"] for r in test] == list(range(9))
    assert test[-1]["reward_mean"] > test[0]["reward_mean"] + 1.0
    assert all(r["violation_rate"] == 0.0 and r["cost_max"] <= r["cost_limit"] + 1e-9 for r in test)
    # The meta-test rows are exact evaluations: recompute step 0 by hand.
    pi = softmax(algo.phi)
    J = np.mean([evaluate(algo.cmdp(t), pi).J for t in tasks["test"]])
    assert test[0]["reward_mean"] == pytest.approx(J, abs=1e-12)


def test_meta_training_with_theory_parameters_is_anytime_safe() -> None:
    algo, tasks = make_algo(hyper="theory", iterations=10)
    for i in range(10):
        algo.train_iteration(i)
    feasible = [t for t in tasks["test"]
                if evaluate(algo.cmdp(t), softmax(algo.phi)).Jc[0] <= algo.cmdp(t).d[0]]
    assert len(feasible) == len(tasks["test"])  # the meta-policy is safe on every test task
    test = algo.meta_test(feasible, 5)
    assert all(r["violation_rate"] == 0.0 for r in test)
    # The theorem's λ make small steps, but every one improves (strictly: A ≠ 0 here).
    assert all(b["reward_mean"] > a["reward_mean"] for a, b in zip(test, test[1:]))


def test_state_dict_round_trip_continues_identically() -> None:
    a, _ = make_algo(iterations=6)
    for i in range(3):
        a.train_iteration(i)
    state = a.state_dict()
    rest_a = [a.train_iteration(i) for i in range(3, 6)]
    b, _ = make_algo(iterations=6)
    b.load_state_dict(state)
    rest_b = [b.train_iteration(i) for i in range(3, 6)]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    assert strip(rest_a) == strip(rest_b)
    np.testing.assert_array_equal(a.phi, b.phi)


@pytest.mark.parametrize("margin, expect_safe", [(None, True), (0.05, False)])
def test_tabular_random_paper_preset_is_anytime_safe_on_every_test_task(
    tmp_path, margin, expect_safe
) -> None:
    """Seed 4 of the paper preset: with margin 0.05 the meta-policy exceeds d on one test
    task at step 0 (so the check can fail); the suite's preset margin 0.1 keeps every
    step of every test task within its limit (exact evaluation)."""
    from safemeta.cli import main
    from safemeta.experiment.metrics import read_rows

    sets = [] if margin is None else ["--set", f"meta_margin={margin}"]
    out = tmp_path / "run"
    assert main(["train", "--env", "tabular-random", "--preset", "paper", "--seed", "4", *sets,
                 "--out", str(out), "--no-progress"]) == 0
    test = [r for r in read_rows(out / "metrics.csv") if r["phase"] == "meta_test"]
    assert len(test) == 21
    worst = max(float(r["cost_max"]) - float(r["cost_limit"]) for r in test)
    assert (worst <= 1e-9) == expect_safe
    assert float(test[-1]["reward_mean"]) > float(test[0]["reward_mean"]) + 1.0
