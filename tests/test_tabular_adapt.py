"""Exact safe adaptation (SPEC §2.1-2.3) against a generic convex solver and the theorem."""

from __future__ import annotations

import dataclasses

import cvxpy as cp
import numpy as np
import pytest

from safemeta.core.theory import theory_params
from safemeta.tabular.adapt import make_problem, safe_adapt, solve_tabular_dual
from safemeta.tabular.cmdp import CMDP, evaluate, softmax


def random_cmdp(rng: np.random.Generator, S: int, A: int, p: int, gamma: float = 0.9) -> CMDP:
    P = rng.dirichlet(np.ones(S) * 0.7, size=(S, A))
    return CMDP(P, rng.random((S, A)), rng.random((p, S, A)), rng.dirichlet(np.ones(S)),
                np.zeros(p), gamma)


def primal_cvxpy(f, ev, m: CMDP, lam, lam_c, delta) -> np.ndarray:
    """SPEC §2.1 solved by cvxpy: variables π(a|s), KL via rel_entr."""
    S, A = f.shape
    pk = softmax(f)
    pi = cp.Variable((S, A), nonneg=True)
    kl = cp.sum(cp.multiply(ev.nu[:, None], cp.rel_entr(pi, pk)))
    obj = cp.sum(cp.multiply(ev.nu[:, None] * ev.A, pi)) - lam * kl
    cons = [cp.sum(pi, axis=1) == 1]
    for i in range(m.n_costs):
        lin = cp.sum(cp.multiply(ev.nu[:, None] * ev.Ac[i], pi)) / (1 - m.gamma)
        cons.append(ev.Jc[i] + lin + lam_c[i] * kl <= m.d[i] + delta[i])
    cp.Problem(cp.Maximize(obj), cons).solve(solver=cp.CLARABEL, tol_gap_abs=1e-10,
                                             tol_gap_rel=1e-10, tol_feas=1e-10)
    return np.asarray(pi.value)


def case(seed: int, p: int, feasible: bool):
    """A random CMDP, policy and limits: feasible at u = 0, or binding (the λ-only step
    would exceed every limit, while π_k itself is within it)."""
    rng = np.random.default_rng(seed)
    m = random_cmdp(rng, S=int(rng.integers(3, 7)), A=int(rng.integers(2, 5)), p=p)
    m = dataclasses.replace(m, c=0.8 * m.r[None] + 0.2 * m.c)  # costly where rewarding
    f = rng.normal(size=(m.n_states, m.n_actions))
    ev = evaluate(m, softmax(f))
    lam, lam_c = float(rng.uniform(0.5, 2.0)), rng.uniform(0.5, 2.0, size=p)
    delta = np.zeros(p)
    prob = make_problem(f, ev.A, ev.Ac, ev.nu, ev.Jc, ev.Jc, lam, lam_c, delta, m.gamma)
    s0 = ev.Jc + prob.constraint(np.zeros(p))  # left side of the λ-only step
    assert np.all(s0 > ev.Jc)
    d = s0 + 1.0 if feasible else ev.Jc + rng.uniform(0.2, 0.8, size=p) * (s0 - ev.Jc)
    return dataclasses.replace(m, d=d), f, ev, lam, lam_c, delta


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("feasible", [True, False])
@pytest.mark.parametrize("seed", range(8))
def test_safe_adapt_matches_cvxpy(seed: int, p: int, feasible: bool) -> None:
    m, f, ev, lam, lam_c, delta = case(seed, p, feasible)
    new, u = safe_adapt(f, ev.A, ev.Ac, ev.nu, ev.Jc, m.d, lam, lam_c, delta, m.gamma)
    ref = primal_cvxpy(f, ev, m, lam, lam_c, delta)
    assert np.max(np.abs(softmax(new) - ref)) < 1e-4
    if feasible:
        assert np.all(u == 0.0)
    else:
        assert np.any(u > 0)


def test_dual_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(3)
    for p in (1, 2, 3):
        m = random_cmdp(rng, 5, 3, p)
        f = rng.normal(size=(5, 3))
        ev = evaluate(m, softmax(f))
        prob = make_problem(f, ev.A, ev.Ac, ev.nu, ev.Jc, ev.Jc - 0.1, 1.0, np.ones(p), np.zeros(p),
                            m.gamma)
        for _ in range(5):
            mu = rng.uniform(0.0, 3.0, size=p)
            h = 1e-6
            fd = np.array([(prob.value(mu + h * e) - prob.value(mu - h * e)) / (2 * h)
                           for e in np.eye(p)])
            np.testing.assert_allclose(fd, -prob.constraint(mu), rtol=1e-6, atol=1e-8)


def test_dual_is_zero_exactly_when_pi_k_feasible() -> None:
    rng = np.random.default_rng(4)
    m = random_cmdp(rng, 6, 3, 1)
    f = rng.normal(size=(6, 3))
    ev = evaluate(m, softmax(f))
    args = (f, ev.A, ev.Ac, ev.nu, ev.Jc)
    _, u = safe_adapt(*args, ev.Jc + 10.0, 1.0, np.ones(1), np.zeros(1), m.gamma)
    assert u[0] == 0.0
    # The λ-only step's constraint value g(0) is the threshold: just above it u = 0,
    # just below it u > 0.
    prob = make_problem(*args, ev.Jc, 1.0, np.ones(1), np.zeros(1), m.gamma)
    g0 = prob.constraint(np.zeros(1))[0]
    _, u = safe_adapt(*args, ev.Jc + g0 + 1e-9, 1.0, np.ones(1), np.zeros(1), m.gamma)
    assert u[0] == 0.0
    _, u = safe_adapt(*args, ev.Jc + g0 - 1e-3, 1.0, np.ones(1), np.zeros(1), m.gamma)
    assert u[0] > 0.0
    # At the root the constraint is active to high precision.
    sol = solve_tabular_dual(make_problem(*args, ev.Jc + g0 - 1e-3, 1.0, np.ones(1), np.zeros(1), m.gamma))
    assert abs(sol.g[0]) < 1e-10


def theory_for(ev, m: CMDP):
    """λ, λ_c (δ = 0) of the theorem for a step from the evaluated policy: α = 1/min ν
    makes max_s KL ≤ α E_ν[KL], the bound the theorem needs."""
    return theory_params(alpha=1.0 / ev.nu.min(), a_max=np.abs(ev.A).max(),
                         a_c_max=np.abs(ev.Ac).max(axis=(1, 2)), radius=0.0, gamma=m.gamma)


@pytest.mark.parametrize("seed", range(20))
def test_theory_parameters_give_safety_and_improvement(seed: int) -> None:
    """SPEC §2.3 / slides "Safe policy adaptation": with λ, λ_c from the theorem (δ = 0),
    the true cost of the adapted policy is within the limit and its true return is not
    below π_k's. Every case is binding: cost grows with reward, and the limit sits between
    π_k's cost and the cost the λ-only step would reach, so u > 0."""
    rng = np.random.default_rng(100 + seed)
    p = 1 + seed % 2
    m = random_cmdp(rng, 5, 3, p, gamma=0.8)
    m = dataclasses.replace(m, c=0.9 * m.r[None] + 0.1 * m.c)
    f = 2.0 * rng.normal(size=(5, 3))
    ev = evaluate(m, softmax(f))
    th = theory_for(ev, m)
    assert np.all(th.delta == 0.0)
    prob = make_problem(f, ev.A, ev.Ac, ev.nu, ev.Jc, ev.Jc, th.lam, th.lam_c, th.delta, m.gamma)
    s0 = ev.Jc + prob.constraint(np.zeros(p))  # the λ-only step's surrogate cost
    assert np.all(s0 > ev.Jc)
    m = dataclasses.replace(m, d=ev.Jc + rng.uniform(0.2, 0.8, size=p) * (s0 - ev.Jc))
    new, u = safe_adapt(f, ev.A, ev.Ac, ev.nu, ev.Jc, m.d, th.lam, th.lam_c, th.delta, m.gamma)
    assert np.any(u > 0)
    after = evaluate(m, softmax(new))
    assert np.all(after.Jc <= m.d + 1e-12)
    assert after.J > ev.J  # strict: the step moves
    # Anytime safety along a chain of steps from the adapted policy.
    for _ in range(5):
        ev = after
        th = theory_for(ev, m)
        new, _ = safe_adapt(new, ev.A, ev.Ac, ev.nu, ev.Jc, m.d, th.lam, th.lam_c, th.delta, m.gamma)
        after = evaluate(m, softmax(new))
        assert np.all(after.Jc <= m.d + 1e-12) and after.J >= ev.J - 1e-12


def test_explicit_small_lambda_can_violate_where_theory_does_not() -> None:
    """The guarantee is not vacuous: with λ, λ_c far below the theorem's values the same
    binding step exceeds the true limit in some cases; with the theorem's never."""
    violations = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        m = random_cmdp(rng, 5, 3, 1, gamma=0.8)
        m = dataclasses.replace(m, c=0.9 * m.r[None] + 0.1 * m.c)
        f = 2.0 * rng.normal(size=(5, 3))
        ev = evaluate(m, softmax(f))
        m = dataclasses.replace(m, d=ev.Jc + 0.05)
        new, _ = safe_adapt(f, ev.A, ev.Ac, ev.nu, ev.Jc, m.d, 0.01, np.zeros(1), np.zeros(1), m.gamma)
        violations += evaluate(m, softmax(new)).Jc[0] > m.d[0] + 1e-12
    assert violations > 0


def test_theory_helper_hand_computed() -> None:
    th = theory_params(alpha=2.0, a_max=1.5, a_c_max=[0.5], radius=0.1, gamma=0.9, eps=0.0)
    assert th.lam == pytest.approx(2 * 0.9 * 2.0 * 1.5 / 0.1)  # 54
    assert th.lam_c[0] == pytest.approx(2 * 0.9 * 2.0 * 0.5 / 0.01)  # 180
    assert th.delta[0] == pytest.approx(4 * 0.9 * 2.0 * 0.5 * 0.1 / 0.01)  # 36
    assert th.violation_bound[0] == pytest.approx(36.0)
    assert th.optimality_gap(0.5) == pytest.approx(4 * 0.9 * 2.0 * 1.5 / 0.01 * 0.5)
    assert theory_params(2.0, 1.5, [0.5], 0.1, 0.9).delta[0] == 0.0  # eps=None: δ = 0
    with pytest.raises(ValueError, match="eps"):
        theory_params(2.0, 1.5, [0.5], 0.1, 0.9, eps=37.0)


GOOD = dict(
    logits=np.zeros((3, 2)), adv=np.zeros((3, 2)), cost_adv=np.zeros((1, 3, 2)),
    visitation=np.full(3, 1 / 3), cost_value=np.zeros(1), cost_limit=np.ones(1), lam=1.0,
    lam_c=np.ones(1), delta=np.zeros(1), gamma=0.9,
)


@pytest.mark.parametrize(
    "name,value",
    [
        ("logits", np.zeros(3)),
        ("adv", np.zeros((3, 3))),
        ("adv", np.array([[0, np.nan]] * 3)),
        ("cost_adv", np.zeros((3, 2))),
        ("visitation", np.ones(3)),
        ("visitation", np.zeros(4)),
        ("cost_value", np.zeros(2)),
        ("cost_limit", np.array([np.inf])),
        ("lam", -1.0),
        ("lam", float("nan")),
        ("lam_c", -np.ones(1)),
        ("delta", -np.ones(1)),
        ("gamma", 1.0),
        ("gamma", 0.0),
        ("gamma", "x"),
    ],
)
def test_safe_adapt_rejects_bad_input(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{name}:"):
        safe_adapt(**{**GOOD, name: value})


def test_safe_adapt_costs_milliseconds_on_100_states() -> None:
    """Not a timing assertion: counts dual evaluations, which bound the cost."""
    rng = np.random.default_rng(0)
    S, A = 100, 5
    f, adv, cadv = rng.normal(size=(S, A)), rng.normal(size=(S, A)), rng.normal(size=(1, S, A))
    prob = make_problem(f, adv, cadv, np.full(S, 1 / S), np.ones(1), 0.5 * np.ones(1), 1.0,
                        np.ones(1), np.zeros(1), 0.9)
    calls = 0
    inner = prob.constraint

    def counted(mu: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        return inner(mu)

    object.__setattr__(prob, "constraint", counted)
    sol = solve_tabular_dual(prob)
    assert sol.u[0] > 0 and abs(sol.g[0]) < 1e-10
    assert calls < 60  # each call is one pass over a 100x5 table: well under a millisecond
