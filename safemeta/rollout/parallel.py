"""Process-parallel sampling: the tasks of a collection split over worker processes.

Each worker process keeps its own `Sampler` (its env pool lives across calls). Per
collection the tasks are split into contiguous parts, one per worker; a worker gets its
tasks, the parameters of their policies (each distinct policy once) and each task's
stream state, and its part comes back as a `Rollout`; the parts are concatenated in task
order. A task's data depend only on its own stream (`TaskStream`), so the result equals
the single-process sampler's for the same streams, bit for bit. A worker that dies is
started again and its part collected again from the same stream state: same numbers.

The pieces shared with the Ray backend are here too: `Job` (what a worker needs for
its part) and `run_job` (a worker's side of it).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import pickle
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from safemeta.config import ConfigError
from safemeta.envs.base import Suite, Task
from safemeta.nn.policy import GaussianPolicy
from safemeta.rollout.buffer import Rollout, concat
from safemeta.rollout.sampler import Sampler, TaskStream, scripted, stackable

RESTARTS = 3  # a worker that dies is started again this many times per collection


@dataclass
class PolicySpec:
    """A `GaussianPolicy` as plain data: its sizes and its state_dict on CPU."""

    obs_dim: int
    act_dim: int
    hidden: list[int]
    state: dict[str, torch.Tensor]

    @classmethod
    def of(cls, policy: GaussianPolicy) -> PolicySpec:
        linears = [m for m in policy.mean_net if isinstance(m, nn.Linear)]
        state = {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}
        return cls(policy.obs_dim, policy.act_dim, [m.out_features for m in linears[:-1]], state)

    def build(self) -> GaussianPolicy:
        policy = GaussianPolicy(self.obs_dim, self.act_dim, self.hidden)
        policy.load_state_dict(self.state)
        return policy


StreamState = tuple[dict[str, Any], torch.Tensor]  # numpy bit generator state, torch generator state


def stream_state(s: TaskStream) -> StreamState:
    return s.rng.bit_generator.state, s.gen.get_state()


def set_stream_state(s: TaskStream, state: StreamState) -> None:
    s.rng.bit_generator.state = state[0]
    s.gen.set_state(state[1])


def stream_of(state: StreamState) -> TaskStream:
    s = TaskStream(np.random.default_rng(), torch.Generator())
    set_stream_state(s, state)
    return s


Part = tuple[Rollout, list[StreamState]]  # a job's rollout and its streams' states after it


@dataclass
class Job:
    """One worker's part of a collection: everything `Sampler.collect` takes, as data."""

    tasks: list[Task]
    policies: list[PolicySpec]  # each distinct policy once
    which: list[int]  # task i acts with policies[which[i]]
    streams: list[StreamState]  # task i's stream at the start of the collection
    episodes: int
    steps: int
    stacked: bool  # what the whole collection does (`stackable` of all its policies)


def run_job(sampler: Sampler, job: Job) -> Part:
    """A worker's side: its part of the collection and its streams' states after it."""
    built = [p.build() for p in job.policies]
    streams = [stream_of(s) for s in job.streams]
    roll = sampler.collect(job.tasks, [built[i] for i in job.which], streams, episodes=job.episodes,
                           steps=job.steps, stacked=job.stacked)
    return roll, [stream_state(s) for s in streams]


def split_jobs(
    tasks: Sequence[Task],
    policies: Sequence[GaussianPolicy],
    streams: Sequence[TaskStream],
    episodes: int,
    steps: int,
    parts: int,
    stacked: bool | None = None,
) -> list[tuple[slice, Job]]:
    """The collection as at most `parts` jobs of consecutive tasks (sizes differ by at most one);
    `stacked` as `Sampler.collect` takes it (None: `stackable` over all the tasks)."""
    stacked = stackable(policies) if stacked is None else stacked
    bounds = np.linspace(0, len(tasks), min(parts, len(tasks)) + 1).round().astype(int)
    out = []
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        distinct = {id(p): p for p in policies[lo:hi]}  # the meta-policy of every task: sent once
        index = {key: i for i, key in enumerate(distinct)}
        job = Job(list(tasks[lo:hi]), [PolicySpec.of(p) for p in distinct.values()],
                  [index[id(p)] for p in policies[lo:hi]], [stream_state(s) for s in streams[lo:hi]],
                  episodes, steps, stacked)
        out.append((slice(lo, hi), job))
    return out


def finish(streams: Sequence[TaskStream], parts: list[tuple[slice, Part]]) -> Rollout:
    """The parts in task order as one rollout; the callers' streams left where the
    single-process sampler would leave them."""
    for where, (_, states) in parts:
        for s, state in zip(streams[where], states):
            set_stream_state(s, state)
    return concat([roll for _, (roll, _) in parts])


@dataclass
class SamplerArgs:
    """What a worker builds its `Sampler` from."""

    suite: Suite
    horizon: int
    gamma: float
    envs_per_task: int
    pool_capacity: int

    def build(self) -> Sampler:
        return Sampler(self.suite, self.horizon, self.gamma, self.envs_per_task, self.pool_capacity)


def _serve(conn: Connection, args: SamplerArgs) -> None:
    """A worker process: jobs in, (status, result) out, until None or the parent is gone.
    Ctrl-C reaches the whole process group: the parent decides what it means."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    sampler = args.build()
    try:
        while True:
            try:
                job = conn.recv()
            except EOFError:
                break
            if job is None:
                break
            try:
                reply: tuple[str, Any] = ("ok", run_job(sampler, job))
            except Exception as e:  # noqa: BLE001 - raised again in the parent, as the local sampler would
                reply = ("error", e)
            try:
                conn.send(reply)
            except (pickle.PicklingError, TypeError, AttributeError) as e:  # an error that does not pickle
                conn.send(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]} ({e})")))
    finally:
        sampler.close()


class ProcessSampler(Sampler):
    """`Sampler.collect` with the tasks split over `workers` persistent processes."""

    def __init__(
        self,
        suite: Suite,
        horizon: int,
        gamma: float,
        envs_per_task: int = 0,
        pool_capacity: int = 256,
        workers: int = 2,
        start_method: str = "spawn",
        min_steps: int = 0,
    ) -> None:
        """`min_steps` > 0 (`--backend auto`): a collection expected to take fewer env steps
        than this (episodes × horizon per task), or of one task (one worker would do all of
        it), is sampled in this process: same numbers, no waiting on workers."""
        super().__init__(suite, horizon, gamma, envs_per_task, pool_capacity)
        self.args = SamplerArgs(suite, horizon, gamma, envs_per_task, pool_capacity)
        try:  # what each worker is started with: refuse now rather than at the first collection
            pickle.dumps(self.args)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            raise ConfigError(f"backend: suite {getattr(suite, 'id', suite)!r} cannot be sent to worker "
                              f"processes ({e}); use --backend local") from None
        self.workers, self.min_steps = workers, min_steps
        self._ctx = mp.get_context(start_method)
        self._procs: list[tuple[Any, Connection] | None] = [None] * workers

    def _worker(self, w: int) -> Connection:
        if self._procs[w] is None:
            ours, theirs = self._ctx.Pipe()
            proc = self._ctx.Process(target=_serve, args=(theirs, self.args), daemon=True,
                                     name=f"safemeta-sampler-{w}")
            proc.start()
            theirs.close()
            self._procs[w] = (proc, ours)
        return self._procs[w][1]  # type: ignore[index]

    def pids(self) -> list[int | None]:
        """The worker processes' ids (None: not started)."""
        return [None if p is None else p[0].pid for p in self._procs]

    def collect(
        self,
        tasks: Sequence[Task],
        policies: Sequence[GaussianPolicy],
        streams: Sequence[TaskStream],
        episodes: int = 0,
        steps: int = 0,
        stacked: bool | None = None,
    ) -> Rollout:
        size = len(tasks) * (steps if steps > 0 else episodes * self.horizon)
        small = self.min_steps > 0 and (size < self.min_steps or min(self.workers, len(tasks)) < 2)
        if not tasks or small or scripted(policies):  # no tasks: the local sampler's error
            return super().collect(tasks, policies, streams, episodes, steps, stacked)
        jobs = split_jobs(tasks, policies, streams, episodes, steps, self.workers, stacked)
        try:
            replies = self._run_jobs([job for _, job in jobs])
        except BaseException:  # interrupted: workers may be mid-job, so start afresh next time
            for w in range(self.workers):
                self._stop(w, kill=True)
            raise
        errors = [result for status, result in replies if status == "error"]
        if errors:  # every reply was read: the workers are ready for the next collection
            raise errors[0]
        return finish(streams, [(where, result) for (where, _), (_, result) in zip(jobs, replies)])

    def _run_jobs(self, jobs: list[Job]) -> list[tuple[str, Any]]:
        """Worker w runs jobs[w]; a worker that dies is started again and runs it again."""
        replies: dict[int, tuple[str, Any]] = {}
        pending = list(range(len(jobs)))
        for _ in range(RESTARTS + 1):
            for w in pending:
                self._send(w, jobs[w])
            died = []
            for w in pending:
                try:
                    replies[w] = self._worker(w).recv()
                except (EOFError, ConnectionError):
                    self._stop(w)
                    died.append(w)
            pending = died
            if not pending:
                return [replies[w] for w in range(len(jobs))]
        raise RuntimeError(f"sampler worker(s) {pending} died {RESTARTS + 1} times in one collection")

    def _send(self, w: int, job: Job) -> None:
        try:
            self._worker(w).send(job)
        except (BrokenPipeError, ConnectionError):  # died since the last call: start it again
            self._stop(w)
            self._worker(w).send(job)

    def _stop(self, w: int, kill: bool = False) -> None:
        entry, self._procs[w] = self._procs[w], None
        if entry is None:
            return
        proc, conn = entry
        if not kill:
            with contextlib.suppress(BrokenPipeError, ConnectionError):
                conn.send(None)
        conn.close()
        proc.join(timeout=0 if kill else 5)
        if proc.is_alive():
            proc.kill()
            proc.join()

    def close(self) -> None:
        for w in range(self.workers):
            self._stop(w)
        super().close()
