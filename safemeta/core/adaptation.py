"""One safe adaptation step for Gaussian policies (SPEC §2.4).

From data collected by π_k on one task:
1. critics and GAE advantages for reward and every cost, J_c(π_k) estimated;
2. the sample dual (SPEC §2.2) gives u and η; or, with `dual="bisection"`, the
   alternative §2.4 keeps available: per task the smallest multiplier whose projected
   policy passes verification's own rule, found by bracketing and bisection (one
   batched projection per probe, at most 1 + 2·bisect_iters projections per step);
3. projection: minimise E_s[KL(π_θ‖π_k)] − (1/η) Ê[(π_θ/π_k) B], B = A − Σ u_i A_{c_i}
   (= E_s[KL(π_θ‖π*)] + const, π* ∝ π_k exp(B/η)) with Adam for a few epochs;
4. verification: the constraint surrogate J_c + κ Ê[(π_θ/π_k) A_c] + λ_c KL of π_θ must
   hold with a margin (and, by default, KL ≤ verify_max_kl: the importance-weighted
   estimate is unreliable far from π_k; measured on halfcheetah-vel, the adapted
   policies that exceeded the limit were those with KL ≳ 0.25); otherwise back off θ
   toward θ_k by halving; if nothing holds, keep π_k. A policy that failed the check is
   never returned.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from safemeta.core.dual import DualProblem, DualSolution, solution_at, solve_dual
from safemeta.nn.critic import LinearCritic, MLPCritic
from safemeta.nn.policy import GaussianPolicy, StackedGaussian, gaussian_kl, gaussian_log_prob
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
    dual: str = "sample"  # "sample": the batch-normalised dual; "bisection": on the projected policy
    bisect_iters: int = 8  # dual="bisection": bracket doublings and bisection halvings (each)
    proj_epochs: int = 10
    proj_minibatches: int = 4
    proj_lr: float = 3e-3
    verify_margin: float = 0.0  # absolute, in cost units: accept when surrogate ≤ d + δ − margin
    max_backoffs: int = 10
    verify_recovery: bool = True  # π_k infeasible: accept steps whose surrogate lowers the cost
    verify_max_kl: float = 0.1  # also back off while E_s[KL(π‖π_k)] exceeds this; 0 disables
    verify_confidence: float = 0.0  # z: add z·(standard error of Ĵ_c over episodes) to the surrogate
    critic_reg: float = 1e-5
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.dual not in ("sample", "bisection"):
            raise ValueError(f"dual: got {self.dual!r}; accepted 'sample' or 'bisection'")


@dataclass
class Advantages:
    adv: np.ndarray  # (n,) reward advantage (standardised when normalize_adv)
    cost_adv: np.ndarray  # (n, p) cost advantages (centred)
    cost_value: np.ndarray  # (p,) J_c(π_k), of the declared type
    kappa: float
    cost_ucb: np.ndarray | float = 0.0  # (p,) z·SE(Ĵ_c): the surrogate's confidence term


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


def fit_critics(
    roll: Rollout,
    policy: GaussianPolicy,
    gamma: float,
    kind: str = "linear",
    reg: float = 1e-5,
    shared: MLPCritic | None = None,
    rng: np.random.Generator | None = None,
) -> list:
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
    final_value = (
        critic.predict(normalized_obs(policy, roll.final_obs), t_final) if t_final.size else value[:0]
    )
    rc = np.concatenate([roll.reward[:, None], roll.cost], axis=1)
    adv_all = gae(
        rc,
        value,
        next_values(value, final_value, roll.truncated),
        roll.terminated,
        roll.done,
        st.gamma,
        st.gae_lambda,
    )
    adv, cost_adv = adv_all[:, 0], adv_all[:, 1:]
    if st.normalize_adv:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    cost_adv = cost_adv - cost_adv.mean(0)  # so the surrogate equals Ĵ_c at π_k exactly
    ucb = 0.0
    if st.verify_confidence > 0:  # episode costs are independent: SE of their mean
        ep = (roll.ep_cost if st.cost_type == "undiscounted" else roll.ep_disc_cost)[0]
        ucb = st.verify_confidence * ep.std(0, ddof=1) / np.sqrt(len(ep)) if len(ep) > 1 else 0.0
    return Advantages(adv, cost_adv, roll.cost_return(st.cost_type)[0], kappa_of(roll, st), ucb)


def kappa_of(roll: Rollout, st: AdaptSettings) -> float:
    """Advantage-to-return factor: 1/(1−γ) (SPEC), or the mean episode length when the
    limit binds the undiscounted cost of a finite episode ("auto")."""
    if st.kappa == "gamma" or st.cost_type == "discounted":
        return 1.0 / (1.0 - st.gamma)
    return float(np.concatenate(roll.ep_length).mean())


def surrogate_cost(
    policy: GaussianPolicy,
    ref: GaussianPolicy,
    obs: torch.Tensor,
    act: torch.Tensor,
    logp_k: torch.Tensor,
    a: Advantages,
    lam_c: np.ndarray,
) -> tuple[np.ndarray, float]:
    """J_c + κ Ê[(π/π_k) A_c] + λ_c E_s[KL(π‖π_k)] (SPEC §2.1 constraint; §2.4 step 4),
    plus the confidence term z·SE(Ĵ_c) when `verify_confidence` > 0."""
    with torch.no_grad():
        mean, log_std = policy(obs)
        ratio = torch.exp(policy.log_prob(obs, act) - logp_k).double().cpu().numpy()
        mean_k, log_std_k = ref(obs)
        kl = float(gaussian_kl(mean, log_std, mean_k, log_std_k).mean())
    return a.cost_value + a.cost_ucb + a.kappa * (ratio @ a.cost_adv) / len(ratio) + lam_c * kl, kl


def project(
    policy_k: GaussianPolicy,
    obs: torch.Tensor,
    act: torch.Tensor,
    logp_k: torch.Tensor,
    b: torch.Tensor,
    eta: float,
    st: AdaptSettings,
    rng: np.random.Generator,
) -> GaussianPolicy:
    """SPEC §2.4 step 3 for one task (see `project_batch`)."""
    ones = torch.ones_like(logp_k)[None]
    return project_batch(
        [policy_k],
        obs[None],
        act[None],
        logp_k[None],
        b[None],
        ones,
        torch.tensor([eta], dtype=torch.float32, device=obs.device),
        st,
        rng,
    )[0]


def project_batch(
    policies_k: list[GaussianPolicy],
    obs: torch.Tensor,
    act: torch.Tensor,
    logp_k: torch.Tensor,
    b: torch.Tensor,
    mask: torch.Tensor,
    eta: torch.Tensor,
    st: AdaptSettings,
    rng: np.random.Generator,
) -> list[GaussianPolicy]:
    """SPEC §2.4 step 3 for T tasks at once: Adam on Σ_τ E_s[KL(π_θτ‖π_kτ)] − (1/η_τ) Ê[(π_θτ/π_kτ) B_τ].

    Tensors are (T, n, ...) padded to the longest task; `mask` (T, n) marks real samples.
    """
    stack = StackedGaussian(policies_k).to(obs.device)
    opt = torch.optim.Adam(stack.parameters(), lr=st.proj_lr)
    with torch.no_grad():
        mean_k, log_std_k = stack(obs)
    n = obs.shape[1]
    for _ in range(st.proj_epochs):
        for idx in np.array_split(rng.permutation(n), max(1, min(st.proj_minibatches, n))):
            i = torch.as_tensor(idx, device=obs.device)
            mean, log_std = stack(obs[:, i])
            kl = gaussian_kl(mean, log_std, mean_k[:, i], log_std_k[:, i])
            ratio = torch.exp(gaussian_log_prob(mean, log_std, act[:, i]) - logp_k[:, i])
            m = mask[:, i]
            per_task = ((kl - ratio * b[:, i] / eta[:, None]) * m).sum(1) / m.sum(1).clamp(min=1)
            opt.zero_grad()
            per_task.sum().backward()
            opt.step()
    return stack.unstack(policies_k[0])


def acceptable(
    sur: np.ndarray, kl: float, cost_value: np.ndarray, bound: np.ndarray, st: AdaptSettings
) -> bool:
    """The acceptance rule of verification (SPEC §2.4 step 4) for a policy with constraint
    surrogate `sur` and E_s[KL(π‖π_k)] = `kl`: every surrogate ≤ its bound (with
    `verify_recovery` and π_k infeasible: feasible constraints stay so, violated ones
    decrease), all finite, and KL within `verify_max_kl` (the ratio estimator's range)."""
    ok = sur <= bound
    if st.verify_recovery and np.any(cost_value > bound):
        ok = np.where(cost_value > bound, sur < cost_value, ok)
    trusted = st.verify_max_kl <= 0 or kl <= st.verify_max_kl
    return bool(np.all(ok) and np.all(np.isfinite(sur)) and trusted)


def verify(
    new: GaussianPolicy,
    policy_k: GaussianPolicy,
    obs: torch.Tensor,
    act: torch.Tensor,
    logp_k: torch.Tensor,
    a: Advantages,
    st: AdaptSettings,
    lam_c: np.ndarray,
    bound: np.ndarray,
) -> tuple[GaussianPolicy, np.ndarray, float, int, bool]:
    """SPEC §2.4 step 4: back off θ toward θ_k by halving until the surrogate holds."""
    theta_k, theta = policy_k.flat_params(), new.flat_params()
    for k in range(st.max_backoffs + 1):
        alpha = 0.5**k
        new.set_flat_params(theta_k + alpha * (theta - theta_k))
        sur, kl = surrogate_cost(new, policy_k, obs, act, logp_k, a, lam_c)
        if acceptable(sur, kl, a.cost_value, bound, st):
            return new, sur, kl, k, True
    sur0, _ = surrogate_cost(policy_k, policy_k, obs, act, logp_k, a, lam_c)
    return policy_k, sur0, 0.0, st.max_backoffs + 1, False


def adapt_step(
    policy_k: GaussianPolicy,
    roll: Rollout,
    critic,
    cost_limit: np.ndarray,
    st: AdaptSettings,
    rng: np.random.Generator,
) -> AdaptResult:
    """One verified safe adaptation step from π_k on a one-task rollout (SPEC §2.4)."""
    return adapt_batch([policy_k], roll, [critic], cost_limit, st, rng)[0]


def adapt_batch(
    policies_k: list[GaussianPolicy],
    roll: Rollout,
    critics: list,
    cost_limit: np.ndarray,
    st: AdaptSettings,
    rng: np.random.Generator,
) -> list[AdaptResult]:
    """One verified safe adaptation step per task of `roll`, task i from `policies_k[i]`:
    advantages and the dual per task, one batched projection, verification per task."""
    t0 = time.perf_counter()
    tasks = [roll.task(i) for i in range(roll.num_tasks)]
    advs = [task_advantages(r, c, pk, st) for r, c, pk in zip(tasks, critics, policies_k)]
    finite = [_finite(a) for a in advs]  # SPEC §8: a non-finite sample is rejected, never used
    advs = [a if ok else _zeroed(a) for a, ok in zip(advs, finite)]
    p = advs[0].cost_adv.shape[1]
    lam_c = np.broadcast_to(np.asarray(st.lam_c, np.float64), (p,))
    delta = np.broadcast_to(np.asarray(st.delta, np.float64), (p,))
    t1 = time.perf_counter()
    probs = [DualProblem(a.adv, a.cost_adv, a.cost_value + a.cost_ucb, cost_limit, st.lam, lam_c, delta,
                         a.kappa) for a in advs]
    sols = [solve_dual(prob) for prob in probs]
    t2 = time.perf_counter()
    dev = torch.device(st.device)
    learners = [copy.deepcopy(pk).to(dev) for pk in policies_k]
    obs, act, mask = (
        _padded([r.obs for r in tasks], dev),
        _padded([r.act for r in tasks], dev),
        _padded([np.ones(len(r.obs)) for r in tasks], dev),
    )
    with torch.no_grad():  # log π_k on the learner device (= roll.logp up to float error)
        logp_k = torch.stack([lp.log_prob(obs[i], act[i]) for i, lp in enumerate(learners)])
    bound = cost_limit + delta - st.verify_margin
    if st.dual == "bisection":
        batch = PaddedBatch(obs, act, logp_k, mask)
        sols, new = bisect_dual(learners, batch, advs, probs, sols, bound, st, rng)
    else:
        new = project_batch(learners, obs, act, logp_k, _tilt(advs, sols, dev), mask,
                            _eta(sols, dev), st, rng)
    results = []
    for i, (a, sol) in enumerate(zip(advs, sols)):
        k = len(tasks[i].obs)
        pol, sur, kl, backoffs, ok = verify(
            new[i], learners[i], obs[i, :k], act[i, :k], logp_k[i, :k], a, st, lam_c, bound
        )
        ok = ok and finite[i]
        results.append(AdaptResult(pol.to("cpu") if ok else policies_k[i], sol, kl, sur, backoffs, ok))
    t3 = time.perf_counter()
    for r in results:  # the batch's phase times, shared out per task
        r.times.update(
            t_adv=(t1 - t0) / len(results),
            t_dual=(t2 - t1) / len(results),
            t_projection=(t3 - t2) / len(results),
        )
    return results


@dataclass
class PaddedBatch:
    """The samples of T tasks on the learner device, (T, n, ...) padded to the longest."""

    obs: torch.Tensor
    act: torch.Tensor
    logp_k: torch.Tensor  # log π_k(a|s) of each task's own π_k
    mask: torch.Tensor  # (T, n): 1 on real samples

    def task(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = int(self.mask[i].sum())
        return self.obs[i, :k], self.act[i, :k], self.logp_k[i, :k]


def bisect_dual(
    learners: list[GaussianPolicy],
    batch: PaddedBatch,
    advs: list[Advantages],
    probs: list[DualProblem],
    sols: list[DualSolution],
    bound: np.ndarray,
    st: AdaptSettings,
    rng: np.random.Generator,
) -> tuple[list[DualSolution], list[GaussianPolicy]]:
    """SPEC §2.4 step 2, the alternative to the sample dual: per task, the smallest
    μ = s·direction (s ≥ 0) whose *projected* policy passes the acceptance rule of
    verification (`acceptable`: surrogate bound, KL cap, finiteness, recovery).

    For p = 1 this is a search over μ itself; for p > 1 it is a one-dimensional search
    along a ray: the sample dual's μ plus the constraints that the s = 0 projection
    breaks. s = 0 is probed first; then from the sample dual's scale (else the scale
    `solve_dual` brackets from) s doubles while infeasible or halves while feasible,
    until an infeasible and a feasible scale bracket the boundary (at most
    `bisect_iters` probes), and `bisect_iters` bisections in log s narrow it. Each probe
    is one batched projection of the tasks still searching. Where the sample dual is
    infeasible, its own μ is probed once. Returns the solutions at the chosen μ and the
    projections made with exactly those μ (verification still follows).
    """
    dev, n_tasks = batch.obs.device, len(advs)

    Probe = tuple[list[GaussianPolicy], list[np.ndarray], list[bool]]

    def probe(idx: list[int], mus: list[np.ndarray]) -> Probe:
        """Project tasks `idx` with multipliers `mus`: policies, surrogates, acceptance."""
        at = [solution_at(probs[i], mu) for i, mu in zip(idx, mus)]
        n = batch.obs.shape[1]
        pols = project_batch([learners[i] for i in idx], batch.obs[idx], batch.act[idx], batch.logp_k[idx],
                             _tilt([advs[i] for i in idx], at, dev, n), batch.mask[idx], _eta(at, dev), st,
                             rng)
        surs, oks = [], []
        for j, i in enumerate(idx):
            sur, kl = surrogate_cost(pols[j], learners[i], *batch.task(i), advs[i], probs[i].lam_c)
            surs.append(sur)
            oks.append(acceptable(sur, kl, advs[i].cost_value, bound, st))
        return pols, surs, oks

    everyone = list(range(n_tasks))
    p = len(bound)
    pols, surs, oks = probe(everyone, [np.zeros(p)] * n_tasks)
    chosen = [0.0] * n_tasks  # the scale of `out[i]`
    out = list(pols)
    dirs, lo, hi, scale = [np.zeros(p)] * n_tasks, [0.0] * n_tasks, [np.inf] * n_tasks, [0.0] * n_tasks
    searching = []
    for i in everyone:
        if oks[i]:
            hi[i] = 0.0
            continue
        mu = sols[i].mu
        d = mu / mu.max() if mu.max() > 0 else np.zeros(p)
        d = np.maximum(d, (surs[i] > bound).astype(np.float64))  # the constraints the free step breaks
        dirs[i] = d / d.max() if d.max() > 0 else np.ones(p)
        lam_c = float(probs[i].lam_c.max())
        scale[i] = float(mu.max()) if mu.max() > 0 else (max(st.lam / lam_c, 1e-3) if lam_c > 0 else 1.0)
        searching.append(i)
    for _ in range(st.bisect_iters):  # bracket: double while infeasible, halve while feasible
        idx = [i for i in searching if lo[i] == 0 or hi[i] == np.inf]
        if not idx:
            break
        pols, _, oks = probe(idx, [scale[i] * dirs[i] for i in idx])
        for j, i in enumerate(idx):
            if oks[j] or hi[i] == np.inf:  # keep the smallest feasible probe, else the latest
                out[i], chosen[i] = pols[j], scale[i]
            if sols[i].infeasible:  # no μ meets even the sample constraint: verification decides
                searching.remove(i)
            elif oks[j]:
                hi[i] = scale[i]
            else:
                lo[i] = scale[i]
            scale[i] = scale[i] / 2 if lo[i] == 0 else scale[i] * 2
    for _ in range(st.bisect_iters):  # bisection in log s between an infeasible lo and a feasible hi
        idx = [i for i in searching if 0 < lo[i] < hi[i] < np.inf]
        if not idx:
            break
        mid = [float(np.sqrt(lo[i] * hi[i])) for i in idx]
        pols, _, oks = probe(idx, [m * dirs[i] for m, i in zip(mid, idx)])
        for j, i in enumerate(idx):
            if oks[j]:
                hi[i], out[i], chosen[i] = mid[j], pols[j], mid[j]
            else:
                lo[i] = mid[j]
    return [solution_at(probs[i], chosen[i] * dirs[i]) for i in everyone], out


def _tilt(advs: list[Advantages], sols: list[DualSolution], dev: torch.device,
          n: int | None = None) -> torch.Tensor:
    """B = A − Σ_i u_i A_{c_i} per task, padded to n (u = κμ, the slides' scaling)."""
    return _padded([a.adv - a.cost_adv @ sol.u for a, sol in zip(advs, sols)], dev, n)


def _eta(sols: list[DualSolution], dev: torch.device) -> torch.Tensor:
    return torch.tensor([sol.eta for sol in sols], dtype=torch.float32, device=dev)


def _finite(a: Advantages) -> bool:
    return all(bool(np.isfinite(x).all()) for x in (a.adv, a.cost_adv, a.cost_value))


def _zeroed(a: Advantages) -> Advantages:
    """A stand-in for a non-finite sample: zero advantages (the step is then rejected)."""
    return Advantages(np.zeros_like(a.adv), np.zeros_like(a.cost_adv), np.nan_to_num(a.cost_value), a.kappa)


def _padded(arrays: list[np.ndarray], dev: torch.device, n: int | None = None) -> torch.Tensor:
    """Stack per-task arrays (n_i, ...) into (T, n or max n_i, ...) float32, zero-padded."""
    n = max(len(a) for a in arrays) if n is None else n
    out = np.zeros((len(arrays), n, *arrays[0].shape[1:]), np.float32)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return torch.as_tensor(out, device=dev)
