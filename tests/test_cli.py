"""The command line and the run driver on tabular suites: run layout, resume, bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from safemeta.cli import main
from safemeta.experiment import checkpoint
from safemeta.experiment.metrics import read_rows

TINY = ["--env", "tabular-grid", "--set", "iterations=6", "--set", "checkpoint_every=2",
        "--set", "val_tasks=2", "--set", "test_tasks=3", "--set", "test_steps=3",
        "--set", "meta_batch=2", "--no-progress"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "safemeta", *args], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_train_writes_the_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    for name in ("config.yaml", "config_diff.yaml", "tasks.json", "metrics.csv", "DONE",
                 "report/report.md", "report/meta_train.png", "report/meta_test.png"):
        assert (out / name).exists(), name
    rows = read_rows(out / "metrics.csv")
    train = [r for r in rows if r["phase"] == "meta_train"]
    test = [r for r in rows if r["phase"] == "meta_test"]
    assert [r["iteration"] for r in train] == list(range(6))
    assert [r["step"] for r in test] == [0, 1, 2, 3]
    with open(out / "metrics.csv") as fh:
        header = next(csv.reader(fh))
    assert header[:9] == ["phase", "iteration", "step", "reward_mean", "cost_mean", "cost_max",
                          "cost_limit", "violation_rate", "time_s"]
    assert yaml.safe_load((out / "config_diff.yaml").read_text())["changed"]["iterations"] == 6
    assert [p.name for p in checkpoint.list_checkpoints(out / "checkpoints")] == [
        "ckpt_000002.pt", "ckpt_000004.pt", "ckpt_000006.pt"]


def test_resume_after_losing_the_tail_gives_identical_metrics(tmp_path: Path) -> None:
    """Simulate a crash after iteration 4's checkpoint: later checkpoints gone, extra
    metrics rows written after it. Resume must reproduce the uninterrupted run."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", *TINY, "--out", str(full)]) == 0
    assert main(["train", *TINY, "--out", str(cut)]) == 0
    (cut / "checkpoints" / "ckpt_000006.pt").unlink()
    (cut / "DONE").unlink()
    lines = (cut / "metrics.csv").read_text().splitlines(keepends=True)
    (cut / "metrics.csv").write_text("".join(lines[:6]))  # header + 5 rows (one past the ckpt)
    assert main(["train", *TINY, "--out", str(cut), "--resume"]) == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    assert strip(read_rows(cut / "metrics.csv")) == strip(read_rows(full / "metrics.csv"))


def test_damaged_checkpoint_falls_back_to_previous(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    last = out / "checkpoints" / "ckpt_000006.pt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    assert main(["train", *TINY, "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().out
    assert "ckpt_000006.pt skipped: damaged or truncated" in err
    assert "resumed from" in err and "ckpt_000004.pt" in err


def test_test_command_meta_tests_a_trained_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    assert main(["test", str(out), "--tasks", "5", "--steps", "2"]) == 0
    rows = read_rows(out / "test" / "metrics.csv")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert (out / "test" / "report.md").exists()


@pytest.mark.parametrize(
    "args,match",
    [
        (["train", "--env", "nope"], "env: unknown suite 'nope'"),
        (["train", "--env", "tabular-grid", "--algo", "ppo"], "algo: unknown"),
        (["train", "--env", "tabular-grid", "--set", "bogus=1"], "unknown key 'bogus'"),
        (["train", "--env", "tabular-grid", "--set", "lam=-1"], "lam: got -1.0"),
        (["train", "--env", "tabular-grid", "--set", "iterations=x"], "iterations: expected an integer"),
        (["train", "--env", "tabular-grid", "--preset", "huge"], "preset: got 'huge'"),
        (["train", "--env", "tabular-grid", "--backend", "mpi"], "backend: 'mpi'"),
        (["train", "--env", "tabular-grid", "--device", "tpu"], "device: got 'tpu'"),
        (["train", "--env", "tabular-grid", "--config", "/nonexistent.yaml"], "--config: cannot read"),
        (["train", "--env", "tabular-grid", "--set", "x"], "--set: expected key=value"),
        (["train"], "the following arguments are required: --env"),
        (["frobnicate"], "invalid choice"),
        (["test", "/nonexistent"], "not a safemeta run directory"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], match: str) -> None:
    res = run_cli(*args, "--out", str(tmp_path / "o")) if args[0] == "train" and len(args) > 1 \
        else run_cli(*args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()


def test_run_directory_of_another_config_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    res = run_cli("train", *TINY, "--set", "lam=0.9", "--out", str(out), "--resume")
    assert res.returncode == 2 and "belongs to another config (lam: saved 0.5, requested 0.9)" in res.stderr
    res = run_cli("train", *TINY, "--out", str(out))
    assert res.returncode == 2 and "already holds a run; pass --resume" in res.stderr


def test_nothing_is_written_to_the_working_directory(tmp_path: Path) -> None:
    res = run_cli("train", *TINY, "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(tmp_path)) == ["run"]


# ---------------------------------------------------------------- --task-file

def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_task_file_sets_the_test_tasks_and_test_reproduces_them_exactly(tmp_path: Path) -> None:
    """Train with one chosen test task; `safemeta test --task-file` on the same task gives
    the same exact-evaluation rows, on another task different ones."""
    a = '[{"goal_x": 4, "goal_y": 4, "slip": 0.1}]'
    b = '[{"goal_x": 0, "goal_y": 4, "slip": 0.0}]'
    out = tmp_path / "run"
    assert main(["train", *TINY, "--task-file", _write(tmp_path / "a.json", a), "--out", str(out)]) == 0
    saved = yaml.safe_load((out / "tasks.json").read_text())
    assert saved["test"] == [{"type": "GridTask", "goal_x": 4, "goal_y": 4, "slip": 0.1}]
    assert len(saved["val"]) == 2  # the split the file does not give is sampled as usual
    train_rows = [r for r in read_rows(out / "metrics.csv") if r["phase"] == "meta_test"]
    assert main(["test", str(out), "--task-file", str(tmp_path / "a.json")]) == 0
    rows = read_rows(out / "test" / "metrics.csv")
    assert [r["reward_mean"] for r in rows] == [r["reward_mean"] for r in train_rows]
    assert main(["test", str(out), "--task-file", _write(tmp_path / "b.json", b)]) == 0
    other = read_rows(out / "test" / "metrics.csv")
    assert len(other) == len(rows) and other[0]["reward_mean"] != rows[0]["reward_mean"]


@pytest.mark.parametrize(
    "text,match",
    [
        ('[{"goal_x": 9, "goal_y": 4, "slip": 0.1}]',
         "test task 0: goal_x: expected an integer in [0, 4], got 9"),
        ('{"val": [{"goal_x": 1}], "test": [{"slip": 0.9}]}', "test task 0: slip:"),
        ('[{"target_velocity": 1.0}]', "unknown field(s) ['target_velocity']"),
        ('[{"type": "VelocityTask", "goal_x": 1}]', "type 'VelocityTask' is not a task of tabular-grid"),
        ('{"tests": []}', "got ['tests']; accepted a list of tasks"),
        ('{"val": []}', "'val' must be a non-empty list of tasks"),
        ('[3]', "test task 0: task: got int"),
        ("nope", "not JSON"),
        ("[" * 100_000, "not JSON"),
        ('[{"goal_x": true, "goal_y": 4}]', "goal_x: got True; accepted a number"),
        (f'[{{"goal_x": {10**400}}}]', "goal_x: got an integer of 401 digits"),
    ],
)
def test_bad_task_file_exits_2_with_one_line_before_any_work(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path / "t.json", text)
    res = run_cli("train", *TINY, "--task-file", path, "--out", str(tmp_path / "o"))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and match in lines[0], res.stderr
    assert lines[0].startswith("safemeta: error: task-file: ")
    assert not (tmp_path / "o").exists()


def test_a_run_written_before_a_preset_field_resumes_with_its_default(tmp_path: Path) -> None:
    """medium now sets test_episodes_per_task = 40; a medium run whose config.yaml predates
    the field resumes (and is loaded) with the default 0, the behaviour it had; asking for 40
    on resume is refused as another config; a new run gets 40."""
    from safemeta.config import ConfigError
    from safemeta.experiment.runner import Run, RunSpec, resolve

    def spec(out: Path, resume: bool, **over: object) -> RunSpec:
        return RunSpec(env="point-circle", preset="medium", out=str(out), resume=resume, overrides=over)

    old = tmp_path / "old"
    Run(resolve(spec(old, False))).prepare()
    saved = yaml.safe_load((old / "config.yaml").read_text())
    assert saved["config"]["test_episodes_per_task"] == 40
    del saved["config"]["test_episodes_per_task"]
    (old / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    r = resolve(spec(old, True))
    assert r.cfg.test_episodes_per_task == 0 and r.cfg.eval_max_episodes == 100  # the rest: medium's
    Run(r).prepare()  # accepted
    with pytest.raises(ConfigError, match="test_episodes_per_task: saved 0, requested 40"):
        Run(resolve(spec(old, True, test_episodes_per_task=40))).prepare()
    assert resolve(spec(tmp_path / "new", True)).cfg.test_episodes_per_task == 40


def test_task_file_of_another_run_is_refused_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    other = _write(tmp_path / "t.json", '[{"goal_x": 2, "goal_y": 4, "slip": 0.05}]')
    res = run_cli("train", *TINY, "--task-file", other, "--out", str(out), "--resume")
    assert res.returncode == 2 and "task-file: its test tasks differ from those of the run" in res.stderr


def test_a_split_the_task_file_leaves_out_is_sampled_as_without_the_file(tmp_path: Path) -> None:
    assert main(["train", *TINY, "--out", str(tmp_path / "plain")]) == 0
    plain = yaml.safe_load((tmp_path / "plain" / "tasks.json").read_text())
    for given, kept in (("val", "test"), ("test", "val")):
        task = '{"goal_x": 1, "goal_y": 4, "slip": 0.0}'
        path = _write(tmp_path / f"{given}.json", f'{{"{given}": [{task}]}}')
        out = tmp_path / f"with-{given}"
        assert main(["train", *TINY, "--task-file", path, "--out", str(out)]) == 0
        tasks = yaml.safe_load((out / "tasks.json").read_text())
        assert tasks[kept] == plain[kept] and tasks[given] != plain[given]


def test_missing_task_field_without_a_default_is_named(tmp_path: Path) -> None:
    res = run_cli("train", "--env", "halfcheetah-vel", "--task-file", _write(tmp_path / "t.json", "[{}]"),
                  "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "test task 0: task: missing field(s) ['target_velocity']" in res.stderr
    assert not (tmp_path / "o").exists()


def test_test_command_task_file_errors_are_one_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    val_only = _write(tmp_path / "v.json", '{"val": [{"goal_x": 1, "goal_y": 4, "slip": 0.0}]}')
    one = _write(tmp_path / "one.json", '[{"goal_x": 1, "goal_y": 4, "slip": 0.0}]')
    for args, match in (([val_only], "has no 'test' tasks"),
                        ([one, "--tasks", "3"], "--tasks: got 3; the task file holds 1 test task(s)")):
        res = run_cli("test", str(out), "--task-file", *args)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and match in lines[0], res.stderr
