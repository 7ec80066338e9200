"""Steps/s of the locomotion suites vs plain Gymnasium v5 vs raw MuJoCo (SPEC §6, issue 3).

    PYTHONPATH=. python benchmarks/env_speed_locomotion.py [--steps N] [--batch 10]

Per suite, one process, best of --repeats interleaved runs, uniform random actions
(pre-drawn, the same for every variant), a reset every 200 steps (and on
termination), all in one run:
- suite:  `suite.make(task)` (our env, time limit built in);
- gym:    `gymnasium.make("<Robot>-v5", max_episode_steps=200)`;
- raw:    `mujoco.mj_step(model, data, nstep=frame_skip)` on the same model, with
          `mj_resetData` after the same steps as the suite's env reset (no
          observation, no reward, no reset noise);
then batched stepping of `--batch` tasks: `gymnasium.vector.SyncVectorEnv` over
our envs, and `mujoco.rollout.Rollout` (MuJoCo's threaded batch stepping: one
call advances every env by one env step from its full physics state; physics
only, no observation, reward or reset, so it is a ceiling for a batched env).
Run from the repository root: ``PYTHONPATH=. python benchmarks/env_speed_locomotion.py``.
Target (issue 3): suite within 15% of gym, i.e. ratio suite/gym >= 0.85.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator

import gymnasium as gym
import mujoco
import mujoco.rollout
import numpy as np

import safemeta
from safemeta.envs.locomotion.assets import compile_model

SUITES = {  # suite id -> (Gymnasium id, asset, frame_skip)
    "halfcheetah-vel": ("HalfCheetah-v5", "half_cheetah.xml", 5),
    "hopper-vel": ("Hopper-v5", "hopper.xml", 4),
    "swimmer-vel": ("Swimmer-v5", "swimmer.xml", 4),
    "humanoid-dir": ("Humanoid-v5", "humanoid.xml", 5),
}
HORIZON = 200


def actions(space: gym.spaces.Box, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(np.float32)


def time_env(env: gym.Env, acts: np.ndarray) -> tuple[float, set[int]]:
    """Steps/s of a 5-tuple env, resets included, and the steps after which it reset."""
    env.reset(seed=0)
    resets = set()
    start = time.perf_counter()
    for t, a in enumerate(acts):
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
            resets.add(t)
    return len(acts) / (time.perf_counter() - start), resets


def time_raw(model: mujoco.MjModel, frame_skip: int, acts: np.ndarray, resets: set[int]) -> float:
    """Steps/s of bare mj_step, resetting after the same steps as the suite's env did
    (a fallen Humanoid has many more contacts than a standing one)."""
    data = mujoco.MjData(model)
    start = time.perf_counter()
    for t, a in enumerate(acts):
        data.ctrl[:] = a
        mujoco.mj_step(model, data, nstep=frame_skip)
        if t in resets:
            mujoco.mj_resetData(model, data)
    return len(acts) / (time.perf_counter() - start)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence C-level stderr (Gymnasium's own half_cheetah.xml warns on MuJoCo 4)."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def time_sync_vector(make: Callable[[], gym.Env], batch: int, acts: np.ndarray) -> float:
    """Env-steps/s of SyncVectorEnv over `batch` envs (autoreset)."""
    venv = gym.vector.SyncVectorEnv([make for _ in range(batch)])
    venv.reset(seed=0)
    n = len(acts) // batch
    start = time.perf_counter()
    for t in range(n):
        venv.step(acts[t * batch : (t + 1) * batch])
    rate = n * batch / (time.perf_counter() - start)
    venv.close()
    return rate


def time_mj_rollout(model: mujoco.MjModel, frame_skip: int, batch: int, acts: np.ndarray) -> float:
    """Env-steps/s of mujoco.rollout stepping `batch` envs one env step per call."""
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    nthread = os.cpu_count() or 1
    datas = [mujoco.MjData(model) for _ in range(nthread)]
    state = np.empty((batch, mujoco.mj_stateSize(model, spec)))
    for i in range(batch):
        mujoco.mj_getState(model, datas[0], state[i], spec)
    out = np.empty((batch, frame_skip, state.shape[1]))
    n = len(acts) // batch
    with mujoco.rollout.Rollout(nthread=nthread) as pool:
        start = time.perf_counter()
        for t in range(n):
            ctrl = acts[t * batch : (t + 1) * batch, None, :].astype(np.float64)
            pool.rollout(model, datas, state, ctrl, nstep=frame_skip, state=out)
            state = out[:, -1].copy()
        return n * batch / (time.perf_counter() - start)


def bench_suite(suite_id: str, steps: int, batch: int, repeats: int) -> dict[str, float]:
    """Best of `repeats` interleaved runs per variant (the machine is shared)."""
    gym_id, asset, frame_skip = SUITES[suite_id]
    suite = safemeta.suite(suite_id)
    task = suite.sample_tasks(1, np.random.default_rng(0))[0]
    ours = suite.make(task)
    acts = actions(ours.action_space, steps)
    with quiet_stderr():
        plain = gym.make(gym_id, max_episode_steps=HORIZON)
    model = compile_model(asset)
    rates: dict[str, float] = {}
    for _ in range(repeats):
        suite_rate, resets = time_env(ours, acts)
        trial = {
            "suite": suite_rate,
            "gym": time_env(plain, acts)[0],
            "raw": time_raw(model, frame_skip, acts, resets),
            "sync": time_sync_vector(lambda: suite.make(task), batch, acts),
            "rollout": time_mj_rollout(model, frame_skip, batch, acts),
        }
        rates = {k: max(v, rates.get(k, 0.0)) for k, v in trial.items()}
    ours.close()
    plain.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per measurement")
    parser.add_argument("--batch", type=int, default=10, help="tasks stepped together")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--suites", default=",".join(SUITES), help="comma-separated suite ids")
    args = parser.parse_args()
    head = f"{'suite':16s} {'suite/s':>9s} {'gym/s':>9s} {'raw/s':>9s} {'suite/gym':>9s}"
    head += f" {'suite/raw':>9s} {'sync' + str(args.batch) + '/s':>9s} {'rollout/s':>9s}"
    print(head + f" {'sync/suite':>10s} {'roll/suite':>10s}")
    for suite_id in args.suites.split(","):
        with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
            # Gymnasium's own half_cheetah.xml writes MUJOCO_LOG.TXT into the cwd.
            r = bench_suite(suite_id, args.steps, args.batch, args.repeats)
        print(
            f"{suite_id:16s} {r['suite']:9.0f} {r['gym']:9.0f} {r['raw']:9.0f}"
            f" {r['suite'] / r['gym']:9.2f} {r['suite'] / r['raw']:9.2f} {r['sync']:9.0f}"
            f" {r['rollout']:9.0f} {r['sync'] / r['suite']:10.2f} {r['rollout'] / r['suite']:10.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
