"""Task splits: `test` is fresh draws of the training distribution for every suite, `ood`
the shifted, harder one (navigation: what `test` was before); a suite that declares no
`ood` refuses it in one line; `safemeta test --split` and `safemeta compare --split`
keep their results apart from the default ones, and comparisons made before splits
existed resume unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import safemeta
from safemeta.cli import main
from safemeta.envs import registry
from safemeta.envs.base import SPLITS, ParamRange, Suite, Task
from safemeta.experiment.metrics import read_rows
from safemeta.rollout.toy import GoalTask, PointMassEnv

TINY = ["--env", "tabular-grid", "--set", "iterations=2", "--set", "val_tasks=2", "--set", "test_tasks=3",
        "--set", "test_steps=2", "--set", "meta_batch=2", "--no-progress"]
RESULTS = Path(__file__).resolve().parents[1] / "results" / "compare-halfcheetah-vel-quick"


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("safemeta: error: "), err
    return err.strip()


def ranges(suite_id: str, split: str) -> dict[str, tuple[float, float]]:
    return {p.name: (p.low, p.high) for p in safemeta.suite(suite_id).param_ranges(split)}


# ---- every built-in suite ----------------------------------------------------------------

@pytest.mark.parametrize("suite_id", registry.BUILTIN_IDS)
def test_test_split_is_the_training_distribution(suite_id: str) -> None:
    suite = safemeta.suite(suite_id)
    assert suite.splits == SPLITS == ("train", "test", "ood")
    assert suite.param_ranges("test") == suite.param_ranges("train")
    assert suite.param_ranges("ood") != suite.param_ranges("train")
    # the same distribution: one generator state gives the same tasks in both splits
    test = suite.sample_tasks(5, np.random.default_rng(11), "test")
    assert test == suite.sample_tasks(5, np.random.default_rng(11), "train")
    for task in suite.sample_tasks(3, np.random.default_rng(11), "ood"):
        task.validate()


NAV_TRAIN = {"radius": (1.0, 1.5), "wall_factor": (0.55, 0.75)}
NAV_OOD = {"radius": (2.0, 2.5), "wall_factor": (0.55, 0.65)}  # the test ranges before `ood`


@pytest.mark.parametrize(("suite_id", "train", "ood"), [
    ("point-circle", NAV_TRAIN, NAV_OOD),
    ("car-circle-nohazards", NAV_TRAIN, NAV_OOD),
    ("car-circle", {**NAV_TRAIN, "num_hazards": (2, 3)}, {**NAV_OOD, "num_hazards": (3, 5)}),
    ("point-button", {"extent": (1.5, 1.7), "num_hazards": (2, 4), "num_gremlins": (2, 4)},
     {"extent": (1.8, 2.1), "num_hazards": (6, 8), "num_gremlins": (4, 6)}),
    ("tabular-grid", {"goal_x": (0, 4), "goal_y": (4, 4), "slip": (0.0, 0.1)},
     {"goal_x": (1, 4), "goal_y": (3, 3), "slip": (0.0, 0.1)}),
    ("tabular-random", {"seed": (0, 1_000_000), "noise": (0.0, 0.3)},
     {"seed": (1_000_000, 2_000_000), "noise": (0.3, 0.5)}),
])
def test_declared_ranges(suite_id: str, train: dict, ood: dict) -> None:
    assert ranges(suite_id, "train") == ranges(suite_id, "test") == train
    assert ranges(suite_id, "ood") == ood


def test_ood_navigation_draws_lie_in_the_old_test_ranges() -> None:
    tasks = safemeta.suite("car-circle").sample_tasks(30, np.random.default_rng(0), "ood")
    assert all(2.0 <= t.radius <= 2.5 and 0.55 <= t.wall / t.radius <= 0.65 and 3 <= len(t.hazards) <= 5
               for t in tasks)
    buttons = safemeta.suite("point-button").sample_tasks(5, np.random.default_rng(0), "ood")
    assert all(1.8 <= t.extent <= 2.1 and 6 <= len(t.hazards) <= 8 and 4 <= len(t.gremlins) <= 6
               for t in buttons)


def test_envs_lists_every_split(capsys) -> None:
    from safemeta.experiment.envs_table import print_envs

    print_envs()
    out = capsys.readouterr().out
    block = out.split("point-circle  [continuous]")[1].split("\n\n")[0]
    assert "  train: radius in [1, 1.5], wall_factor in [0.55, 0.75]" in block
    assert "  test : radius in [1, 1.5], wall_factor in [0.55, 0.75]" in block
    assert "  ood  : radius in [2, 2.5], wall_factor in [0.55, 0.65]" in block
    assert "  ood  : target_velocity in [2, 2.5]" in out


# ---- a suite of one's own that knows no `ood` --------------------------------------------

class LegacySuite(Suite):
    """Written before `ood`: no `splits`, ranges for train and test only."""

    id = "legacy-toy"
    description = "1-D point mass (a suite without an ood split)"
    task_type = GoalTask
    horizon = 5
    cost_limit = 1.0
    RANGES = {"train": (0.2, 1.0), "test": (0.2, 1.0)}

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        self.check_split(split)
        return [GoalTask(float(g)) for g in rng.uniform(*self.RANGES[split], n)]

    def make(self, task: Task, **kwargs: Any) -> PointMassEnv:
        assert isinstance(task, GoalTask)
        return PointMassEnv(task, self.horizon)

    def param_ranges(self, split: str) -> list[ParamRange]:
        self.check_split(split)
        return [ParamRange("goal", *self.RANGES[split], "goal position")]


REFUSAL = "got 'ood'; suite 'legacy-toy' accepts ['train', 'test'] (it declares no 'ood' split)"


@pytest.fixture
def legacy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._SUITES, "legacy-toy", LegacySuite)


def test_a_suite_without_ood_refuses_it_in_one_line(legacy, tmp_path: Path, capsys) -> None:
    suite = safemeta.suite("legacy-toy")
    with pytest.raises(ValueError) as e:
        suite.sample_tasks(1, np.random.default_rng(0), "ood")
    assert str(e.value) == f"split: {REFUSAL}"
    with pytest.raises(ValueError, match="^split: got 'valid'; suite 'legacy-toy' accepts"):
        suite.param_ranges("valid")
    from safemeta.experiment.envs_table import describe

    assert list(describe("legacy-toy")["params"]) == ["train", "test"]
    tiny = ["--env", "legacy-toy", "--no-progress", *[a for kv in (
        "iterations=1", "meta_batch=1", "episodes_per_task=4", "val_tasks=1", "test_tasks=1",
        "test_steps=1", "eval_episodes=2", "hidden=8") for a in ("--set", kv)]]
    out = tmp_path / "run"
    assert main(["train", *tiny, "--set", "test_split=ood", "--out", str(out)]) == 2
    assert one_line_error(capsys) == f"safemeta: error: test_split: {REFUSAL}"
    assert not out.exists()
    # it trains and meta-tests on its test split as before; --split ood is refused
    assert main(["train", *tiny, "--out", str(out)]) == 0
    assert main(["test", str(out), "--split", "ood"]) == 2
    assert one_line_error(capsys) == f"safemeta: error: --split: {REFUSAL}"
    assert not (out / "test-ood").exists()


# ---- safemeta train / test ----------------------------------------------------------------

def test_a_run_on_the_ood_split_records_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--set", "test_split=ood", "--out", str(out)]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["config"]["test_split"] == "ood"
    tasks = json.loads((out / "tasks.json").read_text())
    assert [t["goal_y"] for t in tasks["val"]] == [4, 4]  # validation stays on the train split
    assert [t["goal_y"] for t in tasks["test"]] == [3, 3, 3]
    assert "meta-test on the 'ood' split" in (out / "report" / "report.md").read_text().splitlines()[0]


def test_test_split_ood_writes_its_own_directory_on_fresh_ood_tasks(tmp_path: Path, capsys) -> None:
    from safemeta.experiment.runner import load_run, split_tasks
    from safemeta.tabular.cmdp import evaluate, softmax

    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    assert main(["test", str(out), "--split", "ood", "--tasks", "2"]) == 0
    assert not (out / "test").exists()  # the default directory is not touched
    ood = read_rows(out / "test-ood" / "metrics.csv")
    assert [r["step"] for r in ood] == [0, 1, 2]
    report = (out / "test-ood" / "report.md").read_text().splitlines()[0]
    assert report == f"# meta-test of {out} on 2 fresh tasks of the 'ood' split"
    # step 0 is the exact value of the meta-policy on the two fresh ood tasks
    r, payload = load_run(out)
    tasks = split_tasks(r.suite, 2, 0, "ood")
    assert [t.goal_y for t in tasks] == [3, 3]
    algo = r.algo_cls(r.cfg, r.suite, {"val": tasks, "test": tasks}, np.random.SeedSequence(0))
    algo.load_state_dict(payload["algo"])
    pi = softmax(algo.phi)
    assert ood[0]["reward_mean"] == pytest.approx(np.mean([evaluate(r.suite.cmdp(t), pi).J for t in tasks]),
                                                  abs=1e-12)
    # the default meta-test writes test/, on the run's own test tasks, and leaves test-ood/ alone
    assert main(["test", str(out)]) == 0
    own = read_rows(out / "test" / "metrics.csv")
    assert own[0]["reward_mean"] != ood[0]["reward_mean"]
    assert read_rows(out / "test-ood" / "metrics.csv") == ood
    title = (out / "test" / "report.md").read_text().splitlines()[0]
    assert title == f"# meta-test of {out} on the run's 3 test tasks (tasks.json; test_split 'test')"
    capsys.readouterr()
    assert main(["test", str(out), "--split", "ood", "--task-file", str(out / "tasks.json")]) == 2
    assert "--split: the task file gives the test tasks" in one_line_error(capsys)


# ---- safemeta compare ----------------------------------------------------------------------

def test_compare_keeps_one_split_per_directory(tmp_path: Path, capsys) -> None:
    from safemeta.experiment.compare import CompareSpec, Comparison, _budget_line, resolve_all, seed_tasks

    out = tmp_path / "c"
    spec = CompareSpec("point-circle", ["safemeta"], 1, "quick", {"horizon": "30"}, str(out), split="ood")
    Comparison(spec).prepare()
    assert yaml.safe_load((out / "compare.yaml").read_text()) == {
        "env": "point-circle", "preset": "quick", "overrides": {"horizon": "30"}, "split": "ood"}
    first = resolve_all(spec)["safemeta"]
    assert first.cfg.test_split == "ood" and "5 tasks of the 'ood' split" in _budget_line(first)
    assert _budget_line(first).endswith("adaptation steps, each exploring the same budget; "
                                        "5 evaluation episodes per policy")
    medium = resolve_all(CompareSpec("point-circle", ["safemeta"], 1, "medium", {}, str(tmp_path / "m")))
    assert _budget_line(medium["safemeta"]) == (
        "budget per task and data collection: 20 episodes of at most 500 steps; 10 tasks per meta-iteration; "
        "meta-test: 10 tasks of the 'test' split x 3 adaptation steps, each exploring 40 episodes; 10 "
        "evaluation episodes per policy, more until its cost interval decides (up to 100)")
    radii = [t["radius"] for t in seed_tasks(first, 0)["test"]]
    assert all(2.0 <= x <= 2.5 for x in radii)
    assert all(1.0 <= t["radius"] <= 1.5 for t in seed_tasks(first, 0)["val"])
    # asking the other split of it is refused before any run starts
    args = ["compare", "--env", "point-circle", "--algos", "safemeta", "--set", "horizon=30",
            "--out", str(out)]
    assert main(args) == 2
    assert one_line_error(capsys) == (f"safemeta: error: out: {out} compares on the 'ood' split, not 'test'; "
                                      "use another --out or --split ood")
    assert sorted(p.name for p in out.iterdir()) == ["compare.yaml"]
    assert main([*args[:-2], "--set", "test_split=ood", "--out", str(tmp_path / "d")]) == 2
    assert "--set test_split: a comparison takes its split from --split" in one_line_error(capsys)
    # a default (test) comparison's directory refuses ood the same way
    plain = tmp_path / "plain"
    Comparison(CompareSpec("point-circle", ["safemeta"], 1, "quick", {}, str(plain))).prepare()
    assert main(["compare", "--env", "point-circle", "--algos", "safemeta", "--split", "ood",
                 "--out", str(plain)]) == 2
    assert "compares on the 'test' split, not 'ood'" in one_line_error(capsys)


@pytest.mark.skipif(not (RESULTS / "compare.yaml").exists(), reason="no stored comparison")
def test_a_comparison_from_before_splits_resumes_unchanged(tmp_path: Path) -> None:
    """results/compare-halfcheetah-vel-quick (read only): same header and task files; and a
    run directory written before a config field existed (test_split, the safety test's
    fields: dropped from a copy of a run's config) belongs to the config a rerun asks for."""
    import shutil

    from safemeta.experiment.compare import CompareSpec, resolve_all, seed_tasks
    from safemeta.experiment.runner import Run, RunSpec, resolve

    spec = CompareSpec("halfcheetah-vel", ["safemeta"], 3, "quick", {}, str(RESULTS))
    assert yaml.safe_load((RESULTS / "compare.yaml").read_text()) == spec.header()
    first = resolve_all(spec)["safemeta"]
    for seed in range(3):
        stored = json.loads((RESULTS / f"tasks-s{seed}.json").read_text())
        assert stored == json.loads(json.dumps(seed_tasks(first, seed)))
    run_dir = tmp_path / "s0"
    shutil.copytree(RESULTS / "meta-cpo" / "s0", run_dir, ignore=shutil.ignore_patterns("tb", "checkpoints"))
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    saved["config"] = {k: v for k, v in saved["config"].items()
                       if k != "test_split" and not k.startswith("eval_max") and k != "eval_rel_width"}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    r = resolve(RunSpec(env="halfcheetah-vel", algo="meta-cpo", preset="quick", overrides={"seed": 0},
                        out=str(run_dir), resume=True))
    run = Run(r)
    run.prepare()  # raises on another config; writes nothing to a run directory it accepts
    assert run._accept({"run": saved}) is None  # its checkpoints are accepted too
