"""The alternative dual of SPEC §2.4 step 2: bisection on μ with the projected policy's
own surrogate, against a closed form.

One state, π_k = N(m0, s0²), A(a) = r(a − m0), A_c(a) = a − m0. The tilt
π* ∝ π_k exp((r − κμ)(a − m0)/η_μ) is N(m0 + Δ(μ), s0²) with Δ(μ) = s0²(r − κμ)/(λ + λ_c μ),
so the projection is exact and its surrogate is J_c + κΔ + λ_c Δ²/(2 s0²). The smallest
feasible μ solves surrogate = bound.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from safemeta.core.adaptation import (
    AdaptSettings,
    Advantages,
    adapt_batch,
    bisect_dual,
    surrogate_cost,
    verify,
)
from safemeta.core.dual import DualProblem, solve_dual
from safemeta.nn.policy import GaussianPolicy
from safemeta.rollout.buffer import Rollout

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


def run(bound: float, seed: int = 0):
    policy, obs, act, logp_k, a, m0 = setup(seed)
    prob = DualProblem(a.adv, a.cost_adv, a.cost_value, np.array([bound]), LAM, np.array([LAM_C]),
                       np.zeros(1), KAPPA)
    st = AdaptSettings(lam=LAM, lam_c=LAM_C, proj_epochs=150, proj_minibatches=1, proj_lr=0.02,
                       dual="bisection", bisect_iters=8)
    ones = torch.ones(1, N)
    sols, pols = bisect_dual([policy], obs[None], act[None], logp_k[None], ones, [a], [prob],
                             [solve_dual(prob)], np.array([bound]), st, np.random.default_rng(0))
    with torch.no_grad():
        mean = float(pols[0](obs[:1])[0])
    sur, _ = surrogate_cost(pols[0], policy, obs, act, logp_k, a, np.array([LAM_C]))
    return sols[0], mean - m0, sur[0]


def test_bisection_finds_the_smallest_feasible_multiplier() -> None:
    bound = 1.3
    mu_star = exact_mu(bound)  # 0.186
    assert 0.1 < mu_star < 0.3
    sol, delta, sur = run(bound)
    assert sol.mu[0] == pytest.approx(mu_star, rel=0.08)
    assert delta == pytest.approx(shift(mu_star), abs=0.012)  # the projected mean moved by Δ(μ*)
    assert sur <= bound and sur == pytest.approx(bound, abs=0.03)  # feasible and tight
    assert sol.u[0] == pytest.approx(KAPPA * sol.mu[0]) and sol.eta == pytest.approx(LAM + LAM_C * sol.mu[0])


def test_bisection_keeps_mu_zero_when_the_free_step_is_feasible() -> None:
    sol, delta, sur = run(bound=3.0)  # the step at μ = 0 has surrogate 1.625
    assert sol.mu[0] == 0.0
    assert delta == pytest.approx(shift(0.0), abs=0.012) and sur <= 3.0


def test_bisection_on_an_infeasible_task_is_rejected_by_verification() -> None:
    """min over Δ of 1 + 2Δ + 2Δ² is 0.5 > 0.3: no policy of the class is feasible. Far
    tilts make the ratio estimate unreliable, so verification (KL cap) must reject."""
    bound = 0.3
    policy, obs, act, logp_k, a, _ = setup()
    prob = DualProblem(a.adv, a.cost_adv, a.cost_value, np.array([bound]), LAM, np.array([LAM_C]),
                       np.zeros(1), KAPPA)
    sample = solve_dual(prob)
    assert sample.infeasible
    st = AdaptSettings(lam=LAM, lam_c=LAM_C, proj_epochs=150, proj_minibatches=1, proj_lr=0.02,
                       dual="bisection", bisect_iters=4, verify_recovery=False)
    sols, pols = bisect_dual([policy], obs[None], act[None], logp_k[None], torch.ones(1, N), [a], [prob],
                             [sample], np.array([bound]), st, np.random.default_rng(0))
    out, sur, kl, backoffs, ok = verify(pols[0], policy, obs, act, logp_k, a, st, np.array([LAM_C]),
                                        np.array([bound]))
    assert not ok and out is policy and backoffs == st.max_backoffs + 1


def rollout(policy: GaussianPolicy, n: int = 4000, horizon: int = 10) -> Rollout:
    """Bandit-like: obs 0, reward −(a − 0.6)², cost a² per step."""
    obs = np.zeros((n, 1), np.float32)
    act, logp = policy.sample(obs, torch.Generator().manual_seed(5))
    t = np.tile(np.arange(horizon), n // horizon)
    trunc = t == horizon - 1
    cost = act.astype(np.float64) ** 2
    ep = cost.reshape(-1, horizon).sum(1, keepdims=True)
    return Rollout(obs=obs, act=act, logp=logp, reward=-((act[:, 0] - 0.6) ** 2), cost=cost, t=t,
                   terminated=np.zeros(n, bool), truncated=trunc,
                   final_obs=np.zeros((trunc.sum(), 1), np.float32),
                   slices=[slice(0, n)], ep_return=[np.zeros(n // horizon)], ep_cost=[ep], ep_disc_cost=[ep],
                   ep_length=[np.full(n // horizon, horizon)])


class ZeroCritic:
    def predict(self, obs: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.zeros((len(obs), 2))


def test_bisection_needs_no_back_off_where_the_sample_dual_is_too_loose() -> None:
    """Here the sample dual says the free step (μ = 0) is feasible, but its projection
    violates its own surrogate and verification halves it. Bisection raises μ until the
    projection itself holds: no back-off, and a larger accepted step."""
    torch.manual_seed(0)
    policy = GaussianPolicy(1, 1, hidden=[8], init_log_std=float(np.log(0.5)))
    roll = rollout(policy)
    limit = np.array([float(roll.ep_cost[0].mean())])
    out = {}
    for dual in ("sample", "bisection"):
        st = AdaptSettings(lam=1.0, lam_c=1.0, normalize_adv=False, proj_epochs=30, dual=dual,
                           verify_max_kl=0.0)
        (res,) = adapt_batch([policy], roll, [ZeroCritic()], limit, st, np.random.default_rng(0))
        assert res.accepted and res.surrogate[0] <= limit[0]
        out[dual] = res
    assert out["sample"].dual.mu[0] == 0.0 and out["sample"].backoffs >= 1
    assert out["bisection"].dual.mu[0] > 0 and out["bisection"].backoffs == 0
    assert out["bisection"].kl > 2 * out["sample"].kl
