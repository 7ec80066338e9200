"""The shared loop of every algorithm with a Gaussian MLP policy (SPEC §2.6, §2.7, §5).

`MetaLearner` owns what is not any one paper: the meta-policy π_φ and the critics, the
sampler, the random streams, the iteration loop, validation, meta-test, the metrics
rows, the phase timing and the state. An algorithm is this base with two hooks, in the
shape of pytorch-maml-rl's `GradientBasedMetaLearner`:

    adapt(data, current) -> adapted      one adaptation step per task, from the data
                                         `current` collected (advantages filled in)
    meta_step(pre, post, adapted) -> log one step on π_φ; none for from-scratch algorithms

One meta-iteration: sample training tasks; π_φ collects `pre`; `adapt`; the adapted
policies collect `post`; `meta_step`. Validation and meta-test run `adapt` on fresh
tasks with their own random streams. Every algorithm is timed under the same phase
names (`PHASES`), so computation times compare like with like.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import enum
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch

from safemeta.algorithm import Algorithm, MetricRow
from safemeta.config import ConfigError, GaussianConfig
from safemeta.envs.base import Suite, Task
from safemeta.nn.critic import MLPCritic
from safemeta.nn.policy import GaussianPolicy, gaussian_kl
from safemeta.rollout.advantages import Advantages, fit_critics, task_advantages
from safemeta.rollout.backends import make_sampler
from safemeta.rollout.buffer import Rollout, concat, select_episodes
from safemeta.rollout.evaluation import CostInterval, decided, interval, possibly_over
from safemeta.rollout.evaluation import over as ci_over
from safemeta.rollout.sampler import TaskStream
from safemeta.updates import policy_gradient
from safemeta.updates.trpo import trpo_step

NAVIGATION = ("point-circle", "car-circle", "car-circle-nohazards", "point-button")
PAPER_STEPS = {"point-circle": 5000, "car-circle": 5000, "car-circle-nohazards": 5000,
               "point-button": 10_000}  # else 8000
# `medium` iterations where 200 would take hours on the 2-core development machine: car-circle's
# 10 tasks x 20 episodes x 500 steps took about 26 s per 100k steps (so ~52 s per iteration),
# point-button's horizon is 1,000 (measured 2026-11-30: 75-100 s per iteration beside other jobs;
# at 40 iterations its training reward was still rising, at 60 it passed `quick`'s, README).
MEDIUM_ITERATIONS = {"car-circle": 60, "car-circle-nohazards": 60, "point-button": 60}  # else 200

# Phases of a meta-training iteration, exclusive, summing to its training time.
PHASES = ("t_sampling", "t_critic", "t_adapt", "t_outer")

# The evaluation-stream key of meta-test (validation uses the iteration's index).
META_TEST_STREAM = 2**31 - 1


class Phase(enum.IntEnum):
    """What a data collection is for: with the iteration (or meta-test step) and the task's
    index, the key of the task's random stream (`TaskStream`)."""

    PRE = 0  # π_φ on the training batch
    POST = 1  # the adapted policies on the training batch
    VAL_DATA = 2  # π_φ on the validation tasks (adaptation data)
    VAL_EVAL = 3  # the adapted policies on the validation tasks (fresh evaluation)
    TEST_EVAL = 4  # π^t on the test tasks (fresh evaluation)
    TEST_DATA = 5  # π^t on the test tasks (exploration data of step t)
    TEST_EVAL_MORE = 6  # sequential evaluation's further batches (counter: 10,000·t + batch)
    MIX = 7  # a mixed task's draw of how many episodes its own policy runs (counter: mix_key)
    KNOWN_SAFE = 8  # the known-safe policy's episodes of a mixed task (counter: mix_key)


def mix_key(phase: Phase, counter: int) -> int:
    """The counter of a mixture's draws and known-safe episodes within (phase, counter)."""
    return int(phase) * 10**9 + counter


@dataclass
class TaskPolicy:
    """A task's current policy and what its last adaptation step logs (numbers averaged
    over tasks into the metrics row). An algorithm with per-task state keeps it here."""

    policy: GaussianPolicy
    log: dict[str, float] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Collected:
    """A meta-test collection where some tasks may act with a mixture (`TaskPolicy.state
    ["mix"]` = (β, KnownSafe), `core/fallback.py`): `own` holds every task's own-policy
    episodes (a mixed task: Binomial(N, β) of its N), `costs` and `returns` all its episodes
    (own, then known-safe), `steps` the env steps of both."""

    own: Rollout
    costs: list[np.ndarray]  # per task (N, p), of the type the limit binds
    returns: list[np.ndarray]  # per task (N,)
    steps: int


class PhaseTimer:
    """Wall time per phase name; a phase timed inside another is not counted twice."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._inner: list[float] = []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            inner, dt = self._inner.pop(), time.perf_counter() - t0
            self.add(name, dt - inner)
            if self._inner:
                self._inner[-1] += dt

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + seconds


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class MetaLearner(Algorithm):
    """π_φ, critics, sampler, streams, loop, validation, meta-test, timing and state."""

    Config: ClassVar[type[GaussianConfig]] = GaussianConfig
    meta_learning: ClassVar[bool] = True  # False: from scratch on each test task (iterations 0)
    # keys of `TaskPolicy.log`, averaged over tasks into every row (zeros at meta-test's last step)
    step_columns: ClassVar[tuple[str, ...]] = ()
    # an algorithm's breakdown of `t_adapt` (included in it)
    subphases: ClassVar[tuple[str, ...]] = ()
    columns: ClassVar[tuple[str, ...]] = (
        "pre_reward",
        "pre_cost_mean",
        "pre_cost_max",
        "n_violations",
        "post_reward",
        "post_cost_max",
        "post_cost_undiscounted",
        "post_cost_discounted",
        "eval_source",
        "explore_cost_max",
        "n_over",
        "n_possibly_over",
        "cost_ci_high_max",
        "cost_half_width_mean",
        "eval_episodes_mean",
        "reward_q10",
        "reward_q90",
        "cost_q10",
        "cost_q90",
        "n_start_over",
        "n_recovered",
        "unstable",
        "env_steps",
        "steps_per_task",
        *PHASES,
        "t_eval",
    )
    own_columns: ClassVar[tuple[str, ...]] = ()  # what an algorithm's meta_step logs
    cfg: GaussianConfig

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.extra_columns = tuple(dict.fromkeys(
            (*cls.columns, *cls.own_columns, *cls.step_columns, *cls.subphases)))

    def __init__(
        self, cfg: GaussianConfig, suite: Suite, tasks: dict[str, list[Task]], seed: np.random.SeedSequence
    ) -> None:
        super().__init__(cfg, suite, tasks, seed)
        obs_space, act_space = suite.spaces()
        self.obs_dim, self.act_dim = int(np.prod(obs_space.shape)), int(np.prod(act_space.shape))
        self.num_costs = int(getattr(suite, "num_costs", 1))
        self.cost_limit = np.broadcast_to(np.asarray(suite.cost_limit, np.float64), (self.num_costs,)).copy()
        self.cost_type = getattr(suite, "cost_type", "undiscounted")
        self.horizon = cfg.horizon or int(suite.horizon)
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device: cuda requested but no CUDA device is available; accepted cpu")
        self.device = torch.device(cfg.device)  # learners only; sampling stays on CPU
        s_np, _, s_init, s_eval, s_stream = seed.spawn(5)
        self._eval_root = int(s_eval.generate_state(1)[0])  # validation/meta-test learner streams
        self._stream_root = int(s_stream.generate_state(1)[0])  # per-task sampling streams
        self.rng = np.random.default_rng(s_np)  # task sampling and the learners' own draws
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(s_init.generate_state(1)[0]))
            self.policy = GaussianPolicy(self.obs_dim, self.act_dim, cfg.hidden, cfg.init_log_std)
            self.critic = (
                MLPCritic(self.obs_dim, self.num_costs, cfg.hidden, cfg.critic_lr, cfg.critic_epochs)
                if cfg.critic == "mlp"
                else None
            )
        self.outer_optim = torch.optim.Adam(self.policy.parameters(), lr=cfg.outer_lr)
        self.sampler = make_sampler(suite, self.horizon, cfg.gamma, cfg.envs_per_task)
        self.timer = PhaseTimer()
        self._eval_key = 0  # the iteration (or META_TEST_STREAM) of the evaluation under way
        self.meta_test_phases: dict[str, float] = {}
        self.meta_test_tasks: list[dict[str, Any]] = []  # per task of the last meta-test (`recovery`)

    @classmethod
    def presets(cls, suite_id: str) -> dict[str, dict[str, Any]]:
        """The budgets every algorithm of a comparison shares (tasks, episodes or steps,
        horizon, evaluation, networks' initial spread); an algorithm adds its own fields."""
        nav = suite_id in NAVIGATION
        quick = dict(
            iterations=40,
            init_log_std=-0.5 if nav else -1.0,
            meta_batch=10,
            episodes_per_task=10,
            val_tasks=5,
            eval_every=5,
            eval_episodes=5,
            test_tasks=5,
            test_steps=3,
            checkpoint_every=10,
        )
        # About 30 minutes on the 2-core development machine for the locomotion suites, 1-2 hours
        # for the navigation suites (issue 14, README "Results per suite"): 200 iterations
        # (fewer where an iteration is slow) on twice quick's episodes, and a meta-test whose
        # costs are near-true (each task's policy evaluated until its 95% interval decides, up to
        # 100 episodes). Each meta-test adaptation step explores 40 episodes, twice training's:
        # the held-out safety test's bound narrows with its episodes, and with 20 it backed off
        # 73% of halfcheetah-vel's steps (+7% reward over 3 steps; 40: 47%, +12%; README
        # "How far adaptation moves a meta-policy").
        medium = {**quick, "iterations": MEDIUM_ITERATIONS.get(suite_id, 200), "episodes_per_task": 20,
                  "test_episodes_per_task": 40, "val_tasks": 10, "eval_every": 10, "eval_episodes": 10,
                  "eval_max_episodes": 100, "test_tasks": 10}
        paper = dict(
            init_log_std=-0.5 if nav else -1.0,
            iterations=300 if nav else 500,
            meta_batch=10,
            # the paper's budgets in environment steps per task (Meta-CPO's code and the public
            # port of this method: "batch 8000 per task"); 10 episodes of the circle and
            # button horizons. On suites that terminate (hopper-vel, humanoid-dir) an
            # episode budget would be far fewer steps.
            steps_per_task=PAPER_STEPS.get(suite_id, 8000),
            horizon=0,  # the suites' defaults: 200 locomotion, 500 circle, 1000 button
            envs_per_task=10,
            val_tasks=10,
            eval_every=10,
            eval_episodes=10,
            eval_max_episodes=100,  # sequential meta-test evaluation until each task is decided
            test_tasks=20,
            test_steps=20,
            checkpoint_every=10,
        )
        return {"quick": quick, "medium": medium, "paper": paper}

    # ---- the two hooks ---------------------------------------------------------------
    @abc.abstractmethod
    def adapt(self, data: Rollout, current: list[TaskPolicy]) -> list[TaskPolicy]:
        """One adaptation step per task of `data`, which `current[i]` collected on task i."""

    def meta_step(self, pre: Rollout, post: Rollout, adapted: list[TaskPolicy]) -> dict[str, Any]:
        """One step on π_φ from the iteration's data; returns what it logs. From-scratch
        algorithms take none."""
        return {}

    # ---- shared parts -----------------------------------------------------------------
    def collect(
        self,
        tasks: Sequence[Task],
        current: Sequence[TaskPolicy],
        phase: Phase,
        counter: int,
        first: int = 0,
        episodes: int | None = None,
        index: Sequence[int] | None = None,
        timer: str | None = None,
    ) -> Rollout:
        """`current[i]` acting on task i: the data budget (`steps_per_task` steps in whole
        episodes, else `episodes_per_task` episodes), or `episodes` evaluation episodes.
        Task i draws from the stream (phase, counter, first + i), or (phase, counter,
        index[i]): its data do not depend on the tasks collected beside it."""
        c = self.cfg
        keys = [first + i for i in range(len(tasks))] if index is None else list(index)
        streams = [TaskStream.of(self._stream_root, (phase, counter, k)) for k in keys]
        policies = [p.policy for p in current]
        with self.timer(timer or ("t_sampling" if episodes is None else "t_eval")):  # data, or evaluation
            if episodes is None and c.steps_per_task > 0:
                return self.sampler.collect(tasks, policies, streams, steps=c.steps_per_task)
            return self.sampler.collect(tasks, policies, streams, episodes=episodes or c.episodes_per_task)

    def estimate(self, roll: Rollout, held: Rollout | None = None) -> list[Advantages]:
        """Critics fitted once per rollout and the advantages of every task (cached); with
        `held` (other episodes of the same tasks), its advantages from the critics of `roll`
        too (`held.advantages`: the safety test's held-out part never fits a critic)."""
        c = self.cfg

        def advantages(r: Rollout, critics: list[Any]) -> list[Advantages]:
            return [task_advantages(r.task(i), critics[i], self.policy, c.gamma, c.gae_lambda, self.cost_type,
                                    c.kappa, c.normalize_adv)
                    if len(r.ep_cost[i]) else _no_episodes(self.num_costs) for i in range(r.num_tasks)]

        if roll.advantages is None:
            with self.timer("t_critic"):
                roll.critics = fit_critics(roll, self.policy, c.gamma, c.critic, c.critic_reg, self.critic,
                                           self.rng)
                roll.advantages = advantages(roll, roll.critics)
        if held is not None and held.advantages is None:
            assert roll.critics is not None, "held-out advantages need the critics of their candidate part"
            with self.timer("t_critic"):
                held.advantages = advantages(held, roll.critics)
        return roll.advantages

    def policy_step(self, data: Rollout, weights: np.ndarray, kl_states: np.ndarray) -> dict[str, float]:
        """One step of π_φ itself (see `improve`), by the config's `outer_step`."""
        new, info = self.improve(self.policy, data, weights, kl_states, self.cfg.outer_step)
        self.policy.load_state_dict(new.state_dict())
        return info

    def improve(
        self,
        policy: GaussianPolicy,
        data: Rollout,
        weights: np.ndarray,
        kl_states: np.ndarray,
        kind: str = "trpo",
        max_kl: float | None = None,
    ) -> tuple[GaussianPolicy, dict[str, float]]:
        """A new policy maximising Ê[(π'/π)(a|s) · weight] on `data` under a KL bound on
        `kl_states` (TRPO with `max_kl`, default the config's; or the first-order step):
        the gradient at π' = π is Ê[weight ∇ log π(a|s)]. `policy` is left unchanged."""
        c, dev = self.cfg, self.device
        learner = copy.deepcopy(policy).to(dev)
        obs = torch.as_tensor(data.obs, dtype=torch.float32, device=dev)
        act = torch.as_tensor(data.act, dtype=torch.float32, device=dev)
        w = torch.as_tensor(weights, dtype=torch.float32, device=dev)
        idx = self.rng.choice(len(kl_states), size=min(c.fvp_states, len(kl_states)), replace=False)
        kl_obs = torch.as_tensor(kl_states[np.sort(idx)], dtype=torch.float32, device=dev)
        with torch.no_grad():
            logp_old = learner.log_prob(obs, act)
            mean_old, log_std_old = learner(kl_obs)
        surrogate = policy_gradient.ratio_surrogate(obs, act, logp_old, w)

        def kl(pol: GaussianPolicy) -> torch.Tensor:
            mean, log_std = pol(kl_obs)
            return gaussian_kl(mean_old, log_std_old, mean, log_std).mean()

        if kind == "trpo":
            info = trpo_step(learner, surrogate, kl, c.max_kl if max_kl is None else max_kl, c.cg_iters,
                             c.cg_damping, c.line_search_steps)
        else:  # the outer Adam state belongs to π_φ's steps
            optim = torch.optim.Adam(learner.parameters(), lr=c.outer_lr)
            optim.load_state_dict(self.outer_optim.state_dict())
            info = policy_gradient.first_order_step(learner, surrogate, kl, optim, c.max_grad_norm)
            self.outer_optim.load_state_dict(optim.state_dict())
        return learner.to("cpu"), info

    def relaxation(self) -> np.ndarray:
        """(p,) the relaxation δ of the limits an algorithm allows itself (0: none)."""
        return np.zeros(self.num_costs)

    def meta_policies(self, n: int) -> list[TaskPolicy]:
        return [TaskPolicy(self.policy)] * n

    # ---- meta-training ------------------------------------------------------------------
    def train_iteration(self, iteration: int) -> MetricRow:
        with torch_threads(self.cfg.torch_threads):
            return self._train_iteration(iteration)

    def _train_iteration(self, iteration: int) -> MetricRow:
        c = self.cfg
        self.timer = PhaseTimer()
        t_start = time.perf_counter()
        tasks = self.suite.sample_tasks(c.meta_batch, self.rng, "train")
        current = self.meta_policies(len(tasks))
        pre = self.collect(tasks, current, Phase.PRE, iteration)
        # no critic fit on all of `pre` here: the safety test fits its critics on the candidate
        # part only, and a shared (MLP) critic warm-started on every episode would carry the
        # held-out ones into them. Each algorithm's `adapt` and `meta_step` ask for what they use.
        with self.timer("t_adapt"):
            adapted = self.adapt(pre, current)
        post = self.collect(tasks, adapted, Phase.POST, iteration)
        with self.timer("t_outer"):
            info = self.meta_step(pre, post, adapted)
            if c.obs_norm:
                self.policy.normalizer.update(pre.obs)
        row = self._train_row(iteration, pre, post, adapted)
        row.update(info)
        row.update({k: self.timer.totals.get(k, 0.0) for k in (*PHASES, *self.subphases)})
        if iteration % c.eval_every == 0:
            t0 = time.perf_counter()
            with self._evaluation_streams(iteration):
                row.update(self.validation_metrics(self.tasks["val"]))
            row["t_eval"] = time.perf_counter() - t0
        row["time_s"] = time.perf_counter() - t_start
        return row

    def _train_row(self, iteration: int, pre: Rollout, post: Rollout, adapted: list[TaskPolicy]) -> MetricRow:
        post_cost, pre_cost = post.cost_return(self.cost_type), pre.cost_return(self.cost_type)
        return {
            "phase": "meta_train",
            "iteration": iteration,
            "step": 1,
            **self.summary(post.reward_return(), post_cost),
            "pre_reward": float(pre.reward_return().mean()),
            "pre_cost_mean": float(pre_cost[:, 0].mean()),
            "pre_cost_max": float(pre_cost[:, 0].max()),
            "n_violations": int(np.any(pre_cost > self.cost_limit + self.relaxation(), axis=1).sum()),
            "post_reward": float(post.reward_return().mean()),
            "post_cost_max": float(post_cost[:, 0].max()),
            # SPEC §2.4 step 1: both episode costs are reported; the limit binds `cost_type`.
            "post_cost_undiscounted": float(post.cost_return("undiscounted")[:, 0].mean()),
            "post_cost_discounted": float(post.cost_return("discounted")[:, 0].mean()),
            **self.step_log(adapted),
            "eval_source": "post",
            "unstable": int(pre.extras.get("unstable", 0) + post.extras.get("unstable", 0)),
            "env_steps": len(pre.obs) + len(post.obs),  # of the training data (validation apart)
            "steps_per_task": len(pre.obs) / pre.num_tasks,  # of one data collection
        }

    def step_log(self, adapted: list[TaskPolicy]) -> dict[str, float]:
        """The step columns over tasks: counts (`n_*`) summed, everything else averaged."""
        return {k: _over_tasks(k, [a.log[k] for a in adapted]) for k in self.step_columns}

    def summary(self, reward: np.ndarray, cost: np.ndarray) -> dict[str, Any]:
        """reward (tasks,), cost (tasks, p): the required columns (cost columns of constraint 0)."""
        return {
            "reward_mean": float(reward.mean()),
            "cost_mean": float(cost[:, 0].mean()),
            "cost_max": float(cost[:, 0].max()),
            "cost_limit": float(self.cost_limit[0]),
            "violation_rate": float(np.mean(np.any(cost > self.cost_limit, axis=1))),
        }

    def validation_metrics(self, tasks: list[Task]) -> dict[str, Any]:
        """The one-step adapted policy on the validation tasks, fresh episodes (SPEC §5)."""
        c, rewards, costs = self.cfg, [], []
        for first, chunk in _chunks(tasks, c.meta_batch):
            current = self.meta_policies(len(chunk))
            pre = self.collect(chunk, current, Phase.VAL_DATA, self._eval_key, first)
            adapted = self.adapt(pre, current)  # fits the critics it uses (see `_train_iteration`)
            ev = self.collect(chunk, adapted, Phase.VAL_EVAL, self._eval_key, first, c.eval_episodes)
            rewards.append(ev.reward_return())
            costs.append(ev.cost_return(self.cost_type))
        return {**self.summary(np.concatenate(rewards), np.concatenate(costs)), "eval_source": "val"}

    # ---- meta-test (SPEC §2.7) ---------------------------------------------------------
    @contextlib.contextmanager
    def _evaluation_streams(self, key: int) -> Iterator[None]:
        """Validation and meta-test draw from their own generators (a function of the seed
        and `key`), leave the critic as it was and keep their own phase times, so they
        never change training."""
        saved = self.rng, copy.deepcopy(self.critic), self.timer
        self.rng = np.random.default_rng(np.random.SeedSequence([self._eval_root, key]))
        self.timer, self._eval_key = PhaseTimer(), key
        try:
            yield
        finally:
            self.rng, self.critic, self.timer = saved

    def meta_test(self, tasks: list[Task], steps: int) -> list[MetricRow]:
        with torch_threads(self.cfg.torch_threads), self._evaluation_streams(META_TEST_STREAM):
            per_chunk = [self._meta_test_chunk(chunk, steps, first)
                         for first, chunk in _chunks(tasks, self.cfg.meta_batch)]
            self.meta_test_phases = dict(self.timer.totals)  # where meta-test's time went (bench)
        rows = []
        costs = np.stack([np.concatenate([pc[t]["cost"] for pc in per_chunk]) for t in range(steps + 1)])
        over = np.any(costs > self.cost_limit, axis=2)  # (steps + 1, tasks): the estimate over d at step t
        cis = [[ci for pc in per_chunk for ci in pc[t]["ci"]] for t in range(steps + 1)]
        status = [[s for pc in per_chunk for s in pc[t]["status"]] for t in range(steps)]
        self.meta_test_tasks = recovery(costs, over, self.cost_limit, cis, status)
        limit = float(self.cost_limit[0])
        for t in range(steps + 1):
            rec = [pc[t] for pc in per_chunk]
            reward = np.concatenate([r["reward"] for r in rec])
            cost = np.concatenate([r["cost"] for r in rec])
            row = {"phase": "meta_test", "iteration": -1, "step": t, **self.summary(reward, cost)}
            row.update(
                # constraint 0, each task's mean episode cost with its 95% interval (rollout/evaluation.py)
                n_over=sum(ci_over(ci, limit) for ci in cis[t]),  # the interval's lower end > d
                n_possibly_over=sum(possibly_over(ci, limit) for ci in cis[t]),  # only the estimate > d
                cost_ci_high_max=max(ci.high for ci in cis[t]),
                cost_half_width_mean=float(np.mean([ci.half_width for ci in cis[t]])),
                eval_episodes_mean=float(np.mean([ci.episodes for ci in cis[t]])),  # pooled, per task
                reward_q10=float(np.quantile(reward, 0.1)), reward_q90=float(np.quantile(reward, 0.9)),
                cost_q10=float(np.quantile(cost[:, 0], 0.1)), cost_q90=float(np.quantile(cost[:, 0], 0.9)),
                n_start_over=int(over[0].sum()),  # tasks whose meta-policy's estimate (step 0) is over d
                n_recovered=int((over[0] & ~over[: t + 1].all(0)).sum()),  # of those, under by step t
            )
            row.update(
                explore_cost_max=None
                if t == steps
                else float(np.concatenate([r["explore"] for r in rec])[:, 0].max()),
                time_s=sum(r["time"] for r in rec),
                env_steps=sum(r["env_steps"] for r in rec),
                steps_per_task=None if t == steps else sum(r["data_steps"] for r in rec) / len(reward),
                **{k: _over_tasks(k, [r[k] for r in rec], chunks=True) for k in self.step_columns},
            )
            rows.append(row)
        return rows

    def _meta_test_chunk(self, tasks: list[Task], steps: int, first: int) -> list[dict[str, Any]]:
        """Per step t: π^t evaluated with fresh episodes; its exploration data adapt it to π^{t+1}.

        Anytime safety (SPEC §2.7): the exploration episodes' cost counts. The cost of π^t on
        a task is its mean episode cost over all the episodes it ran there (evaluation and
        exploration: both are samples of J_c(π^t)); reward is from the evaluation episodes."""
        c, current, out, elapsed = self.cfg, self.meta_policies(len(tasks)), [], 0.0
        for t in range(steps + 1):
            ev = self._collect_mixed(tasks, current, Phase.TEST_EVAL, t, first, c.eval_episodes)
            rec = {"time": elapsed, "env_steps": ev.steps, **dict.fromkeys(self.step_columns, 0.0)}
            episodes, returns = list(ev.costs), list(ev.returns)
            policy_t = current
            if t < steps:
                t0 = time.perf_counter()
                data = self._collect_mixed(tasks, current, Phase.TEST_DATA, t, first,
                                           c.test_episodes_per_task or None)
                current = self.hand_out(tasks, self._adapt_own(data.own, current))
                elapsed += time.perf_counter() - t0
                episodes = [np.concatenate([e, d]) for e, d in zip(episodes, data.costs)]
                rec.update(explore=np.stack([d.mean(0) for d in data.costs]), env_steps=ev.steps + data.steps,
                           data_steps=data.steps, **self.step_log(current),
                           status=[step_status(a.log) for a in current])
            rec["env_steps"] += self._evaluate_until_decided(tasks, policy_t, t, first, episodes, returns)
            rec["reward"] = np.array([r.mean() for r in returns])
            rec["cost"] = np.stack([e.mean(0) for e in episodes])
            rec["ci"] = [interval(e) for e in episodes]
            out.append(rec)
        return out

    def _evaluate_until_decided(self, tasks: list[Task], policies: list[TaskPolicy], t: int, first: int,
                                episodes: list[np.ndarray], returns: list[np.ndarray]) -> int:
        """Sequential evaluation (`rollout/evaluation.py`): while a task's 95% cost interval
        neither excludes the limit nor is within eval_rel_width·d, and its episodes are
        below eval_max_episodes, `eval_episodes` more evaluation episodes of its policy
        (appended in place to `episodes` and `returns`). Returns the env steps taken."""
        c, limit, steps, batch = self.cfg, float(self.cost_limit[0]), 0, 0
        while c.eval_max_episodes > 0:
            todo = [i for i, e in enumerate(episodes) if len(e) < c.eval_max_episodes
                    and not decided(interval(e), limit, c.eval_rel_width)]
            if not todo:
                break
            n = min(c.eval_episodes, c.eval_max_episodes - min(len(episodes[i]) for i in todo))
            more = self._collect_mixed([tasks[i] for i in todo], [policies[i] for i in todo],
                                       Phase.TEST_EVAL_MORE, t * 10_000 + batch, episodes=n,
                                       index=[first + i for i in todo])
            for j, i in enumerate(todo):
                episodes[i] = np.concatenate([episodes[i], more.costs[j]])
                returns[i] = np.concatenate([returns[i], more.returns[j]])
            steps += more.steps
            batch += 1
        return steps

    def hand_out(self, tasks: list[Task], adapted: list[TaskPolicy]) -> list[TaskPolicy]:
        """The meta-test's policies after an adaptation step: the adapted ones, or (an
        algorithm with a fallback) mixtures with a known-safe policy, `state["mix"]`."""
        return adapted

    def _adapt_own(self, own: Rollout, current: list[TaskPolicy]) -> list[TaskPolicy]:
        """`adapt` on each task's own-policy episodes; a mixed task that drew none keeps its
        policy (and its mixture), logged as kept."""
        have = [i for i, r in enumerate(own.ep_return) if len(r)]
        if len(have) == len(current):  # `adapt` fits the critics it uses (see `_train_iteration`)
            with self.timer("t_adapt"):
                return self.adapt(own, current)
        out = list(current)
        if have:
            sub = concat([own.task(i) for i in have])
            with self.timer("t_adapt"):
                for i, a in zip(have, self.adapt(sub, [current[i] for i in have])):
                    out[i] = a
        for i in [i for i in range(len(current)) if i not in have]:
            idle = {k: 1.0 if k == "n_kept" else current[i].log.get(k, 0.0) if k == "n_recovering"
                    else 0.0 if k.startswith("n_") else None for k in self.step_columns}
            out[i] = TaskPolicy(current[i].policy, idle, dict(current[i].state))
        return out

    def _collect_mixed(self, tasks: list[Task], current: Sequence[TaskPolicy], phase: Phase, counter: int,
                       first: int = 0, episodes: int | None = None, index: Sequence[int] | None = None
                       ) -> Collected:
        """`collect`, where a task acting with a mixture (β, known-safe) runs K ~ Binomial(N, β)
        episodes of its own policy and N − K of the known-safe one (the same law as choosing
        per episode; K from the task's own stream). N: `episodes`, else the data budget in
        episodes: with a step budget ⌈steps_per_task / horizon⌉ (a plain task's budget may
        run more episodes, where episodes end early or an env starts another while its task
        is under budget)."""
        mixes = [p.state.get("mix") for p in current]
        timer = "t_sampling" if phase == Phase.TEST_DATA else "t_eval"  # data (any budget), or evaluation
        if not any(mixes):
            roll = self.collect(tasks, current, phase, counter, first, episodes, index, timer)
            return Collected(roll, [self._episode_costs(roll, i) for i in range(len(tasks))],
                             list(roll.ep_return), len(roll.obs))
        c = self.cfg
        n = episodes or (-(-c.steps_per_task // self.horizon) if c.steps_per_task > 0
                         else c.episodes_per_task)
        keys = [first + i for i in range(len(tasks))] if index is None else list(index)

        def draw(beta: float, key: int) -> int:  # how many of the N episodes the task's own policy runs
            rng = TaskStream.of(self._stream_root, (Phase.MIX, mix_key(phase, counter), key)).rng
            return int(rng.binomial(n, beta))

        own_n = [n if m is None else draw(m[0], k) for m, k in zip(mixes, keys)]
        parts: dict[int, Rollout] = {}
        safe: dict[int, Rollout] = {}

        def run(count: dict[int, int | None], policy: dict[int, TaskPolicy], ph: Phase, ctr: int,
                into: dict) -> None:  # task i: count[i] episodes (None: the budget), one collection per count
            for k in sorted(set(count.values()) - {0}, key=lambda v: -1 if v is None else v):
                idx = [i for i, v in count.items() if v == k]
                roll = self.collect([tasks[i] for i in idx], [policy[i] for i in idx], ph, ctr, episodes=k,
                                    index=[keys[i] for i in idx], timer=timer)
                into.update({i: roll.task(j) for j, i in enumerate(idx)})

        mixed = [i for i, m in enumerate(mixes) if m is not None]
        own_policy = dict(enumerate(current))
        run({i: episodes for i, m in enumerate(mixes) if m is None}, own_policy, phase, counter, parts)
        run({i: own_n[i] for i in mixed}, own_policy, phase, counter, parts)
        run({i: n - own_n[i] for i in mixed}, {i: TaskPolicy(mixes[i][1].policy) for i in mixed},
            Phase.KNOWN_SAFE, mix_key(phase, counter), safe)
        template = next(iter({**parts, **safe}.values()))
        none = select_episodes(template, [np.zeros(0, np.int64)])
        own = concat([parts.get(i, none) for i in range(len(tasks))])
        both = [(parts.get(i, none), safe.get(i, none)) for i in range(len(tasks))]
        costs = [np.concatenate([self._episode_costs(r, 0) for r in pair]) for pair in both]
        returns = [np.concatenate([r.ep_return[0] for r in pair]) for pair in both]
        return Collected(own, costs, returns, len(own.obs) + sum(len(r.obs) for r in safe.values()))

    def _episode_costs(self, roll: Rollout, i: int) -> np.ndarray:
        """(N, p) episode costs of task i, of the type the limit binds."""
        return roll.ep_cost[i] if self.cost_type == "undiscounted" else roll.ep_disc_cost[i]

    # ---- state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": copy.deepcopy(self.policy.state_dict()),
            "critic": None if self.critic is None else copy.deepcopy(self.critic.state_dict()),
            "critic_optim": None if self.critic is None else copy.deepcopy(self.critic.optim.state_dict()),
            "outer_optim": copy.deepcopy(self.outer_optim.state_dict()),
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "eval_root": self._eval_root,
            "stream_root": self._stream_root,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        if self.critic is not None and state.get("critic") is not None:
            self.critic.load_state_dict(state["critic"])
            self.critic.optim.load_state_dict(state["critic_optim"])
        self.outer_optim.load_state_dict(state["outer_optim"])
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self._eval_root = int(state["eval_root"])
        self._stream_root = int(state["stream_root"])

    def finite(self) -> bool:
        return bool(torch.isfinite(self.policy.flat_params()).all())

    def close(self) -> None:
        self.sampler.close()


def step_status(log: dict[str, float]) -> str | None:
    """What a task's adaptation step did, from its step columns: "accepted", "backed off"
    or "kept" (π_k itself), with " (recovering)" when π_k was over the limit on its own
    data and ", mixed β=…" when the policy handed out is a mixture with a known-safe one
    (`core/fallback.py`); None for an algorithm whose step logs none of them."""
    for key, name in (("n_accepted", "accepted"), ("n_backed_off", "backed off"), ("n_kept", "kept")):
        if log.get(key):
            mixed = f", mixed β={log['mix_beta']:.2f}" if log.get("n_mixed") else ""
            return name + (" (recovering)" if log.get("n_recovering") else "") + mixed
    return None


def recovery(costs: np.ndarray, over: np.ndarray, limit: np.ndarray,
             cis: list[list[CostInterval]], status: list[list[str | None]] | None = None,
             ) -> list[dict[str, Any]]:
    """Per meta-test task: its cost (constraint 0) at every step with the 95% interval and
    the episodes behind it, what each adaptation step did (`step_status`; step t made
    π^{t+1}), whether the meta-policy's estimate started over the limit, and the first
    step at which it was back under (None: not recovered within the meta-test).
    `costs` (steps + 1, tasks, p), `over` (steps + 1, tasks), `cis[t][i]`, `status[t][i]`."""
    out = []
    for i in range(costs.shape[1]):
        under = np.flatnonzero(~over[:, i])
        out.append({
            "task": i,
            "cost": [float(c) for c in costs[:, i, 0]],
            "cost_low": [float(cis[t][i].low) for t in range(len(cis))],
            "cost_high": [float(cis[t][i].high) for t in range(len(cis))],
            "episodes": [cis[t][i].episodes for t in range(len(cis))],
            "adaptation": [status[t][i] for t in range(len(status))] if status is not None else [],
            "limit": float(limit[0]),
            "started_over": bool(over[0, i]),
            "back_under_at": None if not over[0, i] else (int(under[0]) if under.size else None),
        })
    return out


def _no_episodes(p: int) -> Advantages:
    """The advantages of a task part without episodes (a safety-test split of too few)."""
    return Advantages(np.zeros(0), np.zeros((0, p)), np.zeros(p), 1.0)


def _over_tasks(key: str, values: list[float | None], chunks: bool = False) -> float | None:
    """Counts (`n_*` columns) add up over tasks (or chunks of tasks); other columns average
    over the tasks that have a value (over chunks: the mean of chunk means, as chunks hold
    `meta_batch` tasks each); None when none has."""
    if key.startswith("n_"):
        return float(np.sum(values))
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _chunks(items: list[Task], size: int) -> list[tuple[int, list[Task]]]:
    """(index of the first, the chunk) for consecutive chunks of `size` items."""
    return [(i, items[i : i + size]) for i in range(0, len(items), size)]
