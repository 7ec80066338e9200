"""Safe meta-training and meta-test (SPEC §2.6, §2.7): the Hessian-free meta-gradient vs
finite differences, determinism, state round trip, metrics contract."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

from safemeta.algorithm import METRIC_COLUMNS
from safemeta.config import ConfigError, build
from safemeta.core.meta import SafeMeta, SafeMetaConfig, crpo_switch, missed_steps
from safemeta.nn.policy import GaussianPolicy
from safemeta.rollout.toy import PointMassSuite
from safemeta.updates import policy_gradient
from safemeta.updates.policy_gradient import ratio_surrogate
from safemeta.updates.trpo import flat_grad

# ---- the Hessian-free meta-gradient on a Gaussian bandit task distribution ---------------
GOALS = np.array([-0.4, 0.3, 0.9])  # task τ: reward r_τ(a) = −(a − c_τ)²
K_TILT, ETA = 0.8, 1.3  # adaptation advantage held fixed: B_τ(a) = −k(a − c_τ)², η fixed


def adapted(m: float, log_s: float, c: float) -> tuple[float, float]:
    """π_τ ∝ N(m, s²)·exp(B_τ/η) = N(m_τ, v_τ): 1/v_τ = 1/s² + 2k/η, m_τ = v_τ(m/s² + 2kc/η)."""
    s2 = np.exp(2 * log_s)
    v = 1.0 / (1.0 / s2 + 2 * K_TILT / ETA)
    return v * (m / s2 + 2 * K_TILT * c / ETA), v


def adapted_return(m: float, log_s: float) -> float:
    """E_τ[J_τ(π_τ)] = E_τ[−((m_τ − c_τ)² + v_τ)], exact."""
    out = []
    for c in GOALS:
        mt, v = adapted(m, log_s, c)
        out.append(-((mt - c) ** 2 + v))
    return float(np.mean(out))


def test_meta_gradient_matches_finite_differences() -> None:
    torch.manual_seed(0)
    policy = GaussianPolicy(1, 1, hidden=[8], init_log_std=np.log(0.7))
    with torch.no_grad():
        m = float(policy(torch.zeros(1, 1))[0])
    log_s = float(policy.log_std.detach())
    h = 1e-5
    fd_m = (adapted_return(m + h, log_s) - adapted_return(m - h, log_s)) / (2 * h)
    fd_s = (adapted_return(m, log_s + h) - adapted_return(m, log_s - h)) / (2 * h)
    # post-adaptation data: a ~ π_τ, A^{π_τ}(a) = r_τ(a) − J_τ(π_τ), per task
    n, gen = 40_000, np.random.default_rng(0)
    acts, advs = [], []
    for c in GOALS:
        mt, v = adapted(m, log_s, c)
        a = gen.normal(mt, np.sqrt(v), n)
        acts.append(a)
        advs.append(-((a - c) ** 2) + ((mt - c) ** 2 + v))
    act = torch.as_tensor(np.concatenate(acts), dtype=torch.float32)[:, None]
    adv = torch.as_tensor(np.concatenate(advs), dtype=torch.float32)
    obs = torch.zeros(len(act), 1)
    with torch.no_grad():
        logp_old = policy.log_prob(obs, act)
    params = list(policy.parameters())
    g = flat_grad(ratio_surrogate(obs, act, logp_old, adv)(policy), params)  # one backward pass

    def offset(param: torch.Tensor) -> int:
        return sum(p.numel() for p in params[: [id(p) for p in params].index(id(param))])

    # mean = (...) + last-layer bias, so d/d bias = d/dm; and d/d log_std
    g_m, g_s = float(g[offset(policy.mean_net[-1].bias)]), float(g[offset(policy.log_std)])
    # per-sample terms of the estimator, for its standard error
    s2 = np.exp(2 * log_s)
    a_np, adv_np = act[:, 0].double().numpy(), adv.double().numpy()
    terms_m = adv_np * (a_np - m) / s2
    terms_s = adv_np * ((a_np - m) ** 2 / s2 - 1)
    se_m, se_s = terms_m.std() / np.sqrt(len(a_np)), terms_s.std() / np.sqrt(len(a_np))
    assert g_m == pytest.approx(terms_m.mean(), rel=1e-3)  # autograd = the closed-form score
    assert abs(g_m - fd_m) < 4 * se_m and abs(fd_m) > 10 * se_m
    assert abs(g_s - fd_s) < 4 * se_s and abs(fd_s) > 10 * se_s


# ---- the algorithm on the toy suite ---------------------------------------------------------
def make_algo(seed: int = 0, limit: float = 0.6, **over: object) -> SafeMeta:
    suite = PointMassSuite(horizon=8, cost_limit=limit)
    cfg = build(
        SafeMetaConfig,
        dict(
            seed=seed,
            meta_batch=3,
            episodes_per_task=6,
            val_tasks=2,
            test_tasks=3,
            eval_every=2,
            eval_episodes=3,
            proj_epochs=3,
            hidden=[16],
            max_kl=0.02,
        ),
        over,
    )
    rng = np.random.default_rng(7)
    tasks = {"val": suite.sample_tasks(2, rng, "train"), "test": suite.sample_tasks(3, rng, "test")}
    return SafeMeta(cfg, suite, tasks, np.random.SeedSequence(seed))


def strip_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not (k.startswith("t_") or k == "time_s")} for r in rows]


def _three_iterations(seed: int, **over: object) -> list[dict]:
    algo = make_algo(seed=seed, **over)
    assert algo.cfg.dual == over.get("dual", "sample")  # the config the adaptation step reads
    rows = [algo.train_iteration(it) for it in range(3)]
    rows += algo.meta_test(algo.tasks["test"], 2)
    return strip_times(rows)


@pytest.mark.parametrize("dual", ["sample", "bisection"])
def test_two_runs_with_one_seed_are_identical(dual: str) -> None:
    runs = [_three_iterations(3, dual=dual) for _ in range(2)]
    assert runs[0] == runs[1]
    other = make_algo(seed=4, dual=dual)
    assert strip_times([other.train_iteration(0)]) != runs[0][:1]
    if dual == "bisection":  # it changes the multipliers the adaptation steps used (on all the data)
        sample, bisect = (_three_iterations(3, dual=d, safety_test="off") for d in ("sample", "bisection"))
        assert [r["u_mean"] for r in bisect[:3]] != [r["u_mean"] for r in sample[:3]]


@pytest.mark.parametrize("critic", ["linear", "mlp"])
def test_state_dict_round_trip_continues_identically(critic: str) -> None:
    a = make_algo(seed=5, critic=critic)
    full = strip_times([a.train_iteration(it) for it in range(3)])
    b = make_algo(seed=5, critic=critic)
    first = strip_times([b.train_iteration(0)])
    buf = io.BytesIO()
    torch.save(b.state_dict(), buf)
    buf.seek(0)
    c = make_algo(seed=99, critic=critic)  # different seed: everything must come from the state
    c.load_state_dict(torch.load(buf, weights_only=False))
    rest = strip_times([c.train_iteration(it) for it in (1, 2)])
    assert first + rest == full


def test_metric_rows_contract() -> None:
    algo = make_algo(outer_step="first-order")
    row = algo.train_iteration(0)  # 0 % eval_every == 0: validation tasks
    for col in (
        *METRIC_COLUMNS,
        "u_mean",
        "eta",
        "kl",
        "backoffs",
        "pre_reward",
        "pre_cost_max",
        "n_violations",
        "t_sampling",
        "t_critic",
        "t_dual",
        "t_projection",
        "t_outer",
    ):
        assert col in row, col
    assert set(row) <= set(METRIC_COLUMNS) | set(SafeMeta.extra_columns)
    assert row["phase"] == "meta_train" and row["step"] == 1 and row["eval_source"] == "val"
    assert row["cost_limit"] == 0.6 and 0 <= row["violation_rate"] <= 1
    assert algo.train_iteration(1)["eval_source"] == "post"
    rows = algo.meta_test(algo.tasks["test"], 2)
    assert [r["step"] for r in rows] == [0, 1, 2] and all(r["phase"] == "meta_test" for r in rows)
    assert all(r["cost_max"] >= r["cost_mean"] for r in rows)
    assert rows[0]["time_s"] == 0.0 and rows[2]["time_s"] >= rows[1]["time_s"] > 0
    assert algo.finite()


def test_cost_step_when_meta_policy_violates() -> None:
    """CRPO switching: π_φ over the limit on some task → the outer step lowers the cost."""
    algo = make_algo(seed=1, init_log_std=0.5)  # wide Gaussian: Σa² far above the limit
    rows = [algo.train_iteration(it) for it in range(4)]
    assert rows[0]["n_violations"] > 0 and rows[0]["outer_cost_step"] == 1.0
    assert rows[-1]["pre_cost_mean"] < rows[0]["pre_cost_mean"]


def test_crpo_switch_on_the_upper_bound_counts_tasks_few_episodes_cannot_clear() -> None:
    """meta_switch_alpha > 0: a task switches when the (1 − α) bound of its episode costs
    exceeds (1 − margin)·d, by hand: costs (0, 0, 0, 40) have mean 10 (under 23.75 = 0.95·25),
    s = 20, skewness 0.75, t_{0.95,3} = 2.35336, so the bound is 10 + 10·(2.35336 + 0.75·
    (2·2.35336² + 1)/12) = 41.0815: switched; a constant 10 has bound 10: not; 30 is over either way."""
    episodes = [np.array([0.0, 0.0, 0.0, 40.0])[:, None], np.full((4, 1), 10.0), np.full((4, 1), 30.0)]
    mean = np.stack([e.mean(0) for e in episodes])
    d, zero = np.array([25.0]), np.array([0.0])
    t = 2.353363434801823
    assert 10 + 10 * (t + 0.75 * (2 * t**2 + 1) / 12) == pytest.approx(41.0815, abs=1e-4)
    np.testing.assert_array_equal(crpo_switch(mean, d, zero, 0.05)[:, 0], [False, False, True])
    np.testing.assert_array_equal(crpo_switch(mean, d, zero, 0.05, episodes, 0.05)[:, 0], [True, False, True])
    # the bound of task 0 sits between 41.08 and 41.083: a limit that puts the threshold there decides
    for limit, switched in ((41.08, [True, False, False]), (41.083, [False, False, False])):
        np.testing.assert_array_equal(
            crpo_switch(mean, np.array([limit / 0.95]), zero, 0.05, episodes, 0.05)[:, 0], switched)


@pytest.mark.parametrize(
    ("delta", "pre_cost", "post_cost", "switched"),
    [
        # threshold (1 − 0.05)·0.6 + 0 = 0.57: π_φ violates on tasks 0 and 2, no adapted π_τ does
        (0.0, [0.9, 0.1, 0.575], [0.1, 0.1, 0.1], [True, False, True]),
        # every adapted π_τ violates, π_φ does not (0.565 < 0.57)
        (0.0, [0.1, 0.565, 0.3], [0.9, 0.9, 0.9], [False, False, False]),
        # δ = 0.1: threshold 0.67, π_φ over it only on task 1; the post costs say the opposite
        (0.1, [0.66, 0.68, 0.1], [0.9, 0.1, 0.9], [False, True, False]),
    ],
)
def test_crpo_switch_reads_the_meta_policys_cost(
    monkeypatch: pytest.MonkeyPatch, delta: float, pre_cost: list, post_cost: list, switched: list
) -> None:
    """SPEC §2.6 step 3: a task switches the meta-step to cost reduction when J_c(π_φ), the
    pre-adaptation cost, exceeds (1 − meta_margin)·d + δ, whatever the adapted policies cost;
    the cost step's weights are −A_c on exactly the switched tasks' pre-adaptation data."""
    np.testing.assert_array_equal(
        crpo_switch(np.array(pre_cost)[:, None], np.array([0.6]), np.array([delta]), 0.05),
        np.array(switched)[:, None])
    algo = make_algo(seed=1, eval_every=100, delta=delta)  # d = 0.6, meta_margin = 0.05
    costs = iter([pre_cost, post_cost])  # the mean episode costs of the pre, then the post rollouts
    collect, step = algo.collect, algo.policy_step
    seen: dict = {}

    def fixed_cost(*args: object) -> object:
        roll = collect(*args)
        cost = np.array(next(costs))[:, None]
        roll.cost_return = lambda kind: cost
        seen.setdefault("rolls", []).append(roll)
        return roll

    def spy(data: object, weights: np.ndarray, states: np.ndarray) -> dict:
        seen["data"], seen["weights"] = data, weights
        return step(data, weights, states)

    monkeypatch.setattr(algo, "collect", fixed_cost)
    monkeypatch.setattr(algo, "policy_step", spy)
    row = algo.train_iteration(1)
    pre, post = seen["rolls"]
    assert seen["data"] is (pre if any(switched) else post)
    if any(switched):  # nonzero weights exactly on the switched tasks
        moved = [bool(np.any(seen["weights"][s] != 0)) for s in pre.slices]
        assert moved == switched
    assert row["n_switch"] == sum(switched) and row["outer_cost_step"] == float(any(switched))
    assert row["n_violations"] == sum(c > 0.6 + delta for c in pre_cost)  # vs d + δ, no margin
    assert row["pre_cost_max"] == max(pre_cost) and row["post_cost_max"] == max(post_cost)


def test_theory_hyperparameters_and_presets() -> None:
    from safemeta.core.theory import theory_params

    algo = make_algo(hyper="theory", theory_alpha=2.0, theory_a_max=1.5, theory_a_c_max=0.5, gamma=0.9)
    th = theory_params(2.0, 1.5, np.array([0.5]), 0.0, 0.9, None)
    assert algo.params.lam == pytest.approx(th.lam)
    np.testing.assert_allclose(algo.params.lam_c, th.lam_c)
    np.testing.assert_allclose(algo.params.delta, 0.0)  # ε at its maximum: δ = 0
    assert make_algo().params.lam_c[0] == pytest.approx(0.6)  # λ_c defaults to 1·d
    assert make_algo(lam_c_scale=2.0).params.lam_c[0] == pytest.approx(1.2)
    assert make_algo(lam_c=0.5).params.lam_c[0] == 0.5
    with pytest.raises(ConfigError, match="outer_step"):
        build(SafeMetaConfig, {"outer_step": "sgd"})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device"):
            make_algo(device="cuda")
    for suite_id in ("halfcheetah-vel", "point-circle", "humanoid-dir"):
        p = SafeMeta.presets(suite_id)
        build(SafeMetaConfig, p["quick"])
        paper = build(SafeMetaConfig, p["paper"])
        assert paper.meta_batch == 10 and paper.test_tasks == 20 and paper.test_steps == 20
        assert paper.horizon == 0  # the suite's default horizon (its cost limit is quoted for it)
        assert paper.steps_per_task == (5000 if suite_id == "point-circle" else 8000)
        medium = build(SafeMetaConfig, p["medium"])
        # the switch on each task's upper bound with 20 episodes, the mean with quick's 10
        assert medium.meta_switch_alpha == paper.meta_switch_alpha == 0.05
        assert build(SafeMetaConfig, p["quick"]).meta_switch_alpha == 0.0
        assert medium.iterations == 200 and medium.episodes_per_task == 20
        assert medium.test_episodes_per_task == 40 and paper.test_episodes_per_task == 0
    assert build(SafeMetaConfig, SafeMeta.presets("car-circle")["medium"]).iterations == 60
    button = build(SafeMetaConfig, SafeMeta.presets("point-button")["medium"])
    assert button.iterations == 60 and button.meta_switch_alpha == 0.25
    assert build(SafeMetaConfig, SafeMeta.presets("point-button")["paper"]).meta_switch_alpha == 0.05


def test_meta_test_explores_test_episodes_per_task() -> None:
    """Each meta-test adaptation step explores test_episodes_per_task episodes per task (the
    toy's episodes all run the horizon of 8 steps), else the training budget; at most 2 is
    refused with the held-out test."""
    for test_eps, per_task in ((0, 6 * 8), (5, 5 * 8)):
        algo = make_algo(test_episodes_per_task=test_eps)
        rows = algo.meta_test(algo.tasks["test"], 2)
        algo.close()
        assert [r["steps_per_task"] for r in rows[:-1]] == [per_task, per_task]
        assert algo.meta_test_phases["t_sampling"] > 0  # exploration, booked as data whatever its budget
    with pytest.raises(ConfigError, match="test_episodes_per_task: got 2 with safety_test=t; accepted 0"):
        make_algo(test_episodes_per_task=2, safety_test="t")


@pytest.mark.slow
def test_post_adaptation_reward_rises_on_toy_suite() -> None:
    algo = make_algo(seed=0, meta_batch=6, episodes_per_task=20, proj_epochs=10, eval_every=1000)
    rows = [algo.train_iteration(it) for it in range(1, 41)]
    early = np.mean([r["reward_mean"] for r in rows[:5]])
    late = np.mean([r["reward_mean"] for r in rows[-5:]])
    assert late > early + 0.5


def test_rejected_steps_never_collect_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """A projection far past the constraint with no back-off allowed is rejected: the
    post-adaptation rollouts are collected by π_φ itself, never by the unverified policy."""
    import copy

    import safemeta.core.adaptation as adaptation

    def overshoot(pks: list[GaussianPolicy], *args: object, **kw: object) -> list[GaussianPolicy]:
        out = [copy.deepcopy(pk) for pk in pks]
        for pol in out:
            with torch.no_grad():
                pol.mean_net[-1].bias.add_(3.0)  # Σa² far over the limit
        return out

    settings = dict(max_backoffs=0, verify_recovery=False, eval_every=100, init_log_std=-2.0,
                    safety_test="off")  # the verification's own rule (tests/test_safety_test.py: the test's)
    control = make_algo(**settings)  # π_φ feasible (Σa² ≈ 0.15 < 0.6): real steps pass
    assert control.train_iteration(1)["accept_rate"] > 0
    monkeypatch.setattr(adaptation, "project_batch", overshoot)
    algo = make_algo(**settings)
    calls: list[list[GaussianPolicy]] = []
    collect = algo.sampler.collect
    monkeypatch.setattr(
        algo.sampler, "collect",
        lambda tasks, pols, *a, **kw: calls.append(list(pols)) or collect(tasks, pols, *a, **kw)
    )
    meta_policy = algo.policy
    row = algo.train_iteration(1)
    assert len(calls) == 2 and all(p is meta_policy for p in calls[1])  # post data: π_φ only
    assert row["accept_rate"] == 0.0 and row["backoffs"] == 1.0


def test_meta_test_counts_exploration_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC §2.7: the cost of π^t pools its evaluation and exploration episodes."""
    algo = make_algo(seed=2, meta_batch=3)
    rolls: list = []
    collect = algo.collect
    monkeypatch.setattr(algo, "collect", lambda *a: rolls.append(collect(*a)) or rolls[-1])
    rows = algo.meta_test(algo.tasks["test"], 1)
    ev0, data0, ev1 = rolls  # evaluate π^0, explore with π^0 (then adapt), evaluate π^1
    pooled = np.array([np.concatenate([ev0.ep_cost[i], data0.ep_cost[i]])[:, 0].mean() for i in range(3)])
    assert rows[0]["cost_mean"] == pytest.approx(pooled.mean())
    assert rows[0]["cost_max"] == pytest.approx(pooled.max())
    assert rows[0]["violation_rate"] == pytest.approx(np.mean(pooled > 0.6))
    assert rows[0]["reward_mean"] == pytest.approx(ev0.reward_return().mean())
    assert rows[0]["explore_cost_max"] == pytest.approx(data0.cost_return("undiscounted")[:, 0].max())
    assert rows[1]["cost_mean"] == pytest.approx(ev1.cost_return("undiscounted")[:, 0].mean())


def test_validation_does_not_change_training() -> None:
    """Validation and meta-test use their own random streams and leave the critic alone:
    the training trajectory is the same whether or not validation runs."""
    train_keys = ("pre_reward", "pre_cost_mean", "post_reward", "post_cost_max", "u_mean", "kl")
    rows = {}
    for every in (1, 100):
        algo = make_algo(seed=3, critic="mlp", eval_every=every)
        out = [algo.train_iteration(i) for i in range(3)]
        algo.meta_test(algo.tasks["test"], 1)  # must not disturb what follows either
        out.append(algo.train_iteration(3))
        rows[every] = [{k: r[k] for k in train_keys} for r in out]
    assert rows[1] == rows[100]


def test_meta_gradient_step_uses_post_adaptation_data_and_the_meta_policy(monkeypatch) -> None:
    """SPEC §2.6: when no task is violated, the outer step sees the post-adaptation
    rollouts, with log-probabilities of the meta-policy π_φ (not of the adapted π_τ);
    when one is, it sees the pre-adaptation rollouts."""
    algo = make_algo(seed=1, limit=1e9, meta_margin=0.0)  # no violation: the meta-gradient branch
    seen: dict = {}
    real_collect, real_step, real_surrogate = algo.collect, algo.policy_step, policy_gradient.ratio_surrogate

    def collect(*args):
        roll = real_collect(*args)
        seen.setdefault("rolls", []).append(roll)
        return roll

    def step(data, weights, states):
        seen["data"] = data
        return real_step(data, weights, states)

    def surrogate(obs, act, logp_old, weights):
        seen["logp"] = logp_old
        return real_surrogate(obs, act, logp_old, weights)

    monkeypatch.setattr(algo, "collect", collect)
    monkeypatch.setattr(algo, "policy_step", step)
    monkeypatch.setattr(policy_gradient, "ratio_surrogate", surrogate)
    ref = copy.deepcopy(algo.policy)  # π_φ before the step
    algo.train_iteration(1)  # odd: no validation collects
    pre, post = seen["rolls"][:2]
    assert seen["data"] is post
    # The ratio's denominator is π_φ's log-probability, not the behaviour policy π_τ's.
    assert not torch.allclose(seen["logp"], torch.as_tensor(post.logp))
    expected = ref.log_prob(torch.as_tensor(post.obs), torch.as_tensor(post.act)).detach()
    assert torch.allclose(seen["logp"], expected)
    seen.clear()
    algo2 = make_algo(seed=1, limit=-1.0)  # every task violated: the CRPO cost branch
    monkeypatch.setattr(algo2, "collect", lambda *a: seen.setdefault("rolls", []).append(
        SafeMeta.collect(algo2, *a)) or seen["rolls"][-1])
    monkeypatch.setattr(algo2, "policy_step", lambda data, w, states: (
        seen.__setitem__("data", data), SafeMeta.policy_step(algo2, data, w, states))[1])
    algo2.train_iteration(1)
    assert seen["data"] is seen["rolls"][0]


def test_negative_verify_margin_is_rejected() -> None:
    with pytest.raises(ConfigError, match="^verify_margin: got -5.0; accepted >= 0"):
        build(SafeMetaConfig, {"verify_margin": -5.0})


def test_missed_counts_verified_steps_from_a_feasible_policy_that_exceeded_the_limit() -> None:
    limit = np.array([1.0, 2.0])
    pre = np.array([[0.5, 1.0], [0.5, 1.0], [1.5, 1.0], [0.5, 1.0], [0.5, 2.0]])
    post = np.array([[1.2, 1.0], [1.2, 1.0], [1.2, 1.0], [0.9, 2.5], [0.9, 1.9]])
    accepted = np.array([True, False, True, True, True])
    # task 0: missed; 1: step rejected (π_k kept); 2: π_k infeasible; 3: missed on cost 2;
    # 4: within both limits after the step
    np.testing.assert_array_equal(missed_steps(pre, post, accepted, limit), [True, False, False, True, False])
