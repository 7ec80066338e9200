"""Runs that survive (SPEC §8, issue 5): kill -9 at several points, signals, damaged
checkpoints, non-finite steps, unwritable directories, invalid input."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from safemeta.cli import main
from safemeta.experiment import checkpoint
from safemeta.experiment.metrics import read_rows
from safemeta.experiment.runner import Run, RunError, RunSpec, resolve

SETS = {"iterations": 8, "checkpoint_every": 3, "val_tasks": 2, "test_tasks": 3,
        "test_steps": 3, "meta_batch": 2}
ARGS = ["--env", "tabular-grid", "--no-progress"] + [a for k, v in SETS.items()
                                                     for a in ("--set", f"{k}={v}")]


def cli(out: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("SAFEMETA_FAULT", None)
    if fault:
        env["SAFEMETA_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "safemeta", "train", *ARGS, "--out", str(out),
                           *extra], capture_output=True, text=True, env=env)


def comparable(run: Path) -> list[dict]:
    """Metrics rows without wall-clock columns (time_s and the per-phase t_*)."""
    return [{k: v for k, v in r.items() if k != "time_s" and not k.startswith("t_")}
            for r in read_rows(run / "metrics.csv")]


def final_params(run: Path) -> np.ndarray:
    path = checkpoint.list_checkpoints(run / "checkpoints")[-1]
    return checkpoint.read(path)["algo"]["phi"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    assert cli(out).returncode == 0
    return out


@pytest.mark.parametrize("fault", ["before_rename.yaml:1", "before_rename.yaml:2", "before_rename.json:1",
                                   "after_metrics:2", "after_metrics:4", "after_checkpoint:1",
                                   "before_rename.pt:2", "before_rename.pt:3", "meta_test_row:2"])
def test_kill_9_then_resume_equals_uninterrupted(tmp_path: Path, reference: Path, fault: str) -> None:
    out = tmp_path / "run"
    res = cli(out, fault=fault)
    assert res.returncode == -signal.SIGKILL, res.stderr
    res = cli(out, "--resume")
    assert res.returncode == 0, res.stderr
    assert comparable(out) == comparable(reference)
    np.testing.assert_array_equal(final_params(out), final_params(reference))
    assert not list((out / "checkpoints").glob(".*.tmp"))
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_sigterm_checkpoints_exits_0_and_resumes_exactly(tmp_path: Path) -> None:
    over = ["--set", "iterations=120", "--set", "checkpoint_every=1000", "--set", "meta_grad=full"]
    ref = tmp_path / "ref"
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "safemeta", "train", *ARGS, *over, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while len(read_rows(out / "metrics.csv")) < 3 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "resume with: safemeta train" in stdout + stderr
    n = len(read_rows(out / "metrics.csv"))
    assert 3 <= n < 120
    assert checkpoint.list_checkpoints(out / "checkpoints")
    assert cli(out, *over, "--resume").returncode == 0
    assert cli(ref, *over).returncode == 0
    assert comparable(out) == comparable(ref)


def test_resume_with_more_iterations_extends_a_finished_run_exactly(tmp_path: Path, reference: Path) -> None:
    """A finished 5-iteration run resumed with --set iterations=8 trains on and meta-tests
    again: its metrics and parameters equal those of the run started with 8."""
    out = tmp_path / "run"
    assert cli(out, "--set", "iterations=5").returncode == 0
    first = comparable(out)
    assert sum(r["phase"] == "meta_test" for r in first) == SETS["test_steps"] + 1
    res = cli(out, "--resume")  # ARGS ask for 8
    assert res.returncode == 0, res.stderr
    assert "resumed from" in res.stdout and "(iteration 5)" in res.stdout
    assert comparable(out) == comparable(reference)
    np.testing.assert_array_equal(final_params(out), final_params(reference))
    assert "extended from 5 to 8 iterations" in (out / "events.log").read_text()
    assert "iterations: 8" in (out / "config.yaml").read_text() and (out / "DONE").exists()


def test_resume_with_fewer_iterations_is_one_line_and_changes_nothing(tmp_path: Path, reference: Path,
                                                                       capsys) -> None:
    before = {p.name: p.read_bytes() for p in reference.iterdir() if p.is_file()}
    code = main(["train", *ARGS, "--set", "iterations=5", "--out", str(reference), "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "iterations: saved 8, requested 5" in err and "not shortened" in err
    assert {p.name: p.read_bytes() for p in reference.iterdir() if p.is_file()} == before


def test_plain_resume_does_not_extend_a_run_to_the_preset_iterations(tmp_path: Path, capsys) -> None:
    """Only an explicit --set iterations=N extends: a preset whose iterations differ from the
    run's (e.g. changed since) is refused in one line, and nothing is touched."""
    base = ["train", "--env", "tabular-grid", "--no-progress"] + [
        a for k, v in SETS.items() if k != "iterations" for a in ("--set", f"{k}={v}")]
    out = tmp_path / "run"
    assert main([*base, "--set", "iterations=2", "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main([*base, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "iterations: saved 2" in err and "by the preset" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_truncated_and_corrupted_checkpoints_fall_back(tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "run"
    assert cli(out, "--set", "keep_checkpoints=5").returncode == 0
    ckpts = checkpoint.list_checkpoints(out / "checkpoints")  # 3, 6, 8
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:100])  # truncated
    data = bytearray(ckpts[-2].read_bytes())
    data[-10] ^= 0x55  # one flipped byte
    ckpts[-2].write_bytes(bytes(data))
    (out / "DONE").unlink()
    res = cli(out, "--set", "keep_checkpoints=5", "--resume")
    assert res.returncode == 0, res.stderr
    assert f"checkpoint {ckpts[-1]} skipped: damaged or truncated" in res.stdout
    assert f"checkpoint {ckpts[-2]} skipped: damaged or truncated" in res.stdout
    assert f"resumed from {ckpts[-3]}" in res.stdout
    assert comparable(out) == comparable(reference)
    assert "skipped" in (out / "events.log").read_text()


def test_checkpoint_of_another_format_is_named_and_skipped(tmp_path: Path) -> None:
    d = tmp_path / "ck"
    checkpoint.save(d, 1, {"x": 1})
    checkpoint.save(d, 2, {"x": 2})
    (d / checkpoint.name_for(3)).write_bytes(b"PK\x03\x04 something else")
    msgs: list[str] = []
    path, payload = checkpoint.load_latest(d, warn=msgs.append)
    assert payload["x"] == 2 and msgs == [f"checkpoint {d / 'ckpt_000003.pt'} skipped: "
                                          "not a safemeta checkpoint (bad header); trying the previous one"]


def test_non_finite_iteration_is_rejected_and_training_continues(tmp_path: Path) -> None:
    spec = RunSpec(env="tabular-grid", overrides=SETS, out=str(tmp_path / "run"))
    r = resolve(spec)
    real = r.algo_cls.train_iteration

    def flaky(self, it: int):
        row = real(self, it)
        if it == 3:  # an injected NaN in the advantages poisons the step
            self.phi = self.phi + np.nan
            row["reward_mean"] = float("nan")
        return row

    r.algo_cls = type("Flaky", (r.algo_cls,), {"train_iteration": flaky})
    logs: list[str] = []
    assert Run(r, log=logs.append).train(progress=False)
    rows = [x for x in read_rows(r.out / "metrics.csv") if x["phase"] == "meta_train"]
    assert [x["iteration"] for x in rows] == [0, 1, 2, 4, 5, 6, 7]
    assert all(np.isfinite(x["reward_mean"]) for x in rows)
    assert any("iteration 3 rejected: non-finite or failed step (reward_mean)" in m for m in logs)
    assert np.all(np.isfinite(final_params(r.out)))
    assert checkpoint.read(checkpoint.list_checkpoints(r.out / "checkpoints")[-1])["rejected"] == 1


def test_nan_in_the_advantages_is_rejected_and_the_run_goes_on(tmp_path: Path, monkeypatch) -> None:
    """NaN advantages reach the exact dual, which refuses them; the iteration is rejected,
    logged, and training continues from the last good state."""
    import safemeta.tabular.meta as tm

    real_problem, calls = tm.make_problem, {"n": 0}

    def poisoned(f, adv, *rest):
        calls["n"] += 1
        if calls["n"] == 5:  # one adaptation step inside iteration 2
            adv = adv * np.nan
        return real_problem(f, adv, *rest)

    monkeypatch.setattr(tm, "make_problem", poisoned)
    r = resolve(RunSpec(env="tabular-grid", overrides=SETS, out=str(tmp_path / "run")))
    logs: list[str] = []
    assert Run(r, log=logs.append).train(progress=False)
    rejected = [m for m in logs if "rejected" in m]
    assert len(rejected) == 1 and "ValueError: adv: contains NaN or inf" in rejected[0]
    rows = [x for x in read_rows(r.out / "metrics.csv") if x["phase"] == "meta_train"]
    assert len(rows) == 7 and all(np.isfinite(x["reward_mean"]) for x in rows)
    assert "rejected" in (r.out / "events.log").read_text()


def test_repeated_failures_stop_with_one_line_and_a_good_checkpoint(tmp_path: Path) -> None:
    r = resolve(RunSpec(env="tabular-grid", overrides={**SETS, "iterations": 30}, out=str(tmp_path / "run")))
    real = r.algo_cls.train_iteration

    def broken_after_4(self, it: int):
        if it >= 4:
            raise FloatingPointError("overflow in the outer step")
        return real(self, it)

    r.algo_cls = type("Broken", (r.algo_cls,), {"train_iteration": broken_after_4})
    with pytest.raises(RunError, match=r"^10 consecutive iterations rejected \(last: FloatingPointError"):
        Run(r, log=lambda m: None).train(progress=False)
    payload = checkpoint.read(checkpoint.list_checkpoints(r.out / "checkpoints")[-1])
    assert payload["next_iteration"] == 13 and payload["metrics_rows"] == 4
    assert np.all(np.isfinite(payload["algo"]["phi"]))


def test_disk_full_is_a_clear_error_and_keeps_the_last_checkpoint(tmp_path: Path, monkeypatch) -> None:
    r = resolve(RunSpec(env="tabular-grid", overrides=SETS, out=str(tmp_path / "run")))
    real_replace = os.replace
    calls = {"n": 0}

    def full_disk(src, dst):
        if str(dst).endswith(".pt"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(RunError, match=r"cannot write checkpoint .*ckpt_000006.pt: No space left on "
                                       r"device; last good checkpoint: ckpt_000003.pt \(intact\)"):
        Run(r, log=lambda m: None).train(progress=False)
    assert checkpoint.read(r.out / "checkpoints" / "ckpt_000003.pt")["next_iteration"] == 3
    assert not list((r.out / "checkpoints").glob(".*.tmp"))


def test_unwritable_run_directory_is_one_line_exit_1(tmp_path: Path, monkeypatch, capsys) -> None:
    def refuse(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", refuse)
    code = main(["train", *ARGS, "--out", str(tmp_path / "ro" / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "cannot write to" in err[0] and "Read-only" in err[0]


# ---------------------------------------------------------------- invalid input, property-based

KEYS = ["seed", "iterations", "meta_batch", "val_tasks", "test_tasks", "test_steps", "lam", "lam_c",
        "delta", "hyper", "lr", "meta_grad", "device", "meta_margin", "checkpoint_every", "alpha",
        "lr_cost", "init_logit_scale", "keep_checkpoints"]


def bad_value(key: str) -> st.SearchStrategy[str]:
    numeric_bad = st.sampled_from(["-1", "-0.5", "abc", "nan", "inf", "", "1e400", "[1]"])
    if key in ("hyper", "meta_grad", "device"):
        return st.text(min_size=1, max_size=8).filter(
            lambda s: s.strip() not in ("explicit", "theory", "hessian_free", "full", "cpu") and "\n" not in s
            and "\x00" not in s)
    if key in ("lam_c", "delta", "meta_margin", "seed", "test_steps", "alpha", "init_logit_scale"):
        return st.sampled_from(["-1", "-0.5", "abc", "nan", "inf", "1e400", "1e308"])
    return numeric_bad


def _all_config_fields() -> set[str]:
    import dataclasses

    from safemeta.algos import _ALGOS, algorithm

    return {f.name for a, fam in _ALGOS for f in dataclasses.fields(algorithm(a, fam).Config)}


ALL_FIELDS = _all_config_fields()


@st.composite
def bad_override(draw) -> str:
    if draw(st.booleans()):  # an unknown key: never the name of any algorithm's field
        key = draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
            lambda k: k not in ALL_FIELDS))
        return f"{key}=1"
    key = draw(st.sampled_from(KEYS))
    return f"{key}={draw(bad_value(key))}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(item=bad_override(), env=st.sampled_from(["tabular-grid", "tabular-random", "point-circle",
                                                 "halfcheetah-vel"]))
def test_invalid_config_always_exits_2_one_line_no_run_dir(tmp_path: Path, capsys, item: str,
                                                            env: str) -> None:
    out = tmp_path / f"run-{abs(hash(item))}"
    code = main(["train", "--env", env, "--set", item, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("safemeta: error: "), (item, err)
    assert not out.exists()


@settings(max_examples=60, deadline=None)
@given(goal_x=st.integers(-5, 10), goal_y=st.integers(-5, 10),
       slip=st.one_of(st.floats(-1, 2), st.just(float("nan"))))
def test_invalid_grid_tasks_raise_value_error_naming_the_parameter(goal_x: int, goal_y: int,
                                                                   slip: float) -> None:
    from safemeta.envs.registry import suite

    s = suite("tabular-grid")
    ok_x, ok_y = 0 <= goal_x < 5, 0 <= goal_y < 5
    ok_slip = 0 <= slip <= 0.5
    d = {"goal_x": goal_x, "goal_y": goal_y, "slip": slip}
    if ok_x and ok_y and ok_slip and (goal_x, goal_y) not in s.HAZARDS:
        assert s.task_from_dict(d).goal_x == goal_x
        return
    with pytest.raises(ValueError) as e:
        s.task_from_dict(d)
    name = str(e.value).split(":")[0]
    assert name in ("goal_x", "goal_y", "slip", "goal_x, goal_y")


BAD_TASK_VALUES = st.one_of(
    st.text(max_size=4), st.none(), st.just(float("nan")), st.just(float("inf")), st.floats(-1e9, -1e-3),
    st.floats(1e3, 1e9), st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=2), st.none()), st.booleans(), st.integers(10**20, 10**400),
)


@st.composite
def corrupted_task(draw) -> tuple[str, dict]:
    """A valid sampled task of a suite with one field replaced by a doubtful value."""
    from safemeta.envs.registry import suite

    env = draw(st.sampled_from(["tabular-grid", "tabular-random", "halfcheetah-vel", "hopper-vel",
                                "swimmer-vel", "humanoid-dir", "point-circle", "car-circle",
                                "point-button"]))
    task = suite(env).sample_tasks(1, np.random.default_rng(draw(st.integers(0, 9))), "test")[0].to_dict()
    key = draw(st.sampled_from(sorted(k for k in task if k != "type")))
    task[key] = draw(BAD_TASK_VALUES)
    return env, task


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=corrupted_task())
@example(case=("car-circle", {"type": "CarCircleTask", "radius": 1.3, "wall": 0.8, "hazards": {"": None}}))
def test_impossible_task_parameters_from_a_task_file_exit_2_one_line_no_run_dir(tmp_path: Path, capsys,
                                                                               case) -> None:
    """Whatever the suite's own validator rejects is refused by the command line: exit 2,
    one line that carries the validator's message, no traceback, no run directory."""
    import json

    from safemeta.envs.registry import suite

    env, task = case
    try:
        suite(env).task_from_dict(task)
        valid = True
    except (ValueError, TypeError, OverflowError) as e:
        valid, reason = False, str(e).splitlines()[0]
    assume(not valid)
    path = tmp_path / f"tasks-{abs(hash(json.dumps(task, default=str)))}.json"
    path.write_text(json.dumps([task]))
    out = tmp_path / f"run-{path.stem}"
    code = main(["train", "--env", env, "--task-file", str(path), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("safemeta: error: task-file: "), (task, err)
    assert reason.strip() in err[0]
    assert not out.exists()


def test_checkpoint_holds_rng_state_and_torch_loads_it(tmp_path: Path, reference: Path) -> None:
    payload = checkpoint.read(checkpoint.list_checkpoints(reference / "checkpoints")[-1])
    assert payload["algo"]["rng"]["bit_generator"] == "PCG64"
    assert payload["next_iteration"] == 8 and payload["metrics_rows"] == 8
    state = np.random.default_rng()
    state.bit_generator.state = payload["algo"]["rng"]
    assert isinstance(state.random(), float)


def test_metrics_shorter_than_the_checkpoint_is_an_error_not_a_silent_loss(tmp_path: Path,
                                                                           reference: Path) -> None:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "DONE").unlink()
    lines = (out / "metrics.csv").read_text().splitlines(keepends=True)
    (out / "metrics.csv").write_text("".join(lines[:3]))
    res = cli(out, "--resume")
    assert res.returncode == 1 and "holds 2 rows but the checkpoint covers 8" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("damage", ["truncate", "empty", "partial"])
def test_damaged_config_yaml_is_named_in_one_line(tmp_path: Path, reference: Path, damage: str) -> None:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    path = out / "config.yaml"
    text = {"truncate": path.read_text()[:150] + "\n  - [", "empty": "",
            "partial": "env: tabular-grid\n"}[damage]
    path.write_text(text)
    for args in (["train", *ARGS, "--out", str(out), "--resume"], ["test", str(out)]):
        res = subprocess.run([sys.executable, "-m", "safemeta", *args], capture_output=True, text=True)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "config.yaml" in res.stderr


def test_impossible_task_in_tasks_json_is_one_line(tmp_path: Path, reference: Path) -> None:
    import json
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    data = json.loads((out / "tasks.json").read_text())
    data["test"][0].update(goal_x=1, goal_y=2)  # a hazard cell
    (out / "tasks.json").write_text(json.dumps(data))
    res = subprocess.run([sys.executable, "-m", "safemeta", "test", str(out)], capture_output=True, text=True)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "tasks.json: goal_x, goal_y: (1, 2) is a hazard cell" in res.stderr


def test_out_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    res = cli(f)
    assert res.returncode == 2 and "out: " in res.stderr and "is a file" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- physics instability


def test_mujoco_divergence_truncates_the_episode_with_a_flag() -> None:
    """A diverging MuJoCo state (MuJoCo resets it and warns) or a non-finite observation
    ends the episode as truncated, keeps the last good observation, and is counted."""
    from safemeta.envs.registry import suite
    from safemeta.rollout.batch import BatchEnv

    s = suite("halfcheetah-vel")
    tasks = s.sample_tasks(2, np.random.default_rng(0))
    envs = [s.make(t) for t in tasks]
    batch = BatchEnv(envs, horizon=50)
    obs0 = batch.start(np.array([1, 1]), [np.random.default_rng(0)] * 2)
    env = envs[0].unwrapped
    env.data.qacc_warmstart[:] = 0
    env.data.qvel[:] = 1e30  # blows up on the next step
    step = batch.step(np.zeros((2, 6)))
    assert step.unstable.tolist() == [True, False]
    assert step.truncated[0] and not step.terminated[0] and batch.unstable == 1
    np.testing.assert_array_equal(step.final_obs[0], obs0[0])
    assert step.reward[0] == 0.0 and np.isfinite(step.obs).all()
    assert not step.truncated[1] and batch.active.tolist() == [False, True]


# ---------------------------------------------------------------- the continuous algorithm

CONT = ["--env", "point-circle", "--no-progress"] + [
    a for kv in ("iterations=4", "meta_batch=2", "episodes_per_task=3", "horizon=60", "val_tasks=1",
                 "test_tasks=1", "test_steps=1", "eval_episodes=2", "checkpoint_every=1", "eval_every=2")
    for a in ("--set", kv)]


def cont(out: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("SAFEMETA_FAULT", None)
    if fault:
        env["SAFEMETA_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "safemeta", "train", *CONT, "--out", str(out), *extra],
                          capture_output=True, text=True, env=env)


def assert_same_continuous_run(out: Path, ref: Path) -> None:
    """Metrics rows and the final checkpoint's policy parameters are identical."""
    import torch

    assert comparable(out) == comparable(ref)
    a, b = (checkpoint.read(checkpoint.list_checkpoints(d / "checkpoints")[-1])["algo"] for d in (ref, out))
    flat = lambda s: torch.cat([v.flatten().float() for v in s["policy"].values()])  # noqa: E731
    assert torch.equal(flat(a), flat(b))


@pytest.mark.parametrize("fault", ["after_metrics:2", "before_rename.pt:3"])
def test_kill_9_resume_is_exact_for_the_continuous_algorithm(tmp_path: Path, fault: str) -> None:
    """SafeMeta on point-circle: policy, critics, optimisers, normaliser and every RNG are
    in the checkpoint, so a resumed run equals the uninterrupted one, parameters included."""
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert cont(ref).returncode == 0
    assert cont(out, fault=fault).returncode == -signal.SIGKILL
    res = cont(out, "--resume")
    assert res.returncode == 0, res.stderr
    assert_same_continuous_run(out, ref)


def test_extending_a_run_is_exact_for_the_continuous_algorithm(tmp_path: Path) -> None:
    """SafeMeta on point-circle, 2 iterations extended to 4, equals the 4-iteration run."""
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert cont(ref).returncode == 0
    assert cont(out, "--set", "iterations=2").returncode == 0
    res = cont(out, "--resume")
    assert res.returncode == 0, res.stderr
    assert_same_continuous_run(out, ref)
