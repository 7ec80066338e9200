"""Tabular constrained MDPs and their exact evaluation by linear solves (SPEC §4.3).

Returns are discounted sums from the start distribution: J = ρ·V. The normalised
discounted visitation is ν = (1−γ) ρᵀ(I − γP_π)⁻¹, so that J(π') − J(π) =
E_{s~ν^{π'}, a~π'}[A^π(s,a)]/(1−γ) (the performance-difference lemma behind SPEC §2.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from safemeta import checks


@dataclass(frozen=True)
class CMDP:
    """P (S,A,S) transitions, r (S,A) reward, c (p,S,A) costs, rho (S,) start, d (p,) limits."""

    P: np.ndarray
    r: np.ndarray
    c: np.ndarray
    rho: np.ndarray
    d: np.ndarray
    gamma: float

    def __post_init__(self) -> None:
        S, A = checks.array("r", self.r, (None, None)).shape
        P = checks.array("P", self.P, (S, A, S))
        checks.distribution("P", P)
        checks.array("c", self.c, (None, S, A))
        rho = checks.array("rho", self.rho, (S,))
        checks.distribution("rho", rho)
        checks.array("d", self.d, (np.shape(self.c)[0],))
        checks.gamma(self.gamma)

    @property
    def n_states(self) -> int:
        return self.r.shape[0]

    @property
    def n_actions(self) -> int:
        return self.r.shape[1]

    @property
    def n_costs(self) -> int:
        return self.c.shape[0]


@dataclass(frozen=True)
class Evaluation:
    """Exact quantities of one policy: reward first, then per cost (leading axis p)."""

    V: np.ndarray  # (S,)
    Q: np.ndarray  # (S, A)
    A: np.ndarray  # (S, A)
    J: float
    Vc: np.ndarray  # (p, S)
    Qc: np.ndarray  # (p, S, A)
    Ac: np.ndarray  # (p, S, A)
    Jc: np.ndarray  # (p,)
    nu: np.ndarray  # (S,) normalised discounted visitation


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def evaluate(m: CMDP, pi: np.ndarray) -> Evaluation:
    """Exact V, Q, A, J for reward and costs and the visitation ν of policy `pi` (S, A)."""
    S = m.n_states
    pi = checks.array("pi", pi, (S, m.n_actions))
    checks.distribution("pi", pi)
    P_pi = np.einsum("sa,sat->st", pi, m.P)
    M = np.eye(S) - m.gamma * P_pi
    signals = np.concatenate([m.r[None], m.c], axis=0)  # (1+p, S, A)
    r_pi = np.einsum("sa,ksa->sk", pi, signals)
    V = np.linalg.solve(M, r_pi).T  # (1+p, S)
    Q = signals + m.gamma * np.einsum("sat,kt->ksa", m.P, V)
    A = Q - V[:, :, None]
    J = V @ m.rho
    nu = (1 - m.gamma) * np.linalg.solve(M.T, m.rho)
    return Evaluation(V[0], Q[0], A[0], float(J[0]), V[1:], Q[1:], A[1:], J[1:], nu)
