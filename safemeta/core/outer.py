"""The meta-policy's outer step (SPEC §2.6 step 3): TRPO-style natural gradient with a
KL bound (conjugate gradient + backtracking line search), or a first-order clipped step.

`surrogate(policy)` returns a scalar to maximise whose gradient at the current
parameters is the step direction (the Hessian-free meta-gradient, or minus a cost
gradient for the CRPO cost step); `kl(policy)` is E_s[KL(π_old‖π)] on the states.
"""

from __future__ import annotations

from typing import Callable

import torch

from safemeta.nn.policy import GaussianPolicy

Objective = Callable[[GaussianPolicy], torch.Tensor]


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


def flat_grad(y: torch.Tensor, params: list[torch.Tensor], create_graph: bool = False) -> torch.Tensor:
    grads = torch.autograd.grad(y, params, create_graph=create_graph, allow_unused=True)
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]
    )


def conjugate_gradient(
    fvp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int
) -> torch.Tensor:
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r @ r
    for _ in range(iters):
        fp = fvp(p)
        alpha = rr / (p @ fp + 1e-12)
        x, r = x + alpha * p, r - alpha * fp
        rr_new = r @ r
        if rr_new < 1e-10:
            break
        p, rr = r + (rr_new / rr) * p, rr_new
    return x


def trpo_step(
    policy: GaussianPolicy,
    surrogate: Objective,
    kl: Objective,
    max_kl: float,
    cg_iters: int = 10,
    damping: float = 0.1,
    ls_steps: int = 10,
) -> dict[str, float]:
    """Natural-gradient step of size sqrt(2·max_kl / sᵀFs), backtracking until the KL
    bound holds and the surrogate improves; parameters unchanged when nothing does."""
    params = [p for p in policy.parameters()]
    with torch.no_grad():
        base = float(surrogate(policy))
    g = flat_grad(surrogate(policy), params)
    if not torch.isfinite(g).all() or g.norm() == 0:
        return {"accepted": 0.0, "kl": 0.0, "improve": 0.0, "ls_steps": 0.0}

    def fvp(v: torch.Tensor) -> torch.Tensor:  # Fisher-vector product via the KL Hessian
        grad_kl = flat_grad(kl(policy), params, create_graph=True)
        return flat_grad(grad_kl @ v, params) + damping * v

    s = conjugate_gradient(fvp, g, cg_iters)
    step = torch.sqrt(2 * max_kl / (s @ fvp(s) + 1e-12)) * s
    theta = policy.flat_params().detach().clone()
    for k in range(ls_steps):
        policy.set_flat_params(theta + 0.5**k * step)
        with torch.no_grad():
            new, d_kl = float(surrogate(policy)), float(kl(policy))
        if d_kl <= 1.5 * max_kl and new > base and torch.isfinite(policy.flat_params()).all():
            return {"accepted": 1.0, "kl": d_kl, "improve": new - base, "ls_steps": float(k)}
    policy.set_flat_params(theta)
    return {"accepted": 0.0, "kl": 0.0, "improve": 0.0, "ls_steps": float(ls_steps)}


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
