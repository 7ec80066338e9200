"""A one-state, bandit-like task shared by the adaptation tests: obs 0, reward
−(a − 0.6)², cost a² per step, fixed-length episodes; and a critic that predicts 0."""

from __future__ import annotations

import numpy as np
import torch

from safemeta.config import build
from safemeta.core.adaptation import AdaptParams
from safemeta.core.meta import SafeMetaConfig
from safemeta.nn.policy import GaussianPolicy
from safemeta.rollout.advantages import Advantages, task_advantages
from safemeta.rollout.buffer import Rollout


def one_task_rollout(policy: GaussianPolicy, n: int = 4000, horizon: int = 10) -> Rollout:
    """A bandit-like rollout: obs 0, reward −(a − 0.6)², cost a² per step."""
    obs = np.zeros((n, 1), np.float32)
    act, logp = policy.sample(obs, torch.Generator().manual_seed(5))
    t = np.tile(np.arange(horizon), n // horizon)
    trunc = t == horizon - 1
    cost = act.astype(np.float64) ** 2
    ep = cost.reshape(-1, horizon).sum(1, keepdims=True)
    return Rollout(
        obs=obs,
        act=act,
        logp=logp,
        reward=-((act[:, 0] - 0.6) ** 2),
        cost=cost,
        t=t,
        terminated=np.zeros(n, bool),
        truncated=trunc,
        final_obs=np.zeros((trunc.sum(), 1), np.float32),
        slices=[slice(0, n)],
        ep_return=[np.zeros(n // horizon)],
        ep_cost=[ep],
        ep_disc_cost=[ep],
        ep_length=[np.full(n // horizon, horizon)],
    )


class ZeroCritic:
    def predict(self, obs: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.zeros((len(obs), 2))


def config(**over: object) -> SafeMetaConfig:
    """The users' `SafeMetaConfig` (its defaults) with λ = λ_c = 1 unless `over` says otherwise."""
    return build(SafeMetaConfig, {"lam": 1.0, "lam_c": 1.0, **over})


def params(cfg: SafeMetaConfig, limit: np.ndarray, cost_type: str = "undiscounted") -> AdaptParams:
    limit = np.asarray(limit, np.float64)
    return cfg.adapt_params(len(limit), limit, cost_type)


def advantages(roll: Rollout, critic: object, policy: GaussianPolicy, cfg: SafeMetaConfig) -> Advantages:
    """A one-task rollout's advantages, as the learner's `estimate` computes them."""
    return task_advantages(roll, critic, policy, cfg.gamma, cfg.gae_lambda, "undiscounted", cfg.kappa,
                           cfg.normalize_adv)
