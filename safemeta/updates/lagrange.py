"""The Lagrange multiplier of cost constraints J_c ≤ d, a small object of its own
(OmniSafe's `omnisafe.common.lagrange.Lagrange` is the model).

The Lagrangian of max_π J(π) s.t. J_c(π) ≤ d is L(π, λ) = J(π) − λ·(J_c(π) − d), λ ≥ 0.
The multiplier takes a projected ascent step on λ·(J_c − d) (a descent step on OmniSafe's
`lambda_loss = −λ·(J_c − d)`): it rises while the measured cost exceeds the limit, falls
while it is below, and is projected back to [0, upper] after every step. The step is
plain gradient ascent ("sgd": λ ← λ + lr·(J_c − d)) or Adam on that gradient ("adam",
OmniSafe's default, with its defaults lr 0.035 and initial value 0.001): Adam's step is
about lr whatever the cost's units, and its moments are not reset by the projection, as
in OmniSafe. One multiplier per constraint (vectors of length p).
"""

from __future__ import annotations

from typing import Any

import numpy as np

OPTIMIZERS = ("adam", "sgd")
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which OmniSafe uses
ADAM_EPS = 1e-8


class Lagrange:
    """λ ≥ 0 per constraint, updated from the measured cost J_c by `update`."""

    def __init__(
        self,
        cost_limit: np.ndarray | float,
        lr: float = 0.035,
        init: float = 0.001,
        optimizer: str = "adam",
        upper: float | None = None,
    ) -> None:
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: got {optimizer!r}; accepted {', '.join(OPTIMIZERS)}")
        self.cost_limit = np.atleast_1d(np.asarray(cost_limit, np.float64)).copy()
        self.lr, self.optimizer, self.upper = float(lr), optimizer, upper
        self.lam = np.full_like(self.cost_limit, min(max(init, 0.0), np.inf if upper is None else upper))
        self.m = np.zeros_like(self.lam)  # Adam's first and second moments and step count
        self.v = np.zeros_like(self.lam)
        self.t = 0

    def update(self, cost: np.ndarray | float) -> np.ndarray:
        """One projected ascent step on λ·(J_c − d) from the measured cost J_c; the new λ."""
        g = np.broadcast_to(np.asarray(cost, np.float64), self.lam.shape) - self.cost_limit  # ∂/∂λ
        if self.optimizer == "sgd":
            step = self.lr * g
        else:
            b1, b2 = ADAM_BETAS
            self.t += 1
            self.m = b1 * self.m + (1 - b1) * g
            self.v = b2 * self.v + (1 - b2) * g * g
            m_hat, v_hat = self.m / (1 - b1**self.t), self.v / (1 - b2**self.t)
            step = self.lr * m_hat / (np.sqrt(v_hat) + ADAM_EPS)
        self.lam = np.clip(self.lam + step, 0.0, np.inf if self.upper is None else self.upper)
        return self.lam.copy()

    def state_dict(self) -> dict[str, Any]:
        return {"lam": self.lam.copy(), "m": self.m.copy(), "v": self.v.copy(), "t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam = np.asarray(state["lam"], np.float64).copy()
        self.m = np.asarray(state["m"], np.float64).copy()
        self.v = np.asarray(state["v"], np.float64).copy()
        self.t = int(state["t"])
