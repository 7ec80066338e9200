"""Policies evaluated at explicit parameters, for second-order meta-gradients.

The MAML-style baselines (MAML-Lag, Meta-CPO) adapt by a gradient step θ'(φ) from the
meta-parameters φ and differentiate the post-adaptation objective through that step
(Hessian-vector products). `torch.func.functional_call` evaluates the Gaussian MLP at θ'
while keeping the graph back to φ; the observation normaliser (a buffer) is the policy's
own. As in pytorch-maml-rl's MAML-TRPO, the outer TRPO step then takes a surrogate that
recomputes θ'(φ) from the policy's live parameters with `create_graph=True`.
"""

from __future__ import annotations

import copy

import torch
from torch.func import functional_call

from safemeta.nn.policy import GaussianPolicy, gaussian_kl, gaussian_log_prob

Params = dict[str, torch.Tensor]


def params_of(policy: GaussianPolicy) -> Params:
    """The live parameters (gradients flow to them)."""
    return dict(policy.named_parameters())


def forward_with(
    policy: GaussianPolicy, params: Params, obs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, log_std) of the policy at `params`."""
    return functional_call(policy, params, (obs,))


def log_prob_with(
    policy: GaussianPolicy, params: Params, obs: torch.Tensor, act: torch.Tensor
) -> torch.Tensor:
    mean, log_std = forward_with(policy, params, obs)
    return gaussian_log_prob(mean, log_std, act)


def kl_with(policy: GaussianPolicy, params_p: Params, params_q: Params, obs: torch.Tensor) -> torch.Tensor:
    """E_s[KL(π_p(·|s) ‖ π_q(·|s))] over `obs`."""
    mean_p, log_std_p = forward_with(policy, params_p, obs)
    mean_q, log_std_q = forward_with(policy, params_q, obs)
    return gaussian_kl(mean_p, log_std_p, mean_q, log_std_q).mean()


def grad_of(loss: torch.Tensor, params: Params, create_graph: bool) -> Params:
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph, allow_unused=True)
    return {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(params.items(), grads)}


def pg_step(
    policy: GaussianPolicy,
    params: Params,
    obs: torch.Tensor,
    act: torch.Tensor,
    weights: torch.Tensor,
    lr: float,
    create_graph: bool,
) -> Params:
    """One policy-gradient ascent step θ' = θ + lr ∇_θ Ê[log π_θ(a|s) · w] (MAML's inner
    step). With `create_graph` θ' stays a differentiable function of θ."""
    with torch.enable_grad():  # also inside a caller's no_grad (a TRPO line search)
        objective = (log_prob_with(policy, params, obs, act) * weights).mean()
        grads = grad_of(objective, params, create_graph)
    return {k: p + lr * grads[k] for k, p in params.items()}


def policy_at(policy: GaussianPolicy, params: Params) -> GaussianPolicy:
    """A detached copy of `policy` with `params` (to collect data with)."""
    out = copy.deepcopy(policy)
    with torch.no_grad():
        for name, p in out.named_parameters():
            p.copy_(params[name].detach())
    return out
