"""PPO-Lagrangian from scratch on each test task (SPEC §3), algorithm id `ppo-lag`.

What a user without meta-learning runs: no meta-training (`iterations` 0 in the
presets, no meta-step). Meta-test starts every test task from the untrained initial
policy π^0 = π_φ and does T steps of collect → adapt (the base's loop), so the budget
is meta-test's samples. One adaptation step on task τ, from its current policy π^t and
the data π^t collected there:

1. λ_τ ← max(0, λ_τ + Adam step on λ_τ·(Ĵ_c(π^t) − d)), Ĵ_c the mean episode cost of
   the data, of the type the limit binds (`updates/lagrange.py`).
2. PPO-clip epochs (Schulman et al. 2017) from π^t on the advantage
   (A − λ_τ·A_c) / (1 + λ_τ), A standardised and A_c centred per task (OmniSafe's
   `PPOLag._compute_adv_surrogate` and buffer): minibatch Adam steps on
   −Ê[min(ρ·w, clip(ρ, 1 − ε, 1 + ε)·w)], ρ = π(a|s)/π^t(a|s), stopping after an epoch
   whose KL(π^t ‖ π) exceeds `target_kl`.

λ_τ, and the Adam state of τ's policy, live in the task's `TaskPolicy.state`, so every
test task has its own multiplier, as a separate OmniSafe run per task would.

Defaults are OmniSafe's PPOLag (configs/on-policy/PPOLag.yaml): λ init 0.001, λ lr
0.035 with Adam, 40 update epochs of minibatch 64, actor lr 3e-4, clip 0.2, target KL
0.02 with early stopping, gradient-norm clip 40, running observation normalisation, no
entropy bonus. Differences from OmniSafe, all so that every algorithm of a comparison
shares them: the critics are the base's (refit on every batch, linear feature baseline
by default) instead of MLP critics trained alongside the actor; GAE λ 0.97 for reward
and cost (OmniSafe 0.95); the batch is meta-test's `steps_per_task` (OmniSafe 20,000
steps per epoch); the networks are the base's (64×64 tanh, state-independent log-std);
the observation normaliser is updated from each batch before the epochs (OmniSafe
updates it online during collection); no learning-rate decay.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from safemeta.config import GaussianConfig, param
from safemeta.meta_learner import MetaLearner, TaskPolicy
from safemeta.nn.policy import GaussianPolicy, gaussian_kl
from safemeta.rollout.advantages import Advantages
from safemeta.rollout.buffer import Rollout
from safemeta.updates.lagrange import OPTIMIZERS, Lagrange


@dataclass
class PPOLagConfig(GaussianConfig):
    """PPO-Lagrangian from scratch on every test task (OmniSafe's defaults)."""

    lagrange_init: float = param(0.001, "initial Lagrange multiplier λ (OmniSafe)", low=0, high=1e6)
    lagrange_lr: float = param(0.035, "Lagrange multiplier learning rate (OmniSafe)", low=0, high=1e3)
    lagrange_optimizer: str = param("adam", "Lagrange multiplier step (OmniSafe: Adam)", choices=OPTIMIZERS)
    lagrange_upper: float | None = param(None, "upper bound on λ; none: unbounded (OmniSafe)",
                                         low=0, high=1e9)
    ppo_epochs: int = param(40, "PPO epochs per adaptation step (OmniSafe update_iters)", low=1, high=10**4)
    ppo_minibatch: int = param(64, "PPO minibatch size in transitions (OmniSafe batch_size)",
                               low=1, high=10**7)
    ppo_lr: float = param(3e-4, "PPO Adam learning rate (OmniSafe, PPO paper)", low=0, low_open=True, high=10)
    ppo_clip: float = param(0.2, "PPO ratio clip ε (OmniSafe, PPO paper)", low=0, low_open=True, high=10)
    target_kl: float = param(0.02, "stop the epochs once KL(π^t‖π) exceeds this (OmniSafe); 0: never",
                             low=0, high=1e3)
    ppo_max_grad_norm: float = param(40.0, "PPO gradient-norm clip (OmniSafe)", low=0, low_open=True,
                                     high=1e6)
    ppo_obs_norm: bool = param(True, "update each task's observation normaliser from its data (OmniSafe)")


class PPOLag(MetaLearner):
    """Single-task PPO-Lagrangian on each test task; no meta-training."""

    id = "ppo-lag"
    Config = PPOLagConfig
    meta_learning = False
    step_columns = ("lam", "kl", "ppo_epochs_run")
    cfg: PPOLagConfig

    @classmethod
    def presets(cls, suite_id: str) -> dict[str, dict[str, Any]]:
        """The shared budgets, with no meta-training."""
        return {name: {**p, "iterations": 0} for name, p in super().presets(suite_id).items()}

    def adapt(self, data: Rollout, current: list[TaskPolicy]) -> list[TaskPolicy]:
        """Per task: its λ from its episode cost, then PPO epochs on (A − λA_c)/(1 + λ)."""
        out = []
        for i, (adv, cur) in enumerate(zip(self.estimate(data), current)):
            lagrange = copy.deepcopy(cur.state["lagrange"]) if "lagrange" in cur.state else self.lagrange()
            lam = lagrange.update(adv.cost_value)
            policy, optim_state, log = self.ppo_epochs(cur.policy, data.task(i), lagrangian_adv(adv, lam),
                                                       cur.state.get("optim"))
            out.append(TaskPolicy(policy, {"lam": float(lam[0]), **log},
                                  {"lagrange": lagrange, "optim": optim_state}))
        return out

    def lagrange(self) -> Lagrange:
        """A fresh multiplier for a task seen for the first time."""
        c = self.cfg
        return Lagrange(self.cost_limit, c.lagrange_lr, c.lagrange_init, c.lagrange_optimizer,
                        c.lagrange_upper)

    def ppo_epochs(
        self, policy: GaussianPolicy, data: Rollout, weights: np.ndarray, optim_state: dict[str, Any] | None
    ) -> tuple[GaussianPolicy, dict[str, Any], dict[str, float]]:
        """PPO-clip epochs from `policy` (which collected `data`); the task's Adam state persists
        across its adaptation steps, as the actor optimiser of one OmniSafe run does."""
        c, dev = self.cfg, self.device
        learner = copy.deepcopy(policy).to(dev)
        if c.ppo_obs_norm:
            learner.normalizer.update(data.obs)
        obs = torch.as_tensor(data.obs, dtype=torch.float32, device=dev)
        act = torch.as_tensor(data.act, dtype=torch.float32, device=dev)
        w = torch.as_tensor(weights, dtype=torch.float32, device=dev)
        logp_old = torch.as_tensor(data.logp, dtype=torch.float32, device=dev)  # the behaviour policy π^t
        with torch.no_grad():
            mean_old, log_std_old = learner(obs)
        optim = torch.optim.Adam(learner.parameters(), lr=c.ppo_lr)
        if optim_state is not None:
            optim.load_state_dict(optim_state)
        n, kl, epochs = len(obs), 0.0, 0
        while epochs < c.ppo_epochs:
            epochs += 1
            for idx in np.array_split(self.rng.permutation(n), max(1, n // c.ppo_minibatch)):
                ratio = torch.exp(learner.log_prob(obs[idx], act[idx]) - logp_old[idx])
                clipped = torch.clamp(ratio, 1 - c.ppo_clip, 1 + c.ppo_clip)
                loss = -torch.min(ratio * w[idx], clipped * w[idx]).mean()
                optim.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(learner.parameters(), c.ppo_max_grad_norm)
                optim.step()
            with torch.no_grad():
                kl = float(gaussian_kl(mean_old, log_std_old, *learner(obs)).mean())
            if c.target_kl > 0 and kl > c.target_kl:
                break
        log = {"kl": kl, "ppo_epochs_run": float(epochs)}
        return learner.to("cpu"), copy.deepcopy(optim.state_dict()), log


def lagrangian_adv(adv: Advantages, lam: np.ndarray) -> np.ndarray:
    """(A − Σ_i λ_i A_{c_i}) / (1 + Σ_i λ_i): the penalised advantage, normalised so that its
    scale stays that of A as λ grows (OmniSafe's PPOLag)."""
    return (adv.adv - adv.cost_adv @ lam) / (1.0 + lam.sum())
