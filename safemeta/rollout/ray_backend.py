"""Ray backend: the tasks of a collection split over Ray actors, each with its env pool.

The same split as the process backend (`parallel.split_jobs`): one actor call per chunk
of consecutive tasks, carrying the chunk's policies (each distinct one once) and its
tasks' stream states, so the result equals the local sampler's bit for bit. An actor
keeps its `Sampler` (its envs) across calls. A killed actor is restarted by Ray and the
call retried from the same stream states (same numbers); an actor Ray gives up on is
replaced and the call resubmitted.

The cluster: `address`, else `RAY_ADDRESS`, else a local Ray started for the process
(dashboard and usage statistics off), kept for later runs of the process.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any, Sequence

import torch

from safemeta.config import ConfigError
from safemeta.envs.base import Suite, Task
from safemeta.nn.policy import GaussianPolicy
from safemeta.rollout.buffer import Rollout
from safemeta.rollout.parallel import RESTARTS, Job, Part, SamplerArgs, finish, run_job, split_jobs
from safemeta.rollout.sampler import Sampler, TaskStream, scripted

INSTALL = "backend: 'ray' needs Ray, which is not installed; pip install safemeta[ray]"
START_TIMEOUT_S = 300.0  # actors that cannot be placed by then (too few CPUs): an error, not a hang


def available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def connect(address: str | None = None, workers: int = 1) -> None:
    """Join the cluster at `address` (or `RAY_ADDRESS`), or start a local Ray; once per process.
    `ray.init` installs its own SIGTERM handler: the caller's is put back."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                          "logging_level": logging.WARNING}
    if address == "local":  # enough CPUs for every actor, whatever the machine has
        kw["num_cpus"] = max(os.cpu_count() or 1, workers)
    term = signal.getsignal(signal.SIGTERM)
    ray.init(address=address, **kw)
    try:
        signal.signal(signal.SIGTERM, term)
    except ValueError:  # not the main thread: nothing was installed either
        pass


def shutdown() -> None:
    import ray

    ray.shutdown()


class SamplerActor:
    """A Ray actor's state: its `Sampler` (env pool) kept across calls."""

    def __init__(self, args: SamplerArgs) -> None:
        torch.set_num_threads(1)
        self.sampler = args.build()

    def collect(self, job: Job) -> Part:
        return run_job(self.sampler, job)

    def pid(self) -> int:
        return os.getpid()


class RaySampler(Sampler):
    """`Sampler.collect` with the tasks split over `workers` Ray actors."""

    def __init__(
        self,
        suite: Suite,
        horizon: int,
        gamma: float,
        envs_per_task: int = 0,
        pool_capacity: int = 256,
        workers: int = 2,
        address: str | None = None,
    ) -> None:
        import ray

        super().__init__(suite, horizon, gamma, envs_per_task, pool_capacity)
        connect(address, workers)
        # passed by value, not `ray.put`: a restarted actor needs its arguments again
        self.args = SamplerArgs(suite, horizon, gamma, envs_per_task, pool_capacity)
        self._remote = ray.remote(num_cpus=1, max_restarts=RESTARTS, max_task_retries=RESTARTS)(SamplerActor)
        self.actors = [self._remote.remote(self.args) for _ in range(workers)]
        self._wait_started()

    def _wait_started(self) -> None:
        """Each actor takes one CPU of the cluster: too few free CPUs would wait forever."""
        import ray

        pending = [a.pid.remote() for a in self.actors]
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=START_TIMEOUT_S)
        if len(ready) < len(pending):
            free = ray.available_resources().get("CPU", 0.0)
            self.close()
            raise ConfigError(f"--workers: {len(pending)} Ray actors of 1 CPU each did not start within "
                              f"{START_TIMEOUT_S:.0f} s ({free:g} CPUs free in the cluster); ask for fewer")

    def collect(
        self,
        tasks: Sequence[Task],
        policies: Sequence[GaussianPolicy],
        streams: Sequence[TaskStream],
        episodes: int = 0,
        steps: int = 0,
        stacked: bool | None = None,
    ) -> Rollout:
        import ray
        from ray.exceptions import RayActorError

        if not tasks or scripted(policies):  # no tasks: the local sampler's error
            return super().collect(tasks, policies, streams, episodes, steps, stacked)
        jobs = split_jobs(tasks, policies, streams, episodes, steps, len(self.actors), stacked)
        refs = {w: self.actors[w].collect.remote(job) for w, (_, job) in enumerate(jobs)}
        parts: dict[int, Part] = {}
        for attempt in range(RESTARTS + 1):
            for w, ref in list(refs.items()):
                try:
                    parts[w] = ray.get(ref)
                    del refs[w]
                except RayActorError:  # Ray gave up on the actor: a fresh one runs the chunk again
                    if attempt == RESTARTS:
                        raise
                    ray.kill(self.actors[w], no_restart=True)
                    self.actors[w] = self._remote.remote(self.args)
                    refs[w] = self.actors[w].collect.remote(jobs[w][1])
            if not refs:
                break
        return finish(streams, [(where, parts[w]) for w, (where, _) in enumerate(jobs)])

    def pids(self) -> list[int]:
        """The actors' process ids (for tests that kill one)."""
        import ray

        return ray.get([a.pid.remote() for a in self.actors])

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
        self.actors = []
        super().close()
