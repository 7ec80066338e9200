"""Steps/s of the navigation suites against a bare MuJoCo loop (SPEC §6, issue 3).

    python benchmarks/env_speed_navigation.py [--steps 20000] [--repeats 3] [--seed 0]

For each suite (best of --repeats runs, suite and raw loop interleaved): random
actions in one process, resets included (truncation at the horizon), through the
public gymnasium API. The "raw" loop uses the same compiled
model with its own MjData: ``mj_step(nstep=substeps)``, read the MuJoCo sensors, a
numpy lidar toward the origin, the Circle reward and cost, and a reset (resetData +
qpos write) every horizon steps -- the SPEC §6 reference loop. Prints a table with
the issue's targets. It also checks that the cost limits bind: a scripted
reward-seeking controller (no regard for cost) is run on 8 tasks of each suite and its
episode costs printed next to the limit.
"""

from __future__ import annotations

import argparse
import math
import time

import mujoco
import numpy as np

import safemeta
from safemeta.envs.navigation.engine import NavEnv

TARGETS = {"point-circle": 4500, "car-circle": 3000, "point-button": 4000}


def suite_speed(suite_id: str, steps: int, seed: int) -> tuple[float, NavEnv]:
    suite = safemeta.suite(suite_id)
    task = suite.sample_tasks(1, np.random.default_rng(seed))[0]
    env = suite.make(task)
    assert isinstance(env, NavEnv)
    actions = np.random.default_rng(seed).uniform(-1, 1, (steps, 2)).astype(np.float32)
    env.reset(seed=seed)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start), env


def raw_speed(env: NavEnv, steps: int, seed: int, horizon: int = 500) -> float:
    """The bare loop of SPEC §6 over `env`'s model (no gymnasium, no task logic)."""
    model = env.model
    data = mujoco.MjData(model)
    agent = model.body("agent").id
    nsens = env.robot.sensor_dim
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (steps, 2))
    start = time.perf_counter()
    for i in range(steps):
        if i % horizon == 0:
            mujoco.mj_resetData(model, data)
            env.robot.place(model, data, *rng.uniform(-0.8, 0.8, 2), rng.uniform(0, 6.28))
        data.ctrl[:] = actions[i]
        mujoco.mj_step(model, data, nstep=env.robot.substeps)
        sens = data.sensordata[:nsens].copy()
        pos, mat = data.xpos[agent], data.xmat[agent].reshape(3, 3)
        ego = (-pos) @ mat
        angle = np.arctan2(ego[1], ego[0]) % (2 * np.pi)
        lid = np.zeros(16)
        lid[int(angle / (np.pi / 8)) % 16] = max(0.0, 6 - np.hypot(ego[0], ego[1])) / 6
        x, y, u, v = pos[0], pos[1], data.qvel[0], data.qvel[1]
        r = math.hypot(x, y)
        _reward = 0.1 * ((-u * y + v * x) / r) / (1 + abs(r - 1.5))
        _cost = float(abs(x) > 1.1)
        _obs = np.concatenate([sens, lid])
    return steps / (time.perf_counter() - start)


def reward_seeking_cost(suite_id: str, seed: int) -> tuple[float, float]:
    """Episode cost and reward of a scripted controller that only chases the reward."""
    suite = safemeta.suite(suite_id)
    task = suite.sample_tasks(1, np.random.default_rng(seed))[0]
    env = suite.make(task)
    assert isinstance(env, NavEnv)
    env.reset(seed=seed)
    policy = _goal_action if suite_id == "point-button" else _circle_action
    total_cost = total_reward = 0.0
    for _ in range(suite.horizon):
        _, reward, _, truncated, info = env.step(policy(env))
        total_cost += info["cost"]
        total_reward += reward
        if truncated:
            break
    return total_cost, total_reward


def _goal_action(env: NavEnv) -> np.ndarray:
    """Point-Button: turn toward the goal button and drive straight at it."""
    (x, y, _), m = env.agent_pose()
    gx, gy = env.buttons[env.goal]  # type: ignore[attr-defined]
    dx, dy = gx - x, gy - y
    turn = math.atan2(dx * m[1] + dy * m[4], dx * m[0] + dy * m[3])
    return np.array([1.0 if abs(turn) < 1.0 else 0.0, np.clip(3 * turn, -1, 1)], np.float32)


def _circle_action(env: NavEnv) -> np.ndarray:
    """Head along the counter-clockwise tangent, pulled toward radius R."""
    (x, y, _), m = env.agent_pose()
    r = math.hypot(x, y) + 1e-9
    radius = env.radius  # type: ignore[attr-defined]
    tx, ty = -y / r, x / r  # tangent
    gain = 2.0 * (radius - r)
    dx, dy = tx + gain * x / r, ty + gain * y / r
    if env.robot.name == "point":
        fwd = (m[0], m[3])  # body x axis in world
        side = (m[1], m[4])
        turn = math.atan2(dx * side[0] + dy * side[1], dx * fwd[0] + dy * fwd[1])
        return np.array([1.0, np.clip(3 * turn, -1, 1)], np.float32)
    fwd = (-m[1], -m[4])  # the car drives along body −y
    left = (-m[0], -m[3])
    turn = math.atan2(dx * left[0] + dy * left[1], dx * fwd[0] + dy * fwd[1])
    steer = float(np.clip(2 * turn, -1, 1))
    return np.array([np.clip(1 - steer, -1, 1), np.clip(1 + steer, -1, 1)], np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'suite':<14}{'suite steps/s':>15}{'raw steps/s':>13}{'suite/raw':>11}"
          f"{'target':>9}{'vs target':>11}")
    for suite_id, target in TARGETS.items():
        sps = raw = 0.0
        for _ in range(args.repeats):  # interleaved, best of: load hits both alike
            s, env = suite_speed(suite_id, args.steps, args.seed)
            sps, raw = max(sps, s), max(raw, raw_speed(env, args.steps, args.seed))
            env.close()
        print(f"{suite_id:<14}{sps:>15,.0f}{raw:>13,.0f}{sps / raw:>11.2f}"
              f"{target:>9,}{sps / target:>10.1f}x")
    print("\nreward-seeking scripted controller (ignores cost), one episode on each of "
          "8 train tasks:")
    for suite_id in TARGETS:
        runs = np.array([reward_seeking_cost(suite_id, args.seed + k) for k in range(8)])
        limit = safemeta.suite(suite_id).cost_limit
        print(f"  {suite_id:<14} episode cost median {np.median(runs[:, 0]):5.0f} "
              f"(min {runs[:, 0].min():3.0f}, over the limit in {np.sum(runs[:, 0] > limit)}/8)"
              f"  reward mean {runs[:, 1].mean():6.2f}  limit {limit:g}")


if __name__ == "__main__":
    main()
