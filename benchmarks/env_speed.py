"""Environment speed of every suite (issue 3, SPEC §6): one entry point.

    python benchmarks/env_speed.py [--steps 20000] [--batch 10] [--repeats 3] [--only batch]

1. locomotion suites vs plain Gymnasium v5 vs raw mj_step (benchmarks/env_speed_locomotion.py);
2. navigation suites vs the bare MuJoCo loop of SPEC §6 (benchmarks/env_speed_navigation.py);
3. batched stepping of `--batch` different tasks with safemeta's sampler batch
   (`safemeta.rollout.batch.BatchEnv`, one call per step, auto-reset) against one env of
   the same suite, in the same run: env-steps/s and the ratio.
Random actions, one process, resets included. Ratios are measured side by side.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import safemeta
from safemeta.rollout.batch import BatchEnv

SUITES = ["halfcheetah-vel", "hopper-vel", "swimmer-vel", "humanoid-dir", "point-circle",
          "car-circle", "point-button"]


def single_rate(suite_id: str, steps: int) -> float:
    suite = safemeta.suite(suite_id)
    env = suite.make(suite.sample_tasks(1, np.random.default_rng(0))[0])
    acts = np.random.default_rng(1).uniform(-1, 1, (steps, env.action_space.shape[0]))
    env.reset(seed=0)
    t0 = time.perf_counter()
    for a in acts:
        _, _, term, trunc, _ = env.step(a.astype(np.float32))
        if term or trunc:
            env.reset()
    env.close()
    return steps / (time.perf_counter() - t0)


def batch_rate(suite_id: str, steps: int, batch: int) -> float:
    suite = safemeta.suite(suite_id)
    envs = [suite.make(t) for t in suite.sample_tasks(batch, np.random.default_rng(0))]
    benv = BatchEnv(envs, suite.horizon, suite.num_costs)
    rng = np.random.default_rng(1)
    benv.start(np.full(batch, 10**9), [rng] * batch)
    n_calls = max(1, steps // batch)
    acts = rng.uniform(-1, 1, (n_calls, batch, envs[0].action_space.shape[0])).astype(np.float32)
    t0 = time.perf_counter()
    for a in acts:
        benv.step(a)
    rate = n_calls * batch / (time.perf_counter() - t0)
    benv.close()
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", choices=("locomotion", "navigation", "batch"), default=None)
    args = p.parse_args()
    here = Path(__file__).parent
    common = ["--steps", str(args.steps), "--repeats", str(args.repeats)]
    if args.only in (None, "locomotion"):
        print("== locomotion: suite vs Gymnasium v5 vs raw MuJoCo", flush=True)
        subprocess.run([sys.executable, str(here / "env_speed_locomotion.py"), *common,
                        "--batch", str(args.batch)], check=True)
    if args.only in (None, "navigation"):
        print("\n== navigation: suite vs the bare MuJoCo loop (SPEC §6)", flush=True)
        subprocess.run([sys.executable, str(here / "env_speed_navigation.py"), *common], check=True)
    if args.only in (None, "batch"):
        print(f"\n== batched stepping of {args.batch} tasks (BatchEnv, one call per step)")
        print(f"{'suite':16s} {'single/s':>10s} {'batch/s':>10s} {'batch/single':>13s}")
        for sid in SUITES:
            single = max(single_rate(sid, args.steps) for _ in range(args.repeats))
            batched = max(batch_rate(sid, args.steps, args.batch) for _ in range(args.repeats))
            print(f"{sid:16s} {single:10.0f} {batched:10.0f} {batched / single:13.2f}", flush=True)


if __name__ == "__main__":
    main()
