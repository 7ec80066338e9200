"""Meta-test numbers with their uncertainty (rollout/evaluation.py, issue 14): the interval
and the over / possibly-over counts against hand computations, the sequential rule on a
constructed sequence, and the meta-test rows that carry them."""

from __future__ import annotations

import numpy as np
import pytest
from test_meta import make_algo

from safemeta.rollout.evaluation import decided, episodes_needed, interval, over, possibly_over

T975 = {3: 3.182446, 4: 2.776445, 9: 2.262157}  # t_{0.975, df} (tables)


def test_interval_and_counts_by_hand() -> None:
    limit = 25.0
    # a task never over: [0, 0, 10, 30] mean 10, s² = (100 + 100 + 0 + 400)/3 = 200
    a = interval(np.array([0.0, 0, 10, 30]))
    assert (a.mean, a.episodes) == (10.0, 4)
    assert a.half_width == pytest.approx(T975[3] * np.sqrt(200) / 2, rel=1e-6)
    # clearly over: [40, 50, 45, 55, 50] mean 48, s² = (64 + 4 + 9 + 49 + 4)/4 = 32.5
    b = interval(np.array([[40.0], [50], [45], [55], [50]]))  # (N, p): constraint 0
    assert b.low == pytest.approx(48 - T975[4] * np.sqrt(32.5 / 5), rel=1e-6)
    # possibly over: [0, 60, 0, 60] mean 30 > 25, s² = 1200, lower end 30 − 3.18·17.3 < 25
    c = interval(np.array([0.0, 60, 0, 60]))
    assert c.low == pytest.approx(30 - T975[3] * np.sqrt(1200) / 2, rel=1e-6)
    cis = [a, b, c]
    assert [over(ci, limit) for ci in cis] == [False, True, False]
    assert [possibly_over(ci, limit) for ci in cis] == [False, False, True]
    assert not np.isfinite(interval(np.array([3.0])).half_width)  # one episode states nothing


def test_sequential_evaluation_stops_exactly_when_its_rule_says() -> None:
    limit, rel = 25.0, 0.2
    # alternating 0 and 40 (mean 20, s ≈ 20.5): the interval keeps containing 25 until it is
    # narrow enough; by the rule, after first = 5 and batches of 5 it stops at the first n
    # (5, 10, 15, ...) where high ≤ 25 or half-width ≤ 5
    seq = np.tile([0.0, 40.0], 100)
    n = episodes_needed(seq, 5, 5, 200, limit, rel)
    expected = next(k for k in range(5, 201, 5) if decided(interval(seq[:k]), limit, rel))
    assert n == expected and n > 5
    assert not decided(interval(seq[: n - 5]), limit, rel)
    # by hand: at n the half-width t_{0.975,n−1}·s/√n drops to ≤ 5 or the upper end to ≤ 25
    ci = interval(seq[:n])
    assert ci.high <= limit or ci.half_width <= rel * limit
    # decided at once: the first batch excludes the limit
    assert episodes_needed(np.full(50, 100.0) + np.arange(50) % 2, 5, 5, 50, limit, rel) == 5
    # the cap holds
    assert episodes_needed(seq, 5, 5, 12, limit, 0.0) == 12


def test_meta_test_rows_carry_intervals_and_counts() -> None:
    """The rows' over / possibly-over counts and episodes equal what the per-task intervals
    of `meta_test_tasks` give; sequential evaluation adds episodes only where undecided."""
    algo = make_algo(seed=3, limit=1.5, eval_max_episodes=30, eval_rel_width=0.05)
    rows = algo.meta_test(algo.tasks["test"], 1)
    per_task = algo.meta_test_tasks
    for t, row in enumerate(rows):
        lows = [p["cost_low"][t] for p in per_task]
        means = [p["cost"][t] for p in per_task]
        assert row["n_over"] == sum(lo > 1.5 for lo in lows)
        assert row["n_possibly_over"] == sum(m > 1.5 and lo <= 1.5 for m, lo in zip(means, lows))
        eps = [p["episodes"][t] for p in per_task]
        assert row["eval_episodes_mean"] == pytest.approx(np.mean(eps))
        assert all(e <= 30 for e in eps)
        for p in per_task:  # stopped by the rule or at the cap
            if p["episodes"][t] < 30:
                lo, hi = p["cost_low"][t], p["cost_high"][t]
                assert lo > 1.5 or hi <= 1.5 or (hi - lo) / 2 <= 0.05 * 1.5
    fixed = make_algo(seed=3, limit=1.5).meta_test(algo.tasks["test"], 1)
    assert fixed[0]["eval_episodes_mean"] <= rows[0]["eval_episodes_mean"]


def test_report_figures_hold_the_limit_the_bands_and_the_pre_adaptation_cost(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from safemeta.experiment.report import curves_png

    train = [{"iteration": i, "reward_mean": -i, "cost_mean": 5.0, "cost_max": 10.0 + i, "cost_limit": 25.0,
              "pre_cost_max": 30.0 - i} for i in range(4)]
    data = curves_png(train, "iteration", tmp_path / "train.png", "training")
    cost = data["training: cost"]
    assert cost["lines"]["meta-policy (pre-adaptation) max"] == [30.0, 29.0, 28.0, 27.0]
    assert cost["lines"]["max over tasks"] == [10.0, 11.0, 12.0, 13.0]
    assert cost["lines"]["cost limit"] == [25.0, 25.0]
    assert cost["ylim"][0] == 0.0 and cost["ylim"][1] >= 30.0
    test = [{"step": t, "reward_mean": 1.0 + t, "reward_q10": 0.5, "reward_q90": 2.0 + t, "cost_mean": 3.0,
             "cost_q10": 1.0, "cost_q90": 6.0, "cost_max": 8.0, "cost_limit": 25.0} for t in range(3)]
    data = curves_png(test, "step", tmp_path / "test.png", "meta-test")
    assert data["meta-test: cost"]["bands"] == ["10-90% of tasks"]
    assert data["meta-test: reward"]["bands"] == ["10-90% of tasks"]
    assert data["meta-test: cost"]["lines"]["mean over tasks"] == [3.0, 3.0, 3.0]
    assert data["meta-test: cost"]["ylim"][0] == 0.0 and data["meta-test: cost"]["ylim"][1] >= 25.0
    assert (tmp_path / "test.png").stat().st_size > 1000


def test_the_unconstrained_reference_is_stored_and_drawn(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from safemeta.experiment import reference
    from safemeta.experiment.report import curves_png

    rows = [{"phase": "meta_train", "reward_mean": 0.0},
            {"phase": "meta_test", "step": 0, "reward_mean": 10.0, "cost_mean": 40.0, "cost_max": 60.0},
            {"phase": "meta_test", "step": 3, "reward_mean": 31.5, "cost_mean": 52.0, "cost_max": 90.0}]
    entry = reference.summarize(rows)
    assert entry == {"reward": 31.5, "cost_mean": 52.0, "cost_max": 90.0, "reward_step0": 10.0,
                     "cost_mean_step0": 40.0, "steps": 3}
    path = tmp_path / "references.json"
    reference.store("point-circle", "quick", {**entry, "command": "safemeta reference"}, path)
    reference.store("point-circle", "paper", {**entry, "reward": 40.0}, path)
    assert reference.lookup("point-circle", "quick", path)["reward"] == 31.5
    assert reference.lookup("point-circle", "paper", path)["reward"] == 40.0
    assert reference.lookup("car-circle", "quick", path) is None
    test = [{"step": t, "reward_mean": 20.0, "cost_mean": 3.0, "cost_max": 8.0, "cost_limit": 25.0}
            for t in range(2)]
    data = curves_png(test, "step", tmp_path / "t.png", "meta-test", reference=entry)
    assert data["meta-test: reward"]["lines"]["unconstrained learner (limit lifted)"] == [31.5, 31.5]
    assert data["meta-test: cost"]["lines"]["unconstrained learner (limit lifted): mean"] == [52.0, 52.0]


def test_safemeta_reference_trains_with_the_limit_lifted_and_stores_it(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`safemeta reference` runs safemeta with cost_limit lifted, stores the meta-test's last
    step, and a normal run's report of that suite and preset then quotes it."""
    import yaml

    from safemeta.cli import main
    from safemeta.experiment import reference
    from safemeta.experiment.metrics import read_rows

    monkeypatch.setattr(reference, "PATH", tmp_path / "references.json")
    tiny = [f"--set={kv}" for kv in ("iterations=1", "meta_batch=2", "episodes_per_task=3", "horizon=30",
                                    "val_tasks=1", "test_tasks=2", "test_steps=1", "eval_episodes=2")]
    ref_dir = tmp_path / "ref"
    assert main(["reference", "--env", "point-circle", "--out", str(ref_dir), "--no-progress", *tiny]) == 0
    saved = yaml.safe_load((ref_dir / "config.yaml").read_text())
    assert saved["config"]["cost_limit"] == reference.LIFTED
    last = [r for r in read_rows(ref_dir / "metrics.csv") if r["phase"] == "meta_test"][-1]
    assert last["cost_limit"] == reference.LIFTED
    stored = reference.lookup("point-circle", "quick")
    assert stored["reward"] == last["reward_mean"] and stored["cost_max"] == last["cost_max"]
    assert "--set iterations=1" in stored["command"]
    run = tmp_path / "run"
    args = [a.replace("--set=", "") for a in tiny]
    assert main(["train", "--env", "point-circle", "--out", str(run), "--no-progress",
                 *[x for kv in args for x in ("--set", kv)]]) == 0
    assert "Unconstrained reference" in (run / "report" / "report.md").read_text()
    assert "Unconstrained reference" not in (ref_dir / "report" / "report.md").read_text()
