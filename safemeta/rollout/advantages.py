"""Critics and advantages of a rollout (SPEC §2.4 step 1), for every algorithm.

Per task: value critics for the reward and every cost fitted to Monte-Carlo returns,
then GAE for all of them with the time-limit bootstrap (`buffer.gae`), and the
estimate of J_c of the behaviour policy. The learners only read the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from safemeta.nn.critic import LinearCritic, MLPCritic
from safemeta.nn.policy import GaussianPolicy
from safemeta.rollout.buffer import Rollout, discounted_returns, gae, next_values


@dataclass
class Advantages:
    """One task's sample: advantages of the behaviour policy π_k and its cost estimate."""

    adv: np.ndarray  # (n,) reward advantage (standardised when asked)
    cost_adv: np.ndarray  # (n, p) cost advantages, centred
    cost_value: np.ndarray  # (p,) J_c(π_k), of the type the limit binds
    kappa: float  # advantage-to-return factor of the cost surrogate (`kappa_of`)


def normalized_obs(policy: GaussianPolicy, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return policy.normalizer(torch.as_tensor(obs, dtype=torch.float32)).numpy()


def fit_critics(
    roll: Rollout,
    policy: GaussianPolicy,
    gamma: float,
    kind: str = "linear",
    reg: float = 1e-5,
    shared: MLPCritic | None = None,
    rng: np.random.Generator | None = None,
) -> list[Any]:
    """Per task a fitted critic predicting (n, 1 + p) values: reward then costs.

    "linear": a per-task linear feature baseline; "mlp": the shared MLP critic fitted on
    all tasks. Targets are Monte-Carlo discounted returns-to-go.
    """
    obs_n = normalized_obs(policy, roll.obs)
    targets = np.concatenate([roll.reward[:, None], roll.cost], axis=1)
    returns = discounted_returns(targets, roll.done, gamma)
    if kind == "mlp":
        assert shared is not None
        shared.fit(obs_n, roll.t, returns, rng)
        return [shared] * roll.num_tasks
    critics = []
    for s in roll.slices:
        c = LinearCritic(reg)
        c.fit(obs_n[s], roll.t[s], returns[s])
        critics.append(c)
    return critics


def task_advantages(
    roll: Rollout,
    critic: Any,
    policy: GaussianPolicy,
    gamma: float,
    gae_lambda: float,
    cost_type: str = "undiscounted",
    kappa: str = "auto",
    normalize_adv: bool = True,
) -> Advantages:
    """GAE for reward and every cost of a one-task rollout, with the time-limit bootstrap.

    The cost advantages are centred, so that the cost surrogate J_c + κ Ê[(π/π_k) A_c]
    equals Ĵ_c at π = π_k exactly."""
    value = critic.predict(normalized_obs(policy, roll.obs), roll.t)
    t_final = roll.t[roll.truncated] + 1
    final_value = (
        critic.predict(normalized_obs(policy, roll.final_obs), t_final) if t_final.size else value[:0]
    )
    rc = np.concatenate([roll.reward[:, None], roll.cost], axis=1)
    adv_all = gae(rc, value, next_values(value, final_value, roll.truncated), roll.terminated, roll.done,
                  gamma, gae_lambda)
    adv, cost_adv = adv_all[:, 0], adv_all[:, 1:]
    if normalize_adv:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    cost_adv = cost_adv - cost_adv.mean(0)
    return Advantages(adv, cost_adv, roll.cost_return(cost_type)[0], kappa_of(roll, gamma, cost_type, kappa))


def kappa_of(roll: Rollout, gamma: float, cost_type: str, mode: str = "auto") -> float:
    """Advantage-to-return factor: 1/(1−γ) (SPEC), or the mean episode length when the
    limit binds the undiscounted cost of a finite episode ("auto")."""
    if mode == "gamma" or cost_type == "discounted":
        return 1.0 / (1.0 - gamma)
    return float(np.concatenate(roll.ep_length).mean())
