"""Where sampling runs: a run option (`--backend`), not a config field, so a run may
resume on another backend. Every backend gives the same numbers for the same streams.

- `local`: the batched `Sampler` in this process (the default);
- `process`: the tasks split over `workers` local processes (`parallel.ProcessSampler`);
- `ray`: the tasks split over `workers` Ray actors (`ray_backend.RaySampler`).

The run driver chooses with `use(Backend(...))` around building an algorithm, which
gets its sampler from `make_sampler`; an algorithm built outside `use` samples locally.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from safemeta.envs.base import Suite
from safemeta.rollout.sampler import Sampler

KINDS = ("local", "process", "ray")


@dataclass(frozen=True)
class Backend:
    """A sampling backend and its size."""

    kind: str = "local"  # local | process | ray
    workers: int = 2  # processes or actors (process, ray)
    address: str | None = None  # ray: the cluster (default RAY_ADDRESS, else a local Ray)


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
    if b.kind == "process":
        from safemeta.rollout.parallel import ProcessSampler

        return ProcessSampler(suite, horizon, gamma, envs_per_task, workers=b.workers)
    if b.kind == "ray":
        from safemeta.rollout.ray_backend import RaySampler

        return RaySampler(suite, horizon, gamma, envs_per_task, workers=b.workers, address=b.address)
    return Sampler(suite, horizon, gamma, envs_per_task)


def check(backend: Backend) -> None:
    """ConfigError with one line for a backend this machine cannot run."""
    from safemeta.config import ConfigError

    if backend.kind not in KINDS:
        raise ConfigError(f"backend: {backend.kind!r} is unknown; accepted {', '.join(KINDS)}")
    if not 1 <= backend.workers <= 1024:
        raise ConfigError(f"--workers: got {backend.workers}; accepted 1..1024")
    if backend.kind == "ray":
        from safemeta.rollout.ray_backend import INSTALL, available

        if not available():
            raise ConfigError(INSTALL)
