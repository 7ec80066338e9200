"""Shared test setup."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

# No report GIF in runs the tests make (about 1.3 s each); the render tests turn it on.
os.environ.setdefault("SAFEMETA_REPORT_VIDEO", "0")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small MLPs: one torch thread is fastest (2 threads on 2 busy cores thrash)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
