"""The comparison report (SPEC §5, the paper's result slides): curves with 95% bootstrap
bands over seeds, normalised computation time by phase, and a summary table.

Quantities (all from the runs' metrics.csv):
- meta-training: the one-step adapted policy on the validation tasks (rows with
  `eval_source == "val"`): average reward over tasks, and the maximum over tasks of the
  per-task mean episode cost;
- meta-test: the same per adaptation step (step 0 = the meta-policy), each task's cost
  pooling the evaluation and exploration episodes of that policy;
- time per meta-training iteration (mean of the training phases) and per meta-test (the
  exploration and adaptation of every step), each divided by safemeta's;
- violation rate: the fraction of (test task, step) pairs, over every policy that
  collected data on a test task, whose cost exceeds the limit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from safemeta.experiment.report import PHASES, _num, _plt, markdown_table

BOOTSTRAP = 2000  # resamples of the seeds for the 95% bands
REFERENCE = "safemeta"  # the algorithm times are normalised by


def bootstrap_band(values: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """values (seeds, points): mean and the 2.5/97.5 percentiles of the mean over seeds
    resampled with replacement (a single seed: a band of zero width)."""
    mean = values.mean(0)
    if len(values) < 2:
        return mean, mean, mean
    idx = rng.integers(0, len(values), (BOOTSTRAP, len(values)))
    means = values[idx].mean(1)
    return mean, np.percentile(means, 2.5, axis=0), np.percentile(means, 97.5, axis=0)


def _series(runs: list[list[dict[str, Any]]], phase: str, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """(xs, values (seeds, points)) on the x values every seed has."""
    per_seed = []
    for rows in runs:
        pts = {r[x]: r[y] for r in rows if r["phase"] == phase and r.get(y) is not None
               and (phase != "meta_train" or r.get("eval_source") == "val")}
        per_seed.append(pts)
    if not per_seed:
        return np.zeros(0), np.zeros((0, 0))
    xs = sorted(set.intersection(*(set(p) for p in per_seed)))
    return np.array(xs, float), np.array([[p[k] for k in xs] for p in per_seed], float)


def curves(data: dict[str, list[list[dict[str, Any]]]], phase: str, x: str, limit: float | None,
           path: Path, title: str) -> dict[str, Any]:
    """Two panels (reward, max cost), a mean line and a 95% band per algorithm; returns the
    plotted numbers (for the report's JSON and the tests)."""
    plt, rng = _plt(), np.random.default_rng(0)
    fig, (ax_r, ax_c) = plt.subplots(1, 2, figsize=(10.5, 3.8))
    out: dict[str, Any] = {}
    for algo, runs in data.items():
        entry = {}
        for ax, y in ((ax_r, "reward_mean"), (ax_c, "cost_max")):
            xs, vals = _series(runs, phase, x, y)
            if not xs.size:
                continue
            mean, lo, hi = bootstrap_band(vals, rng)
            line = ax.plot(xs, mean, label=algo, marker="." if len(xs) < 30 else None)[0]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
            entry[y] = {"x": xs.tolist(), "mean": mean.tolist(), "lo": lo.tolist(), "hi": hi.tolist(),
                        "seeds": len(vals)}
        if entry:
            out[algo] = entry
    if limit is not None:
        ax_c.axhline(limit, color="k", linestyle="--", linewidth=1.2, label="cost limit")
    ax_r.set(xlabel=x, ylabel="average reward over tasks", title=f"{title}: reward")
    ax_c.set(xlabel=x, ylabel="max over tasks of mean episode cost", title=f"{title}: cost")
    ax_c.set_ylim(bottom=0)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_r, ax_c):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return out


def times(data: dict[str, list[list[dict[str, Any]]]]) -> dict[str, dict[str, float]]:
    """Per algorithm: mean seconds per meta-training iteration by phase, and per meta-test."""
    out = {}
    for algo, runs in data.items():
        train = [r for rows in runs for r in rows if r["phase"] == "meta_train"]
        tests = [max((r["time_s"] or 0.0) for r in rows if r["phase"] == "meta_test") for rows in runs
                 if any(r["phase"] == "meta_test" for r in rows)]
        entry = {p: float(np.mean([r.get(p) or 0.0 for r in train])) if train else 0.0 for p in PHASES}
        entry["train_iter_s"] = sum(entry[p] for p in PHASES)
        entry["meta_test_s"] = float(np.mean(tests)) if tests else 0.0
        out[algo] = entry
    return out


def time_figure(t: dict[str, dict[str, float]], path: Path) -> dict[str, dict[str, float]]:
    """Stacked bars: per meta-training iteration by phase, and per meta-test, relative to safemeta."""
    plt = _plt()
    ref = t.get(REFERENCE) or next(iter(t.values()))
    algos = list(t)
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10.5, 3.6))
    norm: dict[str, dict[str, float]] = {}
    bottom = np.zeros(len(algos))
    for p in PHASES:
        vals = np.array([t[a][p] / ref["train_iter_s"] if ref["train_iter_s"] else 0.0 for a in algos])
        ax_t.bar(algos, vals, bottom=bottom, label=p[2:])
        bottom += vals
        for a, v in zip(algos, vals):
            norm.setdefault(a, {})[p] = float(v)
    for a, v in zip(algos, bottom):
        norm[a]["train_iter"] = float(v)
        norm[a]["meta_test"] = t[a]["meta_test_s"] / ref["meta_test_s"] if ref["meta_test_s"] else 0.0
    ax_m.bar(algos, [norm[a]["meta_test"] for a in algos], color="tab:gray")
    ax_t.set(ylabel=f"time / {REFERENCE}'s", title="per meta-training iteration, by phase")
    ax_m.set(ylabel=f"time / {REFERENCE}'s", title="per meta-test (all adaptation steps)")
    for ax in (ax_t, ax_m):
        ax.axhline(1.0, color="k", linestyle=":", linewidth=1)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return norm


def summary(data: dict[str, list[list[dict[str, Any]]]], limit: float | None) -> dict[str, dict[str, Any]]:
    rng, out = np.random.default_rng(1), {}
    for algo, runs in data.items():
        tests = [[r for r in rows if r["phase"] == "meta_test"] for rows in runs]
        tests = [t for t in tests if t]
        if not tests:
            continue
        final_r = np.array([[t[-1]["reward_mean"]] for t in tests])
        final_c = np.array([[t[-1]["cost_max"]] for t in tests])
        viol = np.array([[np.mean([r["violation_rate"] for r in t])] for t in tests])
        wall = [sum((r["time_s"] or 0.0) for r in rows if r["phase"] == "meta_train") for rows in runs]
        entry = {"seeds": len(tests), "wall_train_s": float(np.mean(wall))}
        for name, v in (("final_reward", final_r), ("final_cost_max", final_c), ("violation_rate", viol)):
            m, lo, hi = bootstrap_band(v, rng)
            entry[name] = {"mean": float(m[0]), "lo": float(lo[0]), "hi": float(hi[0])}
        out[algo] = entry
    return out


def write_compare_report(out: Path, env: str, data: dict[str, list[list[dict[str, Any]]]], budget: str,
                         iterations: dict[str, int], videos: dict[str, str] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    limit = next((r["cost_limit"] for runs in data.values() for rows in runs for r in rows
                  if r.get("cost_limit") is not None), None)
    fig_train = curves(data, "meta_train", "iteration", limit, out / "meta_train.png", "meta-training")
    fig_test = curves(data, "meta_test", "step", limit, out / "meta_test.png", "meta-test")
    t = times(data)
    norm = time_figure(t, out / "time.png") if t else {}
    table = summary(data, limit)
    seeds = {a: len(r) for a, r in data.items()}
    parts = [f"# Comparison on {env}", "", f"Seeds per algorithm: {seeds}. {budget}.",
             f"Meta-training iterations: {iterations}.", "",
             "## Meta-training", "",
             "The policy adapted one step from the meta-policy on the validation tasks: average "
             "reward over tasks, and the maximum over tasks of each task's mean episode cost. Lines: "
             "mean over seeds; bands: 95% bootstrap interval of that mean; dashed: the cost limit.", "",
             "![meta-training](meta_train.png)", "",
             "## Meta-test", "",
             "Step 0 is the meta-policy; step t the policy after t adaptation steps. A task's cost pools "
             "the evaluation and the exploration episodes of that policy (exploration cost counts).", "",
             "![meta-test](meta_test.png)", "",
             "## Computation time", "",
             f"Mean time per meta-training iteration (by phase) and per meta-test, relative to "
             f"{REFERENCE}.", "", "![time](time.png)", ""]
    if norm:
        trained = {a for a, runs in data.items()
                   if any(r["phase"] == "meta_train" for rows in runs for r in rows)}
        parts += [markdown_table(["algorithm", "s / iteration", "x " + REFERENCE, "meta-test s",
                                  "x " + REFERENCE],
                                 [[a, t[a]["train_iter_s"] if a in trained else None,
                                   norm[a]["train_iter"] if a in trained else None, t[a]["meta_test_s"],
                                   norm[a]["meta_test"]] for a in t]), ""]
    parts += ["## Summary", "",
              "Final meta-test reward and max cost (last step), violation rate over every policy that "
              "collected data on a test task; mean over seeds [95% bootstrap interval].", "",
              markdown_table(["algorithm", "seeds", "final reward", "final max cost", "violation rate",
                              "meta-training wall s"],
                             [[a, e["seeds"], _ci(e["final_reward"]), _ci(e["final_cost_max"]),
                               _ci(e["violation_rate"]), e["wall_train_s"]] for a, e in table.items()]),
              "", f"Cost limit: {_num(limit)}.", ""]
    if videos:
        parts += ["## What the policies do", "",
                  "Seed 0 of each algorithm, test task 0: the meta-policy (step 0) beside the policy "
                  "after the last adaptation step; a red border marks frames with cost.", ""]
        parts += [f"**{a}**\n\n{v}\n" for a, v in videos.items()]
    (out / "compare.md").write_text("\n".join(parts))
    (out / "compare.json").write_text(json.dumps(
        {"env": env, "limit": limit, "budget": budget, "meta_train": fig_train, "meta_test": fig_test,
         "time_s": t, "time_normalised": norm, "summary": table}, indent=1))
    return out / "compare.md"


def _ci(e: dict[str, float]) -> str:
    return f"{_num(e['mean'])} [{_num(e['lo'])}, {_num(e['hi'])}]"
