"""`safemeta bench`: computation time of the algorithms at identical sizes (SPEC §6, §3).

Each algorithm is built on the same suite, preset, tasks and seed. Then, `repeats`
times, every algorithm in turn runs one meta-training iteration (none for from-scratch
algorithms) and one meta-test (interleaved, so a slow moment of the machine hits all of
them alike). Reported: the
median seconds per meta-training iteration (its training phases; validation apart) and
per meta-test (exploration and adaptation of every step; evaluation episodes apart),
their phase split, and the ratios to `safemeta`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from safemeta.meta_learner import PHASES

REFERENCE = "safemeta"


def bench(env: str, algos: list[str], preset: str = "quick", repeats: int = 3,
          overrides: dict[str, Any] | None = None, out: Path | None = None,
          log: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    from safemeta.experiment.compare import CompareSpec, resolve_all, seed_tasks

    spec = CompareSpec(env=env, algos=algos, seeds=1, preset=preset, overrides=dict(overrides or {}))
    resolved = resolve_all(spec)  # same budgets, or one line
    built = {}
    for algo, r in resolved.items():
        cfg = r.cfg
        cfg.eval_every = 10**7  # no validation inside the timed iteration (iteration 1 is not a multiple)
        _, algo_seq = np.random.SeedSequence(cfg.seed).spawn(2)
        tasks = {k: [r.suite.task_from_dict(d) for d in v] for k, v in seed_tasks(r, cfg.seed).items()}
        built[algo] = (r.algo_cls(cfg, r.suite, tasks, algo_seq), tasks)
    samples: dict[str, dict[str, list[float]]] = {a: {} for a in algos}
    try:
        for k in range(repeats):
            for algo in algos:
                a, tasks = built[algo]
                s = samples[algo]
                if getattr(a, "meta_learning", True):  # from-scratch algorithms do not meta-train
                    row = a.train_iteration(k + 1)
                    for p in PHASES:
                        s.setdefault(p, []).append(float(row.get(p) or 0.0))
                    s.setdefault("train_iter_s", []).append(sum(float(row.get(p) or 0.0) for p in PHASES))
                t0 = time.perf_counter()
                rows = a.meta_test(tasks["test"], resolved[algo].cfg.test_steps)
                s.setdefault("meta_test_wall_s", []).append(time.perf_counter() - t0)
                s.setdefault("meta_test_s", []).append(float(rows[-1]["time_s"]))
                phases = getattr(a, "meta_test_phases", {})
                for p in PHASES:  # exploration sampling, critics and adaptation of meta-test
                    s.setdefault(f"test_{p}", []).append(float(phases.get(p, 0.0)))
                it = f"iteration {s['train_iter_s'][-1]:.2f} s, " if "train_iter_s" in s else ""
                log(f"repeat {k + 1}/{repeats} {algo}: {it}meta-test {s['meta_test_s'][-1]:.2f} s")
    finally:
        for a, _ in built.values():
            a.close()
    result = {algo: {k: float(np.median(v)) for k, v in s.items()} for algo, s in samples.items()}
    ref = result.get(REFERENCE)
    for m in result.values():
        if ref and "train_iter_s" in m and ref.get("train_iter_s"):
            m["train_iter_ratio"] = m["train_iter_s"] / ref["train_iter_s"]
        if ref and ref["meta_test_s"]:
            m["meta_test_ratio"] = m["meta_test_s"] / ref["meta_test_s"]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
    return result


def table(result: dict[str, dict[str, float]]) -> str:
    from safemeta.experiment.report import markdown_table

    header = ["algorithm", "iteration s", f"x {REFERENCE}", *[p[2:] for p in PHASES], "meta-test s",
              f"x {REFERENCE}", *[f"test {p[2:]}" for p in PHASES]]
    return markdown_table(header, [[a, m.get("train_iter_s"), m.get("train_iter_ratio"),
                                    *[m.get(p) for p in PHASES], m["meta_test_s"], m.get("meta_test_ratio"),
                                    *[m.get(f"test_{p}") for p in PHASES]]
                                   for a, m in result.items()])
