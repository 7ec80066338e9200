"""Exact meta-gradients of E_τ[J_τ(adapted)] for a softmax meta-policy (SPEC §2.6).

`hessian_free_grad` is the paper's estimator with exact quantities:
    ∇_φ J_τ(π_τ) ≈ 1/(1−γ) E_{s~ν^{π_τ}, a~π_τ}[A^{π_τ}(s,a) ∇_φ log π_φ(a|s)],
which for tabular logits is ν_τ(s) π_τ(a|s) A^{π_τ}(s,a)/(1−γ) (E_{π_τ}[A^{π_τ}] = 0).
It is exact when the pre-adaptation advantages and u are held fixed.

`full_grad` differentiates through everything: exact evaluation of π_φ (linear
solves in torch) and the multipliers (implicit function theorem on the active
constraints), so the gap between the two can be measured.
"""

from __future__ import annotations

import numpy as np
import torch

from safemeta.tabular.adapt import make_problem, solve_tabular_dual
from safemeta.tabular.cmdp import CMDP, evaluate, softmax


def adapt_exact(
    m: CMDP, f: np.ndarray, lam: float, lam_c: np.ndarray, delta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Adapted logits, u and η of one exact step from logits f on CMDP m."""
    ev = evaluate(m, softmax(f))
    prob = make_problem(f, ev.A, ev.Ac, ev.nu, ev.Jc, m.d, lam, lam_c, delta, m.gamma)
    sol = solve_tabular_dual(prob)
    new = f + (ev.A - np.tensordot(sol.u, ev.Ac, axes=1)) / sol.eta
    return new, sol.u, sol.eta


def hessian_free_grad(
    m: CMDP, f: np.ndarray, lam: float, lam_c: np.ndarray, delta: np.ndarray
) -> tuple[np.ndarray, float]:
    """The paper's meta-gradient of J_τ(adapted) w.r.t. f, and J_τ(adapted)."""
    new, _, _ = adapt_exact(m, f, lam, lam_c, delta)
    pi = softmax(new)
    ev = evaluate(m, pi)
    return ev.nu[:, None] * pi * ev.A / (1 - m.gamma), ev.J


def policy_grad(m: CMDP, f: np.ndarray, signal: int) -> np.ndarray:
    """Exact ∇_f J of reward (signal = -1) or cost i (signal = i) for softmax logits f."""
    pi = softmax(f)
    ev = evaluate(m, pi)
    A = ev.A if signal < 0 else ev.Ac[signal]
    return ev.nu[:, None] * pi * A / (1 - m.gamma)


# ---------------------------------------------------------------- torch, for the full gradient


def _evaluate_t(m: CMDP, pi: torch.Tensor) -> dict[str, torch.Tensor]:
    P = torch.as_tensor(m.P)
    sig = torch.as_tensor(np.concatenate([m.r[None], m.c], axis=0))
    rho = torch.as_tensor(m.rho)
    M = torch.eye(m.n_states, dtype=torch.float64) - m.gamma * torch.einsum("sa,sat->st", pi, P)
    V = torch.linalg.solve(M, torch.einsum("sa,ksa->sk", pi, sig)).T
    Q = sig + m.gamma * torch.einsum("sat,kt->ksa", P, V)
    A = Q - V[:, :, None]
    nu = (1 - m.gamma) * torch.linalg.solve(M.T, rho)
    return {"A": A[0], "Ac": A[1:], "J": V[0] @ rho, "Jc": V[1:] @ rho, "nu": nu}


def _constraint_t(
    mu: torch.Tensor, logp: torch.Tensor, ev: dict[str, torch.Tensor], m: CMDP,
    lam: float, lam_c: torch.Tensor, delta: torch.Tensor,
) -> torch.Tensor:
    eta = lam + mu @ lam_c
    B = ev["A"] - torch.tensordot(mu, ev["Ac"], dims=1) / (1 - m.gamma)
    logq = torch.log_softmax(logp + B / eta, dim=1)
    q = logq.exp()
    kl = ev["nu"] @ (q * (logq - logp)).sum(1)
    lin = torch.einsum("s,sa,psa->p", ev["nu"], q, ev["Ac"]) / (1 - m.gamma)
    return ev["Jc"] - torch.as_tensor(m.d) - delta + lin + lam_c * kl


def adapted_return_t(
    m: CMDP, f: torch.Tensor, lam: float, lam_c: np.ndarray, delta: np.ndarray,
    hold_fixed: bool = False,
) -> torch.Tensor:
    """J_τ(adapted from f) as a differentiable function of f. With `hold_fixed`, the
    pre-adaptation advantages and u are constants (the paper's approximation)."""
    lc, dl = torch.as_tensor(lam_c, dtype=torch.float64), torch.as_tensor(delta, dtype=torch.float64)
    logp = torch.log_softmax(f, dim=1)
    ev = _evaluate_t(m, logp.exp())
    if hold_fixed:
        ev = {k: v.detach() for k, v in ev.items()}
    e = {k: v.detach().numpy() for k, v in ev.items()}
    prob = make_problem(f.detach().numpy(), e["A"], e["Ac"], e["nu"], e["Jc"], m.d, lam, lam_c,
                        delta, m.gamma)
    mu = torch.as_tensor(solve_tabular_dual(prob).mu)
    active = mu > 0
    if active.any() and not hold_fixed:
        # Implicit function theorem on g_A(μ_A, f) = 0: value μ*, gradient −H⁻¹ ∂g_A/∂f.
        g = lambda x: _constraint_t(x, logp.detach(), {k: v.detach() for k, v in ev.items()},  # noqa: E731
                                    m, lam, lc, dl)[active]
        H = torch.autograd.functional.jacobian(g, mu)[:, active]
        g_f = _constraint_t(mu, logp, ev, m, lam, lc, dl)[active]
        step = torch.linalg.solve(H, g_f - g_f.detach())
        mu = mu.clone()
        mu[active] = mu[active] - step
    eta = lam + mu @ lc
    new = f + (ev["A"] - torch.tensordot(mu, ev["Ac"], dims=1) / (1 - m.gamma)) / eta
    return _evaluate_t(m, torch.softmax(new, dim=1))["J"]


def full_grad(
    m: CMDP, f: np.ndarray, lam: float, lam_c: np.ndarray, delta: np.ndarray,
    hold_fixed: bool = False,
) -> np.ndarray:
    """Exact gradient of J_τ(adapted from f) w.r.t. f (through evaluation and u)."""
    ft = torch.tensor(f, dtype=torch.float64, requires_grad=True)
    adapted_return_t(m, ft, lam, lam_c, delta, hold_fixed).backward()
    assert ft.grad is not None
    return ft.grad.numpy()
