"""Hyperparameters and bounds of the paper's theorem (SPEC §2.5, slides "Theoretical guarantee").

    λ      = 2γαA^max/(1−γ)
    λ_{c_i} = 2γαA_{c_i}^max/(1−γ)²
    δ_{c_i} = 4γαA_{c_i}^max R(P(Γ))/(1−γ)² − ε,   ε ∈ [0, 4γαA_{c_i}^max R/(1−γ)²]

α bounds max_s KL_s by α E_ν[KL_s]; α = 1/min_s ν(s) always does, which is how the
tabular tests obtain the guarantees exactly. δ = 0 (ε at its maximum) is the
"safety guaranteed" case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from safemeta import checks


@dataclass(frozen=True)
class TheoryParams:
    lam: float
    lam_c: np.ndarray  # (p,)
    delta: np.ndarray  # (p,)
    optimality_gap_coef: float  # 4γαA^max/(1−γ)²: times Var^ε(P(Γ)) bounds the optimality gap
    violation_bound: np.ndarray  # (p,) 4γαA_c^max R/(1−γ)² − ε: bound on J_c − d

    def optimality_gap(self, variance: float) -> float:
        """The theorem's bound on E_τ[J_τ(π*_[ε])] − E_τ[J_τ(adapted)] for Var^ε(P(Γ))."""
        return self.optimality_gap_coef * checks.nonneg("variance", variance)


def theory_params(
    alpha: float,
    a_max: float,
    a_c_max: object,
    radius: float = 0.0,
    gamma: float = 0.99,
    eps: object | None = None,
) -> TheoryParams:
    """λ, λ_c, δ and the theorem's two bounds. `eps=None` takes ε at its maximum (δ = 0)."""
    g = checks.gamma(gamma)
    al = checks.nonneg("alpha", alpha, strict=True)
    am = checks.nonneg("a_max", a_max)
    acm = np.atleast_1d(checks.array("a_c_max", np.atleast_1d(a_c_max), (None,)))
    if np.any(acm < 0):
        raise ValueError(f"a_c_max: expected values >= 0, got {acm}")
    R = checks.nonneg("radius", radius)
    eps_max = 4 * g * al * acm * R / (1 - g) ** 2
    e = eps_max if eps is None else np.broadcast_to(np.asarray(eps, dtype=float), acm.shape)
    if np.any(~np.isfinite(e)) or np.any(e < 0) or np.any(e > eps_max + 1e-12):
        raise ValueError(f"eps: expected values in [0, {eps_max.tolist()}], got {eps!r}")
    delta = np.maximum(eps_max - e, 0.0)
    return TheoryParams(
        lam=2 * g * al * am / (1 - g),
        lam_c=2 * g * al * acm / (1 - g) ** 2,
        delta=delta,
        optimality_gap_coef=4 * g * al * am / (1 - g) ** 2,
        violation_bound=delta.copy(),
    )
