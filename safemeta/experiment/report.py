"""Run reports (SPEC §5): Markdown with PNG figures and a summary table."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from safemeta.experiment.metrics import read_rows


def _plt() -> Any:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_png(rows: list[dict[str, Any]], x: str, path: Path, title: str,
               series: dict[str, list[dict[str, Any]]] | None = None) -> Path:
    """Two panels: average reward and maximum cost vs `x`, the limit dashed.
    `series` maps a label (algorithm) to its rows; default one unlabelled series."""
    plt = _plt()
    series = series or {"": rows}
    fig, (ax_r, ax_c) = plt.subplots(1, 2, figsize=(10, 3.6))
    limit = None
    for label, rs in series.items():
        rs = [r for r in rs if r.get(x) is not None]
        xs = [r[x] for r in rs]
        ax_r.plot(xs, [r["reward_mean"] for r in rs], marker="." if len(xs) < 40 else None,
                  label=label or None)
        ax_c.plot(xs, [r["cost_max"] for r in rs], marker="." if len(xs) < 40 else None,
                  label=label or None)
        limit = next((r["cost_limit"] for r in rs if r.get("cost_limit") is not None), limit)
    if limit is not None:
        ax_c.axhline(limit, color="k", linestyle="--", linewidth=1, label="cost limit")
    ax_r.set(xlabel=x.replace("_", " "), ylabel="average reward", title=f"{title}: reward")
    ax_c.set(xlabel=x.replace("_", " "), ylabel="maximum cost over tasks", title=f"{title}: cost")
    ax_c.legend(loc="best", fontsize=8)
    if any(series):
        ax_r.legend(loc="best", fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_r, ax_c):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_num(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(run_dir: Path, title: str, metrics: Path | None = None,
                 out: Path | None = None, video: list[str] | None = None) -> Path:
    """Figures and `report.md` from a run's metrics; returns the report path. `video`: the
    Markdown lines of the policy's video section (`render.report_video`), after meta-test."""
    rows = read_rows(metrics or run_dir / "metrics.csv")
    out = out or run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    train = [r for r in rows if r["phase"] == "meta_train"]
    test = [r for r in rows if r["phase"] == "meta_test"]
    parts = [f"# {title}", ""]
    if train:
        sources = {r.get("eval_source") for r in train} - {None}
        series = None
        if len(sources) > 1:  # validation every eval_every iterations, the batch's data between
            names = {"val": "validation tasks", "post": "training batch (post-adaptation)"}
            series = {names.get(k, k): [r for r in train if r.get("eval_source") == k]
                      for k in sorted(sources)}
        curves_png(train, "iteration", out / "meta_train.png", "meta-training (one-step adapted)", series)
        parts += ["## Meta-training", "",
                  "Average reward and maximum cost over tasks of the policy adapted one step "
                  "from the meta-policy; the dashed line is the limit.", "",
                  "![meta-training](meta_train.png)", ""]
        phases, sub = phase_times(train), phase_times(train, SUBPHASES)
        if phases:
            total = sum(phases.values())
            table = [[k, v, f"{100 * v / total:.1f}%"] for k, v in phases.items()]
            table += [[f"adapt: of which {k}", v, f"{100 * v / total:.1f}%"] for k, v in sub.items()]
            parts += ["Time per meta-training iteration by phase:", "",
                      markdown_table(["phase", "mean s / iteration", "share"], table), ""]
    if test:
        curves_png(test, "step", out / "meta_test.png", "meta-test")
        viol = sum(r["violation_rate"] for r in test) / len(test)
        parts += ["## Meta-test", "",
                  "From the meta-policy (step 0), each step adapts on data from the current "
                  "policy; every policy used to collect data must stay under the limit "
                  "(anytime safety).", "", "![meta-test](meta_test.png)", "",
                  markdown_table(["step", "reward mean", "cost mean", "cost max", "limit",
                                  "violation rate", "time (s)"],
                                 [[r["step"], r["reward_mean"], r["cost_mean"], r["cost_max"],
                                   r["cost_limit"], r["violation_rate"], r["time_s"]] for r in test]),
                  "", f"**Anytime safety**: {_num(viol)} of (task, step) pairs exceed the limit "
                  f"({'all within the limit' if viol == 0 else 'VIOLATIONS'}).", ""]
        tasks_json = (metrics or run_dir / "metrics.csv").parent / "meta_test_tasks.json"
        parts += adaptation_section(test, tasks_json)
    parts += video or []
    summary = summary_rows(train, test)
    if summary:
        parts += ["## Summary", "", markdown_table(["quantity", "value"], summary), ""]
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path


def adaptation_section(test: list[dict[str, Any]], tasks_json: Path) -> list[str]:
    """Per step, what the adaptation did on the test tasks (the held-out safety test's
    outcomes: the step accepted, backed off, or π_k kept; tasks recovering from over the
    limit), and per task that started over the limit, the step it was back under."""
    parts: list[str] = []
    steps = [r for r in test[:-1] if r.get("n_kept") is not None]
    if steps:
        parts += ["Adaptation per step (each task's step from the policy of that step): accepted in "
                  "full, backed off to a fraction of the step, or the current policy kept; "
                  "*recovering*: the current policy was over the limit on its own data.", "",
                  markdown_table(["step", "accepted", "backed off", "kept", "recovering", "tasks over limit"],
                                 [[r["step"], r.get("n_accepted"), r.get("n_backed_off"), r.get("n_kept"),
                                   r.get("n_recovering"), r.get("n_over")] for r in steps]), ""]
    if tasks_json.exists():
        import json

        started = [t for t in json.loads(tasks_json.read_text()) if t["started_over"]]
        if started:
            rows = [[t["task"], t["cost"][0], t["limit"],
                     "not recovered" if t["back_under_at"] is None else t["back_under_at"],
                     " -> ".join(_num(c) for c in t["cost"])] for t in started]
            parts += [f"**Recovery**: {len(started)} task(s) started over the limit; the step at which "
                      "each was back under:", "",
                      markdown_table(["task", "step-0 cost", "limit", "back under at step", "cost by step"],
                                     rows),
                      ""]
        else:
            parts += ["**Recovery**: no task started over the limit.", ""]
    return parts


# The learner's phases (`meta_learner.PHASES`: exclusive, they sum to an iteration's
# training time) and the breakdowns of `t_adapt` some algorithms log.
PHASES = ("t_sampling", "t_critic", "t_adapt", "t_outer")
SUBPHASES = ("t_dual", "t_projection")


def phase_times(rows: list[dict[str, Any]], names: tuple[str, ...] = PHASES) -> dict[str, float]:
    """Mean wall time per iteration of each phase the algorithm logged (SPEC §2.6 step 4)."""
    out = {}
    for k in names:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float))]
        if vals:
            out[k[2:]] = sum(vals) / len(vals)
    return out


def summary_rows(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    if train:
        val = [r for r in train if r.get("eval_source", "val") == "val"]
        last, where = (val[-1], "validation tasks") if val else (train[-1], "training batch")
        rows += [["meta-training iterations", len(train)],
                 [f"last one-step adapted reward ({where}, iteration {last['iteration']})",
                  last["reward_mean"]],
                 [f"last one-step adapted max cost ({where})", last["cost_max"]],
                 ["meta-training time (s)", sum(r["time_s"] or 0 for r in train)]]
    if test:
        rows += [["meta-test reward, step 0 -> last", f"{_num(test[0]['reward_mean'])} -> "
                  f"{_num(test[-1]['reward_mean'])}"],
                 ["meta-test max cost over all steps", max(r["cost_max"] for r in test)],
                 ["cost limit", test[0]["cost_limit"]],
                 ["meta-test violation rate", sum(r["violation_rate"] for r in test) / len(test)],
                 ["meta-test time (s)", sum(r["time_s"] or 0 for r in test)]]
    return rows
