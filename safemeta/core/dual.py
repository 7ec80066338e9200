"""The sample dual of one safe adaptation step (SPEC §2.2, §2.4 step 2).

With multipliers μ ≥ 0 of the constraints as written in §2.1 with a general
advantage-to-return factor κ (κ = 1/(1−γ) in the SPEC):

    B_μ = A − κ Σ_i μ_i A_{c_i},   η_μ = λ + Σ_i μ_i λ_{c_i}
    D(μ) = η_μ log Ê[exp(B_μ/η_μ)] − Σ_i μ_i (J_{c_i} − d_i − δ_i)
    ∂D/∂μ_i = −g_i(μ),  g_i = J_{c_i} + κ Ê_w[A_{c_i}] + λ_{c_i} KL̂_w − d_i − δ_i

where Ê is the sample mean over the batch (actions from π_k) and the maximiser π_μ is
represented by self-normalised weights w_j ∝ exp(B_μ(s_j, a_j)/η_μ). The slides' u is
κμ (so η = λ + (1−γ) Σ u_i λ_{c_i} when κ = 1/(1−γ)). p = 1: g is non-increasing in μ
and Brent's method finds the root; p > 1: L-BFGS-B on D. Either costs milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq, minimize
from scipy.special import logsumexp


@dataclass
class SampleDual:
    """The sample of one task: advantages under π_k and the constraint data."""

    adv: np.ndarray  # (n,) reward advantage A
    cost_adv: np.ndarray  # (n, p) cost advantages A_c
    cost_value: np.ndarray  # (p,) J_c(π_k)
    cost_limit: np.ndarray  # (p,) d
    lam: float
    lam_c: np.ndarray  # (p,)
    delta: np.ndarray  # (p,)
    kappa: float  # advantage-to-return factor, 1/(1−γ) in the SPEC

    def __post_init__(self) -> None:
        p = self.cost_adv.shape[1]
        for name in ("cost_value", "cost_limit", "lam_c", "delta"):
            arr = np.broadcast_to(np.asarray(getattr(self, name), np.float64), (p,))
            setattr(self, name, arr)
        if not self.lam > 0:
            raise ValueError(f"lam: the sample dual needs λ > 0, got {self.lam}")

    def tilt(self, mu: np.ndarray) -> tuple[np.ndarray, float]:
        """B_μ and η_μ."""
        return self.adv - self.kappa * self.cost_adv @ mu, self.lam + float(self.lam_c @ mu)

    def stats(self, mu: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float]:
        """D(μ), g(μ), weights w, KL̂_w."""
        b, eta = self.tilt(mu)
        z = b / eta
        log_norm = logsumexp(z) - np.log(z.size)
        w = np.exp(z - logsumexp(z))
        kl = float(w @ z - log_norm)
        slack = self.cost_value - self.cost_limit - self.delta
        g = slack + self.kappa * (w @ self.cost_adv) + self.lam_c * kl
        return eta * log_norm - float(mu @ slack), g, w, kl


@dataclass
class SampleDualSolution:
    mu: np.ndarray  # (p,) multipliers of the §2.1 constraints
    u: np.ndarray  # (p,) the slides' u = κμ
    eta: float
    weights: np.ndarray  # (n,) self-normalised weights of π_μ on the sample
    kl: float  # KL̂(π_μ ‖ π_k) on the sample
    surrogate: np.ndarray  # (p,) constraint left side at π_μ: J_c + κÊ_w[A_c] + λ_c KL
    infeasible: bool  # no μ ≤ mu_max satisfies the sample constraints


# Largest multiplier the dual searches: past it the tilt is the least-cost one and the
# sample constraints are reported infeasible.
MU_MAX = 1e6


def solve_sample_dual(prob: SampleDual, mu_max: float = MU_MAX) -> SampleDualSolution:
    """Minimise D(μ) over 0 ≤ μ ≤ mu_max (SPEC §2.2)."""
    p = prob.cost_adv.shape[1]
    zero = np.zeros(p)
    _, g0, _, _ = prob.stats(zero)
    if np.all(g0 <= 0):
        mu = zero  # π_0 = argmax of the unconstrained step is feasible: u = 0
    elif p == 1:
        mu = _root_1d(prob, mu_max)
    else:
        mu = _lbfgsb(prob, mu_max)
    return solution_at(prob, mu)


def solution_at(prob: SampleDual, mu: np.ndarray) -> SampleDualSolution:
    """The tilt, weights and sample constraint values at a given μ."""
    _, g, w, kl = prob.stats(mu)
    return SampleDualSolution(
        mu=mu,
        u=prob.kappa * mu,
        eta=prob.tilt(mu)[1],
        weights=w,
        kl=kl,
        surrogate=g + prob.cost_limit + prob.delta,
        infeasible=bool(np.any(g > 1e-6 * (1 + np.abs(prob.cost_limit)))),
    )


def _root_1d(prob: SampleDual, mu_max: float) -> np.ndarray:
    """g(μ) is non-increasing: bracket the root by doubling, then Brent."""

    def g(m: float) -> float:
        return float(prob.stats(np.array([m]))[1][0])

    hi = max(prob.lam / max(float(prob.lam_c[0]), 1e-12), 1e-3) if prob.lam_c[0] > 0 else 1.0
    while g(hi) > 0:
        if hi >= mu_max:
            return np.array([mu_max])  # infeasible: the least-cost tilt
        hi = min(2 * hi, mu_max)
    return np.array([brentq(g, 0.0, hi, xtol=1e-12, rtol=1e-10)])


def _lbfgsb(prob: SampleDual, mu_max: float) -> np.ndarray:
    p = prob.cost_adv.shape[1]

    def fun(mu: np.ndarray) -> tuple[float, np.ndarray]:
        d, g, _, _ = prob.stats(mu)
        return d, -g

    res = minimize(
        fun,
        np.zeros(p),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, mu_max)] * p,
        options={"ftol": 1e-14, "gtol": 1e-10, "maxiter": 500},
    )
    return np.asarray(res.x, np.float64)
