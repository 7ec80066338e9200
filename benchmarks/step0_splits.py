"""Is the meta-policy itself (meta-test step 0) within the limit on new tasks, in
distribution (`test`) and on the harder `ood` split? (issue 10)

For each trained run (its latest checkpoint): fresh tasks of each split, the meta-policy
evaluated with `--episodes` episodes per task; a task is *over* when the 95% interval
of its mean episode cost lies above the limit, *possibly over* when only the estimate
does (`rollout/evaluation.py`).

    python benchmarks/step0_splits.py RUN_DIR [RUN_DIR ...] [--tasks 20] [--episodes 50] [--splits test ood]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def measure(run_dir: Path, n_tasks: int, episodes: int,
            splits: tuple[str, ...] = ("test", "ood")) -> list[dict]:
    from safemeta.experiment.runner import load_algorithm
    from safemeta.meta_learner import Phase
    from safemeta.rollout.evaluation import interval, over, possibly_over

    algo, _, r, _ = load_algorithm(run_dir, log=lambda m: None)
    limit = float(algo.cost_limit[0])
    out = []
    for k, split in enumerate(("test", "ood")):
        if split not in splits:
            continue
        t0 = time.perf_counter()
        tasks = r.suite.sample_tasks(n_tasks, np.random.default_rng(4242 + k), split)
        meta = algo.meta_policies(len(tasks))
        ev = algo.collect(tasks, meta, Phase.TEST_EVAL, 90_000 + k, episodes=episodes)
        cis = [interval(ev.ep_cost[i] if algo.cost_type == "undiscounted" else ev.ep_disc_cost[i])
               for i in range(len(tasks))]
        out.append({
            "run": str(run_dir), "env": r.spec.env, "split": split, "tasks": n_tasks, "episodes": episodes,
            "limit": limit, "over": sum(over(ci, limit) for ci in cis),
            "possibly_over": sum(possibly_over(ci, limit) for ci in cis),
            "max_cost": max(ci.mean for ci in cis), "mean_cost": float(np.mean([ci.mean for ci in cis])),
            "reward": float(ev.reward_return().mean()), "seconds": time.perf_counter() - t0,
        })
        print(out[-1], flush=True)
    algo.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--splits", nargs="+", default=["test", "ood"], choices=["test", "ood"])
    args = ap.parse_args()
    splits = tuple(args.splits)
    rows = [row for run in args.run_dirs for row in measure(run, args.tasks, args.episodes, splits)]
    print("\n| suite | split | tasks | episodes / task | over (95% CI) | possibly over | mean cost | "
          "max cost | limit | reward |")
    print("|" + "---|" * 10)
    for x in rows:
        print(f"| {x['env']} | {x['split']} | {x['tasks']} | {x['episodes']} | {x['over']} "
              f"| {x['possibly_over']} | {x['mean_cost']:.1f} | {x['max_cost']:.1f} | {x['limit']:g} "
              f"| {x['reward']:.1f} |")


if __name__ == "__main__":
    main()
