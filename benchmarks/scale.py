"""Sampled env-steps/s of the sampling backends, policy in the loop (issue 11).

    PYTHONPATH=. python benchmarks/scale.py [--suites halfcheetah-vel,humanoid-dir]
        [--tasks 10] [--steps 2000] [--envs-per-task 10] [--repeats 3]
        [--backends local,process2,ray1,ray2]

Per suite, in one process, best of --repeats interleaved rounds: a real collection of
--tasks tasks x --steps steps (whole episodes; the paper's budget is 8000) with a
64x64 Gaussian policy acting, as a meta-iteration samples:
- local:    today's single-process batched sampler;
- processN: the tasks split over N worker processes (`--backend process --workers N`);
- rayN:     the tasks split over N Ray actors on a local Ray (`--backend ray --workers N`);
against, in the same run, one env of the same model without the policy:
- gym:      the plain Gymnasium v5 env with random actions (resets every 200 steps);
- raw:      bare `mujoco.mj_step(model, data, nstep=frame_skip)` with random controls.
Workers are started and their envs built in a warm-up collection before timing. Ratios
are against `local` (speed-up) and against `gym` (the issue's target: >= 1.0).
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import mujoco
import numpy as np
import torch

import safemeta
from safemeta.nn.policy import GaussianPolicy
from safemeta.rollout.parallel import ProcessSampler
from safemeta.rollout.sampler import Sampler, TaskStream

GYM = {"halfcheetah-vel": "HalfCheetah-v5", "hopper-vel": "Hopper-v5", "humanoid-dir": "Humanoid-v5",
       "swimmer-vel": "Swimmer-v5"}
HORIZON = 200


def make(kind: str, suite: safemeta.envs.base.Suite, envs_per_task: int) -> Sampler:
    if kind == "local":
        return Sampler(suite, HORIZON, 0.99, envs_per_task)
    name, workers = kind.rstrip("0123456789"), int(kind.lstrip("abcdefghijklmnopqrstuvwxyz"))
    if name == "process":
        return ProcessSampler(suite, HORIZON, 0.99, envs_per_task, workers=workers)
    from safemeta.rollout.ray_backend import RaySampler

    return RaySampler(suite, HORIZON, 0.99, envs_per_task, workers=workers)


def time_collection(sampler: Sampler, tasks: list, policy: GaussianPolicy, steps: int, key: int) -> float:
    streams = [TaskStream.of(0, (key, i)) for i in range(len(tasks))]
    start = time.perf_counter()
    roll = sampler.collect(tasks, [policy] * len(tasks), streams, steps=steps)
    return len(roll.obs) / (time.perf_counter() - start)


def time_gym(gym_id: str, steps: int) -> float:
    env = gym.make(gym_id, max_episode_steps=HORIZON)
    acts = np.random.default_rng(0).uniform(env.action_space.low, env.action_space.high,
                                            (steps, *env.action_space.shape)).astype(np.float32)
    env.reset(seed=0)
    start = time.perf_counter()
    for a in acts:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def time_raw(env: gym.Env, steps: int) -> float:
    u = env.unwrapped
    model, frame_skip = u.model, u.frame_skip  # type: ignore[attr-defined]
    data = mujoco.MjData(model)
    ctrl = np.random.default_rng(0).uniform(-1, 1, (steps, model.nu))
    start = time.perf_counter()
    for t in range(steps):
        data.ctrl[:] = ctrl[t]
        mujoco.mj_step(model, data, nstep=frame_skip)
        if (t + 1) % HORIZON == 0:
            mujoco.mj_resetData(model, data)
    return steps / (time.perf_counter() - start)


def bench_suite(suite_id: str, args: argparse.Namespace) -> dict[str, float]:
    suite = safemeta.suite(suite_id)
    tasks = suite.sample_tasks(args.tasks, np.random.default_rng(0), "train")
    obs_space, act_space = suite.spaces()
    torch.manual_seed(0)
    policy = GaussianPolicy(obs_space.shape[0], act_space.shape[0], [64, 64], init_log_std=-1.0)
    actors = sum(int(k[3:]) for k in args.backends if k.startswith("ray"))
    if actors:  # a local Ray with a CPU for every actor of every variant (they live side by side)
        from safemeta.rollout.ray_backend import connect

        connect(workers=actors)
    samplers = {kind: make(kind, suite, args.envs_per_task) for kind in args.backends}
    best: dict[str, float] = {}
    try:
        for s in samplers.values():  # warm-up: workers started, envs built
            time_collection(s, tasks, policy, HORIZON, key=10**6)
        env = suite.make(tasks[0])
        for r in range(args.repeats):  # interleaved rounds
            for kind, s in samplers.items():
                best[kind] = max(best.get(kind, 0.0), time_collection(s, tasks, policy, args.steps, key=r))
            best["gym"] = max(best.get("gym", 0.0), time_gym(GYM[suite_id], args.raw_steps))
            best["raw"] = max(best.get("raw", 0.0), time_raw(env, args.raw_steps))
        env.close()
    finally:
        for s in samplers.values():
            s.close()
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suites", default="halfcheetah-vel,humanoid-dir")
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--steps", type=int, default=2000, help="env steps per task per collection")
    p.add_argument("--envs-per-task", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--raw-steps", type=int, default=20000, help="steps of the gym and raw references")
    p.add_argument("--backends", default="local,process2,ray1,ray2")
    args = p.parse_args()
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    torch.set_num_threads(1)
    results = {s: bench_suite(s, args) for s in args.suites.split(",")}
    kinds = args.backends
    print(f"env-steps/s, best of {args.repeats}; {args.tasks} tasks x {args.steps} steps x "
          f"{args.envs_per_task} envs per task, 64x64 policy acting")
    print("| suite | " + " | ".join(kinds) + " | gym | raw | " +
          " | ".join(f"{k}/local" for k in kinds[1:]) + " | " + " | ".join(f"{k}/gym" for k in kinds) + " |")
    print("|---" * (1 + 2 * len(kinds) + 2 + len(kinds) - 1) + "|")
    for suite_id, r in results.items():
        cells = [f"{r[k]:,.0f}" for k in [*kinds, "gym", "raw"]]
        cells += [f"{r[k] / r['local']:.2f}" for k in kinds[1:] if "local" in r]
        cells += [f"{r[k] / r['gym']:.2f}" for k in kinds]
        print(f"| {suite_id} | " + " | ".join(cells) + " |")
    if all("local" in r for r in results.values()):
        print("raw/local: " + ", ".join(f"{s} {r['raw'] / r['local']:.2f}" for s, r in results.items()))


if __name__ == "__main__":
    main()
