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


def mixture_weight(bound: np.ndarray, safe_bound: np.ndarray, limit: np.ndarray) -> float:
    """β of the mixture of a policy with cost upper bound `bound` (p,) and a known-safe one
    with `safe_bound` (p,), so that β·bound + (1 − β)·safe_bound ≤ limit (p,) on every
    constraint: 1 when the policy is within the limit already, 0 when the known-safe policy
    itself is not below it (or the policy's bound is unknown, +inf)."""
    bound, safe, limit = (np.broadcast_to(np.asarray(x, np.float64), np.shape(limit)) for x in
                          (bound, safe_bound, limit))
    beta = 1.0
    for u, c, d in zip(bound, safe, limit):
        if u <= d:
            continue
        if not c < d or not np.isfinite(u):  # a NaN or infinite bound states nothing
            return 0.0
        beta = min(beta, (d - c) / (u - c))
    return float(np.clip(beta, 0.0, 1.0))
