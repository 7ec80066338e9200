"""Evidence that the locomotion suites' default cost limits bind (SPEC §4.1, issue 3).

    PYTHONPATH=. python benchmarks/locomotion_limits.py [--steps 150000] [--suites a,b]

For each suite, on 10 test tasks, one episode each (horizon 200), it reports the
episode reward, the episode energy cost Σ‖a‖² (the default cost) and the episode
velocity cost (steps above the Safety-Gymnasium threshold) of:
- the zero policy (a = 0: energy 0, so every limit > 0 is feasible);
- the uniform random policy on the action box (E‖a‖² = d·h²/3 per step);
- a reward-only PPO learner (task-conditioned Gaussian MLP: the task parameter is
  appended to the observation; trained on training tasks for --steps env steps,
  no cost term), evaluated both stochastic (as it collects data) and at its mean;
and the fraction of test tasks on which each exceeds the suite's default limits.
The limit binds when the reward-only learner exceeds it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

import safemeta
from safemeta.envs.base import Suite, Task

Policy = Callable[[np.ndarray, Task], np.ndarray]
REWARD_SCALE = {"humanoid-dir": 0.1}  # keeps value targets O(10) for the alive bonus


@dataclasses.dataclass
class PPOConfig:
    steps: int = 150_000
    """Total env steps of training."""
    n_envs: int = 8
    """Envs stepped together (one policy forward per step)."""
    rollout: int = 256
    """Steps per env per iteration."""
    epochs: int = 8
    minibatch: int = 512
    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2


class Normaliser:
    """Running mean/std of observations."""

    def __init__(self, dim: int) -> None:
        self.mean, self.var, self.count = np.zeros(dim), np.ones(dim), 1e-4

    def update(self, x: np.ndarray) -> None:
        m, v, n = x.mean(0), x.var(0), len(x)
        delta, total = m - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + v * n + delta**2 * self.count * n / total) / total
        self.count = total

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self.mean) / np.sqrt(self.var + 1e-8), -10, 10)


class ActorCritic(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int) -> None:
        super().__init__()

        def mlp(out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, out)
            )

        self.mu, self.v = mlp(act_dim), mlp(1)
        self.log_std = nn.Parameter(torch.full((act_dim,), -0.5))

    def dist(self, obs: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.mu(obs), self.log_std.exp())


def task_obs(obs: np.ndarray, task: Task) -> np.ndarray:
    """The observation with the task's one parameter appended (a task-conditioned policy)."""
    return np.append(obs, dataclasses.astuple(task)[0])


class Learner:
    """Minimal PPO on reward only over the suite's training tasks."""

    def __init__(self, suite: Suite, cfg: PPOConfig, seed: int) -> None:
        self.suite, self.cfg = suite, cfg
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.envs = [suite.make(t) for t in suite.sample_tasks(cfg.n_envs, self.rng)]
        self.obs = np.stack([self._reset(i, seed + i) for i in range(cfg.n_envs)])
        self.act_space = self.envs[0].action_space
        self.norm = Normaliser(self.obs.shape[1])
        self.net = ActorCritic(self.obs.shape[1], self.act_space.shape[0])
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.scale = REWARD_SCALE.get(suite.id, 1.0)

    def _reset(self, i: int, seed: int | None = None) -> np.ndarray:
        env = self.envs[i]
        env.set_task(self.suite.sample_tasks(1, self.rng)[0])
        return task_obs(env.reset(seed=seed)[0], env.task)

    def collect(self) -> dict[str, torch.Tensor]:
        cfg, n = self.cfg, self.cfg.n_envs
        buf = {k: [] for k in ("obs", "act", "logp", "rew", "val", "done", "boot")}
        for _ in range(cfg.rollout):
            self.norm.update(self.obs)
            o = torch.as_tensor(self.norm(self.obs), dtype=torch.float32)
            with torch.no_grad():
                d = self.net.dist(o)
                a = d.sample()
                logp, val = d.log_prob(a).sum(-1), self.net.v(o).squeeze(-1)
            rew, done, boot = np.zeros(n), np.zeros(n), np.zeros(n)
            for i, env in enumerate(self.envs):
                ob, r, term, trunc, _ = env.step(a[i].numpy())
                rew[i], done[i] = r * self.scale, term or trunc
                if trunc and not term:  # time-limit bootstrap
                    last = torch.as_tensor(self.norm(task_obs(ob, env.task)[None]), dtype=torch.float32)
                    with torch.no_grad():
                        boot[i] = cfg.gamma * self.net.v(last).item()
                self.obs[i] = self._reset(i) if done[i] else task_obs(ob, env.task)
            for k, v in zip(buf, (o, a, logp, rew, val, done, boot)):
                buf[k].append(torch.as_tensor(v, dtype=torch.float32))
        return {k: torch.stack(v) for k, v in buf.items()}

    def advantages(self, b: dict[str, torch.Tensor]) -> None:
        cfg = self.cfg
        with torch.no_grad():
            o = torch.as_tensor(self.norm(self.obs), dtype=torch.float32)
            next_val, gae = self.net.v(o).squeeze(-1), torch.zeros(cfg.n_envs)
        adv = torch.zeros_like(b["rew"])
        for t in reversed(range(cfg.rollout)):
            nonterminal = 1.0 - b["done"][t]
            delta = b["rew"][t] + b["boot"][t] + cfg.gamma * next_val * nonterminal - b["val"][t]
            gae = delta + cfg.gamma * cfg.gae_lambda * nonterminal * gae
            adv[t], next_val = gae, b["val"][t]
        b["adv"], b["ret"] = adv, adv + b["val"]

    def update(self, b: dict[str, torch.Tensor]) -> None:
        cfg = self.cfg
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in b.items()}
        n = len(flat["rew"])
        for _ in range(cfg.epochs):
            for idx in torch.randperm(n).split(cfg.minibatch):
                adv = flat["adv"][idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                logp = self.net.dist(flat["obs"][idx]).log_prob(flat["act"][idx]).sum(-1)
                ratio = (logp - flat["logp"][idx]).exp()
                pg = -torch.min(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv).mean()
                vf = (self.net.v(flat["obs"][idx]).squeeze(-1) - flat["ret"][idx]).pow(2).mean()
                self.opt.zero_grad()
                (pg + 0.5 * vf).backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), 0.5)
                self.opt.step()

    def train(self) -> None:
        iters = self.cfg.steps // (self.cfg.rollout * self.cfg.n_envs)
        for _ in range(iters):
            b = self.collect()
            self.advantages(b)
            self.update(b)

    def act(self, obs: np.ndarray, task: Task, stochastic: bool) -> np.ndarray:
        o = torch.as_tensor(self.norm(task_obs(obs, task)), dtype=torch.float32)
        with torch.no_grad():
            d = self.net.dist(o)
            return (d.sample() if stochastic else d.mean).numpy()


def evaluate(suite: Suite, tasks: list[Task], policy: Policy) -> np.ndarray:
    """(reward, energy cost, velocity cost) of one episode per task."""
    out = []
    for k, task in enumerate(tasks):
        env = suite.make(task)
        low, high = env.model.actuator_ctrlrange.T
        obs, _ = env.reset(seed=1000 + k)
        totals, done = np.zeros(3), False
        while not done:
            a = policy(obs, task)
            obs, r, term, trunc, info = env.step(a)
            speed = np.hypot(info["x_velocity"], info.get("y_velocity", 0.0))
            if "y_velocity" not in info:  # signed forward speed (Safety-Gymnasium v1)
                speed = info["x_velocity"]
            energy = float(np.sum(np.clip(a, low, high) ** 2))
            totals += (r, energy, float(speed > env.velocity_threshold))
            done = term or trunc
        out.append(totals)
    return np.array(out)


def report(name: str, res: np.ndarray, limits: tuple[float, float]) -> None:
    rew, energy, velocity = res.T
    print(
        f"  {name:22s} reward {rew.mean():7.1f} | energy mean {energy.mean():6.1f}"
        f" [{energy.min():6.1f}, {energy.max():6.1f}] > {limits[0]:g} on"
        f" {np.mean(energy > limits[0]):4.0%} | velocity cost mean {velocity.mean():5.1f}"
        f" > {limits[1]:g} on {np.mean(velocity > limits[1]):4.0%}",
        flush=True,
    )


def run_suite(suite_id: str, cfg: PPOConfig, seed: int) -> None:
    suite = safemeta.suite(suite_id)
    tasks = suite.sample_tasks(10, np.random.default_rng(seed + 1), split="test")
    space = suite.make(tasks[0]).action_space
    rng = np.random.default_rng(seed)
    limits = (suite.cost_limit, safemeta.suite(suite_id, cost="velocity").cost_limit)
    print(
        f"{suite_id}: default limits per {suite.horizon} steps: energy {limits[0]:g},"
        f" velocity {limits[1]:g}; 10 test tasks, one episode each"
    )
    report("zero policy", evaluate(suite, tasks, lambda o, t: np.zeros(space.shape)), limits)

    def random_policy(obs: np.ndarray, task: Task) -> np.ndarray:
        return rng.uniform(space.low, space.high)

    report("uniform random", evaluate(suite, tasks, random_policy), limits)
    start = time.perf_counter()
    learner = Learner(suite, cfg, seed)
    learner.train()
    print(f"  (PPO reward-only: {cfg.steps} steps in {time.perf_counter() - start:.0f} s)")
    for stochastic in (True, False):
        res = evaluate(suite, tasks, functools.partial(learner.act, stochastic=stochastic))
        report(f"PPO reward-only {'sample' if stochastic else 'mean'}", res, limits)
        if not stochastic:
            params = np.array([dataclasses.astuple(t)[0] for t in tasks])
            order = np.argsort(params)
            pairs = [
                (round(float(params[i]), 2), round(float(res[i, 1])), round(float(res[i, 2]))) for i in order
            ]
            print(f"    per task (parameter, energy, velocity cost): {pairs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=PPOConfig.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suites", default="halfcheetah-vel,hopper-vel,swimmer-vel,humanoid-dir")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for suite_id in args.suites.split(","):
        run_suite(suite_id, PPOConfig(steps=args.steps), args.seed)


if __name__ == "__main__":
    main()
