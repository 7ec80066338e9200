"""The README's "Results per suite" rows from trained runs (issue 14).

For each run directory: its meta-test (from `metrics.csv`) at step 0 (the meta-policy)
and at the last step, with the mean cost's mean 95% half-width over tasks, the tasks over
/ possibly over the limit, the evaluation episodes behind each estimate, what the
adaptation steps did (accepted / backed off / kept, summed over steps), the KL per
step, the reward gain over the steps (relative to |step-0 reward|), and the suite's
unconstrained reference for the run's preset (`safemeta/references.json`), if stored.

    python benchmarks/results_table.py RUN_DIR [RUN_DIR ...]

A RUN_DIR may also be a meta-test directory of a run (`safemeta test RUN --set ...` writes
RUN/test-KEY=VALUE): its rows, labelled with the settings, and the run's config.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml


def rows_of(run_dir: Path) -> list[str]:
    from safemeta.experiment import reference
    from safemeta.experiment.metrics import read_rows

    run = run_dir if (run_dir / "config.yaml").exists() else run_dir.parent  # a run, or its test dir
    saved = yaml.safe_load((run / "config.yaml").read_text())
    env = saved["env"] if run == run_dir else f"{saved['env']} ({run_dir.name})"
    test = [r for r in read_rows(run_dir / "metrics.csv") if r["phase"] == "meta_test"]
    if not test:
        raise SystemExit(f"{run_dir}: no meta-test rows in metrics.csv (is the run finished?)")
    first, last = test[0], test[-1]
    steps = test[:-1]  # the rows whose adaptation step was taken

    def num(r: dict, k: str) -> float:
        v = r.get(k)
        return float(v) if v not in (None, "") else float("nan")

    r0, rl = num(first, "reward_mean"), num(last, "reward_mean")
    gain = (rl - r0) / abs(r0) if r0 else float("nan")
    kl = ", ".join(f"{num(r, 'kl'):.3f}" for r in steps)
    moves = " / ".join(f"{sum(num(r, k) for r in steps):g}" for k in ("n_accepted", "n_backed_off", "n_kept"))
    ref = reference.for_run(run)
    ref_txt = ("not yet measured" if ref is None
               else f"reward {ref['reward']:.1f}, mean cost {ref['cost_mean']:.1f}")
    n_tasks = len(yaml.safe_load((run_dir / "meta_test_tasks.json").read_text())) \
        if (run_dir / "meta_test_tasks.json").exists() else "?"
    out = []
    for r, label in ((first, "0 (meta-policy)"), (last, str(int(num(last, "step"))))):
        out.append(
            f"| {env} | {label} | {num(r, 'reward_mean'):.1f} | {num(r, 'cost_mean'):.1f} "
            f"(±{num(r, 'cost_half_width_mean'):.1f}) | {num(r, 'cost_max'):.1f} | {num(r, 'cost_limit'):g} "
            f"| {num(r, 'n_over'):g} / {num(r, 'n_possibly_over'):g} (of {n_tasks}) "
            f"| {num(r, 'eval_episodes_mean'):.0f} |"
        )
    out[0] += f" {moves} | {kl} | {gain:+.0%} | {ref_txt} |"
    out[1] += " | | | |"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", type=Path, nargs="+")
    args = ap.parse_args()
    print("| suite | step | reward | mean cost (mean 95% half-width) | max cost | limit "
          "| over / possibly over | episodes / task | accepted / backed off / kept | KL per step "
          "| reward gain | unconstrained reference |")
    print("|" + "---|" * 12)
    for run in args.run_dirs:
        print("\n".join(rows_of(run)))


if __name__ == "__main__":
    main()
