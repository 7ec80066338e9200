"""The trust-region policy step (TRPO, Schulman et al. 2015), shared by every algorithm
that takes one: the meta-policy's outer step (SPEC §2.6 step 3) and the baselines.

Natural gradient by conjugate gradient on Fisher-vector products (the Hessian of the
KL), step size sqrt(2·max_kl / sᵀFs), backtracking line search until the KL bound holds
and the surrogate improves. `surrogate(policy)` is a scalar to maximise whose gradient
at the current parameters is the step direction; `kl(policy)` is E_s[KL(π_old‖π)].
"""

from __future__ import annotations

from typing import Callable

import torch

from safemeta.nn.policy import GaussianPolicy

Objective = Callable[[GaussianPolicy], torch.Tensor]

# The line search accepts a step whose KL exceeds max_kl by this factor: the quadratic
# model of the KL that sized the step underestimates it a little (as in OpenAI's TRPO).
KL_TOLERANCE = 1.5


def flat_grad(y: torch.Tensor, params: list[torch.Tensor], create_graph: bool = False,
              retain_graph: bool | None = None) -> torch.Tensor:
    grads = torch.autograd.grad(y, params, create_graph=create_graph, retain_graph=retain_graph,
                                allow_unused=True)
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]
    )


def conjugate_gradient(
    fvp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int, rtol: float | None = None
) -> torch.Tensor:
    """x ≈ F⁻¹b by at most `iters` iterations from x = 0. Stops once r·r < 1e-10, or with
    `rtol` once ‖r‖ ≤ rtol·‖b‖ (relative: CPO's closed form divides by bᵀF⁻¹b whatever the
    scale of b). Plain tensor operations: differentiable when fvp and b are."""
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r @ r
    stop = None if rtol is None else rtol**2 * float(rr.detach())
    eps = 1e-12 if rtol is None else 0.0
    for _ in range(iters):
        if stop is not None and float(rr.detach()) <= stop:
            break
        fp = fvp(p)
        alpha = rr / (p @ fp + eps)
        x, r = x + alpha * p, r - alpha * fp
        rr_new = r @ r
        if stop is None and rr_new < 1e-10:
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

    # ∇KL once with its graph kept; each Fisher-vector product differentiates it again (as
    # pytorch-maml-rl): a MAML-style KL then recomputes its inner steps once, not per CG iteration
    grad_kl = flat_grad(kl(policy), params, create_graph=True)

    def fvp(v: torch.Tensor) -> torch.Tensor:  # Fisher-vector product via the KL Hessian
        return flat_grad(grad_kl @ v, params, retain_graph=True) + damping * v

    s = conjugate_gradient(fvp, g, cg_iters)
    step = torch.sqrt(2 * max_kl / (s @ fvp(s) + 1e-12)) * s
    theta = policy.flat_params().detach().clone()
    for k in range(ls_steps):
        policy.set_flat_params(theta + 0.5**k * step)
        with torch.no_grad():
            new, d_kl = float(surrogate(policy)), float(kl(policy))
        if d_kl <= KL_TOLERANCE * max_kl and new > base and torch.isfinite(policy.flat_params()).all():
            return {"accepted": 1.0, "kl": d_kl, "improve": new - base, "ls_steps": float(k)}
    policy.set_flat_params(theta)
    return {"accepted": 0.0, "kl": 0.0, "improve": 0.0, "ls_steps": float(ls_steps)}
