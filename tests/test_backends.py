"""Sampling backends (issue 11): the tasks of a collection split over worker processes
(`process`) or Ray actors (`ray`) give the local sampler's rollouts bit for bit, and a
run's metrics and parameters; a killed worker is restarted and its part collected again
with the same numbers; what cannot run (Ray absent, CUDA absent) is one line, exit 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_streams import assert_same, policies

import safemeta
from safemeta.cli import main
from safemeta.envs.base import Task
from safemeta.experiment import checkpoint
from safemeta.experiment.metrics import read_rows
from safemeta.nn.policy import GaussianPolicy
from safemeta.rollout.parallel import ProcessSampler
from safemeta.rollout.sampler import Sampler, TaskStream
from safemeta.rollout.toy import PointMassEnv, PointMassSuite

HORIZON, K = 40, 2


def streams(n: int, root: int = 7) -> list[TaskStream]:
    return [TaskStream.of(root, (1, 0, i)) for i in range(n)]


def mixed_normalisers(obs_dim: int, act_dim: int) -> list[GaussianPolicy]:
    """Tasks 0 and 1 share a normaliser, task 2 has its own: the whole collection acts
    task by task, and so must a part holding only tasks 0 and 1."""
    pols = policies(obs_dim, act_dim, 3, shared=False)
    pols[2].normalizer.update(np.ones((4, obs_dim)))
    return pols


@pytest.fixture(scope="module")
def hopper() -> tuple[Any, list[Task]]:
    suite = safemeta.suite("hopper-vel")
    return suite, suite.sample_tasks(3, np.random.default_rng(1), "train")


@pytest.fixture(scope="module")
def process_sampler(hopper) -> Iterator[ProcessSampler]:
    sampler = ProcessSampler(hopper[0], HORIZON, 0.99, envs_per_task=K, workers=2)
    yield sampler
    sampler.close()


def local_and(sampler: Sampler, suite: Any, tasks: list[Task], pols: list[GaussianPolicy],
              **budget: int) -> None:
    """`sampler` collects what the local sampler collects, and leaves the streams alike."""
    mine, ref = streams(len(tasks)), streams(len(tasks))
    want = Sampler(suite, HORIZON, 0.99, envs_per_task=K).collect(tasks, pols, ref, **budget)
    assert_same(sampler.collect(tasks, pols, mine, **budget), want)
    for a, b in zip(mine, ref):
        assert a.rng.integers(2**62) == b.rng.integers(2**62)
        assert torch.equal(torch.randn(3, generator=a.gen), torch.randn(3, generator=b.gen))


@pytest.mark.parametrize("kind", ["meta-policy", "adapted", "mixed-normalisers"])
@pytest.mark.parametrize("budget", [{"steps": 70}, {"episodes": 3}], ids=["steps", "episodes"])
def test_process_backend_equals_local_bit_for_bit(process_sampler, hopper, kind: str,
                                                  budget: dict[str, int]) -> None:
    suite, tasks = hopper
    obs, act = (s.shape[0] for s in suite.spaces())
    pols = mixed_normalisers(obs, act) if kind == "mixed-normalisers" else \
        policies(obs, act, 3, shared=kind == "meta-policy")
    local_and(process_sampler, suite, tasks, pols, **budget)
    local_and(process_sampler, suite, tasks[:1], pols[:1], **budget)  # fewer tasks than workers
    assert all(pid is not None for pid in process_sampler.pids())  # both were used, and are kept


def test_an_error_in_a_worker_is_raised_as_the_local_sampler_raises_it(process_sampler, hopper) -> None:
    suite, tasks = hopper
    wrong = policies(3, 2, 3, shared=True)  # observations of the wrong size
    with pytest.raises(RuntimeError):
        Sampler(suite, HORIZON, 0.99, K).collect(tasks, wrong, streams(3), episodes=1)
    with pytest.raises(RuntimeError):
        process_sampler.collect(tasks, wrong, streams(3), episodes=1)
    obs, act = (s.shape[0] for s in suite.spaces())
    local_and(process_sampler, suite, tasks, policies(obs, act, 3, shared=True), episodes=2)  # still fine


# ------------------------------------------------------------- a worker killed mid-collection

class DyingEnv(PointMassEnv):
    """Kills its own process (SIGKILL) at step `at` of an episode while `marker` exists,
    removing it first: the first worker dies mid-collection, the one started again does not."""

    def __init__(self, task: Task, horizon: int, marker: str, at: int) -> None:
        super().__init__(task, horizon)  # type: ignore[arg-type]
        self.marker, self.at = marker, at

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.t + 1 == self.at:
            try:  # the one worker that removes the marker dies (two may reach here at once)
                os.unlink(self.marker)
            except FileNotFoundError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().step(action)


class DyingSuite(PointMassSuite):
    def __init__(self, marker: str, at: int = 5) -> None:
        super().__init__(horizon=20)
        self.marker, self.at = marker, at

    def make(self, task: Task, **kwargs: Any) -> gym.Env:
        return DyingEnv(task, self.horizon, self.marker, self.at)


def test_auto_samples_small_collections_here_and_large_ones_on_workers(hopper) -> None:
    """`auto`'s sampler: a collection under `min_steps` env steps, or of one task, starts no
    worker; a larger one is split over the workers; all equal the local sampler's."""
    suite, tasks = hopper
    pols = policies(*[s.shape[0] for s in suite.spaces()], 3, shared=True)
    sampler = ProcessSampler(suite, HORIZON, 0.99, envs_per_task=K, workers=2, min_steps=3 * 2 * HORIZON + 1)
    try:
        local_and(sampler, suite, tasks, pols, episodes=2)  # 3 tasks x 2 x 40 = 240 steps < 241
        local_and(sampler, suite, tasks[:1], pols[:1], episodes=7)  # 280 steps, but one task
        assert sampler.pids() == [None, None]
        local_and(sampler, suite, tasks, pols, episodes=3)  # 360 steps
        assert all(pid is not None for pid in sampler.pids())
    finally:
        sampler.close()


@pytest.mark.parametrize("cores,want", [(1, None), (2, 2), (64, 8)])
def test_auto_backend_takes_a_worker_per_core(monkeypatch, cores: int, want: int | None) -> None:
    """`auto`: no workers on one core, one per usable core up to AUTO_MAX_WORKERS, each
    for collections of AUTO_MIN_STEPS steps or more; explicit --workers win."""
    from safemeta.rollout import backends

    monkeypatch.setattr(backends, "usable_cores", lambda: cores)
    suite = safemeta.suite("hopper-vel")
    with backends.use(backends.Backend("auto")):
        sampler = backends.make_sampler(suite, HORIZON, 0.99, K)
    try:
        if want is None:
            assert type(sampler) is Sampler
        else:
            assert isinstance(sampler, ProcessSampler)
            assert (sampler.workers, sampler.min_steps) == (want, backends.AUTO_MIN_STEPS)
    finally:
        sampler.close()
    assert backends.Backend("auto", workers=3).size() == 3
    assert backends.Backend("process").size() == backends.Backend("ray").size() == 2


def test_auto_counts_a_containers_cpu_quota_and_samples_unpicklable_suites_here(monkeypatch) -> None:
    from safemeta.rollout import backends

    assert backends.quota_cores("max 100000\n") is None
    assert backends.quota_cores("200000 100000\n") == 2
    assert backends.quota_cores("150000 100000") == 2  # 1.5 CPUs: rounded up
    assert backends.quota_cores("50000 100000") == 1
    assert backends.quota_cores("") is None
    monkeypatch.setattr(backends, "usable_cores", lambda: 4)
    suite = PointMassSuite()
    suite.hook = lambda: None  # a lambda: the suite cannot be sent to a worker process
    with backends.use(backends.Backend("auto")):
        sampler = backends.make_sampler(suite, HORIZON, 0.99, K)
    assert type(sampler) is Sampler
    sampler.close()


def killed_worker_case(tmp_path: Path) -> tuple[DyingSuite, list[Task], list[GaussianPolicy], Path]:
    marker = tmp_path / "die"
    suite = DyingSuite(str(marker))
    tasks = suite.sample_tasks(4, np.random.default_rng(0), "train")
    torch.manual_seed(0)
    return suite, tasks, [GaussianPolicy(2, 1, [8], init_log_std=-0.5)] * 4, marker


def test_a_killed_process_worker_is_restarted_and_the_collection_is_identical(tmp_path: Path) -> None:
    suite, tasks, pols, marker = killed_worker_case(tmp_path)
    want = Sampler(suite, 20, 0.99, K).collect(tasks, pols, streams(4), episodes=3)  # no marker: no kill
    sampler = ProcessSampler(suite, 20, 0.99, K, workers=2)
    try:
        assert_same(sampler.collect(tasks, pols, streams(4), episodes=3), want)
        before = sampler.pids()
        marker.touch()
        assert_same(sampler.collect(tasks, pols, streams(4), episodes=3), want)
        assert not marker.exists()  # a worker did die mid-collection
        assert sum(a != b for a, b in zip(before, sampler.pids())) == 1  # and only it was replaced
    finally:
        sampler.close()


# ------------------------------------------------------------- runs

CONT = ["--env", "point-circle", "--no-progress"] + [
    a for kv in ("iterations=3", "meta_batch=3", "episodes_per_task=3", "horizon=30", "val_tasks=1",
                 "test_tasks=1", "test_steps=1", "eval_episodes=2", "checkpoint_every=1", "eval_every=2")
    for a in ("--set", kv)]


def comparable(run: Path) -> list[dict]:
    """Metrics rows without wall-clock columns (time_s and the per-phase t_*)."""
    return [{k: v for k, v in r.items() if k != "time_s" and not k.startswith("t_")}
            for r in read_rows(run / "metrics.csv")]


def final_policy(run: Path) -> torch.Tensor:
    state = checkpoint.read(checkpoint.list_checkpoints(run / "checkpoints")[-1])["algo"]["policy"]
    return torch.cat([v.flatten().double() for v in state.values()])


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "run"
    assert main(["train", *CONT, "--out", str(out), "--backend", "local"]) == 0
    return out


def test_a_run_resumed_on_the_process_backend_equals_the_local_run(tmp_path: Path, local_run: Path) -> None:
    """Killed after its second iteration on the local backend, resumed with `--backend
    process`: metrics and parameters equal the local run's. The backend is a run option,
    so it is not in config.yaml and resuming on another one is allowed."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "SAFEMETA_FAULT": "after_metrics:2"}
    res = subprocess.run([sys.executable, "-m", "safemeta", "train", *CONT, "--out", str(out)],
                         capture_output=True, text=True, env=env)
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert "backend" not in (out / "config.yaml").read_text()
    assert main(["train", *CONT, "--out", str(out), "--resume", "--backend", "process"]) == 0
    assert comparable(out) == comparable(local_run)
    assert torch.equal(final_policy(out), final_policy(local_run))


# ------------------------------------------------------------- Ray

@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    from safemeta.rollout import ray_backend

    ray_backend.connect(workers=2)
    # Ray's workers do not see tests/ on their path: the test suites travel by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray_backend.shutdown()


def test_ray_backend_equals_local_bit_for_bit(ray_local, hopper) -> None:
    from safemeta.rollout.ray_backend import RaySampler

    suite, tasks = hopper
    obs, act = (s.shape[0] for s in suite.spaces())
    sampler = RaySampler(suite, HORIZON, 0.99, envs_per_task=K, workers=2)
    try:
        for kind in ("meta-policy", "mixed-normalisers"):
            pols = mixed_normalisers(obs, act) if kind != "meta-policy" else policies(obs, act, 3, True)
            local_and(sampler, suite, tasks, pols, steps=70)
    finally:
        sampler.close()


def test_a_killed_ray_worker_is_retried_and_the_collection_is_identical(ray_local, tmp_path: Path) -> None:
    from safemeta.rollout.ray_backend import RaySampler

    suite, tasks, pols, marker = killed_worker_case(tmp_path)
    want = Sampler(suite, 20, 0.99, K).collect(tasks, pols, streams(4), episodes=3)
    sampler = RaySampler(suite, 20, 0.99, K, workers=2)
    try:
        before = sampler.pids()
        marker.touch()
        assert_same(sampler.collect(tasks, pols, streams(4), episodes=3), want)
        assert not marker.exists()  # an actor did die mid-collection
        assert sum(a != b for a, b in zip(before, sampler.pids())) == 1  # Ray restarted it
        ray_local.kill(sampler.actors[0], no_restart=True)  # one Ray gave up on: replaced
        assert_same(sampler.collect(tasks, pols, streams(4), episodes=3), want)
    finally:
        sampler.close()


def test_a_run_on_the_ray_backend_equals_the_local_run(ray_local, tmp_path: Path, local_run: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", *CONT, "--out", str(out), "--backend", "ray", "--workers", "2"]) == 0
    assert comparable(out) == comparable(local_run)
    assert torch.equal(final_policy(out), final_policy(local_run))


# ------------------------------------------------------------- what cannot run: one line, exit 2

def one_line_exit_2(capsys: pytest.CaptureFixture, args: list[str], match: str, tmp_path: Path) -> None:
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], lines
    assert not (tmp_path / "o").exists()


def test_ray_backend_without_ray_is_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    one_line_exit_2(capsys, ["train", *CONT, "--backend", "ray"], "pip install safemeta[ray]", tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_without_cuda_is_one_line(capsys, tmp_path: Path) -> None:
    one_line_exit_2(capsys, ["train", *CONT, "--device", "cuda"], "no CUDA device is available", tmp_path)


@pytest.mark.parametrize("args,match", [(["--backend", "mpi"], "backend: 'mpi' is unknown; accepted auto, "
                                         "local, process, ray"), (["--backend", "process", "--workers", "-1"],
                                                                  "--workers: got -1")])
def test_bad_backend_options_are_one_line(capsys, tmp_path: Path, args: list[str], match: str) -> None:
    one_line_exit_2(capsys, ["train", *CONT, *args], match, tmp_path)
