"""Does a velocity-suite meta-policy's speed follow the task's target v*? (issue 14)

For each trained run on a velocity suite (halfcheetah-vel, hopper-vel, swimmer-vel; its
latest checkpoint): tasks whose targets span the suite's range, the meta-policy (step 0,
sampled actions as the meta-test runs it) for `--episodes` episodes per task; per task
the mean forward velocity v̄ (the suite's per-step x velocity, averaged), the return and
the episode cost. Then the least-squares slope of v̄ on v*: the meta-policy does not see
v*, so at step 0 the slope is ≈ 0, and what adaptation can add on a task is the reward of
moving v̄ toward v*. The column "one speed for every task" is the mean tracking reward
of running v̄ on every task, −H·E|v* − v̄| over the suite's uniform targets, against the best single
speed (the median target).

    python benchmarks/velocity_reach.py RUN_DIR [RUN_DIR ...] [--targets 6] [--episodes 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _play import steps

# v* ~ U[0, high] per suite (SPEC §4.1)
TARGET_HIGH = {"halfcheetah-vel": 2.0, "hopper-vel": 1.0, "swimmer-vel": 1.0}


def speed_of(env, policy, episodes: int, seed: int) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """Mean forward velocity, mean return and mean episode cost over `episodes` episodes."""
    velocities: list[list[float]] = [[] for _ in range(episodes)]
    returns, costs = np.zeros(episodes), np.zeros(episodes)
    for e, reward, info in steps(env, policy, episodes, seed):
        velocities[e].append(float(info["x_velocity"]))
        returns[e] += reward
        costs[e] += float(np.sum(info.get("cost", 0.0)))
    return float(np.mean([np.mean(v) for v in velocities])), float(returns.mean()), float(costs.mean())


def one_speed_reward(v: float, high: float, horizon: int) -> float:
    """−H·E|v* − v| for v* ~ U[0, high]: the mean reward of running v on every task."""
    v = min(max(v, 0.0), high)
    return -horizon * (v**2 + (high - v) ** 2) / (2 * high)


def measure(run_dir: Path, n_targets: int, episodes: int) -> dict:
    from safemeta.envs.locomotion.tasks import VelocityTask
    from safemeta.experiment.runner import load_algorithm

    algo = load_algorithm(run_dir, log=lambda m: None).algo
    suite_id = algo.suite.id
    if suite_id not in TARGET_HIGH:
        raise SystemExit(f"{run_dir}: suite {suite_id!r}; accepted: {', '.join(TARGET_HIGH)}")
    high = TARGET_HIGH[suite_id]
    policy = algo.meta_policies(1)[0].policy
    targets = np.linspace(0.0, high, n_targets)
    rows = []
    for i, v_star in enumerate(targets):
        env = algo.suite.make(VelocityTask(float(v_star)))
        horizon = int(algo.cfg.horizon or algo.suite.horizon)
        v_bar, ret, cost = speed_of(env, policy, episodes, 1000 * i)
        env.close()
        rows.append({"target": float(v_star), "speed": v_bar, "return": ret, "cost": cost})
        print(f"{run_dir} v* {v_star:.2f}: v̄ {v_bar:.3f} m/s, return {ret:.1f}, cost {cost:.1f}", flush=True)
    algo.close()
    speeds = np.array([r["speed"] for r in rows])
    slope = float(np.polyfit(targets, speeds, 1)[0])
    return {"run": str(run_dir), "env": suite_id, "tasks": rows, "slope": slope,
            "speed_mean": float(speeds.mean()), "speed_range": (float(speeds.min()), float(speeds.max())),
            "one_speed_reward": one_speed_reward(float(speeds.mean()), high, horizon),
            "best_one_speed_reward": one_speed_reward(high / 2, high, horizon)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--targets", type=int, default=6)
    ap.add_argument("--episodes", type=int, default=5)
    args = ap.parse_args()
    print("| run | suite | v̄ over the targets (m/s) | slope of v̄ on v* | "
          "one speed for every task: mean tracking reward | best single speed |")
    print("|---|---|---|---|---|---|")
    for run in args.run_dirs:
        m = measure(run, args.targets, args.episodes)
        lo, hi = m["speed_range"]
        print(f"| {m['run']} | {m['env']} | {lo:.2f}–{hi:.2f} | {m['slope']:.3f} | "
              f"{m['one_speed_reward']:.1f} | {m['best_one_speed_reward']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
