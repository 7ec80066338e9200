"""The CPO step (Achiam et al. 2017, §6 and Appendix 10.2): a trust-region policy step
with one linearised cost constraint, solved in closed form, then a backtracking line search.

With g the gradient of the reward surrogate, b the gradient of the cost surrogate (in
cost-return units), F the Fisher matrix (the Hessian of the KL), c = J_c(π_k) − d and the
trust region δ, the step x solves

    maximise_x  gᵀx   subject to   c + bᵀx ≤ 0,   ½ xᵀF x ≤ δ.

With q = gᵀF⁻¹g, r = gᵀF⁻¹b, s = bᵀF⁻¹b (two conjugate-gradient solves) the dual is a
problem in two scalars (λ for the trust region, ν for the cost), and

    x = (F⁻¹g − ν F⁻¹b) / λ                          when the problem is feasible,
    x = −sqrt(2δ / s) F⁻¹b                           (recovery) when no point of the trust
                                                     region satisfies the linearised constraint.

`cpo_multipliers` is that solve: a pure function of (q, r, s, c, δ), written with plain
arithmetic so that it runs on floats (tested against a convex solver) and on tensors (the
Meta-CPO inner step is differentiated through it). The sign convention here is the
maximisation one: r enters ν* = (λc + r)₊/s (Achiam's appendix states the minimisation
form, where r changes sign).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from safemeta.nn.policy import GaussianPolicy
from safemeta.updates.trpo import KL_TOLERANCE, Objective, conjugate_gradient, flat_grad

# The five situations of the closed form (OmniSafe's numbering of Achiam's cases).
RECOVERY = 0  # c > 0 and the trust region does not reach c + bᵀx ≤ 0: purely decrease cost
INFEASIBLE_START = 1  # c ≥ 0, the constraint can be met inside the trust region
ACTIVE = 2  # c < 0, the constraint may bind inside the trust region
INACTIVE = 3  # c < 0 and the whole trust region satisfies the linearised constraint: TRPO
NO_COST_GRADIENT = 4  # b ≈ 0 (s below S_MIN) and c ≤ 0: TRPO

S_MIN = 1e-12  # bᵀF⁻¹b below this: the cost surrogate has no usable direction
EPS = 1e-8  # guards 1/λ when g is (anti)parallel to b and λ* = 0
# Relative slack of the line search's cost test: a step on the boundary bᵀx = −c of the
# linearised constraint must not be rejected for rounding alone.
COST_RTOL = 1e-6

# Conjugate gradient stops once ‖r‖ ≤ CG_RTOL·‖b‖, relative (TRPO's default stops at an
# absolute ‖r‖² < 1e-10, i.e. ‖r‖ ≈ 1e-5 whatever the scale of g and b): the closed form
# divides by bᵀF⁻¹b, and Meta-CPO differentiates through the iterations.
CG_RTOL = 1e-10

Scalar = Any  # float or 0-d tensor: the solve runs on both


@dataclass(frozen=True)
class CPOSolution:
    """Multipliers of the closed form: λ (trust region), ν (cost) and which case applied."""

    case: int
    lam: Scalar
    nu: Scalar


def cpo_multipliers(q: Scalar, r: Scalar, s: Scalar, c: float, delta: float) -> CPOSolution:
    """λ*, ν* of maximise gᵀx s.t. c + bᵀx ≤ 0, ½xᵀFx ≤ δ (Achiam et al. 2017, App. 10.2).

    The dual is min over λ, ν ≥ 0 of D = (q − 2νr + ν²s)/(2λ) + λδ − νc (x = F⁻¹(g − νb)/λ),
    written here as the maximisation of f = −D. For ν = (λc + r)/s > 0 (set Λ_a) it is
        f_a(λ) = −½(A/λ + Bλ) + rc/s,  A = q − r²/s,  B = 2δ − c²/s,  optimum sqrt(A/B);
    for ν = 0 (set Λ_b: λc + r ≤ 0) it is
        f_b(λ) = −½(q/λ + 2δλ),  optimum sqrt(q/(2δ)).
    Each optimum is projected onto its set and the better one is kept. Branches are chosen
    on float values; values stay expressions of q, r, s (differentiable when tensors)."""
    fq, fr, fs = _val(q), _val(r), _val(s)
    lam_trpo = (q / (2 * delta)) ** 0.5
    if fs <= S_MIN:
        if c > 0:  # no direction lowers the cost: the recovery step is zero
            return CPOSolution(RECOVERY, 0.0, 0.0)
        return CPOSolution(NO_COST_GRADIENT, lam_trpo, 0.0)
    a_ = q - r**2 / s
    b_ = 2 * delta - c**2 / s
    fb = _val(b_)
    if c < 0 and fb < 0:
        return CPOSolution(INACTIVE, lam_trpo, 0.0)
    if c > 0 and fb < 0:
        return CPOSolution(RECOVERY, 0.0, (2 * delta / s) ** 0.5)
    case = INFEASIBLE_START if c >= 0 else ACTIVE
    # Λ_a = {λ ≥ 0: λc + r > 0}, Λ_b = {λ ≥ 0: λc + r ≤ 0}; the boundary is λ = −r/c
    bound = -r / c if c != 0 else None
    fbound = None if bound is None else _val(bound)
    if c > 0:
        set_a = (bound if fbound > 0 else 0.0, None)
        set_b = (0.0, bound) if fbound >= 0 else None
    elif c < 0:
        set_a = (0.0, bound) if fbound > 0 else None
        set_b = (bound if fbound > 0 else 0.0, None)
    else:
        set_a, set_b = ((0.0, None), None) if fr > 0 else (None, (0.0, None))
    best: tuple[float, Scalar] | None = None
    if set_a is not None:
        lam_a = _clip(a_ / b_ if fb > 0 else None, set_a)
        fa_val = _f_a(_val(lam_a), _val(a_), fb, fr, c, fs)
        best = (fa_val, lam_a)
    if set_b is not None:
        lam_b = _clip(q / (2 * delta), set_b)
        fb_val = -0.5 * (fq / max(_val(lam_b), EPS) + 2 * delta * _val(lam_b))
        if best is None or fb_val > best[0]:
            best = (fb_val, lam_b)
    assert best is not None  # Λ_a ∪ Λ_b = [0, ∞)
    lam = best[1]
    nu = (lam * c + r) / s
    if _val(nu) <= 0:
        nu = 0.0
    return CPOSolution(case, lam, nu)


def _val(x: Scalar) -> float:
    """The value of a float or tensor (detached: branch decisions carry no gradient)."""
    return x.detach().item() if isinstance(x, torch.Tensor) else float(x)


def _clip(square: Scalar | None, interval: tuple[Scalar, Scalar | None]) -> Scalar:
    """sqrt(square) projected onto [lo, hi] (hi None: unbounded; square None: +∞)."""
    lo, hi = interval
    if square is None or _val(square) == float("inf"):
        return hi if hi is not None else 1e12
    x = square**0.5
    if _val(x) < _val(lo):
        return lo
    if hi is not None and _val(x) > _val(hi):
        return hi
    return x


def _f_a(lam: float, a_: float, b_: float, r: float, c: float, s: float) -> float:
    return -0.5 * (a_ / max(lam, EPS) + b_ * lam) + r * c / s


def cpo_direction(
    g: torch.Tensor,
    b: torch.Tensor,
    fvp: Callable[[torch.Tensor], torch.Tensor],
    c: float,
    delta: float,
    cg_iters: int,
) -> tuple[torch.Tensor, CPOSolution]:
    """The closed-form step x (flat) and its multipliers. Differentiable in g, b and the
    Fisher products when those carry a graph (CG is a fixed sequence of tensor operations)."""
    xg = conjugate_gradient(fvp, g, cg_iters, CG_RTOL)
    xb = conjugate_gradient(fvp, b, cg_iters, CG_RTOL)
    q, r, s = g @ xg, g @ xb, b @ xb
    sol = cpo_multipliers(q, r, s, c, delta)
    if sol.case == RECOVERY:
        return -sol.nu * xb, sol
    lam = sol.lam if _val(sol.lam) > EPS else EPS
    return (xg - sol.nu * xb) / lam, sol


def cpo_line_search(
    policy: GaussianPolicy,
    step: torch.Tensor,
    sol: CPOSolution,
    c: float,
    reward_sur: Objective,
    cost_sur: Objective,
    kl: Objective,
    max_kl: float,
    ls_steps: int,
) -> dict[str, float]:
    """Backtrack θ_k + 0.5^j x until: finite; E_s[KL(π_k‖π)] ≤ KL_TOLERANCE·δ; the cost
    surrogate's change does not break the linearised constraint (Δ ≤ max(−c, 0)); and the
    reward surrogate improves, or, from an infeasible π_k (recovery or c ≥ 0), the cost
    surrogate falls. Parameters unchanged (θ_k) when nothing is accepted."""
    theta = policy.flat_params().detach().clone()
    with torch.no_grad():
        r0, c0 = _val(reward_sur(policy)), _val(cost_sur(policy))
    out = {"accepted": 0.0, "kl": 0.0, "improve": 0.0, "cost_change": 0.0, "ls_steps": float(ls_steps),
           "alpha": 0.0, "case": float(sol.case), "nu": _val(sol.nu),
           "recovery": float(sol.case == RECOVERY)}
    if not torch.isfinite(step).all() or step.abs().max() == 0:
        return out
    infeasible = sol.case in (RECOVERY, INFEASIBLE_START)
    for j in range(ls_steps):
        alpha = 0.5**j
        policy.set_flat_params(theta + alpha * step.detach())
        with torch.no_grad():
            r1, c1, d_kl = _val(reward_sur(policy)), _val(cost_sur(policy)), _val(kl(policy))
        d_cost = c1 - c0
        ok = torch.isfinite(policy.flat_params()).all() and d_kl <= KL_TOLERANCE * max_kl
        slack = max(-c, 0.0) + COST_RTOL * max(abs(c), abs(c0), 1.0)
        ok = ok and d_cost <= slack and (d_cost < 0 if infeasible else r1 > r0)
        if ok:
            out.update(accepted=1.0, kl=d_kl, improve=r1 - r0, cost_change=d_cost, ls_steps=float(j),
                       alpha=alpha)
            return out
    policy.set_flat_params(theta)
    return out


def cpo_step(
    policy: GaussianPolicy,
    reward_sur: Objective,
    cost_sur: Objective,
    kl: Objective,
    c: float,
    max_kl: float,
    cg_iters: int = 10,
    damping: float = 0.1,
    ls_steps: int = 10,
) -> dict[str, float]:
    """One CPO step on `policy` in place: gradients g, b at θ_k, the closed form on
    Fisher-vector products (damped, as `trpo_step`), then `cpo_line_search`.

    `cost_sur(policy)` is the cost surrogate in the units of c (κ Ê[(π/π_k) A_c]); `kl` is
    E_s[KL(π_k‖π)]."""
    params = list(policy.parameters())
    g = flat_grad(reward_sur(policy), params)
    b = flat_grad(cost_sur(policy), params)
    if not (torch.isfinite(g).all() and torch.isfinite(b).all()):
        return cpo_line_search(policy, torch.zeros_like(g), CPOSolution(INACTIVE, 0.0, 0.0), c, reward_sur,
                               cost_sur, kl, max_kl, ls_steps)

    def fvp(v: torch.Tensor) -> torch.Tensor:  # Fisher-vector product via the KL Hessian
        grad_kl = flat_grad(kl(policy), params, create_graph=True)
        return flat_grad(grad_kl @ v, params) + damping * v

    step, sol = cpo_direction(g, b, fvp, c, max_kl, cg_iters)
    return cpo_line_search(policy, step, sol, c, reward_sur, cost_sur, kl, max_kl, ls_steps)
