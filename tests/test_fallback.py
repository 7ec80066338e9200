"""The fallback toward a known-safe policy (issue 10; core/fallback.py, nn/scripted.py):
the mixture weight by hand, the known-safe policies' cost bounds against simulation, and
the meta-test's mixtures (episode counts from their own streams, the known-safe episodes
never adapting a policy, the default unchanged)."""

from __future__ import annotations

import math
from pathlib import Path

import mujoco
import numpy as np
import pytest
from test_meta import make_algo, strip_times

from safemeta.config import ConfigError, build
from safemeta.core.fallback import mixture_weight
from safemeta.core.meta import SafeMeta, SafeMetaConfig
from safemeta.envs.navigation.circle import CENTRE_START_MARGIN, CENTRE_STEPS_MAX, CENTRE_WALL_MIN, CircleTask
from safemeta.envs.registry import suite
from safemeta.meta_learner import Phase, TaskPolicy, mix_key
from safemeta.rollout.sampler import TaskStream


# ---- the mixture weight ------------------------------------------------------------------------
def test_mixture_weight_by_hand() -> None:
    def w(u: list[float], c: list[float], d: list[float]) -> float | None:
        return mixture_weight(np.array(u), np.array(c), np.array(d))

    assert w([40.0], [12.5], [25.0]) == pytest.approx(12.5 / 27.5)  # β·40 + (1 − β)·12.5 = 25
    assert w([20.0], [12.5], [25.0]) == 1.0  # within the limit: no mixture
    assert w([40.0], [25.0], [25.0]) is None  # the known-safe policy not below d: nothing certifies
    assert w([np.inf], [0.0], [25.0]) == 0.0 and w([np.nan], [0.0], [25.0]) == 0.0  # only π_s is known
    # two constraints: the first caps β at 10/12, the second (π_s over it) needs β ≥ 4/7
    u, c, d = np.array([12.0, 1.0]), np.array([0.0, 8.0]), np.array([10.0, 4.0])
    beta = mixture_weight(u, c, d)
    assert beta == pytest.approx(10 / 12)
    assert np.all(beta * u + (1 - beta) * c <= d + 1e-12)
    assert w([12.0, 3.9], [0.0, 8.0], [10.0, 4.0]) is None  # needs β ≤ 0.83 and β ≥ 0.98
    with pytest.raises(ValueError, match="bounds of 2, 1 and 2 constraints"):
        mixture_weight(np.zeros(2), np.zeros(1), np.ones(2))


# ---- the known-safe policies against their bounds ------------------------------------------------
def _episode(env, x0: float, y0: float, heading: float, steps: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Cost of the known-safe Point from a placed start, and its final x."""
    u = env.unwrapped
    env.reset(seed=0)
    u.robot.place(u.model, u.data, x0, y0, heading)
    mujoco.mj_forward(u.model, u.data)
    obs, cost = u._observe(), 0.0
    policy = suite("point-circle").known_safe(u.task).policy
    for _ in range(steps):
        obs, _, _, _, info = env.step(policy.sample(obs[None])[0][0])
        cost += info["cost"]
    return cost, float(u._xpos[0])


@pytest.mark.parametrize("wall", [CENTRE_WALL_MIN, 0.7])
def test_point_circle_controller_is_back_inside_within_its_bound(wall: float) -> None:
    """From the farthest starts beyond a wall (x = ±0.8), every 10° of heading: back inside
    within CENTRE_STEPS_MAX steps and held near x = 0; from a start CENTRE_START_MARGIN
    inside a wall, no cost."""
    env = suite("point-circle").make(CircleTask(radius=1.0, wall=wall))
    worst = 0.0
    for x0, y0 in ((0.8, 0.8), (-0.8, -0.8), (0.8, 0.0)):
        for heading in np.linspace(0.0, 2 * math.pi, 36, endpoint=False):
            cost, x = _episode(env, x0, y0, heading, 150)
            worst = max(worst, cost)
            assert abs(x) < 0.3
    assert worst <= CENTRE_STEPS_MAX
    assert worst >= (20 if wall == CENTRE_WALL_MIN else 5)  # the bound is not vacuous
    for heading in (0.0, 1.6, 3.1, 4.7):
        assert _episode(env, wall - CENTRE_START_MARGIN, -0.7, heading, 100)[0] == 0.0


def test_point_circle_bound_covers_the_measured_expected_cost() -> None:
    """The bound (0.8 − wall + margin)/0.8 · CENTRE_STEPS_MAX against the controller's mean
    episode cost over the env's own random starts; none below the walls it was measured on."""
    s = suite("point-circle")
    task = CircleTask(radius=1.0, wall=0.6)
    safe = s.known_safe(task)
    assert safe.cost_bound[0] == pytest.approx((0.2 + CENTRE_START_MARGIN) / 0.8 * CENTRE_STEPS_MAX)
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
    assert s.known_safe(CircleTask(radius=2.0, wall=1.1)).cost_bound[0] == 0.0  # ood: every start inside
    assert s.known_safe(CircleTask(radius=1.0, wall=0.4)) is None  # nearer walls take longer: not measured


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
    cars = suite("car-circle")
    assert cars.known_safe(cars.sample_tasks(1, np.random.default_rng(0))[0]) is None


# ---- the meta-test's mixtures --------------------------------------------------------------------
def test_a_mixed_task_runs_its_binomial_share_and_adapts_on_its_own_episodes_only() -> None:
    algo = make_algo(seed=0, fallback="known_safe")
    tasks = algo.tasks["test"]
    safe = algo.suite.known_safe(tasks[0])
    beta = 0.4
    current = [TaskPolicy(algo.policy), TaskPolicy(algo.policy, state={"mix": (beta, safe)}),
               TaskPolicy(algo.policy)]
    got = algo._collect_mixed(tasks, current, Phase.TEST_DATA, 2, first=0, episodes=12)
    k = TaskStream.of(algo._stream_root, (Phase.MIX, mix_key(Phase.TEST_DATA, 2), 1)).rng.binomial(12, beta)
    assert 0 < k < 12
    assert [len(r) for r in got.own.ep_return] == [12, k, 12] and [len(c) for c in got.costs] == [12, 12, 12]
    # the own episodes are exactly those a plain collection of k episodes gives, from the same stream
    alone = algo.collect([tasks[1]], [current[1]], Phase.TEST_DATA, 2, episodes=k, index=[1])
    np.testing.assert_array_equal(got.own.task(1).act, alone.act)
    np.testing.assert_array_equal(got.costs[1][:k], alone.ep_cost[0])
    assert np.all(got.costs[1][k:] == 0.0)  # the zero action's episodes count in the mixture's cost only
    plain = algo.collect([tasks[0]], [current[0]], Phase.TEST_DATA, 2, episodes=12, index=[0])
    np.testing.assert_array_equal(got.own.task(0).act, plain.act)  # unmixed tasks: unchanged
    assert got.steps == len(got.own.obs) + (12 - k) * algo.horizon


def _spied(algo: SafeMeta) -> list[list[TaskPolicy]]:
    seen: list[list[TaskPolicy]] = []
    hand_out = algo.hand_out

    def spy(tasks, adapted):  # type: ignore[no-untyped-def]
        out = hand_out(tasks, adapted)
        seen.append(out)
        return out

    algo.hand_out = spy  # type: ignore[method-assign]
    return seen


def test_meta_test_hands_out_mixtures_within_the_limit() -> None:
    """A limit the meta-policy breaks: each policy whose bound is over d + δ goes out mixed
    with the zero action (c_s = 0), β·U = d + δ; a kept policy's bound never falls back to a
    sample of fewer episodes, so its β never collapses to 0."""
    algo = make_algo(seed=0, limit=1.0, fallback="known_safe")
    seen = _spied(algo)
    rows = algo.meta_test(algo.tasks["test"], 5)
    off = make_algo(seed=0, limit=1.0).meta_test(algo.tasks["test"], 5)
    mixed = [a for step in seen for a in step if "mix" in a.state]
    assert len(mixed) >= 5
    for a in mixed:
        beta, safe = a.state["mix"]
        assert 0 < beta < 1 and a.log["n_mixed"] == 1.0 and a.log["mix_beta"] == beta
        mixture = beta * a.state["bound"][0] + (1 - beta) * safe.cost_bound[0]
        assert mixture == pytest.approx(algo.params.bound[0])
    for i in range(3):  # per task, kept policies: the episodes behind the bound never shrink
        for before, after in zip(seen, seen[1:]):
            if after[i].policy is before[i].policy:
                assert after[i].state["bound_n"] >= before[i].state["bound_n"]
                assert np.all(after[i].state["bound"] <= before[i].state["bound"]) or \
                    after[i].state["bound_n"] > before[i].state["bound_n"]
    assert rows[0]["cost_mean"] == off[0]["cost_mean"]  # step 0: the meta-policy either way
    assert rows[1]["cost_mean"] < off[1]["cost_mean"]  # mixed with the zero action
    assert rows[0]["n_mixed"] >= 1 and off[0]["n_mixed"] == 0
    assert any("mixed β=" in s for t in algo.meta_test_tasks for s in t["adaptation"])


def test_fallback_with_nothing_over_the_limit_changes_no_number() -> None:
    """A limit no policy approaches (β = 1 everywhere): every meta-test row equals the
    default's, which never mixes."""
    on = make_algo(seed=1, limit=100.0, fallback="known_safe")
    rows = on.meta_test(on.tasks["test"], 3)
    off = make_algo(seed=1, limit=100.0)
    assert strip_times(rows) == strip_times(off.meta_test(off.tasks["test"], 3))
    assert sum(r["n_mixed"] for r in rows) == 0 and sum(r["n_accepted"] + r["n_backed_off"] for r in rows) > 0


def test_fallback_is_refused_where_it_cannot_work() -> None:
    with pytest.raises(ConfigError, match="fallback: got 'known_safe' with safety_test=off"):
        make_algo(fallback="known_safe", safety_test="off")
    cars = suite("car-circle")
    cfg = build(SafeMetaConfig, {"fallback": "known_safe", "hidden": [8]})
    with pytest.raises(ConfigError, match="fallback: got 'known_safe' on suite 'car-circle', which knows no "
                                          "safe policy for its tasks"):
        SafeMeta(cfg, cars, {"test": cars.sample_tasks(1, np.random.default_rng(0))},
                 np.random.SeedSequence(0))


def test_safemeta_test_takes_meta_test_settings_into_their_own_directory(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from safemeta.cli import main
    from safemeta.experiment.metrics import read_rows

    out = tmp_path / "run"
    sets = ["iterations=1", "meta_batch=2", "episodes_per_task=4", "horizon=60", "val_tasks=1",
            "test_tasks=2", "test_steps=1", "eval_episodes=3", "eval_max_episodes=0", "hidden=8",
            "cost_limit=15"]
    tiny = [x for kv in sets for x in ("--set", kv)]
    assert main(["train", "--env", "point-circle", *tiny, "--out", str(out), "--no-progress",
                 "--backend", "local"]) == 0
    assert main(["test", str(out), "--set", "fallback=known_safe", "--backend", "local"]) == 0
    rows = read_rows(out / "test-fallback=known_safe" / "metrics.csv")
    plain = [r for r in read_rows(out / "metrics.csv") if r["phase"] == "meta_test"]
    assert rows[0]["cost_mean"] == plain[0]["cost_mean"]  # step 0 alike
    assert rows[0]["n_mixed"] >= 1  # c_s ≤ 13 < 15: a policy whose bound is over 15 goes out mixed
    report = (out / "test-fallback=known_safe" / "report.md").read_text()
    assert "with fallback=known_safe" in report and "| mixed | β |" in report
    assert main(["test", str(out), "--set", "hidden=4"]) == 2
    assert "--set: got 'hidden'; accepted meta-test settings of safemeta: fallback" in capsys.readouterr().err
