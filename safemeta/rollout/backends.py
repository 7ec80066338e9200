"""Where sampling runs: a run option (`--backend`), not a config field, so a run may
resume on another backend. Every backend gives the same numbers for the same streams.

- `auto` (the command line's default): `process` with one worker per usable core (at
  most `AUTO_MAX_WORKERS`) for collections of at least `AUTO_MIN_STEPS` env steps,
  this process for smaller ones and on a one-core machine. Measured on the 2-core
  machine, 2 processes sampled 1.8-2.2x the local rate on every suite family
  (docs/scale.md), and MuJoCo's own threads cannot do better there: the envs' Python,
  not the physics, is most of a step.
- `local`: the batched `Sampler` in this process (the library's default);
- `process`: the tasks split over `workers` local processes (`parallel.ProcessSampler`);
- `ray`: the tasks split over `workers` Ray actors (`ray_backend.RaySampler`).

The run driver chooses with `use(Backend(...))` around building an algorithm, which
gets its sampler from `make_sampler`; an algorithm built outside `use` samples locally.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

from safemeta.envs.base import Suite
from safemeta.rollout.sampler import Sampler

KINDS = ("auto", "local", "process", "ray")
AUTO_MIN_STEPS = 5_000  # `auto` samples smaller collections in this process
AUTO_MAX_WORKERS = 8  # `auto` starts at most this many processes (more: --backend process)


def usable_cores() -> int:
    """The cores this process may run on: its affinity (else the machine's count), at most
    a container's CPU quota (cgroup v2 `cpu.max`, rounded up) where one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota = quota_cores(f.read())
    except OSError:
        quota = None
    return cores if quota is None else min(cores, quota)


def quota_cores(cpu_max: str) -> int | None:
    """The CPUs a cgroup v2 `cpu.max` line ("QUOTA PERIOD", or "max PERIOD") allows, rounded
    up; None when unlimited or unreadable."""
    try:
        quota, period = cpu_max.split()[:2]
        return None if quota == "max" else max(1, -(-int(quota) // int(period)))
    except ValueError:
        return None


@dataclass(frozen=True)
class Backend:
    """A sampling backend and its size."""

    kind: str = "local"  # auto | local | process | ray
    workers: int = 0  # processes or actors; 0: the kind's default (`size`)
    address: str | None = None  # ray: the cluster (default RAY_ADDRESS, else a local Ray)

    def size(self) -> int:
        """Workers: as given, else one per usable core up to AUTO_MAX_WORKERS (auto) or 2."""
        if self.workers:
            return self.workers
        return min(usable_cores(), AUTO_MAX_WORKERS) if self.kind == "auto" else 2


_current = Backend()


@contextlib.contextmanager
def use(backend: Backend) -> Iterator[None]:
    """Samplers made by `make_sampler` inside the block run on `backend`."""
    global _current
    before, _current = _current, backend
    try:
        yield
    finally:
        _current = before


def make_sampler(suite: Suite, horizon: int, gamma: float, envs_per_task: int = 0) -> Sampler:
    """A sampler on the backend in use (see `use`)."""
    b = _current
    if b.kind == "auto" and b.size() > 1:
        from safemeta.config import ConfigError
        from safemeta.rollout.parallel import ProcessSampler

        try:
            return ProcessSampler(suite, horizon, gamma, envs_per_task, workers=b.size(),
                                  min_steps=AUTO_MIN_STEPS)
        except ConfigError:  # a suite that cannot be sent to a worker process samples here
            pass
    if b.kind == "process":
        from safemeta.rollout.parallel import ProcessSampler

        return ProcessSampler(suite, horizon, gamma, envs_per_task, workers=b.size())
    if b.kind == "ray":
        from safemeta.rollout.ray_backend import RaySampler

        return RaySampler(suite, horizon, gamma, envs_per_task, workers=b.size(), address=b.address)
    return Sampler(suite, horizon, gamma, envs_per_task)


def check(backend: Backend) -> None:
    """ConfigError with one line for a backend this machine cannot run."""
    from safemeta.config import ConfigError

    if backend.kind not in KINDS:
        raise ConfigError(f"backend: {backend.kind!r} is unknown; accepted {', '.join(KINDS)}")
    if not 0 <= backend.workers <= 1024:
        raise ConfigError(f"--workers: got {backend.workers}; accepted 1..1024 (0: the backend's default)")
    if backend.kind == "ray":
        from safemeta.rollout.ray_backend import INSTALL, available

        if not available():
            raise ConfigError(INSTALL)
