"""Run reports (SPEC §5): Markdown with PNG figures and a summary table."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from safemeta.experiment import reference
from safemeta.experiment.metrics import read_rows


def _plt() -> Any:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_png(rows: list[dict[str, Any]], x: str, path: Path, title: str,
               series: dict[str, list[dict[str, Any]]] | None = None,
               reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Two panels against `x`: average reward over tasks and the cost, the limit dashed, the
    cost axis from 0 to above the limit. `series` maps a label to its rows (default one).

    Cost: the maximum over tasks of each task's mean episode cost; with meta-training rows
    also the meta-policy's own (pre-adaptation) maximum; with meta-test rows the mean over
    tasks with its 10-90% band over tasks. `reference`: the unconstrained learner's final
    reward and mean cost (`experiment/reference.py`), dotted. Returns what was drawn
    (`figure_data`), which the tests read back."""
    plt = _plt()
    series = series or {"": rows}
    fig, (ax_r, ax_c) = plt.subplots(1, 2, figsize=(10, 3.6))
    limit = None
    for label, rs in series.items():
        rs = [r for r in rs if r.get(x) is not None]
        xs = [r[x] for r in rs]
        mark = "." if len(xs) < 40 else None
        name = f"{label}: " if label else ""
        ax_r.plot(xs, [r["reward_mean"] for r in rs], marker=mark, label=f"{name}mean over tasks")
        _band(ax_r, rs, xs, "reward_q10", "reward_q90", f"{name}10-90% of tasks")
        ax_c.plot(xs, [r["cost_max"] for r in rs], marker=mark, label=f"{name}max over tasks")
        pre = [(xv, r["pre_cost_max"]) for xv, r in zip(xs, rs) if r.get("pre_cost_max") is not None]
        if pre:
            ax_c.plot(*zip(*pre), linestyle=":", label=f"{name}meta-policy (pre-adaptation) max")
        if _band(ax_c, rs, xs, "cost_q10", "cost_q90", f"{name}10-90% of tasks"):
            ax_c.plot(xs, [r["cost_mean"] for r in rs], linewidth=1, label=f"{name}mean over tasks")
        limit = next((r["cost_limit"] for r in rs if r.get("cost_limit") is not None), limit)
    if limit is not None:
        ax_c.axhline(limit, color="k", linestyle="--", linewidth=1, label="cost limit")
    if reference:
        name = "unconstrained learner (limit lifted)"
        ax_r.axhline(reference["reward"], color="gray", linestyle=":", linewidth=1.5, label=name)
        ax_c.axhline(reference["cost_mean"], color="gray", linestyle=":", linewidth=1.5,
                     label=f"{name}: mean")
    top = max([limit or 0.0] + [y for line in ax_c.get_lines() for y in line.get_ydata()
                                 if isinstance(y, (int, float)) and math.isfinite(y)])
    ax_c.set_ylim(0, 1.1 * top if top > 0 else 1.0)
    ax_r.set(xlabel=x.replace("_", " "), ylabel="average reward over tasks", title=f"{title}: reward")
    ax_c.set(xlabel=x.replace("_", " "), ylabel="mean episode cost", title=f"{title}: cost")
    ax_c.legend(loc="best", fontsize=7)
    ax_r.legend(loc="best", fontsize=7)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_r, ax_c):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    data = figure_data(fig)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return data


def _band(ax: Any, rs: list[dict[str, Any]], xs: list[Any], lo: str, hi: str, label: str) -> bool:
    pts = [(xv, r[lo], r[hi]) for xv, r in zip(xs, rs) if r.get(lo) is not None and r.get(hi) is not None]
    if not pts:
        return False
    bx, blo, bhi = zip(*pts)
    ax.fill_between(bx, blo, bhi, alpha=0.2, label=label)
    return True


def figure_data(fig: Any) -> dict[str, Any]:
    """Per axes: its lines (label -> y values), its bands (labels) and its y limits."""
    out = {}
    for ax in fig.axes:
        out[ax.get_title()] = {
            "lines": {ln.get_label(): [float(y) for y in ln.get_ydata()] for ln in ax.get_lines()},
            "bands": [c.get_label() for c in ax.collections],
            "ylim": tuple(float(v) for v in ax.get_ylim()),
        }
    return out


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
                  "Reward: average over tasks of the policy adapted one step from the meta-policy. "
                  "Cost: the maximum over tasks of each task's mean episode cost, of that adapted "
                  "policy (solid) and of the meta-policy itself on the training batch (dotted, "
                  "pre-adaptation); the dashed line is the limit.", "",
                  "![meta-training](meta_train.png)", ""]
        phases, sub = phase_times(train), phase_times(train, SUBPHASES)
        if phases:
            total = sum(phases.values())
            table = [[k, v, f"{100 * v / total:.1f}%"] for k, v in phases.items()]
            table += [[f"adapt: of which {k}", v, f"{100 * v / total:.1f}%"] for k, v in sub.items()]
            parts += ["Time per meta-training iteration by phase:", "",
                      markdown_table(["phase", "mean s / iteration", "share"], table), ""]
    if test:
        ref = reference.for_run(run_dir)
        curves_png(test, "step", out / "meta_test.png", "meta-test", reference=ref)
        viol = sum(r["violation_rate"] for r in test) / len(test)
        has_ci = any(r.get("n_possibly_over") is not None for r in test)
        header = ["step", "reward mean", "cost mean", "cost max", "limit", "violation rate", "time (s)"]
        header += ["over (CI)", "possibly over", "max upper 95%", "episodes / task"] if has_ci else []
        table = [[r["step"], r["reward_mean"], r["cost_mean"], r["cost_max"], r["cost_limit"],
                  r["violation_rate"], r["time_s"]]
                 + ([r.get("n_over"), r.get("n_possibly_over"), r.get("cost_ci_high_max"),
                     r.get("eval_episodes_mean")] if has_ci else []) for r in test]
        parts += ["## Meta-test", "",
                  "From the meta-policy (step 0), each step adapts on data from the current "
                  "policy; every policy used to collect data must stay under the limit "
                  "(anytime safety). A task's cost at a step is the mean episode cost of that "
                  "step's policy over all its episodes there (evaluation and exploration); "
                  "*cost max* is the maximum of these over tasks, *violation rate* the share of "
                  "tasks whose mean exceeds the limit. Figure: reward and cost averaged over tasks "
                  "with their 10-90% band over tasks, the maximum over tasks, the limit dashed.", "",
                  "![meta-test](meta_test.png)", "", markdown_table(header, table), ""]
        if ref:
            parts += [f"Unconstrained reference (the same learner with the limit lifted, "
                      f"`{ref.get('command', '')}`, {ref.get('date', '')}): meta-test reward "
                      f"{_num(ref['reward'])}, mean cost {_num(ref['cost_mean'])}, max cost "
                      f"{_num(ref['cost_max'])} (dotted in the figure).", ""]
        if has_ci:
            parts += ["*over (CI)*: tasks whose 95% Student-t interval of the mean episode cost lies "
                      "above the limit; *possibly over*: tasks whose estimate exceeds it but whose "
                      "interval does not; *episodes / task*: the episodes behind each estimate "
                      "(sequential evaluation adds batches until the interval decides, "
                      "`eval_max_episodes`).", ""]
        certain = (f" By the 95% intervals, {sum(r.get('n_over') or 0 for r in test)} (task, step) pairs are "
                   f"over and {sum(r.get('n_possibly_over') or 0 for r in test)} possibly over."
                   if has_ci else "")
        parts += [f"**Anytime safety**: {_num(viol)} of (task, step) pairs exceed the limit by their "
                  f"estimate ({'all within the limit' if viol == 0 else 'VIOLATIONS'}).{certain}", ""]
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
        mixed = any(r.get("n_mixed") for r in steps)  # fallback=known_safe mixed some policy
        parts += ["Adaptation per step (each task's step from the policy of that step): accepted in "
                  "full, backed off to a fraction of the step, or the current policy kept; "
                  "*recovering*: the current policy was over the limit on its own data"
                  + ("; *mixed*: the policy handed out runs with the known-safe policy, each episode "
                     "with probability 1 − β (mean β of those tasks)." if mixed else "."), "",
                  markdown_table(["step", "accepted", "backed off", "kept", "recovering",
                                  "tasks over (95% CI)"] + (["mixed", "β"] if mixed else []),
                                 [[r["step"], r.get("n_accepted"), r.get("n_backed_off"), r.get("n_kept"),
                                   r.get("n_recovering"), r.get("n_over")]
                                  + ([r.get("n_mixed"), r.get("mix_beta")] if mixed else [])
                                  for r in steps]), ""]
    if tasks_json.exists():
        import json

        started = [t for t in json.loads(tasks_json.read_text()) if t["started_over"]]
        if started:
            rows = [[t["task"], t["cost"][0], t["limit"],
                     "not recovered" if t["back_under_at"] is None else t["back_under_at"],
                     " -> ".join(_num(c) for c in t["cost"]),
                     ", ".join(a or "-" for a in t.get("adaptation", [])) or "-"] for t in started]
            parts += [f"**Recovery**: {len(started)} task(s) started over the limit; the step at which "
                      "each was back under, and what each adaptation step did:", "",
                      markdown_table(["task", "step-0 cost", "limit", "back under at step", "cost by step",
                                      "adaptation steps"], rows),
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
