"""Policy-gradient pieces shared by the algorithms: the importance-ratio surrogate and
the first-order (Adam, gradient-norm clipped) policy step."""

from __future__ import annotations

import torch

from safemeta.nn.policy import GaussianPolicy
from safemeta.updates.trpo import Objective


def ratio_surrogate(
    obs: torch.Tensor, act: torch.Tensor, logp_old: torch.Tensor, weights: torch.Tensor
) -> Objective:
    """L(φ') = Ê[(π_φ'(a|s)/π_φ(a|s)) · w]; at φ' = φ its gradient is Ê[w ∇_φ log π_φ(a|s)].

    With w = A^{π_τ} on post-adaptation data this is the Hessian-free meta-gradient of
    SPEC §2.6 (π_τ ∝ π_φ · exp(B/η) with u held fixed, so π_τ'/π_τ ≈ π_φ'/π_φ); with
    w = −A_c on π_φ's own data it is the CRPO cost step.
    """

    def surrogate(pol: GaussianPolicy) -> torch.Tensor:
        return (torch.exp(pol.log_prob(obs, act) - logp_old) * weights).mean()

    return surrogate


def first_order_step(
    policy: GaussianPolicy,
    surrogate: Objective,
    kl: Objective,
    optim: torch.optim.Optimizer,
    max_grad_norm: float,
) -> dict[str, float]:
    """One Adam step on −surrogate with the gradient norm clipped."""
    theta = policy.flat_params().detach().clone()
    optim.zero_grad()
    (-surrogate(policy)).backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    optim.step()
    if not torch.isfinite(policy.flat_params()).all():
        policy.set_flat_params(theta)
        return {"accepted": 0.0, "kl": 0.0, "improve": 0.0, "ls_steps": 0.0}
    with torch.no_grad():
        return {"accepted": 1.0, "kl": float(kl(policy)), "improve": 0.0, "ls_steps": 0.0}
