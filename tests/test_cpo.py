"""The CPO step (Achiam et al. 2017) against a convex solver and its closed form; Meta-CPO's
second-order meta-gradient against finite differences; `cpo` and `meta-cpo` on the toy suite."""

from __future__ import annotations

import copy
import dataclasses
import math

import cvxpy as cp
import numpy as np
import pytest
import torch

from safemeta.algorithm import METRIC_COLUMNS
from safemeta.baselines.cpo import CPO, CPOConfig
from safemeta.baselines.meta_cpo import (
    InnerData,
    MetaCPO,
    MetaCPOConfig,
    PostData,
    adapted_params,
    cpo_inner_step,
    meta_objective,
)
from safemeta.config import build
from safemeta.meta_learner import MetaLearner
from safemeta.nn.policy import GaussianPolicy
from safemeta.rollout.toy import PointMassSuite
from safemeta.updates import cpo as cpo_mod
from safemeta.updates.cpo import cpo_direction, cpo_multipliers, cpo_step
from safemeta.updates.second_order import params_of
from safemeta.updates.trpo import flat_grad

# ---- (a) the closed form on a quadratic problem -------------------------------------------
DELTA = 0.05
_M = np.array([[1.0, 0.3, 0.0, 0.2], [0.3, 2.0, 0.4, 0.0], [0.0, 0.4, 1.5, 0.1], [0.2, 0.0, 0.1, 0.8]])
F = _M @ _M.T + 0.2 * np.eye(4)  # SPD "Fisher"
G = np.array([1.0, -0.5, 0.3, 0.8])  # reward gradient
B = np.array([0.6, 0.2, -0.4, 0.9])  # cost gradient
S = float(B @ np.linalg.solve(F, B))  # bᵀF⁻¹b
C_EDGE = math.sqrt(2 * DELTA * S)  # |c| beyond which the trust region lies on one side of the constraint
# The interior-point solver's optimum is accurate to ~1e-6 in x where the objective is flat
# along the trust region's boundary; the closed form is checked to 1e-9 by its KKT conditions.
TIGHT = dict(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)


def convex_solution(c: float) -> tuple[str, np.ndarray | None]:
    """maximise gᵀx s.t. c + bᵀx ≤ 0, ½xᵀFx ≤ δ with a generic solver."""
    x = cp.Variable(4)
    prob = cp.Problem(cp.Maximize(G @ x), [c + B @ x <= 0, 0.5 * cp.quad_form(x, F) <= DELTA])
    prob.solve(**TIGHT)
    return prob.status, x.value


def closed_form(c: float) -> tuple[np.ndarray, cpo_mod.CPOSolution]:
    f = torch.tensor(F)
    x, sol = cpo_direction(torch.tensor(G), torch.tensor(B), lambda v: f @ v, c, DELTA, cg_iters=8)
    return x.numpy(), sol


@pytest.mark.parametrize(
    ("c", "case", "nu_positive"),
    [
        (-0.05, cpo_mod.ACTIVE, True),  # π_k feasible, the TRPO step would break the constraint
        (-0.9 * C_EDGE, cpo_mod.ACTIVE, False),  # π_k feasible, constraint slack at the TRPO step
        (-1.2 * C_EDGE, cpo_mod.INACTIVE, False),  # the whole trust region is feasible: TRPO
        (0.3 * C_EDGE, cpo_mod.INFEASIBLE_START, True),  # π_k infeasible, the trust region reaches back
    ],
)
def test_closed_form_equals_convex_solver_when_feasible(c: float, case: int, nu_positive: bool) -> None:
    status, x_cvx = convex_solution(c)
    assert status == "optimal"
    x, sol = closed_form(c)
    assert sol.case == case and (float(sol.nu) > 0) == nu_positive
    np.testing.assert_allclose(x, x_cvx, atol=1e-5)
    assert G @ x >= G @ x_cvx - 1e-9  # no feasible point does better
    # and the KKT conditions hold exactly for the closed form
    assert 0.5 * x @ F @ x == pytest.approx(DELTA, rel=1e-9)  # λ > 0: the trust region binds
    if nu_positive:
        assert c + B @ x == pytest.approx(0.0, abs=1e-9)  # ν > 0: the constraint binds
    else:
        assert c + B @ x < 0


def test_recovery_step_when_the_trust_region_cannot_reach_feasibility() -> None:
    c = 1.5 * C_EDGE
    status, _ = convex_solution(c)
    assert status == "infeasible"
    x, sol = closed_form(c)
    assert sol.case == cpo_mod.RECOVERY
    f_inv_b = np.linalg.solve(F, B)
    np.testing.assert_allclose(x, -math.sqrt(2 * DELTA / S) * f_inv_b, rtol=1e-10)  # the analytic step
    # it is the steepest cost descent in the trust region: minimise bᵀx s.t. ½xᵀFx ≤ δ
    y = cp.Variable(4)
    cp.Problem(cp.Minimize(B @ y), [0.5 * cp.quad_form(y, F) <= DELTA]).solve(**TIGHT)
    np.testing.assert_allclose(x, y.value, atol=1e-5)
    assert B @ x == pytest.approx(-C_EDGE, rel=1e-9)  # the cost falls by sqrt(2δ bᵀF⁻¹b) < c


def test_multipliers_run_on_floats() -> None:
    """The solve is a pure function of (q, r, s, c, δ): floats in, floats out."""
    f_inv_g, f_inv_b = np.linalg.solve(F, G), np.linalg.solve(F, B)
    q, r = float(G @ f_inv_g), float(G @ f_inv_b)
    sol = cpo_multipliers(q, r, S, -0.05, DELTA)
    x = (f_inv_g - sol.nu * f_inv_b) / sol.lam
    np.testing.assert_allclose(x, closed_form(-0.05)[0], rtol=1e-8)
    assert cpo_multipliers(q, r, 0.0, -0.1, DELTA).case == cpo_mod.NO_COST_GRADIENT


class QuadraticModel:
    """Surrogates linear in the parameters θ of a policy and a KL exactly quadratic: the
    CPO problem's model is exact, so `cpo_step` must take the closed-form step in full."""

    def __init__(self, n: int) -> None:
        rng = np.random.default_rng(3)
        self.g, self.b = torch.tensor(rng.normal(size=n)), torch.tensor(rng.normal(size=n))
        m = rng.normal(size=(n, n))
        self.f = torch.tensor(m @ m.T / n + 0.5 * np.eye(n))

    def theta(self, pol: GaussianPolicy) -> torch.Tensor:
        return torch.cat([p.reshape(-1) for p in pol.parameters()])


@pytest.mark.parametrize("c", [-0.02, 5.0])  # feasible with an active constraint; recovery
def test_cpo_step_takes_the_closed_form_on_an_exact_model(c: float) -> None:
    pol = GaussianPolicy(1, 1, hidden=[2]).double()
    theta0 = pol.flat_params().clone()
    model = QuadraticModel(theta0.numel())

    def reward(p: GaussianPolicy) -> torch.Tensor:
        return model.g @ model.theta(p)

    def cost(p: GaussianPolicy) -> torch.Tensor:
        return model.b @ model.theta(p)

    def kl(p: GaussianPolicy) -> torch.Tensor:
        d = model.theta(p) - theta0
        return 0.5 * d @ model.f @ d

    info = cpo_step(pol, reward, cost, kl, c, DELTA, cg_iters=30, damping=0.0)
    f, g, b = model.f.numpy(), model.g.numpy(), model.b.numpy()
    x_cvx = None
    if c < 0:
        y = cp.Variable(len(g))
        cp.Problem(cp.Maximize(g @ y), [c + b @ y <= 0, 0.5 * cp.quad_form(y, f) <= DELTA]).solve(
            **TIGHT)
        x_cvx = y.value
        assert info["recovery"] == 0.0 and info["improve"] > 0
    else:
        x_cvx = -math.sqrt(2 * DELTA / (b @ np.linalg.solve(f, b))) * np.linalg.solve(f, b)
        assert info["recovery"] == 1.0 and info["cost_change"] < 0
    assert info["accepted"] == 1.0 and info["ls_steps"] == 0.0
    assert info["kl"] == pytest.approx(DELTA, rel=1e-6)
    np.testing.assert_allclose((pol.flat_params() - theta0).numpy(), x_cvx, atol=2e-5)


def test_line_search_rejects_a_step_that_breaks_the_constraint() -> None:
    """A cost surrogate much steeper than its linearisation: the full step breaks c + Δ ≤ 0,
    halvings are taken until it holds."""
    pol = GaussianPolicy(1, 1, hidden=[2]).double()
    theta0 = pol.flat_params().clone()
    model = QuadraticModel(theta0.numel())
    c = -0.02

    def cost(p: GaussianPolicy) -> torch.Tensor:
        d = model.theta(p) - theta0
        return model.b @ d + 40.0 * (d @ d)  # curvature the closed form does not see

    def kl(p: GaussianPolicy) -> torch.Tensor:
        d = model.theta(p) - theta0
        return 0.5 * d @ model.f @ d

    info = cpo_step(pol, lambda p: model.g @ model.theta(p), cost, kl, c, DELTA, cg_iters=30, damping=0.0)
    assert info["accepted"] == 1.0 and info["ls_steps"] >= 1
    with torch.no_grad():
        assert float(cost(pol)) <= -c + 1e-9


# ---- (b) Meta-CPO's meta-gradient through the inner CPO step ------------------------------
def bandit(case: str) -> tuple[GaussianPolicy, list[InnerData], list[PostData]]:
    """A 1-D contextual Gaussian bandit (float64) with hand-set advantages, two tasks.

    Inner data: actions of π_φ; A(s, a) = −(a − a*_τ)², A_c = A + 2as (both centred); c sets the
    case. Post data: fixed actions with A' = −(a − a*_τ)²; the behaviour log-probabilities
    are those of θ'(φ) at the unperturbed φ (constants, as in `meta_step`)."""
    torch.manual_seed(0)
    pol = GaussianPolicy(1, 1, hidden=[3], init_log_std=math.log(0.6)).double()
    with torch.no_grad():
        for p in pol.mean_net.parameters():
            p.normal_(0, 0.7)
    gen = torch.Generator().manual_seed(1)
    c = {"active": -0.02, "recovery": 3.0, "inactive": -50.0}[case]
    inner, post = [], []
    for goal in (0.7, -0.4):
        obs = torch.randn(24, 1, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            mean, log_std = pol(obs)
            act = mean + log_std.exp() * torch.randn(mean.shape, generator=gen, dtype=torch.float64)
            logp = pol.log_prob(obs, act)
        adv = -((act[:, 0] - goal) ** 2)
        cost_adv = adv + 2 * act[:, 0] * obs[:, 0]  # conflicts with the reward: the constraint binds
        inner.append(InnerData(obs, act, logp, adv - adv.mean(), cost_adv - cost_adv.mean(), obs, c,
                               alpha=0.5))
        obs2 = torch.randn(24, 1, generator=gen, dtype=torch.float64)
        act2 = goal + 0.5 * torch.randn(24, 1, generator=gen, dtype=torch.float64)
        adv2 = -((act2[:, 0] - goal) ** 2)
        post.append(PostData(obs2, act2, torch.zeros(24, dtype=torch.float64), adv2 - adv2.mean()))
    phi = params_of(pol)
    for d, p in zip(inner, post):
        with torch.no_grad():
            theta = adapted_params(pol, phi, d, INNER_KL, CG, DAMPING, create_graph=False)
            mean, log_std = torch.func.functional_call(pol, theta, (p.obs,))
            p.logp = torch.distributions.Normal(mean, log_std.exp()).log_prob(p.act).sum(-1)
    return pol, inner, post


INNER_KL, CG, DAMPING = 0.05, 20, 0.1  # CG converges (11 parameters) before 20 iterations


def objective_at(pol: GaussianPolicy, flat: torch.Tensor, inner: list, post: list) -> float:
    pol.set_flat_params(flat)
    with torch.no_grad():
        return float(meta_objective(pol, inner, post, INNER_KL, CG, DAMPING))


@pytest.mark.parametrize("case", ["active", "recovery", "inactive"])
def test_meta_gradient_matches_finite_differences(case: str) -> None:
    pol, inner, post = bandit(case)
    expected = {"active": cpo_mod.ACTIVE, "recovery": cpo_mod.RECOVERY, "inactive": cpo_mod.INACTIVE}[case]
    sols = [cpo_inner_step(pol, params_of(pol), d, INNER_KL, CG, DAMPING, False)[1] for d in inner]
    assert all(s.case == expected for s in sols)
    if case == "active":
        assert all(float(s.nu) > 0 for s in sols)
    params = list(pol.parameters())
    grad = flat_grad(meta_objective(pol, inner, post, INNER_KL, CG, DAMPING), params).numpy()
    first = flat_grad(meta_objective(pol, inner, post, INNER_KL, CG, DAMPING, first_order=True),
                      params).numpy()
    phi0, h = pol.flat_params().clone(), 1e-5  # central differences: error ~h², roundoff ~1e-13/h
    fd = np.zeros_like(grad)
    for i in range(len(fd)):
        e = torch.zeros_like(phi0)
        e[i] = h
        up, down = objective_at(pol, phi0 + e, inner, post), objective_at(pol, phi0 - e, inner, post)
        fd[i] = (up - down) / (2 * h)
    pol.set_flat_params(phi0)
    assert np.linalg.norm(fd) > 1e-2  # not trivially zero
    assert np.abs(grad - fd).max() <= 2e-6 * np.abs(fd).max()  # measured: ≤ 3e-7
    # the term through the inner step matters: the first-order gradient is another vector
    assert np.linalg.norm(grad - first) > 0.05 * np.linalg.norm(grad)


# ---- (c) the algorithms on the toy suite --------------------------------------------------
def make(cls: type[MetaLearner], seed: int = 0, **over: object) -> MetaLearner:
    suite = PointMassSuite(horizon=8, cost_limit=0.6)
    cfg = build(cls.Config, dict(seed=seed, meta_batch=3, episodes_per_task=6, val_tasks=2, test_tasks=3,
                                 eval_every=2, eval_episodes=3, hidden=[16], max_kl=0.02, cg_iters=5), over)
    rng = np.random.default_rng(7)
    tasks = {"val": suite.sample_tasks(2, rng, "train"), "test": suite.sample_tasks(3, rng, "test")}
    return cls(cfg, suite, tasks, np.random.SeedSequence(seed))


def strip_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not (k.startswith("t_") or k == "time_s")} for r in rows]


def run(cls: type[MetaLearner], seed: int, iterations: int) -> list[dict]:
    algo = make(cls, seed)
    rows = [algo.train_iteration(it) for it in range(iterations)]
    rows += algo.meta_test(algo.tasks["test"], 2)
    assert algo.finite()
    return rows


def check_rows(cls: type[MetaLearner], rows: list[dict]) -> None:
    for row in rows:
        for col in (*METRIC_COLUMNS, *cls.step_columns):
            assert col in row, col
        assert set(row) <= set(METRIC_COLUMNS) | set(cls.extra_columns)
        assert all(np.isfinite(v) for v in row.values() if isinstance(v, float))
    test = [r for r in rows if r["phase"] == "meta_test"]
    assert [r["step"] for r in test] == [0, 1, 2]
    assert all(r["accept_rate"] == 1.0 for r in test[:2])  # every test task took its CPO step


@pytest.mark.parametrize(("cls", "iterations"), [(CPO, 0), (MetaCPO, 2)])
def test_toy_run_is_finite_and_deterministic(cls: type[MetaLearner], iterations: int) -> None:
    rows = run(cls, 3, iterations)
    check_rows(cls, rows)
    if cls is MetaCPO:
        assert rows[0]["eval_source"] == "val" and rows[1]["eval_source"] == "post"
        assert all(r["outer_accepted"] == 1.0 for r in rows[:2])
    assert strip_times(run(cls, 3, iterations)) == strip_times(rows)
    other = make(cls, 4)
    first = other.train_iteration(0) if iterations else other.meta_test(other.tasks["test"], 1)[0]
    assert strip_times([first]) != strip_times(rows[:1])


def test_cpo_is_from_scratch() -> None:
    for preset in CPO.presets("halfcheetah-vel").values():
        assert preset["iterations"] == 0
    base = MetaLearner.presets("halfcheetah-vel")
    assert {k: v for k, v in CPO.presets("halfcheetah-vel")["paper"].items() if k != "iterations"} == {
        k: v for k, v in base["paper"].items() if k != "iterations"}
    algo = make(CPO)
    assert algo.meta_step(None, None, []) == {}  # type: ignore[arg-type]


def test_recovery_lowers_the_cost_on_the_toy() -> None:
    """π_0 spends Σa² ≈ 2.3 against d = 0.6: CPO's recovery steps lower the cost."""
    rows = make(CPO, 1).meta_test(make(CPO, 1).tasks["test"], 3)
    assert rows[0]["violation_rate"] == 1.0 and rows[0]["recovery"] == 1.0
    assert rows[3]["cost_mean"] < rows[0]["cost_mean"]


def test_adapted_policy_is_the_differentiated_inner_step() -> None:
    """The policy `adapt` hands to data collection is θ'(φ) = φ + α x*(φ) as the meta-step
    recomputes it with the graph (same data, same Fisher states)."""
    algo = make(MetaCPO, 2)
    assert isinstance(algo, MetaCPO)
    tasks = algo.suite.sample_tasks(2, algo.rng, "train")
    current = algo.meta_policies(2)
    from safemeta.meta_learner import Phase

    pre = algo.collect(tasks, current, Phase.PRE, 0)
    adapted = algo.adapt(pre, current)
    phi = params_of(algo.policy)
    for a in adapted:
        d = a.state["inner"]
        assert d.alpha > 0
        c = algo.cfg
        theta = adapted_params(algo.policy, phi, d, c.inner_max_kl, c.cg_iters, c.cg_damping, True)
        flat = torch.cat([theta[k].reshape(-1) for k in phi]).detach()
        np.testing.assert_allclose(flat.numpy(), a.policy.flat_params().numpy(), atol=1e-6)


def test_configs_bounded_and_outer_step_checked() -> None:
    for cfg_cls in (CPOConfig, MetaCPOConfig):
        for f in dataclasses.fields(cfg_cls):
            if f.type in ("float", "int") or f.type in (float, int):
                assert math.isfinite(f.metadata["low"]) and math.isfinite(f.metadata["high"]), f.name
    with pytest.raises(ValueError, match="outer_step"):
        make(MetaCPO, outer_step="first-order")
    plain = make(MetaCPO, outer_constraint=False)
    row = copy.deepcopy(plain.train_iteration(1))
    assert row["outer_recovery"] == 0.0 and np.isfinite(row["outer_kl"])
