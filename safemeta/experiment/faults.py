"""Fault injection for the reliability tests (SPEC §8): `SAFEMETA_FAULT=point:n` makes
the process kill itself with SIGKILL the n-th time it reaches `point`. Unset (the
normal case) it costs one dictionary lookup per call."""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("SAFEMETA_FAULT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
