"""Exact safe policy adaptation on tabular CMDPs (SPEC §2.1-§2.3).

One step from π_k (logits f) solves

    max_π  E_{ν,π}[A] − λ E_ν[KL(π‖π_k)]
    s.t.   J_{c_i} + E_{ν,π}[A_{c_i}]/(1−γ) + λ_{c_i} E_ν[KL] ≤ d_i + δ_i

in closed form: new logits f + (A − Σ u_i A_{c_i})/η, η = λ + (1−γ) Σ u_i λ_{c_i},
with u from the convex dual D(μ) of SPEC §2.2 (μ = (1−γ) u).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.special import logsumexp

from safemeta import checks

MU_MAX = 1e12  # the dual is declared infeasible when no μ below this satisfies the constraints


@dataclass(frozen=True)
class TabularDual:
    """The data of one adaptation step, checked, in the dual's scaling."""

    logp: np.ndarray  # (S, A) log π_k
    adv: np.ndarray  # (S, A)
    cost_adv: np.ndarray  # (p, S, A)
    nu: np.ndarray  # (S,)
    slack: np.ndarray  # (p,) J_c − d − δ
    lam: float
    lam_c: np.ndarray  # (p,)
    gamma: float

    def tilt(self, mu: np.ndarray) -> tuple[np.ndarray, float]:
        """B_μ/η_μ (S, A) and η_μ."""
        eta = self.lam + float(mu @ self.lam_c)
        B = self.adv - np.tensordot(mu, self.cost_adv, axes=1) / (1 - self.gamma)
        return B / eta, eta

    def policy(self, mu: np.ndarray) -> np.ndarray:
        """log π_μ: the maximiser of the Lagrangian at μ (S, A)."""
        z = self.logp + self.tilt(mu)[0]
        return z - logsumexp(z, axis=1, keepdims=True)

    def value(self, mu: np.ndarray) -> float:
        """D(μ) = E_ν[η log E_{π_k} exp(B/η)] − Σ μ_i (J_{c_i} − d_i − δ_i)."""
        z, eta = self.tilt(mu)
        return float(self.nu @ (eta * logsumexp(self.logp + z, axis=1)) - mu @ self.slack)

    def constraint(self, mu: np.ndarray) -> np.ndarray:
        """g_i(π_μ): constraint i's left side minus its right side; ∂D/∂μ_i = −g_i."""
        logq = self.policy(mu)
        q = np.exp(logq)
        kl = self.nu @ np.sum(q * (logq - self.logp), axis=1)
        lin = np.einsum("s,sa,psa->p", self.nu, q, self.cost_adv) / (1 - self.gamma)
        return self.slack + lin + self.lam_c * kl


@dataclass(frozen=True)
class TabularDualSolution:
    u: np.ndarray  # (p,) multipliers in the slides' scaling
    mu: np.ndarray  # (p,) = (1−γ) u
    eta: float
    g: np.ndarray  # constraint values at the solution (≤ 0 when feasible)
    feasible: bool


def solve_tabular_dual(prob: TabularDual, tol: float = 1e-12) -> TabularDualSolution:
    """μ* = argmin_{μ≥0} D(μ): u = 0 when π_0 is feasible, a bracketing root finder for
    p = 1, L-BFGS-B on the convex dual for p > 1 (SPEC §2.2)."""
    p = prob.slack.shape[0]
    zero = np.zeros(p)
    if np.all(prob.constraint(zero) <= 0):
        mu = zero
    elif p == 1:
        mu = _root_1d(prob, tol)
    else:
        mu = _lbfgsb(prob, tol)
    g = prob.constraint(mu)
    feasible = bool(np.all(g <= 1e-7 * (1 + np.abs(prob.slack))))
    eta = prob.lam + float(mu @ prob.lam_c)
    return TabularDualSolution(u=mu / (1 - prob.gamma), mu=mu, eta=eta, g=g, feasible=feasible)


def _root_1d(prob: TabularDual, tol: float) -> np.ndarray:
    g = lambda m: float(prob.constraint(np.array([m]))[0])  # noqa: E731 - non-increasing in μ
    hi = 1.0
    while g(hi) > 0:
        hi *= 4.0
        if hi > MU_MAX:
            return np.array([MU_MAX])
    lo = hi / 4.0 if hi > 1.0 else 0.0
    return np.array([optimize.brentq(g, lo, hi, xtol=tol * max(1.0, hi), rtol=1e-15, maxiter=500)])


def _lbfgsb(prob: TabularDual, tol: float) -> np.ndarray:
    p = prob.slack.shape[0]
    fun = lambda m: (prob.value(m), -prob.constraint(m))  # noqa: E731
    best = None
    for start in (np.zeros(p), np.ones(p)):
        res = optimize.minimize(
            fun, start, jac=True, method="L-BFGS-B", bounds=[(0.0, MU_MAX)] * p,
            options={"ftol": 1e-15, "gtol": tol, "maxiter": 2000, "maxcor": 20},
        )
        if best is None or res.fun < best.fun:
            best = res
    return _polish(prob, np.asarray(best.x), tol)


def _polish(prob: TabularDual, mu: np.ndarray, tol: float, iters: int = 30) -> np.ndarray:
    """Newton on the active constraints g_A(μ_A) = 0 (KKT of the dual), so that μ is
    exact to machine precision rather than to L-BFGS-B's tolerance."""
    for _ in range(iters):
        g = prob.constraint(mu)
        active = mu > 0
        if not active.any() or np.max(np.abs(g[active])) < tol:
            break
        idx = np.flatnonzero(active)
        H = np.empty((idx.size, idx.size))
        for k, j in enumerate(idx):
            h = 1e-6 * max(1.0, mu[j])
            e = np.zeros_like(mu)
            e[j] = h
            H[:, k] = (prob.constraint(mu + e)[idx] - prob.constraint(mu - e)[idx]) / (2 * h)
        try:
            step = np.linalg.solve(H, g[idx])
        except np.linalg.LinAlgError:
            break
        new = mu.copy()
        new[idx] = np.maximum(mu[idx] - step, 0.0)
        if prob.value(new) > prob.value(mu) + 1e-12 * (1 + abs(prob.value(mu))):
            break  # Newton left the region where it helps; keep the L-BFGS-B point
        mu = new
    return mu


def make_problem(
    logits: object,
    adv: object,
    cost_adv: object,
    visitation: object,
    cost_value: object,
    cost_limit: object,
    lam: object,
    lam_c: object,
    delta: object,
    gamma: object,
) -> TabularDual:
    """Check every argument (ValueError naming it) and build the dual problem."""
    f = checks.array("logits", logits, (None, None))
    S, A = f.shape
    adv_ = checks.array("adv", adv, (S, A))
    cadv = checks.array("cost_adv", cost_adv, (None, S, A))
    p = cadv.shape[0]
    if p < 1:
        raise ValueError("cost_adv: expected at least one cost (p >= 1)")
    nu = checks.array("visitation", visitation, (S,))
    checks.distribution("visitation", nu)
    jc = checks.array("cost_value", cost_value, (p,))
    d = checks.array("cost_limit", cost_limit, (p,))
    lc = checks.array("lam_c", lam_c, (p,))
    if np.any(lc < 0):
        raise ValueError(f"lam_c: expected values >= 0, got {lc}")
    dl = checks.array("delta", delta, (p,))
    if np.any(dl < 0):
        raise ValueError(f"delta: expected values >= 0, got {dl}")
    g = checks.gamma(gamma)
    lam_ = checks.nonneg("lam", lam, strict=True)
    logp = f - logsumexp(f, axis=1, keepdims=True)
    return TabularDual(logp, adv_, cadv, nu, jc - d - dl, lam_, lc, g)


def safe_adapt(
    logits: np.ndarray,
    adv: np.ndarray,
    cost_adv: np.ndarray,
    visitation: np.ndarray,
    cost_value: np.ndarray,
    cost_limit: np.ndarray,
    lam: float,
    lam_c: np.ndarray,
    delta: np.ndarray,
    gamma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One exact safe adaptation step (SPEC §2.1, §7). Returns (new_logits, u).

    Shapes: logits, adv (S, A); cost_adv (p, S, A); visitation (S,); cost_value,
    cost_limit, lam_c, delta (p,). u is in the slides' scaling:
    new_logits = logits + (adv − Σ u_i cost_adv_i)/η, η = λ + (1−γ) Σ u_i λ_{c_i}.
    When no multiplier makes the step feasible (π_k far outside the limits), u is
    the most conservative one found (MU_MAX scale); see `solve_tabular_dual` for the flag.
    """
    prob = make_problem(
        logits, adv, cost_adv, visitation, cost_value, cost_limit, lam, lam_c, delta, gamma
    )
    sol = solve_tabular_dual(prob)
    f = np.asarray(logits, dtype=np.float64)
    new = f + (prob.adv - np.tensordot(sol.u, prob.cost_adv, axes=1)) / sol.eta
    return new, sol.u
