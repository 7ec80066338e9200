"""Does the point-circle (or car-circle) meta-policy's radius follow the task's R? (issue 14)

For each trained run (its latest checkpoint): fresh tasks of a split, the meta-policy
(step 0, sampled actions as the meta-test runs it) for `--episodes` episodes per task;
per task the agent's mean distance from the centre r̄ over the episode's second half
(after the run-in from the start box), the share of steps with a cost (beyond a wall, or
in a hazard), and the return. Then the least-squares slope and correlation of r̄ on R
over the tasks: a policy that runs the task's circle has slope ≈ 1 and r̄ ≈ R; one that
runs the same circle on every task has slope ≈ 0.

    python benchmarks/circle_radius.py RUN_DIR [RUN_DIR ...] [--tasks 10] [--episodes 5] [--split test]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _play import steps


def radius_of(env, policy, episodes: int, seed: int) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """Mean r over each episode's second half, share of steps with cost, mean return."""
    radii: list[list[float]] = [[] for _ in range(episodes)]
    costly, returns = [], np.zeros(episodes)
    for e, reward, info in steps(env, policy, episodes, seed):
        returns[e] += reward
        radii[e].append(float(np.hypot(*np.asarray(env.unwrapped.agent_pose()[0][:2]))))
        costly.append(float(info.get("cost", 0.0) > 0))
    r_bar = float(np.mean([np.mean(r[len(r) // 2:]) for r in radii]))
    return r_bar, float(np.mean(costly)), float(returns.mean())


def fit(radius: np.ndarray, r_bar: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of r̄ on R, and their correlation."""
    slope = float(np.polyfit(radius, r_bar, 1)[0]) if np.ptp(radius) > 0 else float("nan")
    corr = float(np.corrcoef(radius, r_bar)[0, 1]) if np.ptp(r_bar) > 0 else float("nan")
    return slope, corr


def measure(run_dir: Path, n_tasks: int, episodes: int, split: str) -> dict:
    from safemeta.experiment.runner import load_algorithm

    algo = load_algorithm(run_dir, log=lambda m: None).algo
    policy = algo.meta_policies(1)[0].policy
    tasks = algo.suite.sample_tasks(n_tasks, np.random.default_rng(4343), split)
    rows = []
    for i, task in enumerate(tasks):
        env = algo.suite.make(task)
        r_bar, beyond, ret = radius_of(env, policy, episodes, 1000 * i)
        env.close()
        rows.append({"R": task.radius, "wall": task.wall, "r_bar": r_bar, "beyond": beyond, "return": ret})
        print(f"{run_dir} task {i}: R {task.radius:.2f}, wall {task.wall:.2f}, r̄ {r_bar:.2f}, "
              f"steps with cost {beyond:.0%}, return {ret:.1f}", flush=True)
    algo.close()
    radius, r_bar = np.array([x["R"] for x in rows]), np.array([x["r_bar"] for x in rows])
    slope, corr = fit(radius, r_bar)
    return {"run": str(run_dir), "env": algo.suite.id, "split": split, "tasks": rows, "slope": slope,
            "corr": corr, "mean_abs_gap": float(np.mean(np.abs(r_bar - radius))),
            "return": float(np.mean([x["return"] for x in rows]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    res = [measure(run, args.tasks, args.episodes, args.split) for run in args.run_dirs]
    print("\n| run | split | tasks | R range | r̄ range | slope of r̄ on R | corr | mean |r̄ − R| | return |")
    print("|" + "---|" * 9)
    for x in res:
        radius = [t["R"] for t in x["tasks"]]
        r_bar = [t["r_bar"] for t in x["tasks"]]
        print(f"| {x['run']} | {x['split']} | {len(radius)} | {min(radius):.2f}–{max(radius):.2f} | "
              f"{min(r_bar):.2f}–{max(r_bar):.2f} | {x['slope']:.2f} | {x['corr']:.2f} | "
              f"{x['mean_abs_gap']:.2f} | {x['return']:.1f} |")


if __name__ == "__main__":
    main()
