"""The held-out safety test (core/safety_test.py): its bound against hand computations,
its error rate on a bandit whose true costs are known exactly, the split of episodes,
and that a rejected candidate never acts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bandit import config, params

from safemeta.config import ConfigError
from safemeta.core import safety_test as st
from safemeta.core.safety_test import EpisodeSample, split_episodes, upper_bound
from safemeta.nn.policy import GaussianPolicy
from safemeta.rollout.advantages import Advantages
from safemeta.rollout.buffer import Rollout, episode_index

H = 10  # steps per bandit episode; cost a² per step, so J_c(N(μ, σ²)) = H (μ² + σ²) exactly
SIGMA = 0.3


# ---- the bound -------------------------------------------------------------------------------
def test_bound_equals_a_hand_computation() -> None:
    x = np.array([[1.0], [2.0], [4.0], [5.0]])  # mean 3, s² = 10/3
    # Student t: 3 + t_{0.95, 3} · s/√4, t_{0.95,3} = 2.353363 (tables); no skew, no correction
    assert upper_bound(x, 0.05, "t")[0] == pytest.approx(3 + 2.353363 * np.sqrt(10 / 3) / 2, rel=1e-6)
    # right-skewed [0, 0, 0, 4]: mean 1, s = 2, skewness ĝ = mean((x − 1)³)/s³ = (3·(−1) + 27)/4/8 = 0.75;
    # 1 + (2/2)(t + 0.75 (2t² + 1)/(6·2))
    t = 2.353363
    hand = 1 + (t + 0.75 * (2 * t**2 + 1) / 12)
    assert upper_bound(np.array([[0.0], [0], [0], [4]]), 0.05, "t")[0] == pytest.approx(hand, rel=1e-6)
    # empirical Bernstein on [0, 10]: 3 + √(2 s² ln 40 / 4) + 7·10·ln 40 / (3·3)
    ln40 = np.log(40.0)
    hand = 3 + np.sqrt(2 * (10 / 3) * ln40 / 4) + 70 * ln40 / 9
    assert upper_bound(x, 0.05, "bernstein", 10.0)[0] == pytest.approx(hand, rel=1e-12)
    # clipping to the declared range, per constraint; fewer than 2 values state nothing
    two = np.array([[12.0, 1.0], [-2.0, 1.0]])
    assert upper_bound(two, 0.05, "bernstein", 10.0)[1] == pytest.approx(1 + 70 * ln40 / 3, rel=1e-12)
    assert upper_bound(two, 0.05, "bernstein", 10.0)[0] == pytest.approx(
        5 + np.sqrt(2 * 50 * ln40 / 2) + 70 * ln40 / 3, rel=1e-12)
    assert np.isinf(upper_bound(x[:1], 0.05, "t")).all()


def test_moderated_bound_equals_a_hand_computation() -> None:
    """safety_variance=moderated: s² → (s0² + s²)/2 on 2(m − 1) degrees of freedom, s0² the
    other tasks' mean variance (leave-one-out), Hall's skewness taken with that spread."""
    a, b, e = np.zeros((4, 1)), np.array([[1.0], [2.0], [4.0], [5.0]]), np.array([[0.0], [2], [0], [2]])
    one, bad = np.ones((1, 1)), np.array([[1.0], [np.nan]])  # no variance; not finite: left out
    priors = st.prior_variances([a, b, e, one, bad])
    hand = [(10 / 3 + 4 / 3) / 2, (0 + 4 / 3) / 2, (0 + 10 / 3) / 2]
    assert [p[0] for p in priors[:3]] == pytest.approx(hand)
    assert priors[3][0] == pytest.approx((0 + 10 / 3 + 4 / 3) / 3)
    assert st.prior_variances([a, b]) == [None, None]  # fewer than 2 other tasks: the own bound
    t6 = 1.943180  # t_{0.95, 6} (tables)
    hand = t6 * np.sqrt(7 / 6) / 2
    assert upper_bound(a, 0.05, "t", prior_var=priors[0])[0] == pytest.approx(hand, rel=1e-6)
    # skewed [0, 0, 0, 4]: mean 1, s² = 4, µ̂₃ = 6; prior 2: s̃² = 3, ĝ = 6/3^1.5
    g = 6 / 3**1.5
    hand = 1 + np.sqrt(3) / 2 * (t6 + g * (2 * t6**2 + 1) / 12)
    skewed = np.array([[0.0], [0], [0], [4]])
    assert upper_bound(skewed, 0.05, "t", prior_var=np.array([2.0]))[0] == pytest.approx(hand, rel=1e-6)
    cfg = config(safety_variance="moderated", safety_alpha=0.1)  # own_bound: α/2 = 0.05
    assert st.own_bound(a, cfg, priors[0])[0] == pytest.approx(t6 * np.sqrt(7 / 6) / 2, rel=1e-6)
    assert st.own_bound(a, config(safety_alpha=0.1), priors[0])[0] == 0.0  # 'own' (default): no spread, 0
    with pytest.raises(ConfigError, match="safety_variance: got 'moderated' with safety_test=bernstein"):
        config(safety_variance="moderated", safety_test="bernstein", safety_range=10.0)


def test_moderated_bound_covers_a_sparse_cost_where_the_own_t_does_not() -> None:
    """Ten tasks × ten episodes of a sparse cost (200 with probability 0.05, else 0): the own-
    sample t bound at 97.5% is 0 whenever all ten episodes are 0 (60% of tasks), the
    moderated one covers the true mean 10 at its level."""
    rng = np.random.default_rng(0)
    own = mod = 0
    for _ in range(200):
        tasks = [(rng.random((10, 1)) < 0.05) * 200.0 for _ in range(10)]
        priors = st.prior_variances(tasks)
        own += sum(upper_bound(c, 0.025)[0] >= 10.0 for c in tasks)
        mod += sum(upper_bound(c, 0.025, prior_var=p)[0] >= 10.0 for c, p in zip(tasks, priors))
    assert own / 2000 < 0.45  # (1 − 0.95^10 = 0.40 of tasks show any cost)
    assert mod / 2000 >= 0.96


def test_episode_surrogates_by_hand() -> None:
    """X_j = C_j + κ Σ_{t∈j} (ρ_t − 1) A_c / L̄ + λ_c Σ_{t∈j} KL_t / L̄ on 2 episodes of 2 steps."""
    ref, pol = _constant_policy(0.0), _constant_policy(0.2)
    obs = torch.zeros(4, 1)
    act = torch.tensor([[0.1], [-0.2], [0.4], [0.0]])
    with torch.no_grad():
        logp_k = ref.log_prob(obs, act)
    cost_adv = np.array([[1.0], [-1.0], [2.0], [-2.0]])
    part = EpisodeSample(obs, act, logp_k, Advantages(np.zeros(4), cost_adv, np.array([3.0]), 2.0),
                         np.array([0, 0, 1, 1]), np.array([[2.0], [4.0]]))
    x, kl = st.episode_surrogates(pol, ref, part, np.array([5.0]))
    a = act[:, 0].numpy().astype(np.float64)
    rho = np.exp((-(a - 0.2) ** 2 + a**2) / (2 * SIGMA**2))
    kl_step = 0.2**2 / (2 * SIGMA**2)  # KL of two Gaussians with one σ, means 0.2 apart
    change = np.array([(rho[0] - 1) * 1 - (rho[1] - 1), 2 * (rho[2] - 1) - 2 * (rho[3] - 1)])
    hand = np.array([2.0, 4.0]) + 2.0 * change / 2 + 5.0 * 2 * kl_step / 2
    assert x[:, 0] == pytest.approx(hand, rel=1e-5)
    assert kl == pytest.approx(kl_step, rel=1e-5)
    # at π = π_k every X_j is π_k's own episode cost (the control variate)
    assert st.episode_surrogates(ref, ref, part, np.array([5.0]))[0][:, 0] == pytest.approx([2.0, 4.0])


# ---- the error rate on a bandit with known costs -------------------------------------------------
def _constant_policy(mean: float) -> GaussianPolicy:
    """N(mean, SIGMA²) whatever the observation (no hidden layer, zero weights)."""
    pol = GaussianPolicy(1, 1, [], init_log_std=np.log(SIGMA))
    flat = pol.flat_params().clone()
    flat.zero_()
    pol.set_flat_params(flat)
    with torch.no_grad():
        pol.log_std.fill_(float(np.log(SIGMA)))
        for p in pol.mean_net.parameters():
            if p.ndim == 1:
                p.fill_(mean)
    return pol


def _held_out(policy_k: GaussianPolicy, m: int, rng: np.random.Generator) -> EpisodeSample:
    """m fresh bandit episodes of π_k, with the per-step cost as its own (centred) advantage
    (a critic predicting 0 and GAE λ = 0)."""
    obs = torch.zeros(m * H, 1)
    with torch.no_grad():
        mean, log_std = policy_k(obs[:1])
    act = torch.as_tensor(mean.item() + np.exp(log_std.item()) * rng.standard_normal((m * H, 1)),
                          dtype=torch.float32)
    with torch.no_grad():
        logp_k = policy_k.log_prob(obs, act)
    cost = act.numpy().astype(np.float64) ** 2
    ep_cost = cost.reshape(m, H).sum(1, keepdims=True)
    adv = Advantages(np.zeros(m * H), cost - cost.mean(0), ep_cost.mean(0), float(H))
    return EpisodeSample(obs, act, logp_k, adv, np.repeat(np.arange(m), H), ep_cost)


def _true_cost(pol: GaussianPolicy) -> float:
    with torch.no_grad():
        mean, log_std = pol(torch.zeros(1, 1))
    return H * (mean.item() ** 2 + np.exp(2 * log_std.item()))


def _accept_rates(mean_k: float, mean_c: float, limit: float, seeds: int, m: int = 20,
                  **over: object) -> tuple[float, float, float]:
    """Over `seeds` fresh held-out samples: the rate of accepting a policy whose true cost
    exceeds the limit (or, recovering, exceeds π_k's own), of accepting the full step, of
    keeping π_k."""
    cfg = config(lam_c=0.0, **over)
    par = params(cfg, [limit])
    pk, cand = _constant_policy(mean_k), _constant_policy(mean_c)
    recovering = np.array([_true_cost(pk) > limit])
    ceiling = _true_cost(pk) if recovering[0] else limit
    bad = full = kept = 0
    for seed in range(seeds):
        held = _held_out(pk, m, np.random.default_rng(seed))
        own_ub = st.own_bound(held.ep_cost, cfg)
        decrease = st.decrease_allowed(recovering, own_ub, par.bound, cfg)
        out = st.safety_test(cand, pk, held, own_ub, par, cfg, decrease)
        kept += out.status == st.KEPT
        full += out.status == st.ACCEPTED
        bad += out.status != st.KEPT and _true_cost(out.policy) > ceiling
        assert out.status != st.KEPT or out.policy is pk
    return bad / seeds, full / seeds, kept / seeds


def test_an_unsafe_step_is_accepted_at_rate_at_most_alpha() -> None:
    """π_k = N(0, 0.3²) (true cost 0.9), the candidate N(0.1, 0.3²) (true cost 1.0, KL 0.056,
    a large adaptation step) against a limit 0.96, 20 held-out episodes: the full step is
    unsafe, its halves (0.925, 0.906) are safe."""
    seeds, alpha = 400, 0.05
    bad, full, _ = _accept_rates(0.0, 0.1, 0.96, seeds)
    assert bad <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / seeds)
    assert full == bad  # only the full step is unsafe here
    # the same step against a limit 1.7 is clearly safe: accepted in full nearly always
    bad, full, kept = _accept_rates(0.0, 0.1, 1.7, 100)
    assert bad == 0 and full >= 0.8 and kept <= 0.02


def test_fixed_sequence_keeps_the_rate_at_most_alpha() -> None:
    """The same unsafe full step under the fixed sequence (1/4, 1/2, 1, each at α/2): it can
    only be handed out after its safe halves, and at most at rate α."""
    seeds, alpha = 400, 0.05
    bad, full, _ = _accept_rates(0.0, 0.1, 0.96, seeds, safety_multiplicity="fixed_sequence")
    assert bad <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / seeds)
    assert full == bad


def _tested_means(monkeypatch: pytest.MonkeyPatch, limit: float, rule: str
                  ) -> tuple[list[float], st.TestOutcome]:
    """The policy means the test evaluates, in order, for π_k = N(0, 0.3²) and the candidate
    N(0.1, 0.3²) (fractions 1, 1/2, 1/4 have means 0.1, 0.05, 0.025), on 2000 held-out
    episodes, so that every decision is far from chance."""
    cfg = config(lam_c=0.0, safety_multiplicity=rule)
    pk, cand = _constant_policy(0.0), _constant_policy(0.1)
    held = _held_out(pk, 2000, np.random.default_rng(0))
    means: list[float] = []
    surrogates = st.episode_surrogates

    def recorded(policy, ref, part, lam_c):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            means.append(round(policy(torch.zeros(1, 1))[0].item(), 6))
        return surrogates(policy, ref, part, lam_c)

    monkeypatch.setattr(st, "episode_surrogates", recorded)
    out = st.safety_test(cand, pk, held, st.own_bound(held.ep_cost, cfg), params(cfg, [limit]), cfg,
                         np.array([False]))
    return means, out


def test_the_two_rules_test_the_fractions_in_their_orders(monkeypatch: pytest.MonkeyPatch) -> None:
    # true costs: π_k 0.9, fractions 1/4, 1/2, 1: 0.90625, 0.925, 1.0; limit 0.96 between the
    # half and the full step: Bonferroni tests 1 (fails) then 1/2 (passes); the sequence tests
    # 1/4, 1/2 (pass) and 1 (fails), and hands out the largest that passed: 1/2 either way
    means, out = _tested_means(monkeypatch, 0.96, "bonferroni")
    assert means == [0.1, 0.05] and out.status == st.BACKED_OFF and out.fraction == 0.5
    means, out = _tested_means(monkeypatch, 0.96, "fixed_sequence")
    assert means == [0.025, 0.05, 0.1] and out.status == st.BACKED_OFF and out.fraction == 0.5
    # a limit every fraction meets: Bonferroni stops at the full step, the sequence reaches it
    means, out = _tested_means(monkeypatch, 1.5, "bonferroni")
    assert means == [0.1] and out.status == st.ACCEPTED and out.fraction == 1.0
    means, out = _tested_means(monkeypatch, 1.5, "fixed_sequence")
    assert means == [0.025, 0.05, 0.1] and out.status == st.ACCEPTED and out.fraction == 1.0
    # a limit below π_k's own cost: the sequence stops at its first fraction and keeps π_k
    means, out = _tested_means(monkeypatch, 0.8, "fixed_sequence")
    assert means == [0.025] and out.status == st.KEPT


def test_each_rule_spends_its_share_of_alpha() -> None:
    d = np.array([[1.0], [2.0], [4.0], [5.0]])  # mean 3, s² = 10/3, no skew
    # Bonferroni with K = 3: each change at α/(2K) = 0.05/6, t_{1 − 0.05/6, 3} = 4.851...;
    # the fixed sequence: α/2 = 0.025, t_{0.975, 3} = 3.182446 (tables)
    from scipy import stats
    t6 = stats.t.ppf(1 - 0.05 / 6, 3)
    assert st.change_bound(d, config())[0] == pytest.approx(3 + t6 * np.sqrt(10 / 3) / 2, rel=1e-9)
    seq = config(safety_multiplicity="fixed_sequence")
    assert st.change_bound(d, seq)[0] == pytest.approx(3 + 3.182446 * np.sqrt(10 / 3) / 2, rel=1e-6)
    assert st.change_width(d, 4, seq)[0] == pytest.approx(3.182446 * np.sqrt(10 / 3) / 2, rel=1e-6)


def test_trajectory_ess_by_hand() -> None:
    """π_k = N(0, 0.3²), π = N(0.1, 0.3²) on 3 fixed bandit episodes of 10 steps:
    log ρ(a) = (a² − (a − 0.1)²)/(2·0.09) per step, W_j = exp(Σ_t log ρ), ESS = (ΣW)²/ΣW²."""
    pk, new = _constant_policy(0.0), _constant_policy(0.1)
    held = _held_out(pk, 3, np.random.default_rng(4))
    a = held.act.numpy()[:, 0].astype(np.float64)
    log_w = ((a**2 - (a - 0.1) ** 2) / (2 * SIGMA**2)).reshape(3, H).sum(1)
    w = np.exp(log_w)
    assert st.trajectory_ess(new, held) == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-5)
    assert st.trajectory_ess(pk, held) == pytest.approx(3.0)  # π = π_k: every weight 1
    # the guard: a share of 0.9 of 20 episodes fails a step far from π_k, which the test
    # passes without it (a limit every fraction meets)
    far = _constant_policy(0.3)
    held = _held_out(pk, 20, np.random.default_rng(5))
    assert st.trajectory_ess(far, held) < 18
    for share, status in ((0.0, st.ACCEPTED), (0.9, st.KEPT)):
        cfg = config(lam_c=0.0, safety_min_ess=share, safety_retests=1)
        out = st.safety_test(far, pk, held, st.own_bound(held.ep_cost, cfg), params(cfg, [5.0]), cfg,
                             np.array([False]))
        assert out.status == status


def test_recovery_accepts_a_verified_decrease_only() -> None:
    """π_k = N(0.5, 0.3²) is over the limit (3.4 > 1.0). A step to N(0.4, 0.3²) (2.5: still
    over, but lower) is a verified decrease; a step to N(0.6, 0.3²) (4.5) must be refused
    (and its halves, 3.925 and 3.6, too)."""
    seeds, alpha = 300, 0.05
    bad, full, _ = _accept_rates(0.5, 0.4, 1.0, seeds)
    assert bad == 0 and full >= 0.9
    bad, _, kept = _accept_rates(0.5, 0.6, 1.0, seeds)
    assert bad <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / seeds)
    assert kept >= 1 - alpha - 3 * np.sqrt(alpha * (1 - alpha) / seeds)


def test_always_accepts_a_verified_decrease_where_pi_k_cannot_be_certified() -> None:
    """π_k = N(0.1, 0.3²) is within the limit (1.0 ≤ 1.02), but 40 episodes bound its cost at
    about 1.15: the default keeps π_k for a step to N(0, 0.3²) (0.9, lower; its halves 0.925,
    0.956); with `safety_decrease = always` that step, or a half of it, is a verified decrease
    and runs. A step to N(0.15, 0.3²) (1.125, and its halves 1.056 and 1.027: all over) is
    still refused at rate ≥ 1 − α."""
    seeds, alpha = 300, 0.05
    bad, _, kept = _accept_rates(0.1, 0.0, 1.02, seeds, m=40)
    assert bad == 0 and kept >= 0.85
    bad, _, kept = _accept_rates(0.1, 0.0, 1.02, seeds, m=40, safety_decrease="always")
    assert bad == 0 and kept <= 0.2
    bad, _, kept = _accept_rates(0.1, 0.15, 1.02, seeds, m=40, safety_decrease="always")
    assert bad <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / seeds)
    assert kept >= 1 - alpha - 3 * np.sqrt(alpha * (1 - alpha) / seeds)


class _Captured(Exception):
    pass


def _dual_aim(monkeypatch: pytest.MonkeyPatch, limit_at: float, **over: object) -> tuple[float, float, float]:
    """What the dual of `adapt_tested` aims at for one bandit task of π_k = N(0.1, 0.3²), 40
    episodes: (the aim Ĵ_c(π_k) on the candidate part + its ucb, π_k's own bound, the mean of
    its episodes), with the limit at `limit_at` between the mean (0) and the own bound (1)."""
    from bandit import ZeroCritic, advantages, one_task_rollout

    cfg = config(**over)
    pk = _constant_policy(0.1)
    roll = one_task_rollout(pk, n=400)
    own_ub = float(st.own_bound(roll.ep_cost[0], cfg)[0])
    mean = float(roll.ep_cost[0].mean())
    par = params(cfg, [mean + limit_at * (own_ub - mean)])
    cand, held = split_episodes(roll, cfg.safety_split, np.random.default_rng(0))
    adv_c, adv_h = (advantages(r, ZeroCritic(), pk, cfg) for r in (cand, held))
    seen: list[np.ndarray] = []

    def capture(*args, ucbs, **kw):  # type: ignore[no-untyped-def]
        seen.append(np.asarray(ucbs[0]))
        raise _Captured

    monkeypatch.setattr(st, "adapt_batch", capture)
    with pytest.raises(_Captured):
        st.adapt_tested([pk], roll, cand, held, [adv_c], [adv_h], par, cfg, np.random.default_rng(1))
    return float(seen[0][0] + cand.ep_cost[0].mean()), own_ub, mean


def test_the_dual_aims_at_the_rule_the_test_will_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """Limit between π_k's mean and its own bound: by default the dual aims at the own bound
    (the step must bring it under d); with `safety_decrease = always` at d + δ itself (a step
    that does not raise the cost passes). π_k over the limit (recovering): the own bound
    either way."""
    aim, own_ub, mean = _dual_aim(monkeypatch, 0.5)
    assert own_ub > mean + 0.05 and aim == pytest.approx(own_ub)
    aim, own_ub, mean = _dual_aim(monkeypatch, 0.5, safety_decrease="always")
    assert aim == pytest.approx(mean + 0.5 * (own_ub - mean))
    for rule in ("recovering", "always"):
        aim, own_ub, _ = _dual_aim(monkeypatch, -0.5, safety_decrease=rule)
        assert aim == pytest.approx(own_ub)


# ---- the split ---------------------------------------------------------------------------------
def _marked_rollout() -> Rollout:
    """Two tasks of uneven episodes, terminated and truncated; every transition's obs and
    cost carry (task, episode), and so does each truncated step's final observation."""
    lengths = [[3, 5, 2, 4, 1, 3], [2, 2, 6, 3, 1, 4, 2, 5]]
    obs, cost, term, trunc, final, t, slices, ep_cost = [], [], [], [], [], [], [], []
    for task, ls in enumerate(lengths):
        start = len(obs)
        for ep, n in enumerate(ls):
            for k in range(n):
                obs.append([task, ep])
                cost.append([100 * task + ep])
                t.append(k)
                end = k == n - 1
                term.append(end and ep % 2 == 0)
                trunc.append(end and ep % 2 == 1)
                if end and ep % 2 == 1:
                    final.append([task, ep])
        slices.append(slice(start, len(obs)))
        ep_cost.append(np.array([[(100 * task + ep) * n] for ep, n in enumerate(ls)], float))
    n = len(obs)
    return Rollout(
        obs=np.array(obs, np.float32), act=np.zeros((n, 1), np.float32), logp=np.zeros(n, np.float32),
        reward=np.zeros(n), cost=np.array(cost, float), t=np.array(t), terminated=np.array(term),
        truncated=np.array(trunc), final_obs=np.array(final, np.float32), slices=slices,
        ep_return=[np.arange(len(ls), dtype=float) for ls in lengths], ep_cost=ep_cost,
        ep_disc_cost=[c.copy() for c in ep_cost], ep_length=[np.array(ls) for ls in lengths],
    )


def test_candidate_and_safety_parts_never_share_an_episode() -> None:
    roll = _marked_rollout()
    for seed in range(5):
        cand, held = split_episodes(roll, 0.4, np.random.default_rng(seed))
        for i, n_eps in enumerate((6, 8)):
            marks = [{tuple(o) for o in part.task(i).obs.astype(int)} for part in (cand, held)]
            assert not marks[0] & marks[1]
            assert len(marks[0]) + len(marks[1]) == n_eps
            assert len(marks[1]) == round(0.4 * n_eps)
            for part in (cand, held):
                r = part.task(i)
                eps = sorted(e for _, e in {tuple(o) for o in r.obs.astype(int)})
                # statistics, episode index and final observations follow their episodes
                assert r.ep_return[0].tolist() == eps
                assert r.ep_cost[0][:, 0].tolist() == [(100 * i + e) * roll.ep_length[i][e] for e in eps]
                assert np.array_equal(r.obs[:, 1].astype(int), np.array(eps)[episode_index(r)[0]])
                assert np.array_equal(r.final_obs, r.obs[r.truncated])
                assert (r.cost[:, 0] == 100 * i + r.obs[:, 1]).all()


# ---- a rejected candidate never acts -------------------------------------------------------------
def test_a_rejected_candidate_never_collects_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every policy that collects post-adaptation data is π_φ itself (the very object) or a
    policy the held-out test passed; kept tasks are counted as kept."""
    from test_meta import make_algo

    from safemeta.meta_learner import Phase

    passed: list[torch.Tensor] = []
    refused = []
    real_test = st.safety_test

    def spy_test(candidate, policy_k, held, own_ub, par, cfg, decrease):  # type: ignore[no-untyped-def]
        out = real_test(candidate, policy_k, held, own_ub, par, cfg, decrease)
        if out.status != st.KEPT:
            passed.append(out.policy.flat_params().detach().cpu().clone())
        else:
            assert out.policy is policy_k
            refused.append(candidate)
        return out

    monkeypatch.setattr(st, "safety_test", spy_test)
    algo = make_algo(seed=1, limit=3.0, episodes_per_task=12, safety_inflate=0.0)  # bold candidates
    collected: list[tuple[Phase, list]] = []
    real_collect = algo.collect

    def spy_collect(tasks, current, phase, counter, first=0, episodes=None):  # type: ignore[no-untyped-def]
        collected.append((phase, [c.policy for c in current]))
        return real_collect(tasks, current, phase, counter, first, episodes)

    monkeypatch.setattr(algo, "collect", spy_collect)
    kept = accepted = 0
    for it in range(4):
        row = algo.train_iteration(it)
        kept += row["n_kept"]
        accepted += row["n_accepted"] + row["n_backed_off"]
        for phase, policies in collected:
            if phase != Phase.POST:
                continue
            for pol in policies:
                if pol is algo.policy:
                    continue
                assert any(torch.equal(pol.flat_params().detach(), p) for p in passed)
        collected.clear()
    assert kept > 0 and accepted > 0 and refused  # every case occurred, a candidate refused by the test too


def test_a_shared_critic_never_sees_the_held_out_episodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the shared MLP critic, between a collection and its safety test the critic is
    fitted on the candidate part alone (meta-training's inner step and meta-test): a fit on
    all the episodes first would warm-start it on the held-out ones."""
    from test_meta import make_algo

    import safemeta.core.meta as core_meta
    from safemeta.nn.critic import MLPCritic

    fitted: list[int] = []  # rows of each critic fit since the last collection
    tested: list[tuple[list[int], int]] = []  # (fits before the test, candidate rows)
    cand_rows: list[int] = []
    real_fit, real_split, real_test = MLPCritic.fit, core_meta.split_episodes, st.safety_test

    def spy_fit(self, obs, t, targets, rng=None):  # type: ignore[no-untyped-def]
        fitted.append(len(obs))
        return real_fit(self, obs, t, targets, rng)

    def spy_split(data, fraction, rng):  # type: ignore[no-untyped-def]
        cand, held = real_split(data, fraction, rng)
        cand_rows.append(len(cand.obs))
        return cand, held

    def spy_test(*args, **kw):  # type: ignore[no-untyped-def]
        tested.append((list(fitted), cand_rows[-1]))
        return real_test(*args, **kw)

    monkeypatch.setattr(MLPCritic, "fit", spy_fit)
    monkeypatch.setattr(core_meta, "split_episodes", spy_split)
    monkeypatch.setattr(st, "safety_test", spy_test)
    algo = make_algo(seed=2, critic="mlp")
    real_collect = algo.collect

    def spy_collect(*args, **kw):  # type: ignore[no-untyped-def]
        fitted.clear()
        return real_collect(*args, **kw)

    monkeypatch.setattr(algo, "collect", spy_collect)
    algo.train_iteration(0)
    n_train = len(tested)
    algo.meta_test(algo.tasks["test"], 1)
    assert n_train > 0 and len(tested) > n_train  # both paths ran the test
    for fits, rows in tested:
        assert fits == [rows]  # one fit, on the candidate part's rows only


def test_recovery_by_task_and_the_report_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`meta_learner.recovery` finds the first step back under the limit; the report lists
    every task that started over it, with that step or 'not recovered'."""
    import json

    from safemeta.experiment.report import adaptation_section
    from safemeta.meta_learner import recovery
    from safemeta.rollout.evaluation import interval

    costs = np.array([[30.0, 10.0, 40.0], [27.0, 12.0, 41.0], [20.0, 9.0, 39.0]])[:, :, None]  # step, task, p
    over_ = costs[:, :, 0] > 25.0
    cis = [[interval(np.array([c, c])) for c in row[:, 0]] for row in costs]
    status = [["kept (recovering)", "accepted", "kept (recovering)"], ["accepted (recovering)", "kept", None]]
    tasks = recovery(costs, over_, np.array([25.0]), cis, status)
    assert [t["adaptation"] for t in tasks] == [["kept (recovering)", "accepted (recovering)"],
                                                ["accepted", "kept"], ["kept (recovering)", None]]
    assert [t["started_over"] for t in tasks] == [True, False, True]
    assert [t["back_under_at"] for t in tasks] == [2, None, None]
    (tmp_path / "meta_test_tasks.json").write_text(json.dumps(tasks))
    rows = [{"step": t, "n_accepted": 1, "n_backed_off": 0, "n_kept": 2, "n_recovering": 2, "n_over": 2}
            for t in range(3)]
    text = "\n".join(adaptation_section(rows, tmp_path / "meta_test_tasks.json"))
    assert "2 task(s) started over the limit" in text
    assert "| 0 | 30 | 25 | 2 | 30 -> 27 -> 20 | kept (recovering), accepted (recovering) |" in text
    assert "| 2 | 40 | 25 | not recovered | 40 -> 41 -> 39 | kept (recovering), - |" in text
    assert text.count("\n| 0 | 1 | 0 | 2 | 2 | 2 |") == 1  # the per-step counts (the last step has none)


def test_step_status_names_what_the_step_did() -> None:
    from safemeta.meta_learner import step_status

    accepted = {"n_accepted": 1.0, "n_backed_off": 0.0, "n_kept": 0.0, "n_recovering": 0.0}
    assert step_status(accepted) == "accepted"
    assert step_status({"n_accepted": 0.0, "n_backed_off": 1.0, "n_kept": 0.0, "n_recovering": 1.0}) == \
        "backed off (recovering)"
    assert step_status({"n_accepted": 0.0, "n_backed_off": 0.0, "n_kept": 1.0, "n_recovering": 0.0}) == "kept"
    assert step_status({"kl": 0.01}) is None  # an algorithm without the safety test's columns


# ---- the benchmark's reuse of the verification ------------------------------------------------
def test_the_benchmark_reuses_only_a_matching_verification(tmp_path) -> None:
    import json
    from pathlib import Path

    bench = _bench()
    v = bench.VERIFICATION
    assert v in bench.METHODS

    def rec(run, rnd, true_episodes, sets, test_sets, accepted):
        key = json.dumps({"true_episodes": true_episodes, "sets": sets, "test_sets": test_sets})
        counts = {v: {"accepted": accepted, "gains": [1.0]}, "safety test (t, α=0.05)": {"accepted": 0}}
        return json.dumps({"run": run, "key": key, "round": rnd, "counts": counts})

    f = tmp_path / "a.rounds.jsonl"
    f.write_text("\n".join([rec("r", 0, 200, [], [], 7),  # reused: another --test-set does not matter
                            rec("r", 1, 200, [], ["safety_min_ess=0.5"], 8),
                            rec("r", 2, 100, [], [], 9),  # other --true-episodes
                            rec("r", 3, 200, ["lam_c=1"], [], 9),  # other --set
                            rec("other", 4, 200, [], [], 9),  # other run
                            '{"run": "r", "cut by a ki']))
    got = bench.recorded_verification([f, tmp_path / "missing.jsonl"], Path("r"), 200, [])
    assert {k: c["accepted"] for k, c in got.items()} == {0: 7, 1: 8}


def _bench():  # type: ignore[no-untyped-def]
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "safety_test.py"
    spec = importlib.util.spec_from_file_location("bench_safety_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _append_many(path, tag: int, n: int) -> None:  # type: ignore[no-untyped-def]
    bench = _bench()
    for i in range(n):  # lines far longer than a pipe's or a stdio buffer's atomic size
        rec = {"run": "r", "key": "{}", "round": 1000 * tag + i, "counts": {"x": "y" * 70_000}}
        bench.append_record(path, rec)


def test_benchmark_shards_share_one_rounds_file_without_cutting_a_line(tmp_path) -> None:
    import multiprocessing as mp

    bench = _bench()
    assert bench.parse_shard(None) == (0, 1) and bench.parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "-1/2", "a/2", "1"):
        with pytest.raises(SystemExit, match="--shard: got"):
            bench.parse_shard(bad)
    f = tmp_path / "x.rounds.jsonl"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(f, tag, 40)) for tag in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    rounds = sorted(rec["round"] for rec, _ in bench.records(f))
    assert rounds == [*range(1000, 1040), *range(2000, 2040)]  # every line whole, none lost
    assert len([line for line in f.read_text().splitlines() if line]) == 80


def test_benchmark_counts_how_often_the_bound_covers_the_true_cost() -> None:
    from pathlib import Path
    from types import SimpleNamespace

    bench = _bench()
    rec = lambda moved, bound, true: {"moved": moved, "true_cost": [true], "test_bound": bound}  # noqa: E731
    tasks = [rec(True, 20.0, 19.0), rec(True, 0.01, 9.1), rec(True, 5.0, 5.0), rec(False, 3.0, 12.0),
             rec(False, 30.0, 12.0), rec(True, None, 40.0)]  # the last: a method without the test
    o = {"feasible": 5, "accepted": 4, "missed": 1, "kept": 2, "gains": [1.0, 0.0], "times": [0.1],
         "tasks": tasks}
    r = SimpleNamespace(spec=SimpleNamespace(env="toy"))
    res = bench.summary(Path("run"), r, np.array([25.0]), 10, 200, [], {"test": o}, 10)
    assert res["methods"]["test"]["bound_covers"] == [2, 3]  # kept tasks hold another bound: not counted
    assert "| 2/3 |" in bench.table([res])
