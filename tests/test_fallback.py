"""The fallback toward a known-safe policy (issue 10; core/fallback.py, nn/scripted.py):
the mixture weight by hand, the known-safe policies' cost certificates against simulation,
and the meta-test's mixtures (episode counts from their own streams, the known-safe
episodes never adapting a policy)."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from safemeta.config import ConfigError
from safemeta.core.fallback import mixture_weight
from safemeta.envs.navigation.circle import CENTRE_STEPS_MAX, CircleTask
from safemeta.envs.registry import suite
from safemeta.meta_learner import Phase, TaskPolicy, mix_key
from safemeta.rollout.sampler import TaskStream
from test_meta import make_algo


# ---- the mixture weight ------------------------------------------------------------------------
def test_mixture_weight_by_hand() -> None:
    # β U + (1 − β) c = d: (25 − 12.5) / (40 − 12.5)
    assert mixture_weight(np.array([40.0]), np.array([12.5]), np.array([25.0])) == pytest.approx(12.5 / 27.5)
    assert mixture_weight(np.array([20.0]), np.array([12.5]), np.array([25.0])) == 1.0  # within: no mixture
    assert mixture_weight(np.array([40.0]), np.array([25.0]), np.array([25.0])) == 0.0  # π_s not below d
    assert mixture_weight(np.array([np.inf]), np.array([0.0]), np.array([25.0])) == 0.0  # nothing known
    assert mixture_weight(np.array([np.nan]), np.array([0.0]), np.array([25.0])) == 0.0
    # two constraints: the smaller weight, and the mixture within both limits
    u, c, d = np.array([30.0, 8.0]), np.array([0.0, 1.0]), np.array([10.0, 4.0])
    beta = mixture_weight(u, c, d)
    assert beta == pytest.approx(min(10 / 30, 3 / 7))
    assert np.all(beta * u + (1 - beta) * c <= d + 1e-12)


# ---- the known-safe policies against their certificates ----------------------------------------
def _steps_beyond(env, x0: float, y0: float, heading: float, steps: int) -> tuple[int, float]:
    u = env.unwrapped
    env.reset(seed=0)
    u.robot.place(u.model, u.data, x0, y0, heading)
    mujoco.mj_forward(u.model, u.data)
    obs, cost = u._observe(), 0
    policy = suite("point-circle").known_safe(u.task).policy
    for _ in range(steps):
        obs, _, _, _, info = env.step(policy.sample(obs[None])[0][0])
        cost += info["cost"]
    return cost, float(u._xpos[0])


def test_point_circle_controller_is_back_inside_within_its_certificate() -> None:
    """From the farthest starts beyond the nearest wall the training split allows (x = ±0.8,
    wall 0.55), every 10° of heading: back inside within CENTRE_STEPS_MAX steps and held
    near x = 0; from a start inside, no cost at all."""
    env = suite("point-circle").make(CircleTask(radius=1.0, wall=0.55))
    worst = 0
    for x0, y0 in ((0.8, 0.8), (-0.8, -0.8), (0.8, 0.0)):
        for heading in np.linspace(0.0, 2 * math.pi, 36, endpoint=False):
            cost, x = _steps_beyond(env, x0, y0, heading, 150)
            worst = max(worst, cost)
            assert abs(x) < 0.3
    assert 20 <= worst <= CENTRE_STEPS_MAX  # the certificate holds, and is not vacuous
    for heading in (0.0, 2.0, 4.0):
        assert _steps_beyond(env, 0.5, -0.7, heading, 150)[0] == 0


def test_point_circle_bound_covers_the_measured_expected_cost() -> None:
    """The bound (0.8 − wall)/0.8 · CENTRE_STEPS_MAX against the controller's mean episode
    cost over random starts (the env's own start distribution), and 0 beyond the start box."""
    s = suite("point-circle")
    task = CircleTask(radius=1.0, wall=0.6)
    safe = s.known_safe(task)
    assert safe.cost_bound[0] == pytest.approx(0.25 * CENTRE_STEPS_MAX)
    env = s.make(task)
    costs = []
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        cost = 0.0
        for _ in range(120):
            obs, _, _, _, info = env.step(safe.policy.sample(obs[None])[0][0])
            cost += info["cost"]
        costs.append(cost)
    assert 0 < np.mean(costs) <= safe.cost_bound[0]
    assert s.known_safe(CircleTask(radius=2.0, wall=1.1)).cost_bound[0] == 0.0  # ood: starts all inside


def test_zero_action_costs_exactly_nothing_on_halfcheetah() -> None:
    s = suite("halfcheetah-vel")
    task = s.sample_tasks(1, np.random.default_rng(0))[0]
    safe = s.known_safe(task)
    env = s.make(task)
    obs, _ = env.reset(seed=0)
    total = 0.0
    for _ in range(50):
        obs, _, _, _, info = env.step(safe.policy.sample(obs[None])[0][0])
        total += info["cost"]
    assert total == 0.0 and safe.cost_bound[0] == 0.0
    assert suite("halfcheetah-vel", cost="velocity").known_safe(task) is None  # nothing known there
    assert suite("car-circle").known_safe(suite("car-circle").sample_tasks(1, np.random.default_rng(0))[0]) is None


# ---- the meta-test's mixtures ------------------------------------------------------------------
def test_a_mixed_task_runs_its_binomial_share_and_adapts_on_its_own_episodes_only() -> None:
    algo = make_algo(seed=0, fallback="known_safe")
    tasks = algo.tasks["test"]
    safe = algo.suite.known_safe(tasks[0])
    beta = 0.4
    current = [TaskPolicy(algo.policy), TaskPolicy(algo.policy, state={"mix": (beta, safe)}), TaskPolicy(algo.policy)]
    got = algo._collect_mixed(tasks, current, Phase.TEST_DATA, 2, first=0, episodes=12)
    k = TaskStream.of(algo._stream_root, (Phase.MIX, mix_key(Phase.TEST_DATA, 2), 1)).rng.binomial(12, beta)
    assert 0 < k < 12
    assert [len(r) for r in got.own.ep_return] == [12, k, 12] and [len(c) for c in got.costs] == [12, 12, 12]
    # the own episodes are exactly those a plain collection of k episodes gives, from the same stream
    alone = algo.collect([tasks[1]], [current[1]], Phase.TEST_DATA, 2, episodes=k, index=[1])
    np.testing.assert_array_equal(got.own.task(1).act, alone.act)
    np.testing.assert_array_equal(got.costs[1][:k], alone.ep_cost[0])
    assert np.all(got.costs[1][k:] == 0.0)  # the zero action's episodes, counted in the mixture's cost
    assert np.all(np.abs(got.own.task(1).act) > 0)  # none of them among the adapting episodes
    plain = algo.collect([tasks[0]], [current[0]], Phase.TEST_DATA, 2, episodes=12, index=[0])
    np.testing.assert_array_equal(got.own.task(0).act, plain.act)  # unmixed tasks: unchanged
    assert got.steps == len(got.own.obs) + (12 - k) * algo.horizon


def test_meta_test_hands_out_mixtures_within_the_limit_and_off_changes_nothing() -> None:
    """A limit the meta-policy breaks: kept policies with bounds over d go out mixed, each
    with β·U + (1 − β)·c_s = d + δ; fallback=off hands out π_k and is the default."""
    rows_off = make_algo(seed=0, limit=0.05).meta_test(make_algo(seed=0, limit=0.05).tasks["test"], 2)
    algo = make_algo(seed=0, limit=0.05, fallback="known_safe")
    seen = []
    hand_out = algo.hand_out

    def spy(tasks, adapted):  # type: ignore[no-untyped-def]
        out = hand_out(tasks, adapted)
        seen.extend(out)
        return out

    algo.hand_out = spy  # type: ignore[method-assign]
    rows = algo.meta_test(algo.tasks["test"], 2)
    mixed = [a for a in seen if "mix" in a.state]
    assert mixed and all(a.log["n_mixed"] == 1.0 for a in mixed)
    for a in mixed:
        beta, safe = a.state["mix"]
        assert beta * a.state["bound"][0] + (1 - beta) * safe.cost_bound[0] == pytest.approx(algo.params.bound[0])
    assert rows[0]["cost_mean"] == rows_off[0]["cost_mean"]  # step 0: the meta-policy either way
    assert rows[1]["cost_mean"] < rows_off[1]["cost_mean"]  # mixed with the zero action
    assert rows[0]["n_mixed"] == 3 and rows_off[0]["n_mixed"] == 0
    assert "mixed β=" in algo.meta_test_tasks[0]["adaptation"][0]


def test_fallback_is_refused_where_it_cannot_work() -> None:
    with pytest.raises(ConfigError, match="fallback: got 'known_safe' with safety_test=off"):
        make_algo(fallback="known_safe", safety_test="off")
    from safemeta.core.meta import SafeMeta, SafeMetaConfig
    from safemeta.config import build

    cars = suite("car-circle")
    cfg = build(SafeMetaConfig, {"fallback": "known_safe", "hidden": [8]})
    with pytest.raises(ConfigError, match="fallback: got 'known_safe' on suite 'car-circle', which knows no safe "
                                          "policy; accepted fallback=off there \\(suites with one: halfcheetah-vel"):
        SafeMeta(cfg, cars, {"test": cars.sample_tasks(1, np.random.default_rng(0))}, np.random.SeedSequence(0))


def test_safemeta_test_takes_meta_test_settings_into_their_own_directory(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from safemeta.cli import main
    from safemeta.experiment.metrics import read_rows

    out = tmp_path / "run"
    tiny = ["--set", "iterations=1", "--set", "meta_batch=2", "--set", "episodes_per_task=4", "--set", "horizon=60",
            "--set", "val_tasks=1", "--set", "test_tasks=2", "--set", "test_steps=1", "--set", "eval_episodes=3",
            "--set", "eval_max_episodes=0", "--set", "hidden=8", "--set", "cost_limit=0.5"]
    assert main(["train", "--env", "point-circle", *tiny, "--out", str(out), "--no-progress", "--backend", "local"]) == 0
    assert main(["test", str(out), "--set", "fallback=known_safe", "--backend", "local"]) == 0
    rows = read_rows(out / "test-fallback=known_safe" / "metrics.csv")
    plain = read_rows(out / "metrics.csv")
    assert rows[0]["cost_mean"] == [r for r in plain if r["phase"] == "meta_test"][0]["cost_mean"]  # step 0 alike
    assert rows[0]["n_mixed"] == rows[0]["n_kept"] >= 1  # a limit of 0.5: every kept policy is over it, mixed
    assert main(["test", str(out), "--set", "hidden=4"]) == 2
    assert "--set: got 'hidden'; accepted meta-test settings of safemeta: fallback" in capsys.readouterr().err
