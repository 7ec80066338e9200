"""Meta-CPO (Cho & Sun, AAAI 2024), algorithm id `meta-cpo` (SPEC §3).

MAML whose inner (adaptation) step is a CPO step. For a task τ with pre-adaptation data
D_τ collected by π_φ:

    θ'_τ(φ) = φ + α_τ x*_τ(φ),   x*_τ = argmax_x gᵀx  s.t.  c_τ + bᵀx ≤ 0,  ½ xᵀF x ≤ δ_in

with g = ∇_φ Ê[(π_φ/π_φ_k) A], b = ∇_φ κ Ê[(π_φ/π_φ_k) A_c], F the Fisher matrix of π_φ,
c_τ = Ĵ_c(π_φ) − d, solved in closed form for one constraint (`updates/cpo.py`: the
feasible cases and the infeasible recovery x = −sqrt(2δ_in / bᵀF⁻¹b) F⁻¹b), and α_τ the
fraction the inner line search accepted (1, ½, …; 0 when it kept π_φ). The meta-objective
is the post-adaptation return, estimated on data D'_τ collected by π_θ'_τ:

    L(φ) = (1/T) Σ_τ Ê_{D'_τ}[(π_θ'_τ(φ)(a|s) / π_θ'_τ(a|s)) A^{π_θ'_τ}(s,a)]

and its gradient is differentiated through the inner step: g, b and the Fisher-vector
products inside the conjugate-gradient solves are built with `create_graph=True`, so the
backward pass carries Hessian-vector products of the surrogates and third derivatives of
the KL (the inner Fisher depends on φ). The outer step is a trust-region step on φ
(KL of π_φ on the pre-adaptation states ≤ max_kl) with, as Meta-CPO's code does, the
meta-policy's own linearised cost constraint: c̄ + b̄ᵀΔφ ≤ 0 with c̄ the mean over tasks of
Ĵ_c(π_φ) − d and b̄ the gradient of the meta-policy's cost surrogate on the pre-adaptation
data (`outer_constraint`; off: plain TRPO). Meta-test runs the same CPO step (with its
line search) from each task's current policy.

Hyperparameters and their sources:
- inner δ_in = `inner_max_kl` 0.01: CPO's own trust region (Achiam et al. 2017, δ = 0.01).
  Meta-CPO's code uses max_kl 1e-3 as a Euclidean bound ½‖x‖² ≤ 1e-3 on normalised
  gradients, a different metric; 0.01 in KL is the CPO default its paper builds on.
- outer δ = `max_kl` 0.01, cg_iters 10, damping 0.1, 10 halvings: the TRPO settings every
  algorithm here shares (pytorch-maml-rl's MAML-TRPO configs: max_kl 0.01, cg_iters 10;
  Meta-CPO's code: a line search of 10 halvings).
- γ 0.99 (Meta-CPO's code), GAE λ 0.97 (shared; Meta-CPO's code 0.95).

Where this implementation differs from Meta-CPO's paper and code:
- the inner step is CPO's closed form in the Fisher metric, differentiated exactly by
  autograd; the code solves the inner problem with cvxpylayers in a Euclidean metric on
  normalised gradients and multiplies the post-adaptation step by a diagonal
  "correction" 1 + ∂x_i/∂g_i · ∂g_i/∂φ_i (the diagonal of the Jacobian only);
- the outer step is CPO's closed form on the meta-policy's linearised cost (Fisher metric,
  KL trust region); the code projects the averaged meta-step onto the half-space
  aᵀx + b ≤ 0 in the Euclidean metric, line-searches it and scales it by a learning rate;
- c_τ is the cost estimate of the pre-adaptation data, treated as a constant of φ (as in
  the code); the line-search fraction α_τ is held fixed in the meta-gradient; the inner
  surrogates carry importance ratios π_φ/π_φ_k (π_φ_k a constant), so differentiating g
  and b in φ also yields the score-function term of the pre-adaptation sampling;
- the outer trust region bounds the KL of π_φ itself on the pre-adaptation states
  (pytorch-maml-rl bounds that of the adapted policies, which would differentiate the
  inner step twice more; the code bounds ‖Δφ‖);
- one inner step (the code's `local_num` default runs several; every algorithm here
  adapts once per collection during meta-training); no constraint annealing;
- critics are the base's (a per-task linear feature baseline by default) instead of MLP
  critics fitted with L-BFGS; budgets are in environment steps per task (the base's).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from safemeta.config import ConfigError, GaussianConfig, param
from safemeta.envs.base import Suite, Task
from safemeta.meta_learner import MetaLearner, TaskPolicy
from safemeta.nn.policy import GaussianPolicy, gaussian_kl
from safemeta.rollout.advantages import Advantages
from safemeta.rollout.buffer import Rollout
from safemeta.updates.cpo import CPOSolution, cpo_direction, cpo_line_search, cpo_step
from safemeta.updates.policy_gradient import ratio_surrogate
from safemeta.updates.second_order import Params, kl_with, log_prob_with, params_of
from safemeta.updates.trpo import flat_grad, trpo_step


@dataclass
class MetaCPOConfig(GaussianConfig):
    """Meta-CPO of Cho & Sun (AAAI 2024) on continuous-control suites."""

    inner_max_kl: float = param(
        0.01, "inner CPO step: trust region δ on E_s[KL] (CPO's δ = 0.01, Achiam et al. 2017)",
        low=0, low_open=True, high=10)
    outer_constraint: bool = param(
        True, "outer step: keep the meta-policy's linearised cost constraint (Meta-CPO's code "
        "projects the meta-step onto it); false: plain TRPO")


@dataclass
class InnerData:
    """One task's sample for the inner CPO step from π_φ_k (the policy that collected it)."""

    obs: torch.Tensor  # (n, d)
    act: torch.Tensor  # (n, a)
    logp_k: torch.Tensor  # (n,) log π_φ_k(a|s), a constant
    adv: torch.Tensor  # (n,) reward advantage A
    cost_adv: torch.Tensor  # (n,) κ·A_c: the cost surrogate's weights, in the units of d
    kl_obs: torch.Tensor  # states of the Fisher-vector products
    c: float  # Ĵ_c(π_φ_k) − d
    alpha: float = 1.0  # the step fraction the inner line search accepted
    case: int = -1  # the closed form's case at φ_k (logged)


@dataclass
class PostData:
    """One task's post-adaptation sample, collected by π_θ'."""

    obs: torch.Tensor
    act: torch.Tensor
    logp: torch.Tensor  # (n,) log π_θ'(a|s), a constant
    adv: torch.Tensor  # (n,) A^{π_θ'}


def _flat(p: Params) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in p.values()])


def _grad(y: torch.Tensor, params: Params, create_graph: bool) -> torch.Tensor:
    """∂y/∂params (flat), keeping the graph of y for the next derivative of the step."""
    return flat_grad(y, list(params.values()), create_graph=create_graph, retain_graph=True)


def _unflat(flat: torch.Tensor, like: Params) -> Params:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = flat[i : i + v.numel()].view_as(v)
        i += v.numel()
    return out


def cpo_inner_step(
    policy: GaussianPolicy,
    phi: Params,
    d: InnerData,
    delta: float,
    cg_iters: int,
    damping: float,
    create_graph: bool,
) -> tuple[torch.Tensor, CPOSolution]:
    """x*(φ), the closed-form CPO step from φ on `d` (flat), and its multipliers.

    With `create_graph` x* is a differentiable function of φ: g and b keep their graph, and
    the Fisher F(φ) is the Hessian in t at t = 0 of E_s[KL(π_φ ‖ π_{φ+t})], whose products
    keep their graph to φ through both arguments."""
    with torch.enable_grad():  # also inside a caller's no_grad (a line search)
        ratio = torch.exp(log_prob_with(policy, phi, d.obs, d.act) - d.logp_k)
        g = _grad((ratio * d.adv).mean(), phi, create_graph)
        b = _grad((ratio * d.cost_adv).mean(), phi, create_graph)

        def fvp(v: torch.Tensor) -> torch.Tensor:
            # a fresh t per product: v (built from earlier products) must not depend on this t,
            # or every product would differentiate through all the earlier ones
            t = {k: torch.zeros_like(p, requires_grad=True) for k, p in phi.items()}
            grad_kl = _grad(kl_with(policy, phi, {k: phi[k] + t[k] for k in phi}, d.kl_obs), t, True)
            return _grad(grad_kl @ v, t, create_graph) + damping * v

        x, sol = cpo_direction(g, b, fvp, d.c, delta, cg_iters)
    return x, sol


def adapted_params(
    policy: GaussianPolicy, phi: Params, d: InnerData, delta: float, cg_iters: int, damping: float,
    create_graph: bool, first_order: bool = False,
) -> Params:
    """θ'(φ) = φ + α x*(φ); `first_order` holds x* constant (no differentiation through it)."""
    x, _ = cpo_inner_step(policy, phi, d, delta, cg_iters, damping, create_graph and not first_order)
    if first_order:
        x = x.detach()
    return _unflat(_flat(phi) + d.alpha * x, phi)


def meta_objective(
    policy: GaussianPolicy, inner: list[InnerData], post: list[PostData], delta: float, cg_iters: int,
    damping: float, first_order: bool = False,
) -> torch.Tensor:
    """L(φ) = (1/T) Σ_τ Ê_{D'_τ}[(π_θ'_τ(φ)/π_θ'_τ) A], θ'_τ recomputed from the live parameters
    of `policy` (with the graph through the inner step when gradients are enabled)."""
    create_graph = torch.is_grad_enabled()
    phi = params_of(policy)
    total = torch.zeros((), dtype=next(policy.parameters()).dtype)
    for d, p in zip(inner, post):
        theta = adapted_params(policy, phi, d, delta, cg_iters, damping, create_graph, first_order)
        ratio = torch.exp(log_prob_with(policy, theta, p.obs, p.act) - p.logp)
        total = total + (ratio * p.adv).mean()
    return total / len(inner)


class MetaCPO(MetaLearner):
    """MAML with a CPO inner step, differentiated through (second order), and a
    cost-constrained trust-region outer step (Cho & Sun 2024)."""

    id = "meta-cpo"
    Config = MetaCPOConfig
    step_columns = ("kl", "accept_rate", "recovery", "nu", "ls_steps")
    own_columns = ("outer_accepted", "outer_kl", "outer_recovery", "outer_nu")
    cfg: MetaCPOConfig

    def __init__(self, cfg: MetaCPOConfig, suite: Suite, tasks: dict[str, list[Task]],
                 seed: np.random.SeedSequence) -> None:
        super().__init__(cfg, suite, tasks, seed)
        if self.num_costs != 1:
            raise ConfigError(f"algo meta-cpo: one cost constraint (CPO's closed form); the suite has "
                              f"{self.num_costs}")
        if cfg.outer_step != "trpo":
            raise ConfigError("outer_step: meta-cpo takes a trust-region outer step; accepted trpo")

    # ---- the inner step: CPO from the task's current policy ---------------------------
    def inner_data(self, policy: GaussianPolicy, roll: Rollout, a: Advantages) -> InnerData:
        obs = torch.as_tensor(roll.obs, dtype=torch.float32)
        act = torch.as_tensor(roll.act, dtype=torch.float32)
        idx = np.sort(self.rng.choice(len(obs), size=min(self.cfg.fvp_states, len(obs)), replace=False))
        with torch.no_grad():
            logp_k = policy.log_prob(obs, act)
        return InnerData(obs, act, logp_k, torch.as_tensor(a.adv, dtype=torch.float32),
                         torch.as_tensor(a.kappa * a.cost_adv[:, 0], dtype=torch.float32),
                         obs[torch.as_tensor(idx)], float(a.cost_value[0] - self.cost_limit[0]))

    def adapt(self, data: Rollout, current: list[TaskPolicy]) -> list[TaskPolicy]:
        """One CPO step per task: the closed form x*(φ_k), then CPO's line search for α."""
        c, advs, out = self.cfg, self.estimate(data), []
        for i, cur in enumerate(current):
            d = self.inner_data(cur.policy, data.task(i), advs[i])
            x, sol = cpo_inner_step(cur.policy, params_of(cur.policy), d, c.inner_max_kl, c.cg_iters,
                                    c.cg_damping, create_graph=False)
            new = copy.deepcopy(cur.policy)
            with torch.no_grad():
                mean_k, log_std_k = cur.policy(d.kl_obs)

            def kl(pol: GaussianPolicy, d: InnerData = d, m: torch.Tensor = mean_k,
                   s: torch.Tensor = log_std_k) -> torch.Tensor:
                mean, log_std = pol(d.kl_obs)
                return gaussian_kl(m, s, mean, log_std).mean()

            info = cpo_line_search(new, x.detach(), sol, d.c, ratio_surrogate(d.obs, d.act, d.logp_k, d.adv),
                                   ratio_surrogate(d.obs, d.act, d.logp_k, d.cost_adv), kl, c.inner_max_kl,
                                   c.line_search_steps)
            d.alpha, d.case = info["alpha"], sol.case
            log = {"kl": info["kl"], "accept_rate": info["accepted"], "recovery": info["recovery"],
                   "nu": info["nu"], "ls_steps": info["ls_steps"]}
            out.append(TaskPolicy(new, log, {"inner": d}))
        return out

    # ---- the outer step ------------------------------------------------------------------
    def meta_step(self, pre: Rollout, post: Rollout, adapted: list[TaskPolicy]) -> dict[str, Any]:
        """A trust-region step on φ along ∇_φ L (through the inner CPO steps), under the
        meta-policy's linearised cost constraint (`outer_constraint`)."""
        c = self.cfg
        inner = [a.state["inner"] for a in adapted]
        post_data = []
        for i, (a, ad) in enumerate(zip(self.estimate(post), adapted)):
            roll = post.task(i)
            obs = torch.as_tensor(roll.obs, dtype=torch.float32)
            act = torch.as_tensor(roll.act, dtype=torch.float32)
            with torch.no_grad():
                logp = ad.policy.log_prob(obs, act)
            post_data.append(PostData(obs, act, logp, torch.as_tensor(a.adv, dtype=torch.float32)))

        def surrogate(pol: GaussianPolicy) -> torch.Tensor:
            return meta_objective(pol, inner, post_data, c.inner_max_kl, c.cg_iters, c.cg_damping)

        # the meta-policy's cost surrogate: the mean over tasks of κ Ê_{D_τ}[(π_φ/π_φ_k) A_c]
        obs = torch.cat([d.obs for d in inner])
        act = torch.cat([d.act for d in inner])
        logp_k = torch.cat([d.logp_k for d in inner])
        weights = torch.cat([d.cost_adv * len(obs) / (len(inner) * len(d.obs)) for d in inner])
        cost_sur = ratio_surrogate(obs, act, logp_k, weights)
        c_bar = float(np.mean([d.c for d in inner]))
        idx = np.sort(self.rng.choice(len(pre.obs), size=min(c.fvp_states, len(pre.obs)), replace=False))
        kl_obs = torch.as_tensor(pre.obs[idx], dtype=torch.float32)
        with torch.no_grad():
            mean_k, log_std_k = self.policy(kl_obs)

        def kl(pol: GaussianPolicy) -> torch.Tensor:
            mean, log_std = pol(kl_obs)
            return gaussian_kl(mean_k, log_std_k, mean, log_std).mean()

        if c.outer_constraint:
            info = cpo_step(self.policy, surrogate, cost_sur, kl, c_bar, c.max_kl, c.cg_iters, c.cg_damping,
                            c.line_search_steps)
        else:
            info = trpo_step(self.policy, surrogate, kl, c.max_kl, c.cg_iters, c.cg_damping,
                             c.line_search_steps)
        return {"outer_accepted": info["accepted"], "outer_kl": info["kl"],
                "outer_recovery": info.get("recovery", 0.0), "outer_nu": info.get("nu", 0.0)}
