"""The alternative dual of SPEC §2.4 step 2: bisection on μ with the projected policy's
own surrogate, against a closed form.

One state, π_k = N(m0, s0²), A(a) = r(a − m0), A_c(a) = a − m0. The tilt
π* ∝ π_k exp((r − κμ)(a − m0)/η_μ) is N(m0 + Δ(μ), s0²) with Δ(μ) = s0²(r − κμ)/(λ + λ_c μ),
so the projection is exact and its surrogate is J_c + κΔ + λ_c Δ²/(2 s0²). The smallest
feasible μ solves surrogate = bound.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from bandit import ZeroCritic, advantages, config, one_task_rollout, params
from scipy.optimize import brentq

from safemeta.core.adaptation import (
    PaddedBatch,
    adapt_batch,
    bisect_dual,
    surrogate_cost,
    verify,
)
from safemeta.core.dual import SampleDual, solution_at, solve_sample_dual
from safemeta.core.meta import SafeMetaConfig
from safemeta.nn.policy import GaussianPolicy
from safemeta.rollout.advantages import Advantages

S0, R, KAPPA, LAM, LAM_C, JC = 0.5, 1.0, 2.0, 1.0, 1.0, 1.0
N = 8000


Sample = tuple[GaussianPolicy, torch.Tensor, torch.Tensor, torch.Tensor, Advantages, float]


def setup(seed: int = 0) -> Sample:
    torch.manual_seed(seed)
    policy = GaussianPolicy(1, 1, hidden=[8], init_log_std=float(np.log(S0)))
    obs = torch.zeros(N, 1)
    with torch.no_grad():
        m0 = float(policy(obs[:1])[0])
    act = m0 + S0 * torch.randn(N, 1, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        logp_k = policy.log_prob(obs, act)
    x = act.numpy().astype(np.float64)[:, 0] - m0
    a = Advantages(adv=R * x, cost_adv=(x - x.mean())[:, None], cost_value=np.array([JC]), kappa=KAPPA)
    return policy, obs, act, logp_k, a, m0


def shift(mu: float) -> float:
    return S0**2 * (R - KAPPA * mu) / (LAM + LAM_C * mu)


def exact_mu(bound: float) -> float:
    sur = lambda mu: JC + KAPPA * shift(mu) + LAM_C * shift(mu) ** 2 / (2 * S0**2) - bound
    return brentq(sur, 0.0, R / KAPPA)


class Spy:
    """Wraps `project_batch`: records the η of every probe and the policies it returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import safemeta.core.adaptation as adaptation

        self.calls: list[tuple[np.ndarray, list[GaussianPolicy]]] = []
        real = adaptation.project_batch

        def spy(pks, obs, act, logp_k, b, mask, eta, *rest):
            assert b.shape == mask.shape == obs.shape[:2]  # padded alike
            pols = real(pks, obs, act, logp_k, b, mask, eta, *rest)
            self.calls.append((eta.numpy().copy(), pols))
            return pols

        monkeypatch.setattr(adaptation, "project_batch", spy)

    def eta_of(self, policy: GaussianPolicy) -> float:
        for eta, pols in self.calls:
            for j, p in enumerate(pols):
                if p is policy:
                    return float(eta[j])
        raise AssertionError("the returned policy was not made by a probe")


def settings(**over) -> SafeMetaConfig:
    kw = dict(lam=LAM, lam_c=LAM_C, proj_epochs=150, proj_minibatches=1, proj_lr=0.02, dual="bisection",
              bisect_iters=8)
    return config(**{**kw, **over})


def run(bound: float, start_mu: float | None = None, seed: int = 0, **over):
    """Bisection from the sample dual (or from a deliberately wrong start μ)."""
    policy, obs, act, logp_k, a, m0 = setup(seed)
    prob = SampleDual(a.adv, a.cost_adv, a.cost_value, np.array([bound]), LAM, np.array([LAM_C]),
                       np.zeros(1), KAPPA)
    start = solve_sample_dual(prob)
    if start_mu is not None:  # a wrong answer of a (feasible) sample dual
        start = dataclasses.replace(solution_at(prob, np.array([start_mu])), infeasible=False)
    batch = PaddedBatch(obs[None], act[None], logp_k[None], torch.ones(1, N))
    sols, pols = bisect_dual([policy], batch, [a], [prob], [start], np.array([bound]), settings(**over),
                             np.random.default_rng(0))
    with torch.no_grad():
        mean = float(pols[0](obs[:1])[0])
    sur, _ = surrogate_cost(pols[0], policy, obs, act, logp_k, a, np.array([LAM_C]))
    return sols[0], mean - m0, sur[0], pols[0]


@pytest.mark.parametrize("start", [None, 0.2, 5.0], ids=["sample-dual", "start-0.2x", "start-5x"])
def test_bisection_finds_the_smallest_feasible_multiplier(monkeypatch, start) -> None:
    """From the sample dual, or from a start 5x too small or too large, bisection ends at
    the closed-form μ*, with the projection made at exactly the μ it reports."""
    bound = 1.3
    mu_star = exact_mu(bound)  # 0.186
    assert 0.1 < mu_star < 0.3
    spy = Spy(monkeypatch)
    sol, delta, sur, pol = run(bound, None if start is None else start * mu_star)
    assert sol.mu[0] == pytest.approx(mu_star, rel=0.05)
    assert delta == pytest.approx(shift(mu_star), abs=0.012)  # the projected mean moved by Δ(μ*)
    assert sur <= bound and sur == pytest.approx(bound, abs=0.02)  # feasible and tight
    assert sol.u[0] == pytest.approx(KAPPA * sol.mu[0]) and sol.eta == pytest.approx(LAM + LAM_C * sol.mu[0])
    assert spy.eta_of(pol) == pytest.approx(sol.eta, rel=1e-6)
    assert len(spy.calls) <= 1 + 2 * 8


def test_bisection_keeps_mu_zero_when_the_free_step_is_feasible(monkeypatch) -> None:
    spy = Spy(monkeypatch)
    sol, delta, sur, _ = run(bound=3.0, verify_max_kl=0.0)  # the step at μ = 0 has surrogate 1.625
    assert sol.mu[0] == 0.0 and len(spy.calls) == 1
    assert delta == pytest.approx(shift(0.0), abs=0.012) and sur <= 3.0


def test_bisection_applies_verifications_kl_cap() -> None:
    """The free step has KL = Δ(0)²/(2 s0²) = 0.125 > 0.1, the default cap: the smallest
    acceptable μ is the one with KL = 0.1, i.e. Δ(μ) = s0·√0.2."""
    mu_kl = brentq(lambda mu: shift(mu) - S0 * np.sqrt(0.2), 0.0, R / KAPPA)  # 0.0365
    sol, delta, sur, _ = run(bound=3.0)
    assert sol.mu[0] == pytest.approx(mu_kl, rel=0.1)
    assert delta == pytest.approx(S0 * np.sqrt(0.2), abs=0.012)


def test_exhausted_bracket_reports_the_multiplier_of_its_last_probe(monkeypatch) -> None:
    """Two doublings from 1e-3·μ* cannot reach μ*: the returned policy and μ are those of
    the last probe, not of a scale never tried."""
    spy = Spy(monkeypatch)
    mu_star = exact_mu(1.3)
    sol, _, sur, pol = run(1.3, start_mu=1e-3 * mu_star, bisect_iters=2)
    assert sol.mu[0] == pytest.approx(2e-3 * mu_star)  # probes: 0, 1e-3 μ*, 2e-3 μ*
    assert len(spy.calls) == 3 and spy.eta_of(pol) == pytest.approx(sol.eta, rel=1e-6)
    assert sur > 1.3  # infeasible: verification will back it off


def test_result_is_the_smallest_feasible_probe_not_the_latest(monkeypatch) -> None:
    """From 1.1·μ* with two iterations: 1.1 μ* passes, 0.55 μ* fails (bracket), then the
    bisections at 0.78 μ* and 0.93 μ* fail too: the answer stays the probe at 1.1 μ*."""
    spy = Spy(monkeypatch)
    mu_star = exact_mu(1.3)
    sol, _, sur, pol = run(1.3, start_mu=1.1 * mu_star, bisect_iters=2)
    assert len(spy.calls) == 5  # μ = 0, two bracket probes, two bisections
    assert sol.mu[0] == pytest.approx(1.1 * mu_star)
    assert spy.eta_of(pol) == pytest.approx(sol.eta, rel=1e-6) and sur <= 1.3


def test_bisection_on_an_infeasible_task_probes_the_sample_dual_once_and_verification_rejects(
    monkeypatch,
) -> None:
    """min over Δ of 1 + 2Δ + 2Δ² is 0.5 > 0.3: no policy of the class is feasible. The
    search stops after the sample dual's own μ; verification must reject what it returns."""
    bound = 0.3
    policy, obs, act, logp_k, a, _ = setup()
    prob = SampleDual(a.adv, a.cost_adv, a.cost_value, np.array([bound]), LAM, np.array([LAM_C]),
                       np.zeros(1), KAPPA)
    sample = solve_sample_dual(prob)
    assert sample.infeasible
    spy = Spy(monkeypatch)
    st = settings(verify_recovery=False)
    batch = PaddedBatch(obs[None], act[None], logp_k[None], torch.ones(1, N))
    sols, pols = bisect_dual([policy], batch, [a], [prob], [sample], np.array([bound]), st,
                             np.random.default_rng(0))
    assert len(spy.calls) == 2  # μ = 0, then the sample dual's μ
    np.testing.assert_array_equal(sols[0].mu, sample.mu)
    assert spy.eta_of(pols[0]) == pytest.approx(sample.eta, rel=1e-6)
    out, sur, kl, backoffs, ok = verify(pols[0], policy, obs, act, logp_k, a, st, np.array([LAM_C]),
                                        np.array([bound]))
    assert not ok and out is policy and backoffs == st.max_backoffs + 1


def test_tasks_of_different_lengths_search_independently(monkeypatch) -> None:
    """A long task settled at μ = 0 and a short task that must search: the short task's
    probes are padded to the batch, and each task gets what it gets alone."""
    long_pol, obs_l, act_l, logp_l, a_l, _ = setup(0)
    short_pol, obs_s, act_s, logp_s, a_s, _ = setup(1)
    k = 3000
    a_s = Advantages(a_s.adv[:k], a_s.cost_adv[:k] - a_s.cost_adv[:k].mean(0), a_s.cost_value, KAPPA)
    obs_s, act_s, logp_s = obs_s[:k], act_s[:k], logp_s[:k]
    a_l = Advantages(a_l.adv, a_l.cost_adv, np.array([0.2]), KAPPA)  # far below the limit: μ = 0
    bound = np.array([1.3])
    probs = [SampleDual(a.adv, a.cost_adv, a.cost_value, bound, LAM, np.array([LAM_C]), np.zeros(1), KAPPA)
             for a in (a_l, a_s)]
    pad = lambda x: torch.cat([x, torch.zeros(N - k, *x.shape[1:])])
    batch = PaddedBatch(torch.stack([obs_l, pad(obs_s)]), torch.stack([act_l, pad(act_s)]),
                        torch.stack([logp_l, pad(logp_s)]), torch.stack([torch.ones(N), pad(torch.ones(k))]))
    st = settings(verify_max_kl=0.0)
    starts = [solve_sample_dual(p) for p in probs]
    sols, _ = bisect_dual([long_pol, short_pol], batch, [a_l, a_s], probs, starts,
                          bound, st, np.random.default_rng(0))
    alone = PaddedBatch(obs_s[None], act_s[None], logp_s[None], torch.ones(1, k))
    sol_alone, _ = bisect_dual([short_pol], alone, [a_s], probs[1:], [solve_sample_dual(probs[1])], bound, st,
                               np.random.default_rng(0))
    assert sols[0].mu[0] == 0.0
    assert sols[1].mu[0] == pytest.approx(exact_mu(1.3), rel=0.1)
    assert sols[1].mu[0] == pytest.approx(sol_alone[0].mu[0], rel=1e-3)


@pytest.mark.parametrize("kl_cap", [0.1, 0.0], ids=["kl-cap-binds", "cost-binds"])
def test_bisection_needs_no_back_off_where_the_sample_dual_is_too_loose(kl_cap: float) -> None:
    """Here the sample dual says the free step (μ = 0) is feasible, but its projection
    fails verification (the KL cap, or without a cap its own cost surrogate) and is
    halved. Bisection raises μ until the projection itself passes: no back-off, and a
    larger accepted step."""
    torch.manual_seed(0)
    policy = GaussianPolicy(1, 1, hidden=[8], init_log_std=float(np.log(0.5)))
    roll = one_task_rollout(policy)
    limit = np.array([float(roll.ep_cost[0].mean())])
    out = {}
    for dual in ("sample", "bisection"):
        st = config(lam=1.0, lam_c=1.0, normalize_adv=False, proj_epochs=30, dual=dual, verify_max_kl=kl_cap)
        adv = advantages(roll, ZeroCritic(), policy, st)
        (res,) = adapt_batch([policy], roll, [adv], params(st, limit), st, np.random.default_rng(0))
        assert res.accepted and res.surrogate[0] <= limit[0]
        out[dual] = res
    assert out["sample"].dual.mu[0] == 0.0 and out["sample"].backoffs >= 1
    assert out["bisection"].dual.mu[0] > 0 and out["bisection"].backoffs == 0
    assert out["bisection"].kl > 2 * out["sample"].kl
    assert kl_cap == 0 or out["bisection"].kl <= kl_cap
