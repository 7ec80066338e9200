"""`safemeta compare` and `safemeta bench` end to end on a tiny configuration: the
algorithms see the same tasks and budgets, the report's numbers are the runs' own,
an interrupted comparison resumes to the same report, and unfair comparisons are
refused with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from safemeta.algos import ALGO_IDS
from safemeta.cli import main
from safemeta.experiment.compare_report import bootstrap_band
from safemeta.experiment.metrics import read_rows

TINY = [a for kv in ("iterations=2", "meta_batch=2", "episodes_per_task=3", "horizon=30", "val_tasks=2",
                     "test_tasks=2", "test_steps=1", "eval_episodes=2", "eval_every=1", "hidden=16",
                     "checkpoint_every=1")
        for a in ("--set", kv)]
PAIR = "safemeta,meta-crpo"


def run_compare(out: Path, algos: str = PAIR, seeds: int = 2, fault: str | None = None,
                extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("SAFEMETA_FAULT", None)
    if fault:
        env["SAFEMETA_FAULT"] = fault
    cmd = [sys.executable, "-m", "safemeta", "compare", "--env", "point-circle", "--algos", algos,
           "--seeds", str(seeds), "--no-progress", *TINY, *extra, "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def without_times(obj: object) -> object:
    """The report's numbers, wall-clock times removed (they differ between any two runs)."""
    if isinstance(obj, dict):
        return {k: without_times(v) for k, v in obj.items()
                if k not in ("time_s", "time_normalised", "wall_train_s")}
    if isinstance(obj, list):
        return [without_times(v) for v in obj]
    return obj


def test_every_algorithm_sees_the_same_tasks_and_budgets(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    res = run_compare(out, ",".join(ALGO_IDS), seeds=1)
    assert res.returncode == 0, res.stderr
    tasks = {a: json.loads((out / a / "s0" / "tasks.json").read_text()) for a in ALGO_IDS}
    shared = json.loads((out / "tasks-s0.json").read_text())
    assert all(t == shared for t in tasks.values())
    budgets = ("meta_batch", "episodes_per_task", "steps_per_task", "test_episodes_per_task", "horizon",
               "eval_episodes", "test_tasks", "test_steps", "hidden", "gamma", "critic", "seed")
    cfgs = {a: yaml.safe_load((out / a / "s0" / "config.yaml").read_text())["config"] for a in ALGO_IDS}
    for key in budgets:
        assert len({str(c[key]) for c in cfgs.values()}) == 1, key
    # the data each algorithm sampled per meta-test step: the same budget, in steps
    steps = {a: [r["steps_per_task"] for r in read_rows(out / a / "s0" / "metrics.csv")
                 if r["phase"] == "meta_test" and r["step"] == 0] for a in ALGO_IDS}
    assert len({tuple(v) for v in steps.values()}) == 1 and steps["safemeta"] == [90.0]  # 3 episodes x 30
    meta = {a: c["iterations"] for a, c in cfgs.items()}
    assert meta["cpo"] == meta["ppo-lag"] == 0 and meta["safemeta"] == meta["maml-lag"] == 2
    report = json.loads((out / "report" / "compare.json").read_text())
    assert set(report["summary"]) == set(ALGO_IDS)


def test_kill_mid_comparison_and_rerun_gives_the_same_report(tmp_path: Path) -> None:
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert run_compare(ref, seeds=1).returncode == 0
    # killed in the second run (meta-crpo, seed 0) after its first checkpoint (each run
    # passes the point after iterations 0 and 1)
    killed = run_compare(out, seeds=1, fault="after_checkpoint:3")
    assert killed.returncode == -signal.SIGKILL
    assert (out / "safemeta" / "s0" / "DONE").exists() and not (out / "meta-crpo" / "s0" / "DONE").exists()
    partial = run_compare(out, seeds=1, extra=("--report-only",))  # what is finished so far, nothing run
    assert partial.returncode == 0, partial.stderr
    text = (out / "report" / "compare.md").read_text()
    assert "Seeds per algorithm: {'safemeta': 1, 'meta-crpo': 0}" in text
    assert not (out / "meta-crpo" / "s0" / "DONE").exists()
    again = run_compare(out, seeds=1)
    assert again.returncode == 0, again.stderr
    assert "safemeta seed 0: done" in again.stdout and "meta-crpo seed 0: resuming" in again.stdout
    a, b = (json.loads((d / "report" / "compare.json").read_text()) for d in (ref, out))
    assert without_times(a) == without_times(b)
    rows = read_rows(out / "meta-crpo" / "s0" / "metrics.csv")  # the curves are the runs' own numbers
    plotted = b["meta_test"]["meta-crpo"]["reward_mean"]
    assert plotted["mean"] == [r["reward_mean"] for r in rows if r["phase"] == "meta_test"]
    val = [r["cost_max"] for r in rows if r["phase"] == "meta_train" and r["eval_source"] == "val"]
    assert b["meta_train"]["meta-crpo"]["cost_max"]["mean"] == val and len(val) == 2


def test_bootstrap_band_by_hand() -> None:
    one = bootstrap_band(np.array([[1.0, 2.0]]), np.random.default_rng(0))
    assert [x.tolist() for x in one] == [[1.0, 2.0]] * 3  # a single seed: no width
    vals = np.array([[0.0], [1.0], [2.0], [3.0]])
    mean, lo, hi = bootstrap_band(vals, np.random.default_rng(0))
    assert mean[0] == 1.5 and 0.0 <= lo[0] < 1.5 < hi[0] <= 3.0
    # the percentile interval of resampled means of {0,1,2,3}: about mean ± 1.96·σ/√n = ±1.1
    assert hi[0] - lo[0] == pytest.approx(2 * 1.96 * np.std([0, 1, 2, 3]) / 2, rel=0.15)


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "lam=2"], "--set: meta-crpo has no field 'lam'"),
    (["--algos", "safemeta,nope"], "algo: unknown"),
    (["--algos", "safemeta,safemeta"], "names an algorithm twice"),
    (["--seeds", "0"], "--seeds: got 0"),
])
def test_unfair_or_bad_comparisons_are_refused_with_one_line(tmp_path: Path, capsys, args, message) -> None:
    base = ["compare", "--env", "point-circle", "--algos", PAIR, "--out", str(tmp_path / "c")]
    for i in range(0, len(args), 2):  # later flags override earlier ones
        base += args[i:i + 2]
    assert main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("safemeta: error: ") and message in err[0], err
    assert not (tmp_path / "c").exists()


def test_different_budgets_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from safemeta.baselines.meta_crpo import MetaCRPO
    from safemeta.config import ConfigError
    from safemeta.experiment.compare import CompareSpec, resolve_all
    from safemeta.meta_learner import MetaLearner

    def presets(cls, suite_id):  # a baseline whose preset collects more per task
        p = MetaLearner.presets.__func__(cls, suite_id)
        p["quick"] = {**p["quick"], "episodes_per_task": 20}
        return p

    monkeypatch.setattr(MetaCRPO, "presets", classmethod(presets))
    want = "budgets differ: episodes_per_task is 10 for safemeta and 20 for meta-crpo"
    with pytest.raises(ConfigError, match=want):
        resolve_all(CompareSpec("point-circle", ["safemeta", "meta-crpo"]))


def test_bench_times_every_algorithm_interleaved(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "--env", "point-circle", "--algos", PAIR, "--repeats", "2", *TINY, "--out", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"safemeta", "meta-crpo"}
    ref = result["safemeta"]
    assert ref["train_iter_ratio"] == 1.0 and ref["meta_test_ratio"] == 1.0
    for m in result.values():
        assert m["train_iter_s"] > 0 and m["meta_test_s"] > 0
        assert m["train_iter_s"] == pytest.approx(
            sum(m[p] for p in ("t_sampling", "t_critic", "t_adapt", "t_outer")), rel=0.5)
        # meta-test's time is its exploration, critics and adaptation, as the phases split it
        assert m["meta_test_s"] == pytest.approx(
            sum(m[f"test_{p}"] for p in ("t_sampling", "t_critic", "t_adapt")), rel=0.5)
    printed = capsys.readouterr().out
    assert "repeat 2/2 meta-crpo" in printed and "| meta-crpo |" in printed


def test_another_comparison_in_the_same_directory_is_refused(tmp_path: Path, capsys) -> None:
    from safemeta.experiment.compare import CompareSpec, Comparison

    out = tmp_path / "c"
    Comparison(CompareSpec("point-circle", ["safemeta"], 1, "quick", {"horizon": "30"}, str(out))).prepare()
    # more algorithms or seeds: the same comparison, continued
    Comparison(CompareSpec("point-circle", ["safemeta", "meta-crpo"], 3, "quick", {"horizon": "30"},
                           str(out))).prepare()
    code = main(["compare", "--env", "point-circle", "--algos", "safemeta", "--set", "horizon=40",
                 "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "holds another comparison (its overrides differ)" in err[0]
