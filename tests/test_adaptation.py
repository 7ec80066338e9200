"""Safe adaptation step (SPEC §2.2, §2.4): sample dual vs the exact dual, projection vs
the closed-form tilted Gaussian, verification and back-off."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
from bandit import ZeroCritic, advantages, config, one_task_rollout, params
from scipy.optimize import brentq, minimize
from scipy.special import logsumexp

from safemeta.core.adaptation import adapt_step, cost_ucb, project, surrogate_cost, verify
from safemeta.core.dual import SampleDual, solve_sample_dual
from safemeta.nn.policy import GaussianPolicy
from safemeta.rollout.advantages import Advantages

# ---- the sample dual on a one-state, many-action problem --------------------------------
K = 6
PROBS = np.array([3, 5, 2, 4, 1, 5]) / 20  # multiples of 1/20: a sample of 20 reproduces π_k exactly
ADV = np.array([1.0, -0.5, 2.0, 0.3, 1.5, -1.0])
COST_ADV = np.array([[0.8, -0.2], [-0.5, 0.1], [1.2, 0.9], [0.0, -0.3], [0.6, 1.0], [-0.9, -0.4]])
LAM, KAPPA = 0.7, 4.0


def exact_policy(mu: np.ndarray, lam_c: np.ndarray, cost_adv: np.ndarray) -> tuple[np.ndarray, float]:
    """π_μ(a) ∝ π_k(a) exp(B_μ(a)/η_μ) over the K actions (SPEC §2.1), and KL(π_μ‖π_k)."""
    eta = LAM + lam_c @ mu
    logits = np.log(PROBS) + (ADV - KAPPA * cost_adv @ mu) / eta
    pi = np.exp(logits - logsumexp(logits))
    return pi, float(pi @ np.log(pi / PROBS))


def exact_g(
    mu: np.ndarray, lam_c: np.ndarray, cost_adv: np.ndarray, jc: np.ndarray, d: np.ndarray
) -> np.ndarray:
    pi, kl = exact_policy(mu, lam_c, cost_adv)
    return jc + KAPPA * pi @ cost_adv + lam_c * kl - d


def replicated(cost_adv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = np.round(PROBS * 20).astype(int)
    idx = np.repeat(np.arange(K), counts)
    return idx, ADV[idx], cost_adv[idx]


def test_dual_one_constraint_matches_exact_root() -> None:
    ca = COST_ADV[:, :1]
    jc, d, lam_c = np.array([1.0]), np.array([0.8]), np.array([0.5])
    assert exact_g(np.zeros(1), lam_c, ca, jc, d)[0] > 0  # the unconstrained tilt is infeasible
    mu_star = brentq(lambda m: exact_g(np.array([m]), lam_c, ca, jc, d)[0], 0, 1e3, xtol=1e-14)
    idx, adv, cadv = replicated(ca)
    sol = solve_sample_dual(SampleDual(adv, cadv, jc, d, LAM, lam_c, np.zeros(1), KAPPA))
    assert sol.mu[0] == pytest.approx(mu_star, rel=1e-7)
    assert sol.u[0] == pytest.approx(KAPPA * mu_star, rel=1e-7)  # the slides' u
    assert sol.eta == pytest.approx(LAM + 0.5 * mu_star, rel=1e-7)
    pi, kl = exact_policy(sol.mu, lam_c, ca)
    np.testing.assert_allclose(np.bincount(idx, weights=sol.weights, minlength=K), pi, atol=1e-9)
    assert sol.kl == pytest.approx(kl, rel=1e-7)
    assert sol.surrogate[0] == pytest.approx(d[0], abs=1e-8)  # the constraint is active
    assert not sol.infeasible


def test_dual_zero_multiplier_when_feasible() -> None:
    ca = COST_ADV[:, :1]
    jc, d, lam_c = np.array([0.0]), np.array([5.0]), np.array([0.5])
    idx, adv, cadv = replicated(ca)
    sol = solve_sample_dual(SampleDual(adv, cadv, jc, d, LAM, lam_c, np.zeros(1), KAPPA))
    assert sol.mu[0] == 0.0 and sol.eta == LAM
    pi, kl = exact_policy(np.zeros(1), lam_c, ca)  # π ∝ π_k exp(A/λ)
    np.testing.assert_allclose(np.bincount(idx, weights=sol.weights, minlength=K), pi, atol=1e-9)
    assert sol.kl == pytest.approx(kl, rel=1e-7)
    assert sol.surrogate[0] == pytest.approx(exact_g(np.zeros(1), lam_c, ca, jc, d)[0] + d[0], rel=1e-7)
    assert sol.surrogate[0] < d[0]


def test_dual_two_constraints_matches_exact_convex_dual() -> None:
    jc, d, lam_c = np.array([1.0, 0.4]), np.array([0.6, 0.2]), np.array([0.5, 0.3])

    def exact_dual(mu: np.ndarray) -> float:  # D(μ) of SPEC §2.2 with exact expectations
        eta = LAM + lam_c @ mu
        return eta * logsumexp(np.log(PROBS) + (ADV - KAPPA * COST_ADV @ mu) / eta) - mu @ (jc - d)

    ref = minimize(
        exact_dual,
        np.ones(2),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000},
    )
    mu_ref = np.maximum(ref.x, 0)
    _, adv, cadv = replicated(COST_ADV)
    sol = solve_sample_dual(SampleDual(adv, cadv, jc, d, LAM, lam_c, np.zeros(2), KAPPA))
    np.testing.assert_allclose(sol.mu, mu_ref, atol=1e-5)
    g = exact_g(sol.mu, lam_c, COST_ADV, jc, d)  # KKT: g ≤ 0, μ_i g_i = 0
    assert np.all(g <= 1e-6) and np.all(np.abs(sol.mu * g) <= 1e-6)
    assert np.all(sol.mu > 0)  # both constraints bind in this instance


def test_dual_on_a_random_sample_and_in_milliseconds() -> None:
    ca = COST_ADV[:, :1]
    jc, d, lam_c = np.array([1.0]), np.array([0.8]), np.array([0.5])
    mu_star = brentq(lambda m: exact_g(np.array([m]), lam_c, ca, jc, d)[0], 0, 1e3, xtol=1e-14)
    idx = np.random.default_rng(0).choice(K, size=200_000, p=PROBS)
    sol = solve_sample_dual(SampleDual(ADV[idx], ca[idx], jc, d, LAM, lam_c, np.zeros(1), KAPPA))
    assert sol.mu[0] == pytest.approx(mu_star, rel=0.03)
    t0 = time.perf_counter()
    small = solve_sample_dual(SampleDual(ADV[idx[:8000]], ca[idx[:8000]], jc, d, LAM, lam_c, np.zeros(1),
                                         KAPPA))
    elapsed = time.perf_counter() - t0
    assert small.mu[0] == pytest.approx(mu_star, rel=0.15)
    assert elapsed < 0.25  # a paper-sized task sample (8k): about ten milliseconds


def test_dual_rejects_nonpositive_lambda() -> None:
    with pytest.raises(ValueError, match="lam"):
        SampleDual(ADV, COST_ADV[:, :1], np.ones(1), np.ones(1), 0.0, np.ones(1), np.zeros(1), 1.0)


# ---- projection onto the Gaussian class (SPEC §2.4 step 3) ------------------------------
def bandit_policy(log_std: float, seed: int = 0) -> GaussianPolicy:
    torch.manual_seed(seed)
    return GaussianPolicy(1, 1, hidden=[8], init_log_std=log_std)


def test_projection_recovers_tilted_gaussian() -> None:
    """π_k = N(m0, s0²), B(a) = −k(a − c)²: π* ∝ π_k exp(B/η) is N(m*, v*) with
    1/v* = 1/s0² + 2k/η and m* = v*(m0/s0² + 2kc/η); the projection must recover it."""
    policy = bandit_policy(np.log(0.8))
    obs = torch.zeros(20_000, 1)
    with torch.no_grad():
        mean_k, log_std_k = policy(obs[:1])
    m0, s0 = float(mean_k), float(log_std_k.exp())
    k, c, eta = 0.6, 0.7, 1.5
    v_star = 1.0 / (1 / s0**2 + 2 * k / eta)
    m_star = v_star * (m0 / s0**2 + 2 * k * c / eta)
    gen = torch.Generator().manual_seed(1)
    act = m0 + s0 * torch.randn(20_000, 1, generator=gen)
    with torch.no_grad():
        logp_k = policy.log_prob(obs, act)
    b = -k * (act[:, 0] - c) ** 2
    st = config(proj_epochs=250, proj_minibatches=1, proj_lr=0.01)
    new = project(policy, obs, act, logp_k, b, eta, st, np.random.default_rng(0))
    with torch.no_grad():
        mean, log_std = new(obs[:1])
    assert float(mean) == pytest.approx(m_star, abs=0.02)
    assert float(log_std.exp()) == pytest.approx(np.sqrt(v_star), rel=0.03)
    assert abs(m_star - m0) > 0.1 and abs(np.sqrt(v_star) - s0) > 0.1  # a real move was recovered


# ---- verification and back-off (SPEC §2.4 step 4) ---------------------------------------
def shifted(policy: GaussianPolicy, shift: float) -> GaussianPolicy:
    new = copy.deepcopy(policy)
    with torch.no_grad():
        new.mean_net[-1].bias.add_(shift)
    return new


def cost_setup(
    n: int = 20_000,
) -> tuple[GaussianPolicy, torch.Tensor, torch.Tensor, torch.Tensor, Advantages]:
    """π_k = N(m0, 0.5²); cost advantage A_c(a) = a − m0 (cost grows with the action)."""
    policy = bandit_policy(np.log(0.5))
    obs = torch.zeros(n, 1)
    with torch.no_grad():
        m0 = float(policy(obs[:1])[0])
    act = m0 + 0.5 * torch.randn(n, 1, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logp_k = policy.log_prob(obs, act)
    cadv = act.numpy().astype(np.float64) - m0
    adv = Advantages(
        adv=cadv[:, 0].copy(), cost_adv=cadv - cadv.mean(0), cost_value=np.array([1.0]), kappa=2.0
    )
    return policy, obs, act, logp_k, adv


def closed_form_surrogate(shift: float, act: torch.Tensor, m0: float, a: Advantages) -> float:
    """Ĵ_c + κ Ê[(π/π_k) A_c] + λ_c KL(π‖π_k) for π = N(m0 + shift, 0.5²), π_k = N(m0, 0.5²),
    λ_c = 1: the density ratio and the KL in closed form."""
    x = act[:, 0].double().numpy() - m0
    ratio = np.exp((x**2 - (x - shift) ** 2) / (2 * 0.25))
    return float(a.cost_value[0] + a.kappa * (ratio @ a.cost_adv[:, 0]) / len(x) + shift**2 / (2 * 0.25))


def test_verification_backs_off_a_violating_step() -> None:
    policy, obs, act, logp_k, a = cost_setup()
    st = config(max_backoffs=10, verify_recovery=False)
    lam_c, bound = np.array([1.0]), np.array([1.3])
    bad = shifted(policy, 0.4)  # surrogate ≈ 1 + 2·0.4 + 0.32 = 2.12 > 1.3
    sur_bad, _ = surrogate_cost(bad, policy, obs, act, logp_k, a, lam_c)
    assert sur_bad[0] > bound[0]
    theta_k, theta = policy.flat_params(), bad.flat_params()
    out, sur, kl, backoffs, ok = verify(copy.deepcopy(bad), policy, obs, act, logp_k, a, st, lam_c, bound)
    assert ok and backoffs >= 1 and sur[0] <= bound[0]
    np.testing.assert_allclose(
        out.flat_params().detach(), theta_k + 0.5**backoffs * (theta - theta_k), atol=1e-6
    )
    # independent check: the accepted policy's mean shift s gives 1 + 2s + s²/(2·0.25)
    s = 0.4 * 0.5**backoffs
    assert sur[0] == pytest.approx(1 + 2 * s + s**2 / 0.5, abs=0.02)
    # The surrogate recomputed in closed form from the returned policy's own mean (not through
    # log_prob or surrogate_cost): exactly two halvings, since a shift of 0.2 gives ≈ 1.48 > 1.3
    # and 0.1 gives ≈ 1.22 ≤ 1.3; the reported surrogate and KL are the returned policy's.
    with torch.no_grad():
        m0, m_out = float(policy(obs[:1])[0]), float(out(obs[:1])[0])
    shift = m_out - m0
    assert backoffs == 2 and shift == pytest.approx(0.1, abs=1e-6)
    assert sur[0] == pytest.approx(closed_form_surrogate(shift, act, m0, a), abs=1e-5)
    assert closed_form_surrogate(shift, act, m0, a) <= bound[0] < closed_form_surrogate(2 * shift, act, m0, a)
    assert kl == pytest.approx(shift**2 / 0.5, rel=1e-4)


def test_verification_rejects_when_nothing_holds() -> None:
    policy, obs, act, logp_k, a = cost_setup()
    st = config(max_backoffs=4, verify_recovery=False)
    out, sur, kl, backoffs, ok = verify(
        shifted(policy, 0.4), policy, obs, act, logp_k, a, st, np.array([1.0]), np.array([0.9])
    )  # π_k itself is infeasible
    assert not ok and out is policy and backoffs == 5 and kl == 0.0
    assert sur[0] == pytest.approx(1.0, abs=1e-6)  # π_k's own surrogate: Ĵ_c


def test_verification_recovery_accepts_only_cost_lowering_steps() -> None:
    policy, obs, act, logp_k, a = cost_setup()
    st = config(max_backoffs=4, verify_recovery=True)
    bound = np.array([0.9])  # π_k infeasible (Ĵ_c = 1)
    _, _, _, _, ok_up = verify(shifted(policy, 0.4), policy, obs, act, logp_k, a, st, np.array([1.0]), bound)
    out, sur, _, _, ok_down = verify(
        shifted(policy, -0.2), policy, obs, act, logp_k, a, st, np.array([1.0]), bound
    )
    assert not ok_up and ok_down and sur[0] < 1.0


def test_adapt_step_never_returns_an_unverified_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A projection that overshoots far past the constraint is backed off or rejected."""
    import safemeta.core.adaptation as adaptation

    policy = bandit_policy(np.log(0.5))
    roll = one_task_rollout(policy)
    jc = float(roll.ep_cost[0].mean())
    monkeypatch.setattr(
        adaptation, "project_batch", lambda pks, *args, **kw: [shifted(pk, 2.0) for pk in pks]
    )
    st = config(lam=1.0, lam_c=1.0, max_backoffs=3, verify_recovery=False, normalize_adv=False)
    limit = np.array([jc + 0.05])
    res = adapt_step(policy, roll, ZeroCritic(), params(st, limit), st, np.random.default_rng(0))
    obs, act = torch.as_tensor(roll.obs), torch.as_tensor(roll.act)
    with torch.no_grad():
        logp_k = policy.log_prob(obs, act)
    a = advantages(roll, ZeroCritic(), policy, st)
    sur, _ = surrogate_cost(res.policy, policy, obs, act, logp_k, a, np.array([1.0]))
    assert sur[0] <= limit[0] + 1e-9
    assert res.backoffs == 4 and not res.accepted and res.policy is policy  # 2.0·2⁻³ still violates
    st.max_backoffs = 12
    res = adapt_step(policy, roll, ZeroCritic(), params(st, limit), st, np.random.default_rng(0))
    sur, _ = surrogate_cost(res.policy, policy, obs, act, logp_k, a, np.array([1.0]))
    assert res.accepted and res.backoffs > 3 and sur[0] <= limit[0]
    assert sur[0] == pytest.approx(res.surrogate[0])


def test_adapt_step_improves_reward_surrogate_and_logs() -> None:
    policy = bandit_policy(np.log(0.5))
    roll = one_task_rollout(policy)
    st = config(lam=1.0, lam_c=1.0, normalize_adv=False, proj_epochs=30)
    limit = np.array([float(roll.ep_cost[0].mean()) + 0.5])
    res = adapt_step(policy, roll, ZeroCritic(), params(st, limit), st, np.random.default_rng(0))
    assert res.accepted and res.kl > 0 and res.dual.eta >= 1.0 and res.surrogate[0] <= limit[0]
    with torch.no_grad():
        m_new, m_old = float(res.policy(torch.zeros(1, 1))[0]), float(policy(torch.zeros(1, 1))[0])
    assert abs(m_new - 0.6) < abs(m_old - 0.6)  # moved toward the reward optimum 0.6
    assert set(res.times) == {"t_dual", "t_projection"}


def test_verification_kl_cap_backs_off_far_steps() -> None:
    policy, obs, act, logp_k, a = cost_setup()
    loose = np.array([100.0])  # the cost constraint holds for every step
    far = shifted(policy, 0.4)  # KL = 0.4² / (2·0.5²) = 0.32
    st = config(verify_max_kl=0.1)
    _, _, kl, backoffs, ok = verify(
        copy.deepcopy(far), policy, obs, act, logp_k, a, st, np.array([1.0]), loose
    )
    assert ok and backoffs == 1 and kl == pytest.approx(0.08, abs=1e-3)  # 0.2²/0.5
    st.verify_max_kl = 0.0
    _, _, kl, backoffs, ok = verify(
        copy.deepcopy(far), policy, obs, act, logp_k, a, st, np.array([1.0]), loose
    )
    assert ok and backoffs == 0 and kl == pytest.approx(0.32, abs=1e-3)


def test_non_finite_sample_is_rejected() -> None:
    policy = bandit_policy(np.log(0.5))
    roll = one_task_rollout(policy)
    roll.reward[3] = np.nan
    st = config(normalize_adv=False)
    res = adapt_step(policy, roll, ZeroCritic(), params(st, np.array([100.0])), st, np.random.default_rng(0))
    assert not res.accepted and res.policy is policy


def test_verify_margin_tightens_the_accepted_surrogate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same overshooting step: with margin m the accepted surrogate is ≤ d − m, and
    it takes more halvings than without the margin."""
    import safemeta.core.adaptation as adaptation

    policy = bandit_policy(np.log(0.5))
    roll = one_task_rollout(policy)
    limit = np.array([float(roll.ep_cost[0].mean()) + 0.3])
    monkeypatch.setattr(
        adaptation, "project_batch", lambda pks, *args, **kw: [shifted(pk, 2.0) for pk in pks]
    )
    out = {}
    for margin in (0.0, 0.2):
        st = config(lam=1.0, lam_c=1.0, max_backoffs=12, normalize_adv=False, verify_margin=margin)
        out[margin] = adapt_step(policy, roll, ZeroCritic(), params(st, limit), st, np.random.default_rng(0))
        assert out[margin].accepted and out[margin].surrogate[0] <= limit[0] - margin
    assert out[0.2].backoffs > out[0.0].backoffs
    assert out[0.0].surrogate[0] > limit[0] - 0.2  # the margin is what made the difference


def test_projection_receives_the_duals_tilt_in_the_slides_scaling(monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC §2.1/§2.4: the projection's target is π_k·exp(B/η) with B = A − Σ u_i A_{c_i},
    u = κμ, η = λ + Σ μ_i λ_{c_i} of the sample dual; checked against `solve_sample_dual` on the
    same advantages, in a binding case (u > 0) with κ ≠ 1."""
    import safemeta.core.adaptation as adaptation

    policy = bandit_policy(np.log(0.5))
    roll = one_task_rollout(policy)
    st = config(lam=1.0, lam_c=0.5, normalize_adv=False)
    a = advantages(roll, ZeroCritic(), policy, st)
    lam_c, zero = np.array([0.5]), np.zeros(1)
    # The λ-only step's surrogate s0; a limit 0.5 below it makes the constraint bind.
    s0 = solve_sample_dual(SampleDual(a.adv, a.cost_adv, a.cost_value, np.array([1e9]), st.lam, lam_c, zero,
                                a.kappa)).surrogate
    limit = s0 - 0.5
    seen = {}

    def capture(pks, obs, act, logp_k, b, mask, eta, *rest):
        seen["b"], seen["eta"] = b[0, : len(roll.obs)].double().numpy(), float(eta[0])
        return list(pks)

    monkeypatch.setattr(adaptation, "project_batch", capture)
    res = adapt_step(policy, roll, ZeroCritic(), params(st, limit), st, np.random.default_rng(0))
    sol = solve_sample_dual(SampleDual(a.adv, a.cost_adv, a.cost_value, limit, st.lam, lam_c, zero, a.kappa))
    assert a.kappa == pytest.approx(10.0) and sol.mu[0] > 0  # auto κ: episode length; binding
    np.testing.assert_allclose(sol.u, a.kappa * sol.mu)
    assert seen["eta"] == pytest.approx(1.0 + 0.5 * sol.mu[0], rel=1e-6)
    np.testing.assert_allclose(seen["b"], a.adv - a.cost_adv[:, 0] * sol.u[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res.dual.u, sol.u)


class TimeCritic:
    """V(s, t) = t for the reward and 2t for the cost: depends on the time index only."""

    def predict(self, obs: np.ndarray, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, np.float64)
        return np.stack([t, 2 * t], axis=1)


def test_time_limit_bootstrap_uses_the_value_at_the_horizon() -> None:
    """At a truncated last step (t = H − 1) the TD target bootstraps with V(s_H, H): with
    λ_GAE = 0 the advantage there is r + γ·H − (H − 1), by hand (reward), and
    c + γ·2H − 2(H − 1) for the cost before centring."""

    policy = bandit_policy(np.log(0.5))
    H, gamma = 10, 0.9
    roll = one_task_rollout(policy, n=200, horizon=H)
    st = config(gamma=gamma, gae_lambda=0.0, normalize_adv=False)
    a = advantages(roll, TimeCritic(), policy, st)
    last = roll.truncated
    np.testing.assert_allclose(a.adv[last], roll.reward[last] + gamma * H - (H - 1), atol=1e-5)
    inner = ~last  # one step inside the episode: r + γ(t+1) − t
    np.testing.assert_allclose(a.adv[inner], roll.reward[inner] + gamma * (roll.t[inner] + 1) - roll.t[inner],
                               atol=1e-5)
    raw_cost = roll.cost[:, 0] + gamma * 2 * (roll.t + 1) - 2 * roll.t
    np.testing.assert_allclose(a.cost_adv[:, 0], raw_cost - raw_cost.mean(), atol=1e-5)


def test_verify_confidence_adds_z_standard_errors_of_the_episode_cost() -> None:
    """The surrogate of π_k itself is Ĵ_c + z·std(episode costs)/√episodes; with room for one
    standard error, z = 2 accepts only a step whose estimated cost is lower by one SE."""
    policy = bandit_policy(np.log(0.5))
    roll = one_task_rollout(policy)
    ep = roll.ep_cost[0][:, 0]
    se = ep.std(ddof=1) / np.sqrt(len(ep))
    obs, act = torch.as_tensor(roll.obs), torch.as_tensor(roll.act)
    with torch.no_grad():
        logp_k = policy.log_prob(obs, act)
    for z in (0.0, 2.0):
        st = config(verify_confidence=z, normalize_adv=False)
        a = advantages(roll, ZeroCritic(), policy, st)
        ucb = cost_ucb(roll.ep_cost[0], z)
        assert np.asarray(ucb) == pytest.approx(z * se, rel=1e-12)
        sur, _ = surrogate_cost(policy, policy, obs, act, logp_k, a, np.array([1.0]), ucb)
        assert sur[0] == pytest.approx(ep.mean() + z * se, rel=1e-9)
    limit = np.array([ep.mean() + se])  # room for one standard error
    res = {}
    for z in (0.0, 2.0):
        st = config(lam=1.0, lam_c=1.0, normalize_adv=False, verify_confidence=z)
        res[z] = adapt_step(policy, roll, ZeroCritic(), params(st, limit), st, np.random.default_rng(0))
    assert all(r.accepted and r.surrogate[0] <= limit[0] for r in res.values())
    # at z = 2 π_k itself fails, so the accepted step must lower the estimated cost by ≥ 1 SE
    estimate = {z: r.surrogate[0] - z * se for z, r in res.items()}
    assert estimate[2.0] <= ep.mean() - se + 1e-9 < estimate[0.0]
