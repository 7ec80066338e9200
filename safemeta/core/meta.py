"""Safe meta-training (SPEC §2.6) and anytime-safe meta-test (SPEC §2.7), algorithm id `safemeta`.

One meta-iteration: sample training tasks; roll out π_φ (pre-adaptation data); one
verified safe adaptation step per task (SPEC §2.4, `core/adaptation.py`); roll out the
adapted policies (post-adaptation data); then CRPO switching: if π_φ violates some
task's limit (+δ), a trust-region step on φ reducing that cost; otherwise a step along
the Hessian-free meta-gradient

    ∇_φ J_τ(π_τ) ≈ 1/(1−γ) E_{s,a ~ π_τ}[A^{π_τ}(s,a) ∇_φ log π_φ(a|s)]

from the post-adaptation data with one ordinary backward pass (no Hessian-vector
product of the objective, no differentiation through the adaptation step).
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from safemeta.config import CommonConfig, ConfigError, param
from safemeta.core.adaptation import AdaptResult, AdaptSettings, adapt_batch, fit_critics, task_advantages
from safemeta.core.outer import first_order_step, ratio_surrogate, trpo_step
from safemeta.envs.base import Suite, Task
from safemeta.experiment.algorithm import Algorithm, MetricRow
from safemeta.nn.critic import MLPCritic
from safemeta.nn.policy import GaussianPolicy, gaussian_kl
from safemeta.rollout.buffer import Rollout
from safemeta.rollout.sampler import Sampler

NAVIGATION = ("point-circle", "car-circle", "point-button")


@dataclass
class SafeMetaConfig(CommonConfig):
    """Safe meta-RL of Xu & Zhu (SPEC §2.4–§2.7) on continuous-control suites."""

    hyper: str = param(
        "explicit",
        "λ, λ_c, δ from the fields below or from the theorem (SPEC §2.5)",
        choices=("explicit", "theory"),
    )
    lam: float = param(
        1.0,
        "KL penalty λ of the adaptation step, in standardised reward-advantage units",
        low=0,
        low_open=True,
        high=1e6,
    )
    lam_c: float | None = param(
        None, "cost KL coefficient λ_c in cost units; none: lam_c_scale × the suite's limit d",
        low=0, high=1e9,
    )
    lam_c_scale: float = param(
        10.0,
        "λ_c = lam_c_scale·d when lam_c is none (halfcheetah-vel meta-test, 10 tasks x 5 steps: "
        "1·d violated on 10% of task-steps, 10·d on none, with a smaller reward gain per step)",
        low=0,
        high=1e6,
    )
    delta: float = param(0.0, "constraint relaxation δ (0: the safety-guaranteed case)", low=0, high=1e9)
    meta_margin: float = param(
        0.05, "CRPO switch of meta-training at J_c(π_φ) > (1 − margin)·d + δ, so that the "
        "meta-policy keeps a margin on unseen tasks (anytime safety starts at π_φ)", low=0, high=1)
    dual: str = param(
        "sample",
        "adaptation multipliers: the batch-normalised sample dual (SPEC §2.2), or 'bisection' "
        "on the projected policy's own surrogate (SPEC §2.4; at most 1 + 2·bisect_iters projections)",
        choices=("sample", "bisection"),
    )
    bisect_iters: int = param(8, "dual=bisection: bracket doublings and bisection halvings", low=1, high=50)
    theory_alpha: float = param(1.0, "hyper=theory: α bounding max_s KL by α E_ν KL",
                                low=0, low_open=True, high=1e9)
    theory_a_max: float = param(1.0, "hyper=theory: A^max, bound on |A| (standardised units)",
                                low=0, high=1e9)
    theory_a_c_max: float = param(1.0, "hyper=theory: A_c^max, bound on |A_c|", low=0, high=1e9)
    theory_radius: float = param(0.0, "hyper=theory: R(P(Γ)), radius of the task distribution",
                                 low=0, high=1e9)
    theory_eps: float | None = param(None, "hyper=theory: ε; none takes its maximum (δ = 0)", low=0, high=1e9)
    gamma: float = param(0.99, "discount γ", low=0, high=0.9999, low_open=True)
    gae_lambda: float = param(0.97, "GAE λ for reward and cost advantages", low=0, high=1)
    episodes_per_task: int = param(
        20, "episodes per task per rollout (pre, post, each meta-test step)", low=1, high=10_000
    )
    envs_per_task: int = param(0, "envs stepped in parallel per task; 0: one per episode", low=0,
                               high=10_000)
    horizon: int = param(0, "episode length; 0: the suite's default", low=0, high=100_000)
    hidden: list[int] = param([64, 64], "policy MLP hidden sizes (tanh)", low=1, high=4096)
    init_log_std: float = param(-0.5, "initial log-std of the Gaussian policy", low=-5, high=2)
    kappa: str = param(
        "auto",
        "advantage-to-return factor in the cost surrogate: gamma = 1/(1−γ); "
        "auto = mean episode length for undiscounted limits",
        choices=("auto", "gamma"),
    )
    normalize_adv: bool = param(True, "standardise reward advantages per task before the adaptation step")
    proj_epochs: int = param(10, "projection (SPEC §2.4 step 3): Adam epochs", low=1, high=10**4)
    proj_minibatches: int = param(4, "projection: minibatches per epoch", low=1, high=10**4)
    proj_lr: float = param(3e-3, "projection: Adam learning rate", low=0, low_open=True, high=10)
    verify_margin: float = param(
        0.0, "verification slack in cost units: accept when surrogate ≤ d + δ − margin", low=0, high=1e9
    )
    max_backoffs: int = param(10, "verification: halvings of the step before keeping π_k", low=0,
                              high=60)
    verify_recovery: bool = param(
        False, "verification when π_k is infeasible: also accept steps that lower its cost "
        "surrogate without meeting the bound (not verified safe: off by default, SPEC §2.4 step 4)"
    )
    verify_max_kl: float = param(
        0.1,
        "verification: also back off while E_s[KL(π‖π_k)] exceeds this "
        "(the importance-weighted surrogate's range); 0 disables",
        low=0,
        high=1e3,
    )
    verify_confidence: float = param(
        0.0,
        "verification: add z·(standard error of Ĵ_c over π_k's episodes) to the cost surrogate, "
        "an upper confidence bound for sparse, noisy costs; 0 disables",
        low=0,
        high=10,
    )
    outer_step: str = param(
        "trpo",
        "meta-policy step: TRPO natural gradient with KL bound, or first-order clipped",
        choices=("trpo", "first-order"),
    )
    max_kl: float = param(0.01, "outer TRPO step: KL bound", low=0, low_open=True, high=10)
    cg_iters: int = param(10, "outer TRPO step: conjugate-gradient iterations", low=1, high=1000)
    cg_damping: float = param(0.1, "outer TRPO step: Fisher damping", low=0, high=1e6)
    line_search_steps: int = param(10, "outer TRPO step: backtracking halvings", low=1, high=60)
    fvp_states: int = param(4000, "outer TRPO step: states subsampled for Fisher-vector products",
                            low=100, high=10**7)
    outer_lr: float = param(1e-3, "first-order outer step: Adam learning rate", low=0, low_open=True, high=10)
    max_grad_norm: float = param(1.0, "first-order outer step: gradient-norm clip",
                                 low=0, low_open=True, high=1e6)
    critic: str = param(
        "linear",
        "value critics: per-task linear feature baseline, or one shared MLP",
        choices=("linear", "mlp"),
    )
    critic_reg: float = param(1e-5, "linear critic: ridge coefficient", low=0, high=1e6)
    critic_lr: float = param(1e-3, "mlp critic: Adam learning rate", low=0, low_open=True, high=10)
    critic_epochs: int = param(5, "mlp critic: epochs per fit", low=1, high=10**4)
    eval_episodes: int = param(10, "fresh evaluation episodes per task (validation, meta-test steps)",
                               low=1, high=10_000)
    obs_norm: bool = param(True, "update the observation normaliser from pre-adaptation data")
    torch_threads: int = param(1, "torch threads for learners (small MLPs run fastest on one)",
                               low=1, high=1024)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SafeMeta(Algorithm):
    """Hessian-free safe meta-training with anytime-safe adaptation (SPEC §2.6, §2.7)."""

    id = "safemeta"
    Config = SafeMetaConfig
    extra_columns = (
        "pre_reward",
        "pre_cost_mean",
        "pre_cost_max",
        "n_violations",
        "n_switch",
        "n_missed",
        "post_reward",
        "post_cost_max",
        "post_cost_undiscounted",
        "post_cost_discounted",
        "u_mean",
        "eta",
        "kl",
        "dual_kl",
        "surrogate_cost",
        "backoffs",
        "accept_rate",
        "outer_cost_step",
        "outer_accepted",
        "outer_kl",
        "eval_source",
        "explore_cost_max",
        "unstable",
        "t_sampling",
        "t_critic",
        "t_dual",
        "t_projection",
        "t_outer",
        "t_eval",
    )
    cfg: SafeMetaConfig

    def __init__(
        self, cfg: CommonConfig, suite: Suite, tasks: dict[str, list[Task]], seed: np.random.SeedSequence
    ) -> None:
        super().__init__(cfg, suite, tasks, seed)
        assert isinstance(cfg, SafeMetaConfig)
        obs_space, act_space = suite.spaces()
        self.obs_dim, self.act_dim = int(np.prod(obs_space.shape)), int(np.prod(act_space.shape))
        self.num_costs = int(getattr(suite, "num_costs", 1))
        self.cost_limit = np.broadcast_to(np.asarray(suite.cost_limit, np.float64), (self.num_costs,)).copy()
        self.cost_type = getattr(suite, "cost_type", "undiscounted")
        self.horizon = cfg.horizon or int(suite.horizon)
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device: cuda requested but no CUDA device is available; accepted cpu")
        self.device = torch.device(cfg.device)  # learners only; sampling stays on CPU
        s_np, s_torch, s_init, s_eval = seed.spawn(4)
        self._eval_root = int(s_eval.generate_state(1)[0])  # validation/meta-test streams
        self.rng = np.random.default_rng(s_np)
        self.gen = torch.Generator().manual_seed(int(s_torch.generate_state(1)[0]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(s_init.generate_state(1)[0]))
            self.policy = GaussianPolicy(self.obs_dim, self.act_dim, cfg.hidden, cfg.init_log_std)
            self.critic = (
                MLPCritic(self.obs_dim, self.num_costs, cfg.hidden, cfg.critic_lr, cfg.critic_epochs)
                if cfg.critic == "mlp"
                else None
            )
        self.outer_optim = torch.optim.Adam(self.policy.parameters(), lr=cfg.outer_lr)
        self.settings = self._settings()
        self.sampler = Sampler(suite, self.horizon, cfg.gamma, cfg.envs_per_task)

    # ---- configuration -------------------------------------------------------------
    def _settings(self) -> AdaptSettings:
        c = self.cfg
        lam, lam_c, delta = c.lam, (c.lam_c_scale * self.cost_limit if c.lam_c is None else c.lam_c), c.delta
        if c.hyper == "theory":  # SPEC §2.5, the lead's helper (imported lazily)
            from safemeta.tabular.theory import theory_params

            th = theory_params(
                c.theory_alpha,
                c.theory_a_max,
                np.full(self.num_costs, c.theory_a_c_max),
                c.theory_radius,
                c.gamma,
                c.theory_eps,
            )
            lam, lam_c, delta = th.lam, th.lam_c, th.delta
            if not lam > 0:
                raise ConfigError("hyper=theory: λ = 0; theory_a_max and theory_alpha must be > 0")
        return AdaptSettings(
            lam=float(lam),
            lam_c=np.broadcast_to(np.asarray(lam_c, np.float64), (self.num_costs,)).copy(),
            delta=np.broadcast_to(np.asarray(delta, np.float64), (self.num_costs,)).copy(),
            gamma=c.gamma,
            gae_lambda=c.gae_lambda,
            cost_type=self.cost_type,
            kappa=c.kappa,
            normalize_adv=c.normalize_adv,
            dual=c.dual,
            bisect_iters=c.bisect_iters,
            proj_epochs=c.proj_epochs,
            proj_minibatches=c.proj_minibatches,
            proj_lr=c.proj_lr,
            verify_margin=c.verify_margin,
            max_backoffs=c.max_backoffs,
            verify_recovery=c.verify_recovery,
            verify_max_kl=c.verify_max_kl,
            verify_confidence=c.verify_confidence,
            critic_reg=c.critic_reg,
            device=c.device,
        )

    @classmethod
    def presets(cls, suite_id: str) -> dict[str, dict[str, Any]]:
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
        paper = dict(
            init_log_std=-0.5 if nav else -1.0,
            iterations=300 if nav else 500,
            meta_batch=10,
            episodes_per_task=10 if nav else 40,
            horizon=0,  # the suites' defaults: 200 locomotion, 500 circle (button: its 1000)
            envs_per_task=10,
            val_tasks=10,
            eval_every=10,
            eval_episodes=10,
            test_tasks=20,
            test_steps=20,
            checkpoint_every=10,
        )
        return {"quick": quick, "paper": paper}

    # ---- sampling and adaptation ---------------------------------------------------
    def _collect(self, tasks: Sequence[Task], policies: Sequence[GaussianPolicy], episodes: int) -> Rollout:
        return self.sampler.collect(tasks, policies, episodes, self.rng, self.gen)

    def _adapt(
        self, roll: Rollout, policies: Sequence[GaussianPolicy], times: dict[str, float]
    ) -> list[AdaptResult]:
        """One verified safe adaptation step per task from its behaviour policy (SPEC §2.4)."""
        t0 = time.perf_counter()
        critics = fit_critics(
            roll, self.policy, self.cfg.gamma, self.cfg.critic, self.cfg.critic_reg, self.critic, self.rng
        )
        times["t_critic"] = times.get("t_critic", 0.0) + time.perf_counter() - t0
        results = adapt_batch(list(policies), roll, critics, self.cost_limit, self.settings, self.rng)
        for res in results:
            for k, v in res.times.items():
                key = "t_critic" if k == "t_adv" else k
                times[key] = times.get(key, 0.0) + v
        return results

    def _timed_collect(
        self,
        tasks: Sequence[Task],
        policies: Sequence[GaussianPolicy],
        episodes: int,
        times: dict[str, float],
    ) -> Rollout:
        t0 = time.perf_counter()
        roll = self._collect(tasks, policies, episodes)
        times["t_sampling"] = times.get("t_sampling", 0.0) + time.perf_counter() - t0
        return roll

    # ---- meta-training (SPEC §2.6) ---------------------------------------------------
    def train_iteration(self, iteration: int) -> MetricRow:
        with _threads(self.cfg.torch_threads):
            return self._train_iteration(iteration)

    def _train_iteration(self, iteration: int) -> MetricRow:
        c, times = self.cfg, {"t_sampling": 0.0, "t_critic": 0.0, "t_dual": 0.0, "t_projection": 0.0}
        t_start = time.perf_counter()
        tasks = self.suite.sample_tasks(c.meta_batch, self.rng, "train")
        pre = self._timed_collect(tasks, [self.policy] * len(tasks), c.episodes_per_task, times)
        results = self._adapt(pre, [self.policy] * len(tasks), times)
        post = self._timed_collect(tasks, [r.policy for r in results], c.episodes_per_task, times)
        t0 = time.perf_counter()
        pre_cost = pre.cost_return(self.cost_type)
        # (tasks, p): CRPO switch, with the meta-policy's margin
        violated = pre_cost > (1 - self.cfg.meta_margin) * self.cost_limit + self.settings.delta
        outer = self._outer_step(pre, post, violated, times)
        if c.obs_norm:
            self.policy.normalizer.update(pre.obs)
        times["t_outer"] = time.perf_counter() - t0 - times.pop("t_outer_critic", 0.0)
        row = self._train_row(iteration, pre, post, results, violated, outer, times)
        if iteration % c.eval_every == 0:
            t0 = time.perf_counter()
            with self._evaluation_streams(iteration):
                row.update(self._validation_metrics(self.tasks["val"]))
            row["t_eval"] = time.perf_counter() - t0
        row["time_s"] = time.perf_counter() - t_start
        return row

    def _outer_step(
        self, pre: Rollout, post: Rollout, violated: np.ndarray, times: dict[str, float]
    ) -> dict[str, float]:
        """CRPO switching: reduce the violated costs, else follow the meta-gradient (SPEC §2.6 step 3)."""
        t0 = time.perf_counter()
        if violated.any():
            data, weights = pre, self._cost_weights(pre, violated)
        else:
            data, weights = post, self._reward_weights(post)
        times["t_outer_critic"] = time.perf_counter() - t0
        times["t_critic"] += times["t_outer_critic"]
        learner = copy.deepcopy(self.policy).to(self.device)
        info = self._policy_step(learner, data, weights, pre)
        self.policy.load_state_dict({k: v.cpu() for k, v in learner.state_dict().items()})
        info["cost_step"] = float(violated.any())
        return info

    def _reward_weights(self, post: Rollout) -> np.ndarray:
        """Per transition A^{π_τ}(s,a) of the post-adaptation data (standardised per task).

        The 1/(1−γ) of SPEC §2.6 is a scale: the TRPO step is invariant to it and the
        first-order step's learning rate absorbs it."""
        critics = fit_critics(
            post, self.policy, self.cfg.gamma, self.cfg.critic, self.cfg.critic_reg, self.critic, self.rng
        )
        st = self.settings
        return np.concatenate(
            [task_advantages(post.task(i), critics[i], self.policy, st).adv for i in range(post.num_tasks)]
        )

    def _cost_weights(self, pre: Rollout, violated: np.ndarray) -> np.ndarray:
        """−Σ_{violated i} A_{c_i} of π_φ on its own data (a step that lowers those costs)."""
        critics = fit_critics(
            pre, self.policy, self.cfg.gamma, self.cfg.critic, self.cfg.critic_reg, self.critic, self.rng
        )
        out = []
        for i in range(pre.num_tasks):
            a = task_advantages(pre.task(i), critics[i], self.policy, self.settings)
            ca = a.cost_adv / (a.cost_adv.std(0) + 1e-8)
            out.append(-(ca * violated[i]).sum(1))
        return np.concatenate(out)

    def _policy_step(
        self, learner: GaussianPolicy, data: Rollout, weights: np.ndarray, pre: Rollout
    ) -> dict[str, float]:
        """Maximise Ê[(π_φ'/π_φ)(a|s) · weight] under a KL bound on π_φ's states: the gradient at
        φ' = φ is Ê[weight ∇ log π_φ(a|s)], the Hessian-free meta-gradient (one backward pass)."""
        dev = self.device
        obs = torch.as_tensor(data.obs, dtype=torch.float32, device=dev)
        act = torch.as_tensor(data.act, dtype=torch.float32, device=dev)
        w = torch.as_tensor(weights, dtype=torch.float32, device=dev)
        idx = self.rng.choice(len(pre.obs), size=min(self.cfg.fvp_states, len(pre.obs)), replace=False)
        kl_obs = torch.as_tensor(pre.obs[np.sort(idx)], dtype=torch.float32, device=dev)
        with torch.no_grad():
            logp_old = learner.log_prob(obs, act)
            mean_old, log_std_old = learner(kl_obs)

        surrogate = ratio_surrogate(obs, act, logp_old, w)

        def kl(pol: GaussianPolicy) -> torch.Tensor:
            mean, log_std = pol(kl_obs)
            return gaussian_kl(mean_old, log_std_old, mean, log_std).mean()

        c = self.cfg
        if c.outer_step == "trpo":
            return trpo_step(learner, surrogate, kl, c.max_kl, c.cg_iters, c.cg_damping, c.line_search_steps)
        optim = torch.optim.Adam(learner.parameters(), lr=c.outer_lr)
        optim.load_state_dict(self.outer_optim.state_dict())
        info = first_order_step(learner, surrogate, kl, optim, c.max_grad_norm)
        self.outer_optim.load_state_dict(optim.state_dict())
        return info

    # ---- metrics --------------------------------------------------------------------
    def _train_row(
        self,
        iteration: int,
        pre: Rollout,
        post: Rollout,
        results: list[AdaptResult],
        violated: np.ndarray,
        outer: dict[str, float],
        times: dict[str, float],
    ) -> MetricRow:
        post_cost = post.cost_return(self.cost_type)
        pre_cost = pre.cost_return(self.cost_type)
        limit = self.cost_limit + self.settings.delta
        row: MetricRow = {
            "phase": "meta_train",
            "iteration": iteration,
            "step": 1,
            **self._summary(post.reward_return(), post_cost),
            "pre_reward": float(pre.reward_return().mean()),
            "pre_cost_mean": float(pre_cost[:, 0].mean()),
            "pre_cost_max": float(pre_cost[:, 0].max()),
            "n_violations": int(np.any(pre_cost > limit, axis=1).sum()),
            "n_switch": int(violated.any(1).sum()),
            # verified steps from a feasible π_k whose adapted policy exceeded d + δ on its
            # own data: how often the sample surrogate of verification was too optimistic
            "n_missed": int(np.sum(_missed(pre_cost, post_cost, results, limit))),
            "post_reward": float(post.reward_return().mean()),
            "post_cost_max": float(post_cost[:, 0].max()),
            # SPEC §2.4 step 1: both episode costs are reported; the limit binds `cost_type`.
            "post_cost_undiscounted": float(post.cost_return("undiscounted")[:, 0].mean()),
            "post_cost_discounted": float(post.cost_return("discounted")[:, 0].mean()),
            **_step_log(results),
            "dual_kl": float(np.mean([r.dual.kl for r in results])),
            "outer_cost_step": outer["cost_step"],
            "outer_accepted": outer["accepted"],
            "outer_kl": outer["kl"],
            "eval_source": "post",
            "unstable": int(pre.extras.get("unstable", 0) + post.extras.get("unstable", 0)),
        }
        row.update(
            {k: times.get(k, 0.0) for k in ("t_sampling", "t_critic", "t_dual", "t_projection", "t_outer")}
        )
        return row

    def _summary(self, reward: np.ndarray, cost: np.ndarray) -> dict[str, Any]:
        """reward (tasks,), cost (tasks, p): the required columns (cost columns of constraint 0)."""
        return {
            "reward_mean": float(reward.mean()),
            "cost_mean": float(cost[:, 0].mean()),
            "cost_max": float(cost[:, 0].max()),
            "cost_limit": float(self.cost_limit[0]),
            "violation_rate": float(np.mean(np.any(cost > self.cost_limit, axis=1))),
        }

    def _validation_metrics(self, tasks: list[Task]) -> dict[str, Any]:
        """The one-step adapted policy on the validation tasks, fresh episodes (SPEC §5)."""
        c, out = self.cfg, {}
        for chunk in _chunks(tasks, c.meta_batch):
            pre = self._collect(chunk, [self.policy] * len(chunk), c.episodes_per_task)
            results = self._adapt(pre, [self.policy] * len(chunk), {})
            ev = self._collect(chunk, [r.policy for r in results], c.eval_episodes)
            out.setdefault("r", []).append(ev.reward_return())
            out.setdefault("c", []).append(ev.cost_return(self.cost_type))
        return {**self._summary(np.concatenate(out["r"]), np.concatenate(out["c"])), "eval_source": "val"}

    # ---- meta-test (SPEC §2.7) ---------------------------------------------------------
    @contextlib.contextmanager
    def _evaluation_streams(self, key: int) -> Iterator[None]:
        """Validation and meta-test draw from their own generators (a function of the seed
        and `key`) and leave the critic as it was, so they never change training."""
        saved = self.rng, self.gen, copy.deepcopy(self.critic)
        seq = np.random.SeedSequence([self._eval_root, key])
        self.rng = np.random.default_rng(seq)
        self.gen = torch.Generator().manual_seed(int(seq.generate_state(1)[0]))
        try:
            yield
        finally:
            self.rng, self.gen, self.critic = saved

    def meta_test(self, tasks: list[Task], steps: int) -> list[MetricRow]:
        with _threads(self.cfg.torch_threads), self._evaluation_streams(META_TEST_STREAM):
            per_chunk = [self._meta_test_chunk(chunk, steps) for chunk in _chunks(tasks, self.cfg.meta_batch)]
        rows = []
        for t in range(steps + 1):
            rec = [pc[t] for pc in per_chunk]
            reward = np.concatenate([r["reward"] for r in rec])
            cost = np.concatenate([r["cost"] for r in rec])
            row = {"phase": "meta_test", "iteration": -1, "step": t, **self._summary(reward, cost)}
            row.update(
                explore_cost_max=None
                if t == steps
                else float(np.concatenate([r["explore"] for r in rec])[:, 0].max()),
                time_s=sum(r["time"] for r in rec),
                **{k: float(np.mean([r[k] for r in rec])) for k in STEP_LOG},
            )
            rows.append(row)
        return rows

    def _meta_test_chunk(self, tasks: list[Task], steps: int) -> list[dict[str, Any]]:
        """Per step t: π^t evaluated with fresh episodes; its exploration data adapt it to π^{t+1}.

        Anytime safety (SPEC §2.7): the exploration episodes' cost counts. The cost of π^t on
        a task is its mean episode cost over all the episodes it ran there (evaluation and
        exploration: both are samples of J_c(π^t)); reward is from the evaluation episodes."""
        c, policies, out, elapsed = self.cfg, [self.policy] * len(tasks), [], 0.0
        for t in range(steps + 1):
            ev = self._collect(tasks, policies, c.eval_episodes)
            rec = {"reward": ev.reward_return(), "time": elapsed, **dict.fromkeys(STEP_LOG, 0.0)}
            episodes = [self._episode_costs(ev, i) for i in range(len(tasks))]
            if t < steps:
                t0 = time.perf_counter()
                data = self._collect(tasks, policies, c.episodes_per_task)
                results = self._adapt(data, policies, {})
                policies = [r.policy for r in results]
                elapsed += time.perf_counter() - t0
                episodes = [np.concatenate([e, self._episode_costs(data, i)]) for i, e in enumerate(episodes)]
                rec.update(explore=data.cost_return(self.cost_type), **_step_log(results))
            rec["cost"] = np.stack([e.mean(0) for e in episodes])
            out.append(rec)
        return out

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
            "torch_gen": self.gen.get_state().clone(),
            "eval_root": self._eval_root,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        if self.critic is not None and state.get("critic") is not None:
            self.critic.load_state_dict(state["critic"])
            self.critic.optim.load_state_dict(state["critic_optim"])
        self.outer_optim.load_state_dict(state["outer_optim"])
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.gen.set_state(state["torch_gen"].clone())
        self._eval_root = int(state["eval_root"])

    def finite(self) -> bool:
        return bool(torch.isfinite(self.policy.flat_params()).all())


# What each meta-test adaptation step logs (means over tasks; zeros at the last step).
def _missed(pre_cost: np.ndarray, post_cost: np.ndarray, results: list[AdaptResult],
            limit: np.ndarray) -> np.ndarray:
    """(tasks,) bool: π_k within every limit, its step accepted, the adapted policy not."""
    accepted = np.array([r.accepted for r in results])
    return np.all(pre_cost <= limit, axis=1) & accepted & np.any(post_cost > limit, axis=1)


STEP_LOG = ("u_mean", "eta", "kl", "surrogate_cost", "backoffs", "accept_rate")


def _step_log(results: list[AdaptResult]) -> dict[str, float]:
    return {
        "u_mean": float(np.mean([r.dual.u.mean() for r in results])),
        "eta": float(np.mean([r.dual.eta for r in results])),
        "kl": float(np.mean([r.kl for r in results])),
        "surrogate_cost": float(np.mean([r.surrogate[0] for r in results])),
        "backoffs": float(np.mean([r.backoffs for r in results])),
        "accept_rate": float(np.mean([r.accepted for r in results])),
    }


META_TEST_STREAM = 2**31 - 1  # the evaluation-stream key of meta-test (iterations use their index)


def _chunks(items: list[Task], size: int) -> list[list[Task]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
