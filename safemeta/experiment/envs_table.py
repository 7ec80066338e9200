"""`safemeta envs`: every suite with its task parameters per split, cost, limit and sizes.

Splits: `train` (meta-training and validation tasks), `test` (fresh draws of the same
distribution: meta-test by default) and `ood` (shifted, harder: `--set test_split=ood`,
`safemeta test --split ood`), for the suites that declare it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from safemeta.envs.registry import load_plugins, suite, suite_ids


def describe(suite_id: str) -> dict[str, Any]:
    s = suite(suite_id)
    obs, act = s.spaces()
    size = lambda sp: sp.shape[0] if sp.shape else int(getattr(sp, "n", 0))  # noqa: E731
    return {
        "id": s.id, "description": s.description, "family": s.family, "horizon": s.horizon,
        "cost": s.cost_doc, "cost_limit": s.cost_limit, "cost_type": s.cost_type,
        "obs": size(obs), "act": size(act),
        "params": {split: s.param_ranges(split) for split in s.splits},
        "task_example": _example(s),
    }


def _example(s: Any) -> str:
    """One sampled test task as `--task-file` takes it (floats to 3 decimals)."""
    def short(v: Any) -> Any:
        if isinstance(v, float):
            return round(v, 3)
        return [short(x) for x in v] if isinstance(v, (list, tuple)) else v

    task = s.sample_tasks(1, np.random.default_rng(0), "test")[0].to_dict()
    return json.dumps({k: short(v) for k, v in task.items() if k != "type"})


def print_envs() -> None:
    # An installed package's broken or colliding suite is one line (exit 2) before any output.
    load_plugins()
    for sid in suite_ids():
        try:
            d = describe(sid)
        except Exception as e:  # noqa: BLE001 - one suite failing must not hide the others
            print(f"{sid}: unavailable ({type(e).__name__}: {e})\n")
            continue
        print(f"{d['id']}  [{d['family']}]  {d['description']}")
        print(f"  obs {d['obs']}  act {d['act']}  horizon {d['horizon']}  "
              f"cost limit {d['cost_limit']:g} ({d['cost_type']} episode cost)")
        print(f"  cost: {d['cost']}")
        for split, ranges in d["params"].items():
            txt = ", ".join(f"{p.name} in [{p.low:g}, {p.high:g}]" for p in ranges)
            print(f"  {split:5s}: {txt}")
        print(f"  a task (--task-file): {d['task_example']}")
        print()
