"""Sampled env-steps/s of the sampling backends, policy in the loop (issue 11).

    PYTHONPATH=. python benchmarks/scale.py [--suites halfcheetah-vel,humanoid-dir]
        [--tasks 10] [--steps 2000] [--envs-per-task 10] [--repeats 3]
        [--backends local,process2,ray1,ray2] [--threads 2]

Per suite, in one process, best of --repeats interleaved rounds: a real collection of
--tasks tasks x --steps steps (whole episodes; the paper's budget is 8000) with a
64x64 Gaussian policy acting, as a meta-iteration samples:
- local:    today's single-process batched sampler;
- processN: the tasks split over N worker processes (`--backend process --workers N`);
- rayN:     the tasks split over N Ray actors on a local Ray (`--backend ray --workers N`);
against, in the same run, one env of the same model without the policy:
- gym:      the plain Gymnasium v5 env with random actions (resets every 200 steps;
            locomotion only: the navigation suites have no Gymnasium twin);
- raw:      bare `mujoco.mj_step(model, data, nstep=frame_skip)` with random controls.
And MuJoCo's own threads (`--threads N`, default 2): the share of a local collection's
time spent in `mj_step` (timed in place), and the speed-up of that physics split over N
threads (MuJoCo releases the GIL in `mj_step`; copies of the sampler's envs' MjData
where the collection left them, one call each per lock-step). `threadsN` is the local
rate with its physics share sped up so (Amdahl): an upper bound for a sampler that
threads the physics while the envs' Python stays serial (obs and reward need the
physics' result, so the two cannot overlap).
Workers are started and their envs built in a warm-up collection before timing. Ratios
are against `local` (speed-up) and against `gym` (the issue's target: >= 1.0).
"""

from __future__ import annotations

import argparse
import copy
import time
from concurrent.futures import ThreadPoolExecutor

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


def substeps(env: gym.Env) -> int:
    """MuJoCo steps per env step: Gymnasium's `frame_skip`, the navigation envs' `_substeps`."""
    return int(getattr(env, "frame_skip", 0) or env._substeps)  # type: ignore[attr-defined]


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
    model, frame_skip = u.model, substeps(u)
    data = mujoco.MjData(model)
    ctrl = np.random.default_rng(0).uniform(-1, 1, (steps, model.nu))
    start = time.perf_counter()
    for t in range(steps):
        data.ctrl[:] = ctrl[t]
        mujoco.mj_step(model, data, nstep=frame_skip)
        if (t + 1) % HORIZON == 0:
            mujoco.mj_resetData(model, data)
    return steps / (time.perf_counter() - start)


def physics_share(sampler: Sampler, tasks: list, policy: GaussianPolicy, steps: int) -> float:
    """The share of a local collection's time spent inside `mujoco.mj_step`, timed in place."""
    spent = [0.0]
    step = mujoco.mj_step

    def timed(*args: object, **kw: object) -> None:
        start = time.perf_counter()
        step(*args, **kw)
        spent[0] += time.perf_counter() - start

    mujoco.mj_step = timed
    try:
        start = time.perf_counter()
        time_collection(sampler, tasks, policy, steps, key=10**7)
        return spent[0] / (time.perf_counter() - start)
    finally:
        mujoco.mj_step = step


def thread_speedup(envs: list, threads: int, steps: int) -> float:
    """Physics of the envs (copies of their MjData where the last collection left them), one
    `mj_step` call each per lock-step: one thread's time over `threads` threads' time."""
    models = [e.model for e in envs]
    nstep = [substeps(e) for e in envs]
    ctrl = np.random.default_rng(0).uniform(-1, 1, (steps, envs[0].model.nu))

    def run(datas: list, parts: list[list[int]], pool: ThreadPoolExecutor | None) -> float:
        def advance(part: list[int], k: int) -> None:
            for i in part:
                datas[i].ctrl[:] = ctrl[k]
                mujoco.mj_step(models[i], datas[i], nstep=nstep[i])

        start = time.perf_counter()
        for k in range(steps):
            if pool is None:
                advance(parts[0], k)
            else:
                list(pool.map(advance, parts, [k] * len(parts)))
        return time.perf_counter() - start

    idx = list(range(len(envs)))
    serial = run([copy.copy(e.data) for e in envs], [idx], None)
    with ThreadPoolExecutor(threads) as pool:
        threaded = run([copy.copy(e.data) for e in envs], [idx[i::threads] for i in range(threads)], pool)
    return serial / threaded


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
            if suite_id in GYM:
                best["gym"] = max(best.get("gym", 0.0), time_gym(GYM[suite_id], args.raw_steps))
            best["raw"] = max(best.get("raw", 0.0), time_raw(env, args.raw_steps))
            if args.threads > 1 and "local" in samplers:
                share = physics_share(samplers["local"], tasks, policy, args.steps)
                pool = [e.unwrapped for e in samplers["local"].pool._envs.values()]
                speedup = thread_speedup(pool, args.threads, max(1, args.raw_steps // len(pool)))
                bound = best["local"] / (1.0 - share + share / speedup)
                best[f"threads{args.threads}"] = max(best.get(f"threads{args.threads}", 0.0), bound)
                best["physics share"] = max(best.get("physics share", 0.0), share)
                best["thread speed-up"] = max(best.get("thread speed-up", 0.0), speedup)
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
    p.add_argument("--threads", type=int, default=2, help="MuJoCo physics threads of the bound (1: skip)")
    args = p.parse_args()
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    torch.set_num_threads(1)
    results = {s: bench_suite(s, args) for s in args.suites.split(",")}
    threaded = args.threads > 1 and "local" in args.backends
    kinds = args.backends + ([f"threads{args.threads}"] if threaded else [])
    print(f"env-steps/s, best of {args.repeats}; {args.tasks} tasks x {args.steps} steps x "
          f"{args.envs_per_task} envs per task, 64x64 policy acting")
    print("| suite | " + " | ".join(kinds) + " | gym | raw | " +
          " | ".join(f"{k}/local" for k in kinds[1:]) + " | " + " | ".join(f"{k}/gym" for k in kinds) + " |")
    print("|---" * (1 + 2 * len(kinds) + 2 + len(kinds) - 1) + "|")
    for suite_id, r in results.items():
        cells = [f"{r[k]:,.0f}" if k in r else "—" for k in [*kinds, "gym", "raw"]]
        cells += [f"{r[k] / r['local']:.2f}" for k in kinds[1:] if "local" in r]
        cells += [f"{r[k] / r['gym']:.2f}" if "gym" in r else "—" for k in kinds]
        print(f"| {suite_id} | " + " | ".join(cells) + " |")
    if all("local" in r for r in results.values()):
        print("raw/local: " + ", ".join(f"{s} {r['raw'] / r['local']:.2f}" for s, r in results.items()))
    if any("physics share" in r for r in results.values()):
        print(f"physics (mj_step) share of the local sampler's time, and the physics' speed-up on "
              f"{args.threads} threads: " + ", ".join(f"{s} {r['physics share']:.2f}, "
                                                      f"{r['thread speed-up']:.2f}x"
                                                      for s, r in results.items() if "physics share" in r))


if __name__ == "__main__":
    main()
