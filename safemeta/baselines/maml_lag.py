"""MAML-Lagrangian (SPEC §3), algorithm id `maml-lag`: MAML (Finn et al. 2017) with a
Lagrangian cost penalty, a TRPO outer step and the second-order meta-gradient.

Constrained meta-objective, in the notation of the MAML paper:

    max_φ E_τ[J_τ(θ'_τ(φ))]  s.t.  E_τ[J_{c,τ}(θ'_τ(φ))] ≤ d,

relaxed to the Lagrangian with one multiplier λ ≥ 0 per constraint.

Inner step (adaptation), per task τ from the data π_θ collected there:

    θ'_τ = θ + α ∇_θ Ê[log π_θ(a|s) · w],   w = (Â − λ·Â_c) / (1 + λ),

Â and Â_c the reward and cost advantages of the task (GAE on the base's critics), each
standardised per task (Â by the base's `normalize_adv`, on by default; Â_c here): a
gradient step of fixed size α needs both on one scale, as pytorch-maml-rl standardises
its advantages, so λ is in units of standardised cost advantage (PPO-Lag, whose Adam
steps are scale-free, keeps OmniSafe's centred raw Â_c). The 1/(1 + λ) keeps the step's
scale that of Â as λ grows (OmniSafe's Lagrangian advantage). In meta-training θ = φ
and λ is the meta-multiplier.

Outer step, one TRPO step on φ (as MAML-TRPO, pytorch-maml-rl's `MAMLTRPO.step`):

    max_φ  (1/|B|) Σ_τ Ê_post[(π_{θ'_τ(φ)}(a|s) / π_{θ'_τ(φ_old)}(a|s)) · w_post]
    s.t.   (1/|B|) Σ_τ Ê_post,s[KL(π_{θ'_τ(φ_old)} ‖ π_{θ'_τ(φ)})] ≤ max_kl,

w_post the same Lagrangian advantage on the post-adaptation data. θ'_τ(φ) is recomputed
from the live parameters with `create_graph=True` inside both the surrogate and the KL,
so the gradient and the Fisher-vector products are differentiated through the inner
step (second order: Hessian-vector products of the inner objective).

Multiplier: after the outer step, one step on λ·(J̄_c − d) (`updates/lagrange.py`),
J̄_c = the mean over the batch's tasks of the post-adaptation episode cost
E_τ[J_{c,τ}(θ'_τ)] (the constraint of the objective above, of the type the limit binds).
The inner step, the outer surrogate and that iteration's data all use the λ of the
iteration (one λ per iteration, simultaneous primal-dual steps).

Meta-test (and validation): the first step from φ is exactly the meta-trained inner step,
with the meta-multiplier λ. With `test_lambda: adapt` (default) each test task then keeps
its own copy of the multiplier and, before each further inner step from θ^t, takes one
step on it from θ^t's episode cost on that task (as PPO-Lag does per task); with
`fixed` every step uses the meta-trained λ. Further steps are inner steps with the same α
(MAML's and pytorch-maml-rl's test-time procedure).

Hyperparameters and their sources:
- inner lr α = 0.1: MAML (locomotion), ProMP's MAML configs and pytorch-maml-rl
  (`fast-lr: 0.1` for halfcheetah-vel/dir) with a linear feature baseline and
  standardised advantages, as here (`critic: linear` is the base's default);
- outer TRPO: max KL 0.01 (MAML, pytorch-maml-rl), 10 CG iterations (pytorch-maml-rl);
- λ: init 0.001, lr 0.035, Adam (OmniSafe's Lagrange defaults; there is no reference
  MAML-Lagrangian code to take them from).

Differences from the original papers and code, so that every algorithm of a comparison
shares budgets and networks: meta-batch 10 tasks (MAML 40, pytorch-maml-rl 40) and the
paper's step budget per task (MAML 20 episodes); the base's networks (64×64 tanh, as
pytorch-maml-rl; MAML used 100×100 ReLU) and Fisher damping 0.1 with 10 halvings in the
line search (pytorch-maml-rl: damping 1e-5, 15 steps of ×0.8); GAE λ 0.97 (pytorch-maml-
rl 1.0); the observation normaliser of π_φ (pytorch-maml-rl has none) is updated after
each outer step. The outer TRPO step subsamples `fvp_states` post-adaptation states for
the KL (pytorch-maml-rl uses all). `first_order: true` gives FO-MAML (pytorch-maml-rl's
`--first-order`); the comparison runs second order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from safemeta.config import GaussianConfig, param
from safemeta.envs.base import Suite, Task
from safemeta.meta_learner import MetaLearner, TaskPolicy
from safemeta.nn.policy import GaussianPolicy, gaussian_kl
from safemeta.rollout.advantages import Advantages
from safemeta.rollout.buffer import Rollout
from safemeta.updates.lagrange import OPTIMIZERS, Lagrange
from safemeta.updates.second_order import Params, forward_with, log_prob_with, params_of, pg_step, policy_at
from safemeta.updates.trpo import Objective, trpo_step


@dataclass
class MAMLLagConfig(GaussianConfig):
    """MAML with a Lagrangian cost penalty, TRPO outer step, second-order meta-gradient."""

    inner_lr: float = param(0.1, "inner policy-gradient step size α (MAML, ProMP, pytorch-maml-rl)",
                            low=0, low_open=True, high=100)
    first_order: bool = param(False, "FO-MAML: do not differentiate through the inner step")
    lagrange_init: float = param(0.001, "initial Lagrange multiplier λ (OmniSafe)", low=0, high=1e6)
    lagrange_lr: float = param(0.035, "Lagrange multiplier learning rate, one step per meta-iteration "
                               "(OmniSafe)", low=0, high=1e3)
    lagrange_optimizer: str = param("adam", "Lagrange multiplier step (OmniSafe: Adam)", choices=OPTIMIZERS)
    lagrange_upper: float | None = param(None, "upper bound on λ; none: unbounded", low=0, high=1e9)
    test_lambda: str = param(
        "adapt", "meta-test: after the first step, each task steps its own copy of λ from its cost "
        "(adapt) or keeps the meta-trained λ (fixed)", choices=("adapt", "fixed"))


@dataclass
class TaskBatch:
    """One task's transitions as tensors: the inner step's or the outer surrogate's data."""

    obs: torch.Tensor
    act: torch.Tensor
    weights: torch.Tensor  # the Lagrangian advantage w
    logp_old: torch.Tensor | None = None  # log π_{θ'(φ_old)}(a|s), for the outer ratio


def adapted_params(policy: GaussianPolicy, pre: TaskBatch, inner_lr: float, second_order: bool) -> Params:
    """θ'(φ) = φ + α ∇_φ Ê[log π_φ(a|s) · w] at the live parameters of `policy`; differentiable
    through the step when `second_order` and gradients are on (not in a line search)."""
    return pg_step(policy, params_of(policy), pre.obs, pre.act, pre.weights, inner_lr,
                   create_graph=second_order and torch.is_grad_enabled())


def meta_surrogate(inner: list[TaskBatch], outer: list[TaskBatch], inner_lr: float,
                   second_order: bool = True) -> Objective:
    """L(φ) = mean_τ Ê_post[(π_{θ'_τ(φ)}/π_{θ'_τ(φ_old)})(a|s) · w_post]; at φ = φ_old its
    gradient is the MAML meta-gradient (second order unless `second_order` is false)."""

    def surrogate(policy: GaussianPolicy) -> torch.Tensor:
        per_task = []
        for pre, post in zip(inner, outer):
            theta = adapted_params(policy, pre, inner_lr, second_order)
            ratio = torch.exp(log_prob_with(policy, theta, post.obs, post.act) - post.logp_old)
            per_task.append((ratio * post.weights).mean())
        return torch.stack(per_task).mean()

    return surrogate


def meta_kl(inner: list[TaskBatch], kl_obs: list[torch.Tensor], old: list[tuple[torch.Tensor, torch.Tensor]],
            inner_lr: float, second_order: bool = True) -> Objective:
    """mean_τ Ê_s[KL(π_{θ'_τ(φ_old)}(·|s) ‖ π_{θ'_τ(φ)}(·|s))] on post-adaptation states."""

    def kl(policy: GaussianPolicy) -> torch.Tensor:
        per_task = []
        for pre, obs, (mean_old, log_std_old) in zip(inner, kl_obs, old):
            mean, log_std = forward_with(policy, adapted_params(policy, pre, inner_lr, second_order), obs)
            per_task.append(gaussian_kl(mean_old, log_std_old, mean, log_std).mean())
        return torch.stack(per_task).mean()

    return kl


class MAMLLag(MetaLearner):
    """MAML-TRPO on the Lagrangian, second-order meta-gradient."""

    id = "maml-lag"
    Config = MAMLLagConfig
    step_columns = ("lam",)
    own_columns = ("lam_meta", "outer_accepted", "outer_kl", "outer_improve")
    cfg: MAMLLagConfig

    def __init__(
        self, cfg: MAMLLagConfig, suite: Suite, tasks: dict[str, list[Task]], seed: np.random.SeedSequence
    ) -> None:
        super().__init__(cfg, suite, tasks, seed)
        self.lagrange = Lagrange(self.cost_limit, cfg.lagrange_lr, cfg.lagrange_init, cfg.lagrange_optimizer,
                                 cfg.lagrange_upper)

    # ---- inner step ------------------------------------------------------------------------
    def adapt(self, data: Rollout, current: list[TaskPolicy]) -> list[TaskPolicy]:
        """θ'_τ = θ + α ∇ Ê[log π_θ · w] per task; the meta-λ from φ, the task's own λ after."""
        out = []
        for i, (adv, cur) in enumerate(zip(self.estimate(data), current)):
            if "lagrange" in cur.state:  # a later meta-test step from θ^t: the task's own λ
                lagrange = copy.deepcopy(cur.state["lagrange"])
                if self.cfg.test_lambda == "adapt":
                    lagrange.update(adv.cost_value)
            else:  # the meta-trained inner step from φ
                lagrange = copy.deepcopy(self.lagrange)
            learner = copy.deepcopy(cur.policy).to(self.device)
            batch = self.task_batch(data, i, adv, lagrange.lam)
            theta = adapted_params(learner, batch, self.cfg.inner_lr, second_order=False)
            out.append(TaskPolicy(policy_at(cur.policy, theta), {"lam": float(lagrange.lam[0])},
                                  {"lagrange": lagrange}))
        return out

    def task_batch(self, data: Rollout, i: int, adv: Advantages, lam: np.ndarray) -> TaskBatch:
        """Task i's transitions with the Lagrangian advantage (Â − λÂ_c)/(1 + λ), both standardised."""
        s, dev = data.slices[i], self.device
        cost_adv = adv.cost_adv / (adv.cost_adv.std(0) + 1e-8)
        weights = (adv.adv - cost_adv @ lam) / (1.0 + lam.sum())
        return TaskBatch(torch.as_tensor(data.obs[s], dtype=torch.float32, device=dev),
                         torch.as_tensor(data.act[s], dtype=torch.float32, device=dev),
                         torch.as_tensor(weights, dtype=torch.float32, device=dev))

    # ---- outer step ------------------------------------------------------------------------
    def meta_step(self, pre: Rollout, post: Rollout, adapted: list[TaskPolicy]) -> dict[str, Any]:
        """TRPO on the MAML surrogate through the inner step, then one step on λ."""
        c, lam = self.cfg, self.lagrange.lam
        learner = copy.deepcopy(self.policy).to(self.device)
        inner = [self.task_batch(pre, i, a, lam) for i, a in enumerate(self.estimate(pre))]
        outer = [self.task_batch(post, i, a, lam) for i, a in enumerate(self.estimate(post))]
        per_task = max(1, c.fvp_states // len(inner))
        kl_obs, old = [], []
        with torch.no_grad():
            for pre_b, post_b in zip(inner, outer):
                theta_old = adapted_params(learner, pre_b, c.inner_lr, False)
                post_b.logp_old = log_prob_with(learner, theta_old, post_b.obs, post_b.act)
                idx = np.sort(self.rng.choice(len(post_b.obs), min(per_task, len(post_b.obs)), replace=False))
                kl_obs.append(post_b.obs[torch.as_tensor(idx, device=self.device)])
                old.append(forward_with(learner, theta_old, kl_obs[-1]))
        second = not c.first_order
        info = trpo_step(learner, meta_surrogate(inner, outer, c.inner_lr, second),
                         meta_kl(inner, kl_obs, old, c.inner_lr, second),
                         c.max_kl, c.cg_iters, c.cg_damping, c.line_search_steps)
        self.policy.load_state_dict(learner.to("cpu").state_dict())
        lam_used = float(lam[0])
        self.lagrange.update(post.cost_return(self.cost_type).mean(0))  # E_τ J_c(θ'_τ) of the batch
        return {"lam_meta": lam_used, "outer_accepted": info["accepted"], "outer_kl": info["kl"],
                "outer_improve": info["improve"]}

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "lagrange": self.lagrange.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.lagrange.load_state_dict(state["lagrange"])
