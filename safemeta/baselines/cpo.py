"""CPO from scratch on each test task (Achiam et al. 2017), algorithm id `cpo` (SPEC §3).

What a user without meta-learning runs: no meta-training (`iterations` 0 in both presets),
no step on π_φ; at meta-test each test task starts from the freshly initialised policy
(the same network and initial spread as every algorithm) and takes one CPO step per
collection of the meta-test's budget (the base's loop: collect → `adapt`, T times):

    maximise_x  gᵀx   s.t.  J_c(π_k) − d + bᵀx ≤ 0,   ½ xᵀF x ≤ δ

with g = ∇ Ê[(π/π_k) A], b = ∇ κ Ê[(π/π_k) A_c] (κ: the advantage-to-return factor the
base gives, so b is in the units of the limit d), F the Fisher matrix by conjugate
gradient, then a backtracking line search (`updates/cpo.py`).

Hyperparameters (the shared `GaussianConfig`, one default for every algorithm):
δ = max_kl = 0.01 (Achiam et al. 2017's δ; OmniSafe's CPO.yaml `target_kl` 0.01),
cg_iters 10 and damping 0.1 (OmniSafe: 15 and 0.1), 10 backtracking halvings (OmniSafe's
CPO line search: 15 steps of ×0.8), GAE λ 0.97 (OmniSafe: 0.95), γ 0.99 (both).

Differences from Achiam's and OmniSafe's CPO: critics are the base's (a per-task linear
feature baseline by default, refitted on every collection, instead of MLP value and cost
critics trained across iterations); the budget is counted in environment steps per task
(the meta-test's collections); the cost advantage is not standardised (OmniSafe
standardises it, which puts b and c = J_c − d in different units; here b is the gradient
of κ Ê[(π/π_k) A_c], in the units of d); no cost shaping or margin on d; observations are
not normalised with running statistics (OmniSafe's default too; the policy keeps its
initial normaliser, as every from-scratch learner here); the line search halves the step
(as TRPO here) rather than scaling it by 0.8.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from safemeta.config import ConfigError, GaussianConfig
from safemeta.envs.base import Suite, Task
from safemeta.meta_learner import MetaLearner, TaskPolicy
from safemeta.nn.policy import GaussianPolicy, gaussian_kl
from safemeta.rollout.advantages import Advantages
from safemeta.rollout.buffer import Rollout
from safemeta.updates.cpo import cpo_step
from safemeta.updates.policy_gradient import ratio_surrogate


@dataclass
class CPOConfig(GaussianConfig):
    """CPO from scratch on each test task: the shared fields (δ is `max_kl`)."""


class CPO(MetaLearner):
    """Single-task CPO on each test task, no meta-training (SPEC §3, "from scratch")."""

    id = "cpo"
    Config = CPOConfig
    meta_learning = False
    step_columns = ("kl", "accept_rate", "recovery", "nu", "ls_steps")

    def __init__(self, cfg: GaussianConfig, suite: Suite, tasks: dict[str, list[Task]],
                 seed: np.random.SeedSequence) -> None:
        super().__init__(cfg, suite, tasks, seed)
        if self.num_costs != 1:
            raise ConfigError(f"algo cpo: one cost constraint (Achiam's closed form); the suite has "
                              f"{self.num_costs}")

    @classmethod
    def presets(cls, suite_id: str) -> dict[str, dict[str, Any]]:
        out = super().presets(suite_id)
        for preset in out.values():
            preset["iterations"] = 0  # from scratch: the budget is the meta-test's samples
        return out

    def adapt(self, data: Rollout, current: list[TaskPolicy]) -> list[TaskPolicy]:
        """One CPO step per task from its current policy π_k on the data π_k collected."""
        advs = self.estimate(data)
        return [self._cpo_task(current[i].policy, data.task(i), advs[i]) for i in range(data.num_tasks)]

    def _cpo_task(self, policy_k: GaussianPolicy, roll: Rollout, a: Advantages) -> TaskPolicy:
        c = self.cfg
        policy = copy.deepcopy(policy_k)
        obs = torch.as_tensor(roll.obs, dtype=torch.float32)
        act = torch.as_tensor(roll.act, dtype=torch.float32)
        idx = np.sort(self.rng.choice(len(obs), size=min(c.fvp_states, len(obs)), replace=False))
        kl_obs = obs[torch.as_tensor(idx)]
        with torch.no_grad():
            logp_k = policy.log_prob(obs, act)
            mean_k, log_std_k = policy(kl_obs)
        reward_sur = ratio_surrogate(obs, act, logp_k, torch.as_tensor(a.adv, dtype=torch.float32))
        # κ Ê[(π/π_k) A_c]: the change of the cost surrogate J_c + κ Ê[(π/π_k) A_c], in the units of d
        cost_sur = ratio_surrogate(obs, act, logp_k, torch.as_tensor(a.kappa * a.cost_adv[:, 0],
                                                                       dtype=torch.float32))

        def kl(pol: GaussianPolicy) -> torch.Tensor:
            mean, log_std = pol(kl_obs)
            return gaussian_kl(mean_k, log_std_k, mean, log_std).mean()

        excess = float(a.cost_value[0] - self.cost_limit[0])  # c = J_c(π_k) − d
        info = cpo_step(policy, reward_sur, cost_sur, kl, excess, c.max_kl, c.cg_iters, c.cg_damping,
                        c.line_search_steps)
        log = {"kl": info["kl"], "accept_rate": info["accepted"], "recovery": info["recovery"],
               "nu": info["nu"], "ls_steps": info["ls_steps"]}
        return TaskPolicy(policy, log)
