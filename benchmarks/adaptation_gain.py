"""How far, and how safely, adaptation moves a trained meta-policy: reward gain and KL per
step on fresh in-distribution tasks, for adaptation settings side by side (issue 14).

    python benchmarks/adaptation_gain.py RUN_DIR [--tasks 10] [--steps 3] [--eval-max-episodes 0]
        [--grid "lam=1" "lam=0.3" "lam=0.1" ...] [--out results/adaptation_gain.json]

Each setting (comma-separated KEY=VALUE config overrides) meta-tests the run's final
meta-policy on the same tasks (fresh draws of the run's `test` split, seeded) with the
same random streams, so step 0 is identical and the settings differ only from the first
adaptation step on. Per setting: the meta-test reward by step, the gain from step 0 to
the last (relative to |reward at step 0|), the mean KL(π_{t+1}‖π_t) of the steps, the
share of task-steps whose adaptation was accepted / backed off / kept, the maximum task
cost and the tasks over the limit by their 95% interval (and possibly over).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def run_setting(run_dir: Path, overrides: dict, n_tasks: int, steps: int) -> dict:
    from safemeta.experiment.runner import load_algorithm

    algo, _, r, _ = load_algorithm(run_dir, overrides, log=lambda m: None)
    tasks = r.suite.sample_tasks(n_tasks, np.random.default_rng(5151), "test")
    t0 = time.perf_counter()
    rows = algo.meta_test(tasks, steps)
    seconds = time.perf_counter() - t0
    algo.close()
    reward = [float(row["reward_mean"]) for row in rows]
    adapted = rows[:-1]  # the rows of steps 0..steps-1 carry the step they made

    def share(key: str) -> float:
        return float(np.mean([row.get(key, np.nan) for row in adapted]) / n_tasks)

    return {
        "setting": overrides, "env": r.spec.env, "tasks": n_tasks, "steps": steps,
        "reward": reward, "gain": (reward[-1] - reward[0]) / abs(reward[0]) if reward[0] else float("nan"),
        "kl": [float(row.get("kl", np.nan)) for row in adapted],
        "accepted": share("n_accepted"), "backed_off": share("n_backed_off"), "kept": share("n_kept"),
        "cost_max": [float(row["cost_max"]) for row in rows],
        "over": [row.get("n_over") for row in rows],
        "possibly_over": [row.get("n_possibly_over") for row in rows],
        "limit": float(rows[0]["cost_limit"]), "seconds": seconds,
    }


def parse(text: str) -> dict:
    from safemeta import config as C

    return C.parse_overrides([kv for kv in text.split(",") if kv.strip()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--eval-max-episodes", type=int, default=0,
                    help="sequential meta-test evaluation cap (0: fixed eval_episodes)")
    ap.add_argument("--grid", nargs="+", default=["lam=1", "lam=0.3", "lam=0.1"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    results = []
    for text in args.grid:
        over = {"eval_max_episodes": args.eval_max_episodes, **parse(text)}
        results.append(run_setting(args.run_dir, over, args.tasks, args.steps))
        print(json.dumps(results[-1]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    print(f"\n{results[0]['env']}, {args.tasks} fresh in-distribution tasks, {args.steps} steps "
          f"(limit {results[0]['limit']:g}):")
    print("| setting | reward by step | gain | KL per step | accepted / backed off / kept | max cost by step "
          "| over (CI) by step | possibly over | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for x in results:
        setting = ", ".join(f"{k}={v}" for k, v in x["setting"].items() if k != "eval_max_episodes")
        print(f"| {setting} | {' → '.join(f'{v:.1f}' for v in x['reward'])} | {x['gain']:+.0%} | "
              f"{', '.join(f'{v:.3f}' for v in x['kl'])} | {x['accepted']:.2f} / {x['backed_off']:.2f} / "
              f"{x['kept']:.2f} | {', '.join(f'{v:.0f}' for v in x['cost_max'])} | "
              f"{', '.join(str(v) for v in x['over'])} | {', '.join(str(v) for v in x['possibly_over'])} | "
              f"{x['seconds']:.0f} |")


if __name__ == "__main__":
    main()
