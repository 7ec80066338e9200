"""The unconstrained reference of every report (issue 14): what the same learner reaches
with the limit lifted, so that a reader sees what safety costs.

`safemeta reference --env SUITE --preset P` trains `safemeta` with `cost_limit` lifted
(every other setting the preset's), then stores its meta-test result in
`safemeta/references.json`, keyed by suite and preset, with the command and date. Reports
of runs on that suite and preset draw it as a dotted line and quote it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

PATH = Path(__file__).resolve().parent.parent / "references.json"
LIFTED = 1e12  # the lifted limit: no policy's episode cost reaches it


def table(path: Path | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    try:
        return json.loads((path or PATH).read_text())
    except (OSError, ValueError):
        return {}


def lookup(env: str, preset: str, path: Path | None = None) -> dict[str, Any] | None:
    """The stored reference of a suite and preset, or None."""
    return table(path).get(env, {}).get(preset)


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The meta-test's last step (and step 0) of a run's metrics: reward and cost over tasks."""
    test = [r for r in rows if r["phase"] == "meta_test"]
    if not test:
        raise ValueError("the reference run has no meta-test rows")
    first, last = test[0], test[-1]
    return {"reward": float(last["reward_mean"]), "cost_mean": float(last["cost_mean"]),
            "cost_max": float(last["cost_max"]), "reward_step0": float(first["reward_mean"]),
            "cost_mean_step0": float(first["cost_mean"]), "steps": int(last["step"])}


def store(env: str, preset: str, entry: dict[str, Any], path: Path | None = None) -> None:
    """Add or replace one reference, atomically (temp file and rename)."""
    path = path or PATH
    data = table(path)
    data.setdefault(env, {})[preset] = {**entry, "date": time.strftime("%Y-%m-%d")}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def for_run(run_dir: Path) -> dict[str, Any] | None:
    """The reference that applies to a run directory (its suite and preset), unless the run
    itself lifts the limit."""
    import yaml

    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    if (saved.get("config") or {}).get("cost_limit") is not None:
        return None
    if not saved.get("env") or not saved.get("preset"):
        return None
    return lookup(saved["env"], saved["preset"])
