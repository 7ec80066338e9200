"""The Lagrangian baselines (SPEC §3): the multiplier on a hand sequence and against
OmniSafe's torch implementation, MAML-Lag's second-order meta-gradient against a closed
form and finite differences, PPO-Lag's per-task λ and cost step on a constructed sample,
and short deterministic runs of both on the toy suite."""

from __future__ import annotations

import copy
import dataclasses
import io
import math

import numpy as np
import pytest
import torch

from safemeta.algorithm import METRIC_COLUMNS
from safemeta.baselines.maml_lag import (
    MAMLLag,
    MAMLLagConfig,
    TaskBatch,
    adapted_params,
    meta_kl,
    meta_surrogate,
)
from safemeta.baselines.ppo_lag import PPOLag, PPOLagConfig
from safemeta.config import build
from safemeta.meta_learner import MetaLearner
from safemeta.nn.policy import GaussianPolicy
from safemeta.rollout.advantages import Advantages
from safemeta.rollout.buffer import Rollout
from safemeta.rollout.toy import PointMassSuite
from safemeta.updates.lagrange import Lagrange
from safemeta.updates.second_order import forward_with
from safemeta.updates.trpo import flat_grad


# ---- (a) the multiplier -----------------------------------------------------------------------
def test_multiplier_rises_over_the_limit_falls_under_it_and_stays_nonnegative() -> None:
    """Plain ascent λ ← max(0, λ + lr·(J_c − d)), d = 1, lr = 0.5, λ_0 = 0.2, by hand."""
    lag = Lagrange(1.0, lr=0.5, init=0.2, optimizer="sgd")
    costs = [3.0, 2.0, 0.0, 0.0, 0.0, 0.0, 2.5]
    expected = [1.2, 1.7, 1.2, 0.7, 0.2, 0.0, 0.75]  # 0.2 − 0.5 is projected to 0, not −0.3
    got = [float(lag.update(c)[0]) for c in costs]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    capped = Lagrange(1.0, lr=0.5, init=0.2, optimizer="sgd", upper=1.5)
    assert [float(capped.update(c)[0]) for c in costs[:3]] == pytest.approx([1.2, 1.5, 1.0])
    assert Lagrange(1.0, init=-3.0).lam[0] == 0.0
    # one multiplier per constraint
    vec = Lagrange(np.array([1.0, 2.0]), lr=0.5, init=0.0, optimizer="sgd")
    np.testing.assert_allclose(vec.update(np.array([3.0, 1.0])), [1.0, 0.0])


def test_adam_multiplier_matches_omnisafes_torch_implementation() -> None:
    """OmniSafe: Adam on lambda_loss = −λ·(J_c − d), then clamp_(0, upper); first step exactly lr."""
    costs = [40.0, 31.0, 26.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 12.0, 60.0, 24.9, 25.1]
    lag = Lagrange(25.0, lr=0.035, init=0.001, optimizer="adam")
    lam_t = torch.nn.Parameter(torch.tensor(0.001, dtype=torch.float64))
    optim = torch.optim.Adam([lam_t], lr=0.035)
    ours, theirs = [], []
    for c in costs:
        ours.append(float(lag.update(c)[0]))
        optim.zero_grad()
        (-lam_t * (c - 25.0)).backward()
        optim.step()
        lam_t.data.clamp_(0.0)
        theirs.append(float(lam_t.detach()))
    assert ours[0] == pytest.approx(0.001 + 0.035, abs=1e-9)  # Adam's first step: lr·sign(g)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    assert min(ours) == 0.0 and ours[:3] == sorted(ours[:3])  # projected at 0; rises while over


def test_multiplier_state_round_trip() -> None:
    a = Lagrange(1.0, lr=0.1)
    for c in (3.0, 2.0):
        a.update(c)
    b = Lagrange(1.0, lr=0.1, init=7.0)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert [float(a.update(c)[0]) for c in (0.5, 4.0)] == [float(b.update(c)[0]) for c in (0.5, 4.0)]


# ---- (b) MAML-Lag's second-order meta-gradient --------------------------------------------------
# A 1-D Gaussian bandit, one state x̃ = 1: π_φ = N(m, s²), m = w·x̃ + b, s = e^ℓ, φ = (w, b, ℓ).
ALPHA = 0.3
PRE_A = np.array([[0.9, -0.4, 0.2, 1.3, -1.1], [0.1, 0.6, -0.8, 0.4, 1.5]])  # two tasks' inner data
PRE_W = np.array([[1.0, -0.5, 0.3, 1.2, -0.9], [-0.2, 0.8, -1.0, 0.1, 0.7]])  # Lagrangian advantages
POST_A = np.array([[0.7, 1.1, -0.2, 0.5], [-0.3, 0.9, 0.4, -0.6]])
POST_W = np.array([[0.8, 1.5, -1.2, 0.1], [-0.4, 1.0, 0.6, -0.9]])
X = 1.0 / math.sqrt(1.0 + 1e-8)  # the normaliser's output for x = 1 at its initial statistics


def log_normal(a: np.ndarray, m: float, ls: float) -> np.ndarray:
    return -0.5 * ((a - m) / np.exp(ls)) ** 2 - ls - 0.5 * math.log(2 * math.pi)


def inner_step(w: float, b: float, ls: float, k: int) -> tuple[float, float, float]:
    """θ' = φ + α ∇_φ Ê[log π_φ(a) · u] in closed form."""
    m, s2, a, u = w * X + b, math.exp(2 * ls), PRE_A[k], PRE_W[k]
    g_m, g_ls = float(np.mean(u * (a - m) / s2)), float(np.mean(u * ((a - m) ** 2 / s2 - 1)))
    return w + ALPHA * g_m * X, b + ALPHA * g_m, ls + ALPHA * g_ls


def post_objective(theta: tuple[float, float, float], k: int, logp_old: np.ndarray) -> float:
    w, b, ls = theta
    return float(np.mean(np.exp(log_normal(POST_A[k], w * X + b, ls) - logp_old) * POST_W[k]))


def closed_form(phi: np.ndarray, logp_old: list[np.ndarray]) -> float:
    """L(φ) = mean_τ Ê_post[(π_{θ'_τ(φ)}/π_old)(a) · w_post]."""
    return float(np.mean([post_objective(inner_step(*phi, k), k, logp_old[k]) for k in range(2)]))


def central_diff(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    out = np.zeros_like(x)
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = h
        out[i] = (f(x + e) - f(x - e)) / (2 * h)
    return out


def bandit_batches(policy: GaussianPolicy) -> tuple[list[TaskBatch], list[TaskBatch]]:
    def t(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float64)

    ones = torch.ones(1, policy.obs_dim, dtype=torch.float64)
    inner = [TaskBatch(ones.expand(5, -1), t(PRE_A[k])[:, None], t(PRE_W[k])) for k in range(2)]
    outer = [TaskBatch(ones.expand(4, -1), t(POST_A[k])[:, None], t(POST_W[k]),
                       torch.full((4,), -1.0, dtype=torch.float64))  # π_old: any fixed log-probabilities
             for k in range(2)]
    return inner, outer


def test_second_order_meta_gradient_matches_closed_form_and_differs_from_first_order() -> None:
    policy = GaussianPolicy(1, 1, hidden=[], init_log_std=math.log(0.8)).double()
    with torch.no_grad():
        policy.mean_net[0].weight.fill_(0.3)
        policy.mean_net[0].bias.fill_(0.1)
        policy.log_std.fill_(math.log(0.8))  # in float64 (the constructor rounds it to float32)
    assert [n for n, _ in policy.named_parameters()] == ["log_std", "mean_net.0.weight", "mean_net.0.bias"]
    order = [2, 0, 1]  # (w, b, ℓ) of the closed form -> (ℓ, w, b), the order of policy.parameters()
    phi = np.array([0.3, 0.1, math.log(0.8)])
    inner, outer = bandit_batches(policy)
    logp_old = [np.full(4, -1.0)] * 2
    value = float(meta_surrogate(inner, outer, ALPHA)(policy).detach())
    assert value == pytest.approx(closed_form(phi, logp_old), rel=1e-12)
    params = list(policy.parameters())
    g_so = flat_grad(meta_surrogate(inner, outer, ALPHA)(policy), params).numpy()
    g_fd = central_diff(lambda p: closed_form(p, logp_old), phi)[order]
    np.testing.assert_allclose(g_so, g_fd, rtol=1e-6, atol=1e-9)
    assert np.linalg.norm(g_so) > 0.1  # not trivially zero
    # FO-MAML: ∇_θ' of the post objective at θ'(φ), the inner step's Jacobian taken as I
    g_fo = flat_grad(meta_surrogate(inner, outer, ALPHA, second_order=False)(policy), params).numpy()
    g_fo_fd = np.mean([central_diff(lambda th, k=k: post_objective(tuple(th), k, logp_old[k]),
                                    np.array(inner_step(*phi, k))) for k in range(2)], axis=0)[order]
    np.testing.assert_allclose(g_fo, g_fo_fd, rtol=1e-6, atol=1e-9)
    assert np.linalg.norm(g_so - g_fo) > 0.2 * np.linalg.norm(g_so)  # the second-order term matters


def test_second_order_gradient_and_fisher_product_match_finite_differences_through_an_mlp() -> None:
    """Through a tanh layer: the surrogate's gradient, and the KL's Hessian-vector product
    that TRPO's conjugate gradient uses (differentiated through the inner step too)."""
    torch.manual_seed(0)
    policy = GaussianPolicy(1, 1, hidden=[3], init_log_std=math.log(0.8)).double()
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    inner, outer = bandit_batches(policy)
    params = list(policy.parameters())
    surrogate = meta_surrogate(inner, outer, ALPHA)
    phi0 = policy.flat_params().clone()

    def at(flat: torch.Tensor, f) -> float:
        policy.set_flat_params(flat)
        with torch.no_grad():
            return float(f(policy))

    g = flat_grad(surrogate(policy), params)
    h = 1e-6
    fd = torch.tensor([(at(phi0 + h * e, surrogate) - at(phi0 - h * e, surrogate)) / (2 * h)
                       for e in torch.eye(len(phi0), dtype=torch.float64)], dtype=torch.float64)
    policy.set_flat_params(phi0)
    torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-9)
    assert g.norm() > 0.05
    # KL(π_{θ'(φ_old)} ‖ π_{θ'(φ)}): zero at φ_old, its Hessian along v by differences of gradients
    kl_obs = [b.obs[:2] for b in outer]
    with torch.no_grad():
        old = [forward_with(policy, adapted_params(policy, b, ALPHA, False), o)
               for b, o in zip(inner, kl_obs)]
    kl = meta_kl(inner, kl_obs, old, ALPHA)
    assert float(kl(policy).detach()) == pytest.approx(0.0, abs=1e-14)
    v = torch.linspace(-1, 1, len(phi0), dtype=torch.float64)
    hv = flat_grad(flat_grad(kl(policy), params, create_graph=True) @ v, params)

    def grad_kl_at(flat: torch.Tensor) -> torch.Tensor:
        policy.set_flat_params(flat)
        return flat_grad(kl(policy), params)

    hv_fd = (grad_kl_at(phi0 + 1e-5 * v) - grad_kl_at(phi0 - 1e-5 * v)) / 2e-5
    policy.set_flat_params(phi0)
    torch.testing.assert_close(hv, hv_fd, rtol=1e-5, atol=1e-9)
    assert hv.norm() > 1e-2


# ---- (c) PPO-Lag on a constructed sample --------------------------------------------------------
def toy_suite(limit: float = 0.6) -> PointMassSuite:
    return PointMassSuite(horizon=8, cost_limit=limit)


def make(cls: type[MetaLearner], cfg_cls: type, seed: int = 0, limit: float = 0.6, **over: object):
    suite = toy_suite(limit)
    cfg = build(cfg_cls, dict(seed=seed, meta_batch=3, episodes_per_task=6, val_tasks=2, test_tasks=3,
                              eval_every=2, eval_episodes=3, hidden=[16], max_kl=0.02), over)
    rng = np.random.default_rng(7)
    tasks = {"val": suite.sample_tasks(2, rng, "train"), "test": suite.sample_tasks(3, rng, "test")}
    return cls(cfg, suite, tasks, np.random.SeedSequence(seed))


def constructed_rollout(policy: GaussianPolicy, cost_values: list[float], n: int = 256) -> Rollout:
    """Tasks of n transitions (episodes of 8), reward advantage 0, cost a² with A_c = a² − mean:
    only the cost term moves the policy."""
    gen = np.random.default_rng(1)
    tasks = len(cost_values)
    obs = gen.normal(0, 1, (tasks * n, 2)).astype(np.float32)
    act = gen.normal(0, 0.6, (tasks * n, 1)).astype(np.float32)
    with torch.no_grad():
        logp = policy.log_prob(torch.as_tensor(obs), torch.as_tensor(act)).numpy()
    t = np.tile(np.arange(n) % 8, tasks)
    truncated = t == 7
    eps = n // 8
    roll = Rollout(obs=obs, act=act, logp=logp, reward=np.zeros(tasks * n), cost=act.astype(np.float64) ** 2,
                   t=t, terminated=np.zeros(tasks * n, bool), truncated=truncated,
                   final_obs=obs[truncated], slices=[slice(i * n, (i + 1) * n) for i in range(tasks)],
                   ep_return=[np.zeros(eps)] * tasks, ep_cost=[np.full((eps, 1), c) for c in cost_values],
                   ep_disc_cost=[np.full((eps, 1), c) for c in cost_values],
                   ep_length=[np.full(eps, 8)] * tasks)
    roll.advantages = []
    for i, c in enumerate(cost_values):
        a_c = roll.cost[roll.slices[i]]
        roll.advantages.append(Advantages(np.zeros(n), a_c - a_c.mean(0), np.array([c]), 8.0))
    return roll


def cost_surrogate(policy: GaussianPolicy, roll: Rollout, i: int) -> float:
    """Ê[(π/π^t)(a|s) A_c] on task i's sample (0 at π = π^t)."""
    s = roll.slices[i]
    with torch.no_grad():
        logp = policy.log_prob(torch.as_tensor(roll.obs[s]), torch.as_tensor(roll.act[s])).numpy()
    return float(np.mean(np.exp(logp - roll.logp[s]) * roll.advantages[i].cost_adv[:, 0]))


def test_ppo_lag_multiplier_per_task_and_cost_step() -> None:
    algo = make(PPOLag, PPOLagConfig)  # d = 0.6; λ_0 = 0.001, Adam lr 0.035
    roll = constructed_rollout(algo.policy, [2.0, 0.1])  # task 0 over its limit, task 1 under
    first = algo.adapt(roll, algo.meta_policies(2))
    lam = [float(a.state["lagrange"].lam[0]) for a in first]
    assert lam[0] == pytest.approx(0.036, abs=1e-9) and lam[1] == 0.0  # 0.001 − 0.035 projected to 0
    assert first[0].log["lam"] == lam[0]
    assert cost_surrogate(first[0].policy, roll, 0) < -0.02  # the step lowers the over-limit task's cost
    # λ = 0 and zero reward advantage: zero weights, the policy's parameters do not move
    for p, q in zip(first[1].policy.parameters(), algo.policy.parameters()):
        assert torch.equal(p, q)
    assert algo.policy is not first[0].policy and first[0].state is not first[1].state
    # each task carries its own multiplier: rises again on task 0, stays projected on task 1
    roll2 = constructed_rollout(first[0].policy, [2.0, 0.1])
    second = algo.adapt(roll2, first)
    assert float(second[0].state["lagrange"].lam[0]) == pytest.approx(0.071, abs=1e-6)
    assert float(second[1].state["lagrange"].lam[0]) == 0.0
    assert float(first[0].state["lagrange"].lam[0]) == lam[0]  # the previous step's state untouched
    assert set(second[0].state) == {"lagrange", "optim"} and second[0].state["optim"]["state"]


# ---- (d) short runs on the toy suite ------------------------------------------------------------
def strip_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not (k.startswith("t_") or k == "time_s")} for r in rows]


def check_rows(rows: list[dict], cls: type[MetaLearner]) -> None:
    for r in rows:
        assert set(METRIC_COLUMNS) <= set(r) <= set(METRIC_COLUMNS) | set(cls.extra_columns), r
        for k, v in r.items():
            if isinstance(v, float):
                assert math.isfinite(v), (k, v)


def maml_run(seed: int, **over: object) -> list[dict]:
    algo = make(MAMLLag, MAMLLagConfig, seed=seed, **over)
    rows = [algo.train_iteration(it) for it in range(2)] + algo.meta_test(algo.tasks["test"], 2)
    assert algo.finite()
    return rows


def test_maml_lag_short_run_is_finite_and_deterministic() -> None:
    rows = maml_run(3)
    check_rows(rows, MAMLLag)
    train = rows[:2]
    for col in ("pre_reward", "post_reward", "n_violations", "t_sampling", "t_critic", "t_adapt", "t_outer",
                "lam", "lam_meta", "outer_accepted", "outer_kl"):
        assert col in train[0], col
    assert train[0]["eval_source"] == "val" and train[1]["eval_source"] == "post"
    assert train[0]["lam_meta"] == pytest.approx(0.001) and train[0]["lam"] == pytest.approx(0.001)
    assert any(r["outer_accepted"] == 1.0 for r in train)
    assert [r["step"] for r in rows[2:]] == [0, 1, 2]
    assert strip_times(maml_run(3)) == strip_times(rows)
    assert strip_times(maml_run(4)) != strip_times(rows)


def test_maml_lag_multiplier_rises_with_the_post_adaptation_cost_and_survives_a_checkpoint() -> None:
    """d = 0.01, far below Σa² of any policy: after each meta-iteration λ takes one Adam step
    on λ·(J̄_c − d), J̄_c the batch's mean post-adaptation episode cost (first step: lr = 0.035)."""
    a = make(MAMLLag, MAMLLagConfig, seed=5, limit=0.01, eval_every=100)
    full = strip_times([a.train_iteration(it) for it in range(3)])
    lam = [r["lam_meta"] for r in full]
    ref, expected = Lagrange(0.01, 0.035, 0.001, "adam"), [0.001]
    for r in full[:-1]:
        expected.append(float(ref.update(r["post_cost_undiscounted"])[0]))
    assert lam == pytest.approx(expected, abs=1e-12)
    assert lam[1] == pytest.approx(0.036, abs=1e-9) and lam[2] > lam[1]
    assert all(r["lam"] == pytest.approx(r["lam_meta"]) for r in full)  # the inner steps' λ
    b = make(MAMLLag, MAMLLagConfig, seed=5, limit=0.01, eval_every=100)
    first = strip_times([b.train_iteration(0)])
    buf = io.BytesIO()
    torch.save(b.state_dict(), buf)
    buf.seek(0)
    c = make(MAMLLag, MAMLLagConfig, seed=99, limit=0.01, eval_every=100)
    c.load_state_dict(torch.load(buf, weights_only=False))
    assert first + strip_times([c.train_iteration(it) for it in (1, 2)]) == full


def test_maml_lag_meta_test_multiplier_fixed_or_per_task() -> None:
    """Over its limit on every test task: with `adapt` each task's λ rises after the first step
    (which uses the meta-λ); with `fixed` every step uses the meta-λ."""
    adapt = make(MAMLLag, MAMLLagConfig, limit=0.01).meta_test(make(MAMLLag, MAMLLagConfig).tasks["test"], 3)
    fixed = make(MAMLLag, MAMLLagConfig, limit=0.01, test_lambda="fixed").meta_test(
        make(MAMLLag, MAMLLagConfig).tasks["test"], 3)
    lam = [r["lam"] for r in adapt]  # per step, the mean over tasks of the λ of the step from π^t
    assert lam[:2] == pytest.approx([0.001, 0.036], abs=1e-9) and 0.036 < lam[2] < 0.08 and lam[3] == 0.0
    assert [r["lam"] for r in fixed] == pytest.approx([0.001, 0.001, 0.001, 0.0])


def ppo_run(seed: int) -> list[dict]:
    algo = make(PPOLag, PPOLagConfig, seed=seed, ppo_epochs=3)
    rows = algo.meta_test(algo.tasks["test"], 2)
    assert algo.finite()
    return rows


def test_ppo_lag_short_run_is_finite_and_deterministic() -> None:
    rows = ppo_run(3)
    check_rows(rows, PPOLag)
    assert [r["step"] for r in rows] == [0, 1, 2] and all(r["phase"] == "meta_test" for r in rows)
    assert rows[0]["lam"] > 0 and rows[0]["ppo_epochs_run"] >= 1 and rows[2]["time_s"] > rows[1]["time_s"] > 0
    assert strip_times(ppo_run(3)) == strip_times(rows)
    assert strip_times(ppo_run(4)) != strip_times(rows)


# ---- configs and presets ------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [PPOLag, MAMLLag])
def test_configs_are_bounded_and_presets_share_the_budgets(cls: type[MetaLearner]) -> None:
    for f in dataclasses.fields(cls.Config):
        if f.metadata.get("choices") is None and f.type not in ("bool", bool, "str", str):
            assert f.metadata.get("low") is not None and f.metadata.get("high") is not None, f.name
    for suite_id in ("halfcheetah-vel", "point-circle"):
        ours, base = cls.presets(suite_id), MetaLearner.presets(suite_id)
        assert set(ours) == {"quick", "medium", "paper"}
        for name in ("quick", "medium", "paper"):
            build(cls.Config, ours[name])
            expected = {**base[name], "iterations": 0} if cls is PPOLag else base[name]
            assert ours[name] == expected
