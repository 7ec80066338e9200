"""Value critics for the reward and every cost (SPEC §2.4 step 1).

- `LinearCritic`: the per-task linear feature baseline of MAML / ProMP, features
  (o, o², τ, τ², τ³, 1) of the normalised observation o and τ = t/100, fitted in
  closed form (ridge) to Monte-Carlo returns. Per task, milliseconds, no state.
- `MLPCritic`: a tanh MLP with 1 + p outputs, fitted by Adam to GAE returns; one per
  run (its weights and optimiser are part of the algorithm's state).
Both predict a (n, 1 + p) array: column 0 the reward value, columns 1.. the costs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from safemeta.nn.policy import mlp

# Both critics see time as τ = t / TIME_SCALE, so that τ stays O(1) over the suites'
# horizons (200-1000 steps) and its powers stay well conditioned in the ridge solve.
TIME_SCALE = 100.0


def linear_features(obs: np.ndarray, t: np.ndarray) -> np.ndarray:
    o = np.clip(obs.astype(np.float64), -10, 10)
    tau = (t.astype(np.float64) / TIME_SCALE)[:, None]
    return np.concatenate([o, o**2, tau, tau**2, tau**3, np.ones_like(tau)], axis=1)


class LinearCritic:
    """Ridge regression on `linear_features`, one solve for all 1 + p targets."""

    def __init__(self, reg: float = 1e-5) -> None:
        self.reg = reg
        self.coef: np.ndarray | None = None

    def fit(self, obs: np.ndarray, t: np.ndarray, targets: np.ndarray) -> None:
        # torch (one thread inside the algorithm) rather than numpy's BLAS: a multi-threaded
        # BLAS on small matrices thrashes on a busy 2-core machine
        x = torch.as_tensor(linear_features(obs, t))
        xtx, xty = x.T @ x, x.T @ torch.as_tensor(targets, dtype=torch.float64)
        reg = self.reg
        for _ in range(6):  # raise the ridge until the solve is finite (as ProMP does)
            coef = torch.linalg.solve(xtx + reg * torch.eye(x.shape[1], dtype=torch.float64), xty)
            if bool(torch.isfinite(coef).all()):
                break
            reg *= 10
        self.coef = coef.numpy()

    def predict(self, obs: np.ndarray, t: np.ndarray) -> np.ndarray:
        assert self.coef is not None, "fit the critic first"
        return (torch.as_tensor(linear_features(obs, t)) @ torch.as_tensor(self.coef)).numpy()


class MLPCritic(nn.Module):
    """A tanh MLP value function with 1 + p outputs on normalised observations."""

    def __init__(
        self,
        obs_dim: int,
        num_costs: int,
        hidden: list[int] | tuple[int, ...] = (64, 64),
        lr: float = 1e-3,
        epochs: int = 5,
        minibatch: int = 256,
    ) -> None:
        super().__init__()
        self.net = mlp([obs_dim + 1, *hidden, 1 + num_costs])
        self.optim = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.epochs, self.minibatch = epochs, minibatch
        self.register_buffer("scale", torch.ones(1 + num_costs))

    def _x(self, obs: np.ndarray, t: np.ndarray) -> torch.Tensor:
        dev = self.scale.device
        x = np.concatenate([np.clip(obs, -10, 10), t[:, None] / TIME_SCALE], axis=1)
        return torch.as_tensor(x, dtype=torch.float32, device=dev)

    def fit(
        self, obs: np.ndarray, t: np.ndarray, targets: np.ndarray, rng: np.random.Generator | None = None
    ) -> None:
        rng = rng or np.random.default_rng(0)
        x = self._x(obs, t)
        y = torch.as_tensor(targets, dtype=torch.float32, device=x.device)
        with torch.no_grad():  # targets scaled per output so one loss fits reward and costs
            self.scale.copy_(torch.clamp(y.abs().mean(0), min=1e-3))
        for _ in range(self.epochs):
            for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // self.minibatch)):
                i = torch.as_tensor(idx, device=x.device)
                loss = ((self.net(x[i]) - y[i] / self.scale) ** 2).mean()
                self.optim.zero_grad()
                loss.backward()
                self.optim.step()

    @torch.no_grad()
    def predict(self, obs: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (self.net(self._x(obs, t)) * self.scale).double().cpu().numpy()
