"""One safe adaptation step for Gaussian policies (SPEC §2.4).

From data collected by π_k on one task:
1. critics and GAE advantages for reward and every cost, J_c(π_k) estimated (the
   learner does this once per batch for every algorithm: `rollout/advantages.py`);
2. the sample dual (SPEC §2.2) gives u and η; or, with `dual="bisection"`, the
   alternative §2.4 keeps available: per task the smallest multiplier whose projected
   policy passes verification's own rule, found by bracketing and bisection (one
   batched projection per probe, at most 1 + 2·bisect_iters projections per step);
3. projection: minimise E_s[KL(π_θ‖π_k)] − (1/η) Ê[(π_θ/π_k) B], B = A − Σ u_i A_{c_i}
   (= E_s[KL(π_θ‖π*)] + const, π* ∝ π_k exp(B/η)) with Adam for a few epochs;
4. verification: the constraint surrogate J_c + κ Ê[(π_θ/π_k) A_c] + λ_c KL of π_θ must
   hold with a margin (and, by default, KL ≤ verify_max_kl: the importance-weighted
   estimate is unreliable far from π_k, where the adapted policies that exceeded the
   limit were found (README)); otherwise back off θ
   toward θ_k by halving; if nothing holds, keep π_k. A policy that failed the check is
   never returned.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from safemeta.core.dual import SampleDual, SampleDualSolution, solution_at, solve_sample_dual
from safemeta.nn.policy import GaussianPolicy, StackedGaussian, gaussian_kl, gaussian_log_prob
from safemeta.rollout.advantages import Advantages, task_advantages
from safemeta.rollout.buffer import Rollout

if TYPE_CHECKING:  # the config's defaults live in one place, `SafeMetaConfig`
    from safemeta.core.meta import SafeMetaConfig


@dataclass(frozen=True)
class AdaptParams:
    """What the config and the suite give together, resolved once per run (SPEC §2.1, §2.5):
    the KL weights, the relaxation and the limits. Every other setting of the step is read
    from `SafeMetaConfig`, so it has one default."""

    lam: float
    lam_c: np.ndarray  # (p,)
    delta: np.ndarray  # (p,)
    cost_limit: np.ndarray  # (p,) d
    cost_type: str = "undiscounted"  # which J_c the limit binds (the suite declares it)

    @property
    def bound(self) -> np.ndarray:
        return self.cost_limit + self.delta


# what verification (or a replacement) returns: (policy, surrogate, kl, backoffs, accepted)
Selected = tuple[GaussianPolicy, np.ndarray, float, int, bool]


@dataclass
class AdaptResult:
    policy: GaussianPolicy  # verified adapted policy (π_k itself when rejected)
    dual: SampleDualSolution
    kl: float  # E_s[KL(π‖π_k)] of the returned policy on the sample
    surrogate: np.ndarray  # (p,) constraint surrogate of the returned policy
    backoffs: int  # halvings of the step; max_backoffs + 1 means rejected (π_k kept)
    accepted: bool
    times: dict[str, float] = field(default_factory=dict)
    # the held-out safety test (`core/safety_test.py`; None without it)
    status: str | None = None  # "accepted", "backed_off" or "kept"
    fraction: float = 1.0  # of the candidate's step that was handed out
    test_bound: np.ndarray | None = None  # (p,) upper confidence bound of the last policy tested
    test_estimate: np.ndarray | None = None  # (p,) its held-out mean surrogate
    recovering: bool = False  # π_k over d + δ on some constraint
    handed_bound: np.ndarray | None = None  # (p,) upper bound on J_c of the policy handed out


def cost_ucb(ep_cost: np.ndarray, z: float) -> np.ndarray | float:
    """z·(standard error of Ĵ_c) over a task's (N, p) independent episode costs: the
    confidence term `verify_confidence` adds to the cost surrogate; 0 when z = 0."""
    if z <= 0 or len(ep_cost) < 2:
        return 0.0
    return z * ep_cost.std(0, ddof=1) / np.sqrt(len(ep_cost))


def surrogate_cost(
    policy: GaussianPolicy,
    ref: GaussianPolicy,
    obs: torch.Tensor,
    act: torch.Tensor,
    logp_k: torch.Tensor,
    a: Advantages,
    lam_c: np.ndarray,
    ucb: np.ndarray | float = 0.0,
) -> tuple[np.ndarray, float]:
    """J_c + κ Ê[(π/π_k) A_c] + λ_c E_s[KL(π‖π_k)] (SPEC §2.1 constraint; §2.4 step 4),
    plus the confidence term `ucb` (`cost_ucb`)."""
    with torch.no_grad():
        mean, log_std = policy(obs)
        ratio = torch.exp(policy.log_prob(obs, act) - logp_k).double().cpu().numpy()
        mean_k, log_std_k = ref(obs)
        kl = float(gaussian_kl(mean, log_std, mean_k, log_std_k).mean())
    return a.cost_value + ucb + a.kappa * (ratio @ a.cost_adv) / len(ratio) + lam_c * kl, kl


def project(
    policy_k: GaussianPolicy,
    obs: torch.Tensor,
    act: torch.Tensor,
    logp_k: torch.Tensor,
    b: torch.Tensor,
    eta: float,
    cfg: SafeMetaConfig,
    rng: np.random.Generator,
) -> GaussianPolicy:
    """SPEC §2.4 step 3 for one task (see `project_batch`)."""
    ones = torch.ones_like(logp_k)[None]
    eta_t = torch.tensor([eta], dtype=torch.float32, device=obs.device)
    return project_batch([policy_k], obs[None], act[None], logp_k[None], b[None], ones, eta_t, cfg, rng)[0]


def project_batch(
    policies_k: list[GaussianPolicy],
    obs: torch.Tensor,
    act: torch.Tensor,
    logp_k: torch.Tensor,
    b: torch.Tensor,
    mask: torch.Tensor,
    eta: torch.Tensor,
    cfg: SafeMetaConfig,
    rng: np.random.Generator,
) -> list[GaussianPolicy]:
    """SPEC §2.4 step 3 for T tasks at once: Adam on Σ_τ E_s[KL(π_θτ‖π_kτ)] − (1/η_τ) Ê[(π_θτ/π_kτ) B_τ].

    Tensors are (T, n, ...) padded to the longest task; `mask` (T, n) marks real samples.
    """
    stack = StackedGaussian(policies_k).to(obs.device)
    opt = torch.optim.Adam(stack.parameters(), lr=cfg.proj_lr)
    with torch.no_grad():
        mean_k, log_std_k = stack(obs)
    n = obs.shape[1]
    for _ in range(cfg.proj_epochs):
        for idx in np.array_split(rng.permutation(n), max(1, min(cfg.proj_minibatches, n))):
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
    sur: np.ndarray, kl: float, cost_value: np.ndarray, bound: np.ndarray, cfg: SafeMetaConfig
) -> bool:
    """The acceptance rule of verification (SPEC §2.4 step 4) for a policy with constraint
    surrogate `sur` and E_s[KL(π‖π_k)] = `kl`: every surrogate ≤ its bound (with
    `verify_recovery` and π_k infeasible: feasible constraints stay so, violated ones
    decrease), all finite, and KL within `verify_max_kl` (the ratio estimator's range)."""
    ok = sur <= bound
    if cfg.verify_recovery and np.any(cost_value > bound):
        ok = np.where(cost_value > bound, sur < cost_value, ok)
    trusted = cfg.verify_max_kl <= 0 or kl <= cfg.verify_max_kl
    return bool(np.all(ok) and np.all(np.isfinite(sur)) and trusted)


def verify(
    new: GaussianPolicy,
    policy_k: GaussianPolicy,
    obs: torch.Tensor,
    act: torch.Tensor,
    logp_k: torch.Tensor,
    a: Advantages,
    cfg: SafeMetaConfig,
    lam_c: np.ndarray,
    bound: np.ndarray,
    ucb: np.ndarray | float = 0.0,
) -> tuple[GaussianPolicy, np.ndarray, float, int, bool]:
    """SPEC §2.4 step 4: back off θ toward θ_k by halving until the surrogate holds."""
    theta_k, theta = policy_k.flat_params(), new.flat_params()
    for k in range(cfg.max_backoffs + 1):
        alpha = 0.5**k
        new.set_flat_params(theta_k + alpha * (theta - theta_k))
        sur, kl = surrogate_cost(new, policy_k, obs, act, logp_k, a, lam_c, ucb)
        if acceptable(sur, kl, a.cost_value, bound, cfg):
            return new, sur, kl, k, True
    sur0, _ = surrogate_cost(policy_k, policy_k, obs, act, logp_k, a, lam_c, ucb)
    return policy_k, sur0, 0.0, cfg.max_backoffs + 1, False


def adapt_step(
    policy_k: GaussianPolicy,
    roll: Rollout,
    critic: Any,
    params: AdaptParams,
    cfg: SafeMetaConfig,
    rng: np.random.Generator,
) -> AdaptResult:
    """One verified safe adaptation step from π_k on a one-task rollout (SPEC §2.4), with
    the advantages of `critic` (what the learner's `estimate` computes for a batch)."""
    adv = task_advantages(roll, critic, policy_k, cfg.gamma, cfg.gae_lambda, params.cost_type, cfg.kappa,
                          cfg.normalize_adv)
    return adapt_batch([policy_k], roll, [adv], params, cfg, rng)[0]


def adapt_batch(
    policies_k: list[GaussianPolicy],
    roll: Rollout,
    advs: list[Advantages],
    params: AdaptParams,
    cfg: SafeMetaConfig,
    rng: np.random.Generator,
    select: Callable[[int, GaussianPolicy, GaussianPolicy], Selected] | None = None,
    ucbs: list[np.ndarray] | None = None,
) -> list[AdaptResult]:
    """One verified safe adaptation step per task of `roll`, task i from `policies_k[i]`
    with its advantages `advs[i]`: the dual per task, one batched projection,
    verification per task. `select(i, projected, π_k)` replaces verification (the safety
    test's candidate selection) and `ucbs` the confidence terms added to Ĵ_c."""
    t1 = time.perf_counter()
    tasks = [roll.task(i) for i in range(roll.num_tasks)]
    finite = [_finite(a) for a in advs]  # SPEC §8: a non-finite sample is rejected, never used
    advs = [a if ok else _zeroed(a) for a, ok in zip(advs, finite)]
    episodes = roll.ep_cost if params.cost_type == "undiscounted" else roll.ep_disc_cost
    if ucbs is None:
        ucbs = [cost_ucb(ep, cfg.verify_confidence) for ep in episodes]
    lam_c, delta = params.lam_c, params.delta
    probs = [SampleDual(a.adv, a.cost_adv, a.cost_value + ucb, params.cost_limit, params.lam, lam_c, delta,
                        a.kappa) for a, ucb in zip(advs, ucbs)]
    sols = [solve_sample_dual(prob) for prob in probs]
    t2 = time.perf_counter()
    dev = torch.device(cfg.device)
    learners = [copy.deepcopy(pk).to(dev) for pk in policies_k]
    obs, act, mask = (
        _padded([r.obs for r in tasks], dev),
        _padded([r.act for r in tasks], dev),
        _padded([np.ones(len(r.obs)) for r in tasks], dev),
    )
    with torch.no_grad():  # log π_k on the learner device (= roll.logp up to float error)
        logp_k = torch.stack([lp.log_prob(obs[i], act[i]) for i, lp in enumerate(learners)])
    bound = params.bound - cfg.verify_margin
    if cfg.dual == "bisection":
        batch = PaddedBatch(obs, act, logp_k, mask)
        sols, new = bisect_dual(learners, batch, advs, probs, sols, bound, cfg, rng, ucbs)
    else:
        new = project_batch(learners, obs, act, logp_k, _tilt(advs, sols, dev), mask,
                            _eta(sols, dev), cfg, rng)
    results = []
    for i, (a, sol) in enumerate(zip(advs, sols)):
        k = len(tasks[i].obs)
        if select is not None:
            pol, sur, kl, backoffs, ok = select(i, new[i], learners[i])
        else:
            pol, sur, kl, backoffs, ok = verify(
                new[i], learners[i], obs[i, :k], act[i, :k], logp_k[i, :k], a, cfg, lam_c, bound, ucbs[i]
            )
        ok = ok and finite[i]
        results.append(AdaptResult(pol.to("cpu") if ok else policies_k[i], sol, kl, sur, backoffs, ok))
    t3 = time.perf_counter()
    for r in results:  # the batch's phase times, shared out per task
        r.times.update(t_dual=(t2 - t1) / len(results), t_projection=(t3 - t2) / len(results))
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
    probs: list[SampleDual],
    sols: list[SampleDualSolution],
    bound: np.ndarray,
    cfg: SafeMetaConfig,
    rng: np.random.Generator,
    ucbs: list[np.ndarray | float] | None = None,
) -> tuple[list[SampleDualSolution], list[GaussianPolicy]]:
    """SPEC §2.4 step 2, the alternative to the sample dual: per task, the smallest
    μ = s·direction (s ≥ 0) whose *projected* policy passes the acceptance rule of
    verification (`acceptable`: surrogate bound, KL cap, finiteness, recovery).

    For p = 1 this is a search over μ itself; for p > 1 it is a one-dimensional search
    along a ray: the sample dual's μ plus the constraints that the s = 0 projection
    breaks. s = 0 is probed first; then from the sample dual's scale (else the scale
    `solve_sample_dual` brackets from) s doubles while infeasible or halves while feasible,
    until an infeasible and a feasible scale bracket the boundary (at most
    `bisect_iters` probes), and `bisect_iters` bisections in log s narrow it. Each probe
    is one batched projection of the tasks still searching. Where the sample dual is
    infeasible, its own μ is probed once. Returns the solutions at the chosen μ and the
    projections made with exactly those μ (verification still follows).
    """
    dev, n_tasks = batch.obs.device, len(advs)
    ucbs = ucbs or [0.0] * n_tasks

    Probe = tuple[list[GaussianPolicy], list[np.ndarray], list[bool]]

    def probe(idx: list[int], mus: list[np.ndarray]) -> Probe:
        """Project tasks `idx` with multipliers `mus`: policies, surrogates, acceptance."""
        at = [solution_at(probs[i], mu) for i, mu in zip(idx, mus)]
        n = batch.obs.shape[1]
        pols = project_batch([learners[i] for i in idx], batch.obs[idx], batch.act[idx], batch.logp_k[idx],
                             _tilt([advs[i] for i in idx], at, dev, n), batch.mask[idx], _eta(at, dev), cfg,
                             rng)
        surs, oks = [], []
        for j, i in enumerate(idx):
            sur, kl = surrogate_cost(pols[j], learners[i], *batch.task(i), advs[i], probs[i].lam_c, ucbs[i])
            surs.append(sur)
            oks.append(acceptable(sur, kl, advs[i].cost_value, bound, cfg))
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
        lam = probs[i].lam
        scale[i] = float(mu.max()) if mu.max() > 0 else (max(lam / lam_c, 1e-3) if lam_c > 0 else 1.0)
        searching.append(i)
    for _ in range(cfg.bisect_iters):  # bracket: double while infeasible, halve while feasible
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
    for _ in range(cfg.bisect_iters):  # bisection in log s between an infeasible lo and a feasible hi
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


def _tilt(advs: list[Advantages], sols: list[SampleDualSolution], dev: torch.device,
          n: int | None = None) -> torch.Tensor:
    """B = A − Σ_i u_i A_{c_i} per task, padded to n (u = κμ, the slides' scaling)."""
    return _padded([a.adv - a.cost_adv @ sol.u for a, sol in zip(advs, sols)], dev, n)


def _eta(sols: list[SampleDualSolution], dev: torch.device) -> torch.Tensor:
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
