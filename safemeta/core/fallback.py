"""A fallback toward a known-safe policy (issue 10; the mixture of Ni & Kamgarpour, ICML 2026).

The held-out safety test (`core/safety_test.py`) hands out a policy π together with a
(1 − α) upper bound U on its expected episode cost J_c(π): the candidate's bound when it
passed, π_k's own bound when π_k was kept. When U exceeds d + δ (π_k itself over the limit,
or too few episodes to show otherwise), keeping π_k is not safe. Where the suite knows a
policy π_s with J_c(π_s) ≤ c_s < d + δ (`Suite.known_safe`: the zero action of an
energy-cost robot, c_s = 0; the Point's drive-to-x = 0 controller on point-circle), the
policy handed out is instead the per-episode mixture

    π_β: each episode runs π with probability β, else π_s,   β = (d + δ − c_s) / (U − c_s),

whose expected cost is exactly β J_c(π) + (1 − β) J_c(π_s) ≤ β U + (1 − β) c_s = d + δ, with
the probability of U's bound. Per constraint; β is the smallest over constraints, in
[0, 1]; β = 1 when U ≤ d + δ (no mixture). Only π's episodes adapt it further (the known-
safe policy's are not its samples); its next bound comes from those, so the mixture
leans back toward π as π's bound falls.

Meta-test only (`MetaLearner.hand_out`): the meta-policy π_φ has no bound at step 0, and
meta-training's inner step is not a policy handed out. Off by default (`fallback = off`).
"""

from __future__ import annotations

import numpy as np


def mixture_weight(bound: np.ndarray, safe_bound: np.ndarray, limit: np.ndarray) -> float | None:
    """The largest β with β·bound_j + (1 − β)·safe_bound_j ≤ limit_j on every constraint j, for
    a policy with cost upper bound `bound` (p,) and a known-safe one with `safe_bound` (p,):
    1 when the policy is within every limit already; None when no β is (a constraint that
    both exceed, or whose two requirements conflict), and the policy goes out unmixed. A
    constraint the policy exceeds caps β at (d − c)/(U − c) (0 for an unknown, infinite or
    NaN, bound: the known-safe policy alone); one the known-safe policy exceeds needs β ≥
    (c − d)/(c − U)."""
    bound, safe, limit = (np.asarray(x, np.float64).reshape(-1) for x in (bound, safe_bound, limit))
    if not bound.shape == safe.shape == limit.shape:
        raise ValueError(f"mixture_weight: bounds of {bound.size}, {safe.size} and {limit.size} constraints; "
                         "accepted one value per constraint for each")
    low, high = 0.0, 1.0
    for u, c, d in zip(bound, safe, limit):
        over = not u <= d  # NaN: nothing is known
        if over and not c < d:
            return None
        if over:
            high = min(high, (d - c) / (u - c)) if np.isfinite(u) else 0.0
        elif c > d:
            low = max(low, (c - d) / (c - u))
    return float(high) if low <= high else None
