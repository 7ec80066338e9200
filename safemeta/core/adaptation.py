"""One safe adaptation step for Gaussian policies (SPEC §2.4).

From data collected by π_k on one task:
1. critics and GAE advantages for reward and every cost, J_c(π_k) estimated;
2. the sample dual (SPEC §2.2) gives u and η;
3. projection: minimise E_s[KL(π_θ‖π_k)] − (1/η) Ê[(π_θ/π_k) B], B = A − Σ u_i A_{c_i}
   (= E_s[KL(π_θ‖π*)] + const, π* ∝ π_k exp(B/η)) with Adam for a few epochs;
4. verification: the constraint surrogate J_c + κ Ê[(π_θ/π_k) A_c] + λ_c KL of π_θ must
   hold with a margin; otherwise back off θ toward θ_k by halving; if nothing holds,
   keep π_k. A policy that failed the check is never returned.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from safemeta.core.dual import DualProblem, DualSolution, solve_dual
from safemeta.nn.critic import LinearCritic, MLPCritic
from safemeta.nn.policy import GaussianPolicy, gaussian_kl
from safemeta.rollout.buffer import Rollout, discounted_returns, gae, next_values


@dataclass
class AdaptSettings:
    """What one safe adaptation step needs (built from `SafeMetaConfig`)."""

    lam: float = 1.0
    lam_c: np.ndarray | float = 1.0
    delta: np.ndarray | float = 0.0
    gamma: float = 0.99
    gae_lambda: float = 0.97
    cost_type: str = "undiscounted"  # which J_c the limit binds (the suite declares it)
    kappa: str = "auto"  # "gamma": 1/(1−γ); "auto": 1/(1−γ) for discounted, mean episode length else
    normalize_adv: bool = True  # reward advantage standardised (λ is then in its units)
    proj_epochs: int = 10
    proj_minibatches: int = 4
    proj_lr: float = 3e-3
    verify_margin: float = 0.0  # absolute, in cost units: accept when surrogate ≤ d + δ − margin
    max_backoffs: int = 10
    verify_recovery: bool = True  # π_k infeasible: accept steps whose surrogate lowers the cost
    critic_reg: float = 1e-5
    device: str = "cpu"


@dataclass
class Advantages:
    adv: np.ndarray  # (n,) reward advantage (standardised when normalize_adv)
    cost_adv: np.ndarray  # (n, p) cost advantages (centred)
    cost_value: np.ndarray  # (p,) J_c(π_k), of the declared type
    kappa: float


@dataclass
class AdaptResult:
    policy: GaussianPolicy  # verified adapted policy (π_k itself when rejected)
    dual: DualSolution
    kl: float  # E_s[KL(π‖π_k)] of the returned policy on the sample
    surrogate: np.ndarray  # (p,) constraint surrogate of the returned policy
    backoffs: int  # halvings of the step; max_backoffs + 1 means rejected (π_k kept)
    accepted: bool
    times: dict[str, float] = field(default_factory=dict)


def normalized_obs(policy: GaussianPolicy, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return policy.normalizer(torch.as_tensor(obs, dtype=torch.float32)).numpy()


def fit_critics(roll: Rollout, policy: GaussianPolicy, gamma: float, kind: str = "linear",
                reg: float = 1e-5, shared: MLPCritic | None = None,
                rng: np.random.Generator | None = None) -> list:
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


def task_advantages(roll: Rollout, critic, policy: GaussianPolicy, st: AdaptSettings) -> Advantages:
    """GAE for reward and every cost of a one-task rollout, with the time-limit bootstrap."""
    value = critic.predict(normalized_obs(policy, roll.obs), roll.t)
    t_final = roll.t[roll.truncated] + 1
    final_value = critic.predict(normalized_obs(policy, roll.final_obs), t_final) if t_final.size else value[:0]
    rc = np.concatenate([roll.reward[:, None], roll.cost], axis=1)
    adv_all = gae(rc, value, next_values(value, final_value, roll.truncated), roll.terminated,
                  roll.done, st.gamma, st.gae_lambda)
    adv, cost_adv = adv_all[:, 0], adv_all[:, 1:]
    if st.normalize_adv:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    cost_adv = cost_adv - cost_adv.mean(0)  # so the surrogate equals Ĵ_c at π_k exactly
    return Advantages(adv, cost_adv, roll.cost_return(st.cost_type)[0], kappa_of(roll, st))


def kappa_of(roll: Rollout, st: AdaptSettings) -> float:
    """Advantage-to-return factor: 1/(1−γ) (SPEC), or the mean episode length when the
    limit binds the undiscounted cost of a finite episode ("auto")."""
    if st.kappa == "gamma" or st.cost_type == "discounted":
        return 1.0 / (1.0 - st.gamma)
    return float(np.concatenate(roll.ep_length).mean())


def surrogate_cost(policy: GaussianPolicy, ref: GaussianPolicy, obs: torch.Tensor, act: torch.Tensor,
                   logp_k: torch.Tensor, a: Advantages, lam_c: np.ndarray) -> tuple[np.ndarray, float]:
    """J_c + κ Ê[(π/π_k) A_c] + λ_c E_s[KL(π‖π_k)] (SPEC §2.1 constraint; §2.4 step 4)."""
    with torch.no_grad():
        mean, log_std = policy(obs)
        ratio = torch.exp(policy.log_prob(obs, act) - logp_k).double().cpu().numpy()
        mean_k, log_std_k = ref(obs)
        kl = float(gaussian_kl(mean, log_std, mean_k, log_std_k).mean())
    return a.cost_value + a.kappa * (ratio @ a.cost_adv) / len(ratio) + lam_c * kl, kl


def project(policy_k: GaussianPolicy, obs: torch.Tensor, act: torch.Tensor, logp_k: torch.Tensor,
            b: torch.Tensor, eta: float, st: AdaptSettings, rng: np.random.Generator) -> GaussianPolicy:
    """SPEC §2.4 step 3: Adam on E_s[KL(π_θ‖π_k)] − (1/η) Ê[(π_θ/π_k) B]."""
    new = copy.deepcopy(policy_k)
    opt = torch.optim.Adam(new.parameters(), lr=st.proj_lr)
    with torch.no_grad():
        mean_k, log_std_k = policy_k(obs)
    n = len(obs)
    for _ in range(st.proj_epochs):
        for idx in np.array_split(rng.permutation(n), max(1, min(st.proj_minibatches, n))):
            i = torch.as_tensor(idx, device=obs.device)
            mean, log_std = new(obs[i])
            kl = gaussian_kl(mean, log_std, mean_k[i], log_std_k[i]).mean()
            ratio = torch.exp(new.log_prob(obs[i], act[i]) - logp_k[i])
            loss = kl - (ratio * b[i]).mean() / eta
            opt.zero_grad()
            loss.backward()
            opt.step()
    return new


def verify(new: GaussianPolicy, policy_k: GaussianPolicy, obs: torch.Tensor, act: torch.Tensor,
           logp_k: torch.Tensor, a: Advantages, st: AdaptSettings, lam_c: np.ndarray,
           bound: np.ndarray) -> tuple[GaussianPolicy, np.ndarray, float, int, bool]:
    """SPEC §2.4 step 4: back off θ toward θ_k by halving until the surrogate holds."""
    theta_k, theta = policy_k.flat_params(), new.flat_params()
    recover = st.verify_recovery and np.any(a.cost_value > bound)
    for k in range(st.max_backoffs + 1):
        alpha = 0.5**k
        new.set_flat_params(theta_k + alpha * (theta - theta_k))
        sur, kl = surrogate_cost(new, policy_k, obs, act, logp_k, a, lam_c)
        ok = sur <= bound
        if recover:  # π_k infeasible: feasible constraints stay so, violated ones decrease
            ok = np.where(a.cost_value > bound, sur < a.cost_value, ok)
        if np.all(ok) and np.all(np.isfinite(sur)):
            return new, sur, kl, k, True
    sur0, _ = surrogate_cost(policy_k, policy_k, obs, act, logp_k, a, lam_c)
    return policy_k, sur0, 0.0, st.max_backoffs + 1, False


def adapt_step(policy_k: GaussianPolicy, roll: Rollout, critic, cost_limit: np.ndarray,
               st: AdaptSettings, rng: np.random.Generator) -> AdaptResult:
    """One verified safe adaptation step from π_k on a one-task rollout (SPEC §2.4)."""
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    a = task_advantages(roll, critic, policy_k, st)
    p = a.cost_adv.shape[1]
    lam_c = np.broadcast_to(np.asarray(st.lam_c, np.float64), (p,))
    delta = np.broadcast_to(np.asarray(st.delta, np.float64), (p,))
    t1 = time.perf_counter()
    sol = solve_dual(DualProblem(a.adv, a.cost_adv, a.cost_value, cost_limit, st.lam, lam_c, delta, a.kappa))
    t2 = time.perf_counter()
    dev = torch.device(st.device)
    learner = copy.deepcopy(policy_k).to(dev)
    obs = torch.as_tensor(roll.obs, dtype=torch.float32, device=dev)
    act = torch.as_tensor(roll.act, dtype=torch.float32, device=dev)
    with torch.no_grad():
        logp_k = learner.log_prob(obs, act)  # = roll.logp up to float error; recomputed on device
    b = torch.as_tensor(a.adv - a.cost_adv @ sol.u, dtype=torch.float32, device=dev)
    new = project(learner, obs, act, logp_k, b, sol.eta, st, rng)
    bound = cost_limit + delta - st.verify_margin
    new, sur, kl, backoffs, ok = verify(new, learner, obs, act, logp_k, a, st, lam_c, bound)
    t3 = time.perf_counter()
    times.update(t_adv=t1 - t0, t_dual=t2 - t1, t_projection=t3 - t2)
    out = new.to("cpu") if ok else policy_k
    return AdaptResult(out, sol, kl, sur, backoffs, ok, times)
