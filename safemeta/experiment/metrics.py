"""Metrics: one CSV per run (fixed header, flushed per row) and TensorBoard scalars."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable

from safemeta.algorithm import METRIC_COLUMNS, MetricRow


class MetricsError(RuntimeError):
    """The metrics file disagrees with the checkpoint; the message is for the user."""


class MetricsWriter:
    """Appends rows to `metrics.csv`; `truncate(n)` drops rows past the n-th (resume)."""

    def __init__(self, path: Path, extra_columns: Iterable[str] = (), tensorboard: Path | None = None):
        self.path = path
        self.columns = list(METRIC_COLUMNS) + [c for c in extra_columns if c not in METRIC_COLUMNS]
        if path.exists() and path.stat().st_size > 0:
            with open(path, newline="") as fh:
                header = next(csv.reader(fh), None)
            if header:
                self.columns = header
        else:
            with open(path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.columns)
        self._tb_dir = tensorboard
        self._tb: Any = None

    def __len__(self) -> int:
        return len(read_rows(self.path))

    def truncate(self, n_rows: int) -> None:
        """Keep the header and the first `n_rows` rows (those covered by a checkpoint).
        Atomic: a crash leaves the old file or the new one. A file holding fewer rows
        than the checkpoint covers is an error, never a silent loss."""
        from safemeta.experiment.checkpoint import write_atomic

        with open(self.path, newline="") as fh:
            lines = fh.read().splitlines(keepends=True)
        if len(lines) - 1 < n_rows:
            raise MetricsError(f"{self.path} holds {len(lines) - 1} rows but the checkpoint covers "
                               f"{n_rows}; restore the file or start a new run")
        if len(lines) - 1 > n_rows:
            write_atomic(self.path, "".join(lines[: 1 + n_rows]).encode())

    def write(self, row: MetricRow) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([_fmt(row.get(c, "")) for c in self.columns])
            fh.flush()
        self._scalars(row)

    def _scalars(self, row: MetricRow) -> None:
        if self._tb_dir is None:
            return
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self._tb_dir))
        phase = row.get("phase", "run")
        x = row["iteration"] if phase == "meta_train" else row.get("step", 0)
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("iteration", "step"):
                self._tb.add_scalar(f"{phase}/{k}", float(v), x)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    if hasattr(v, "item"):
        return _fmt(v.item())
    return v


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics CSV with numbers parsed."""
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [{k: _parse(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def _parse(v: str) -> Any:
    if v == "":
        return None
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
