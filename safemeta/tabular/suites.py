"""Tabular task suites (SPEC §4.3): random CMDPs and a grid world with hazards.

Each task has an exact `CMDP` (`suite.cmdp(task)`) for the exact algorithms, and a
gymnasium env (`suite.make(task)`) that samples the same CMDP, cost in info["cost"].
Costs are discounted returns here (`cost_type = "discounted"`): the quantity the
exact adaptation constrains.

Splits: `test` draws afresh from `train`'s distribution. `ood` shifts it: larger
perturbations of the base CMDP (`tabular-random`, noise in [0.3, 0.5] instead of
[0, 0.3], on seeds no other split draws), goals in a row no training task has
(`tabular-grid`, the row next to the hazard band).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from safemeta.envs.base import SPLITS, ParamRange, Suite, Task
from safemeta.tabular.cmdp import CMDP, evaluate


class TabularEnv(gym.Env):
    """Samples a CMDP: Discrete states and actions; cost in info["cost"]."""

    metadata = {"render_modes": []}

    def __init__(self, m: CMDP, horizon: int) -> None:
        self.m, self.horizon = m, horizon
        self.observation_space = gym.spaces.Discrete(m.n_states)
        self.action_space = gym.spaces.Discrete(m.n_actions)
        self._cdf = np.cumsum(m.P, axis=-1)
        self._s, self._t = 0, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self._s = int(self.np_random.choice(self.m.n_states, p=self.m.rho))
        self._t = 0
        return self._s, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        s, a = self._s, int(action)
        reward = float(self.m.r[s, a])
        cost = self.m.c[:, s, a]
        nxt = int(np.searchsorted(self._cdf[s, a], self.np_random.random(), side="right"))
        self._s = min(nxt, self.m.n_states - 1)
        self._t += 1
        info = {"cost": float(cost[0]) if cost.shape[0] == 1 else cost.copy()}
        return self._s, reward, False, self._t >= self.horizon, info


class TabularSuite(Suite):
    family = "tabular"
    splits = SPLITS
    cost_type = "discounted"
    gamma: float
    horizon = 200

    def cmdp(self, task: Task) -> CMDP:
        raise NotImplementedError

    def make(self, task: Task, **kwargs: Any) -> gym.Env:
        task.validate()
        return TabularEnv(self.cmdp(task), kwargs.get("horizon", self.horizon))


# ---------------------------------------------------------------- random CMDPs


@dataclass(frozen=True)
class RandomTask(Task):
    seed: int = 0
    noise: float = 0.2

    def validate(self) -> None:
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed: expected an integer >= 0, got {self.seed!r}")
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise: expected a value in [0, 1], got {self.noise!r}")


class RandomCMDPSuite(TabularSuite):
    """Random CMDPs around a shared base: the task perturbs reward, cost and dynamics."""

    id = "tabular-random"
    description = "random CMDPs (8 states, 3 actions) perturbed per task; exact evaluation"
    task_type = RandomTask
    cost_doc = "random per-step cost correlated with reward, rescaled per task"
    # test = train's distribution; ood: larger perturbations (module docstring).
    NOISE = {"train": (0.0, 0.3), "test": (0.0, 0.3), "ood": (0.3, 0.5)}
    SEEDS = {"train": (0, 1_000_000), "test": (0, 1_000_000), "ood": (1_000_000, 2_000_000)}

    def __init__(
        self, n_states: int = 8, n_actions: int = 3, n_costs: int = 1, gamma: float = 0.9,
        cost_limit: float = 3.0, base_seed: int = 0,
    ) -> None:
        if n_states < 2 or n_actions < 2 or n_costs < 1:
            raise ValueError("n_states, n_actions: expected >= 2; n_costs: expected >= 1")
        self.S, self.A, self.num_costs, self.gamma = n_states, n_actions, n_costs, gamma
        self.cost_limit = cost_limit
        rng = np.random.default_rng(base_seed)
        self._P = rng.dirichlet(np.ones(n_states) * 0.5, size=(n_states, n_actions))
        self._r = rng.random((n_states, n_actions))
        self._c = rng.random((n_costs, n_states, n_actions))

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        self.check_split(split)
        lo, hi = self.SEEDS[split]
        seeds = rng.integers(lo, hi, size=n)
        noise = rng.uniform(*self.NOISE[split], size=n)
        return [RandomTask(int(s), float(z)) for s, z in zip(seeds, noise)]

    def param_ranges(self, split: str) -> list[ParamRange]:
        self.check_split(split)
        return [
            ParamRange("seed", *self.SEEDS[split], "perturbation seed"),
            ParamRange("noise", *self.NOISE[split], "perturbation scale"),
        ]

    def cmdp(self, task: Task) -> CMDP:
        assert isinstance(task, RandomTask)
        task.validate()
        rng = np.random.default_rng(task.seed)
        z = task.noise
        P = (1 - z) * self._P + z * rng.dirichlet(np.ones(self.S) * 0.5, size=(self.S, self.A))
        r = np.clip(self._r + z * rng.normal(size=self._r.shape), 0, None)
        c = np.clip(0.5 * (self._c + r) + z * rng.normal(size=self._c.shape), 0, None)
        rho = np.full(self.S, 1.0 / self.S)
        d = np.full(self.num_costs, self.cost_limit)
        m = CMDP(P, r, c, rho, d, self.gamma)
        # Rescale each cost so that the uniform policy sits at 80% of the limit:
        # every task then has a strictly feasible policy and a binding limit.
        jc = evaluate(m, np.full((self.S, self.A), 1.0 / self.A)).Jc
        c = c * (0.8 * self.cost_limit / np.maximum(jc, 1e-9))[:, None, None]
        return CMDP(P, r, c, rho, d, self.gamma)


# ---------------------------------------------------------------- grid world


@dataclass(frozen=True)
class GridTask(Task):
    goal_x: int = 4
    goal_y: int = 4
    slip: float = 0.05

    def validate(self) -> None:
        for name in ("goal_x", "goal_y"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or not 0 <= v < GridSuite.SIZE:
                raise ValueError(f"{name}: expected an integer in [0, {GridSuite.SIZE - 1}], got {v!r}")
        if (self.goal_x, self.goal_y) in GridSuite.HAZARDS:
            raise ValueError(f"goal_x, goal_y: ({self.goal_x}, {self.goal_y}) is a hazard cell")
        if not 0.0 <= self.slip <= 0.5:
            raise ValueError(f"slip: expected a value in [0, 0.5], got {self.slip!r}")


class GridSuite(TabularSuite):
    """5×5 grid, start bottom-left, a band of hazard cells with a gap at the far end.

    Reward 1 per step on the task's goal cell; cost 1 per step on a hazard cell. The
    short way to the goal crosses the hazards, so a reward-only policy exceeds the limit.
    Train and test goals lie in the top row; ood goals in the row below it (x >= 1), next
    to the hazard band, where no training goal lies.
    """

    id = "tabular-grid"
    description = "5x5 grid world, goal varies by task, hazard band (cost); exact evaluation"
    task_type = GridTask
    cost_doc = "1 per step on a hazard cell (discounted return, limit on the sum)"
    SIZE = 5
    HAZARDS = frozenset({(0, 2), (1, 2), (2, 2), (3, 2)})
    MOVES = ((0, 1), (0, -1), (1, 0), (-1, 0))  # up, down, right, left
    SLIP = {"train": (0.0, 0.1), "test": (0.0, 0.1), "ood": (0.0, 0.1)}
    GOALS = {
        "train": [(x, 4) for x in range(5)],
        "test": [(x, 4) for x in range(5)],
        "ood": [(x, 3) for x in range(1, 5)],
    }

    def __init__(self, gamma: float = 0.9, cost_limit: float = 0.3) -> None:
        self.gamma, self.cost_limit = gamma, cost_limit
        self.num_costs = 1

    def sample_tasks(self, n: int, rng: np.random.Generator, split: str = "train") -> list[Task]:
        self.check_split(split)
        goals = self.GOALS[split]
        idx = rng.integers(0, len(goals), size=n)
        slip = rng.uniform(*self.SLIP[split], size=n)
        return [GridTask(goals[i][0], goals[i][1], float(s)) for i, s in zip(idx, slip)]

    def param_ranges(self, split: str) -> list[ParamRange]:
        self.check_split(split)
        xs = [g[0] for g in self.GOALS[split]]
        ys = [g[1] for g in self.GOALS[split]]
        return [
            ParamRange("goal_x", min(xs), max(xs), "goal column"),
            ParamRange("goal_y", min(ys), max(ys), "goal row"),
            ParamRange("slip", *self.SLIP[split], "probability of a random move"),
        ]

    def cmdp(self, task: Task) -> CMDP:
        assert isinstance(task, GridTask)
        task.validate()
        n, S, A = self.SIZE, self.SIZE**2, len(self.MOVES)
        idx = lambda x, y: y * n + x  # noqa: E731
        P = np.zeros((S, A, S))
        for x in range(n):
            for y in range(n):
                for a in range(A):
                    for b, (dx, dy) in enumerate(self.MOVES):
                        prob = (1 - task.slip) * (a == b) + task.slip / A
                        nx, ny = min(max(x + dx, 0), n - 1), min(max(y + dy, 0), n - 1)
                        P[idx(x, y), a, idx(nx, ny)] += prob
        r = np.zeros((S, A))
        r[idx(task.goal_x, task.goal_y)] = 1.0
        c = np.zeros((1, S, A))
        for hx, hy in self.HAZARDS:
            c[0, idx(hx, hy)] = 1.0
        rho = np.zeros(S)
        rho[idx(0, 0)] = 1.0
        return CMDP(P, r, c, rho, np.array([self.cost_limit]), self.gamma)
