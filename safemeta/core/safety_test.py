"""Anytime safety with a stated probability: the held-out safety test (issue 10).

The verification of SPEC §2.4 step 4 checks the constraint surrogate on the very
episodes the dual and the projection were fitted to, so it is optimistic exactly for
the steps it accepts (a winner's curse), and its noise is not bounded. The Seldonian
answer (Thomas et al., "Preventing undesirable behavior of intelligent machines",
Science 2019; high-confidence off-policy evaluation, Thomas et al. 2015):

1. per task, split π_k's episodes (the independent units) into a *candidate* part and a
   held-out *safety* part (`safety_split` of them);
2. candidate selection on the candidate part only: critics, dual, projection, and a
   back-off that aims at the bound the test will apply (the candidate's mean change
   below plus `safety_inflate` × the half-width the test will have with the held-out
   count, predicted from the candidate part's spread: Thomas et al. double it);
3. the safety test, in two halves. π_k's own cost J_c(π_k): a (1 − α/2) upper bound from
   *all* its episodes (π_k was fixed before they were drawn: no selection touches it).
   The change the step makes: per held-out episode j the constraint surrogate minus
   π_k's episode cost C_j,

       X_j − C_j = κ Σ_{t∈j} (ρ_t − 1) A_c(s_t, a_t) / L̄ + λ_c Σ_{t∈j} KL_t / L̄

   (ρ = π/π_k; L̄: mean episode length of the part; as the cost advantages are centred
   over the part, the mean of X_j is exactly the pooled surrogate of SPEC §2.4 step 4,
   and at π = π_k X_j = C_j), and a (1 − α/(2K)) upper bound of its mean. Accept when
   own bound + change bound ≤ d + δ for every constraint; else test the step backed off
   to 1/2, 1/4, ... of itself (K = `safety_retests` fractions in all); else keep π_k
   exactly. By the union bound, a policy handed out exceeds d + δ in its surrogate with
   probability ≤ α/2 + K·α/(2K) = α. Or (`safety_multiplicity = fixed_sequence`) test the
   fractions from the smallest up, each at α/2, and hand out the largest before the first
   failure: a sequence fixed in advance keeps the same α without dividing it. Splitting
   the bound this way is what makes the test usable with ten episodes: π_k's cost is
   bounded on all of them, and the change, whose spread is far smaller than the episode
   costs', on the held-out few.

When π_k itself is over the limit (its mean cost over all its episodes exceeds d + δ:
*recovering*), a step is also accepted when it is a verified decrease: the change's upper
bound is below 0, the paired form of "the new policy's upper bound is below π_k's own
lower bound" (one episode's cost appears on both sides, so the pairing removes its
variance).

The bound: Student t with Hall's skewness correction (default; Thomas et al. 2019 use
the plain t in their experiments; on a bandit with known costs the plain t accepted
unsafe steps at up to 2-3 times its nominal rate, the corrected one within it for steps
of KL ≤ 0.06: tests/test_safety_test.py), or a distribution-free empirical
Bernstein bound (Maurer & Pontil 2009) on values clipped to [0, `safety_range`]: valid
whatever the distribution when the per-episode surrogate lies in that range, but wide
for the few episodes a task has (its 7b·ln(2/α)/(3(m−1)) term).

The critics of both parts are fitted on the candidate part only, so that the held-out
values depend on the candidate data only through the candidate (the cost advantages
are centred over the held-out part: an O(1/m) coupling between its episodes).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import stats

from safemeta.core.adaptation import AdaptParams, AdaptResult, adapt_batch
from safemeta.nn.policy import GaussianPolicy, gaussian_kl
from safemeta.rollout.advantages import Advantages
from safemeta.rollout.buffer import Rollout, episode_index, select_episodes

if TYPE_CHECKING:
    from safemeta.core.meta import SafeMetaConfig

ACCEPTED, BACKED_OFF, KEPT = "accepted", "backed_off", "kept"


# ---- statistics --------------------------------------------------------------------------
def upper_bound(x: np.ndarray, alpha: float, kind: str = "t", value_range: float = 0.0,
                prior_var: np.ndarray | None = None) -> np.ndarray:
    """(p,) one-sided (1 − α) upper confidence bound of the mean of the i.i.d. rows of x (m, p).

    "t": x̄ + (s/√m)·(t + max(ĝ, 0)(2t² + 1)/(6√m)), t = t_{1−α, m−1}, s with ddof 1 and ĝ the
    sample skewness (from 3 values on; Hall 1992's correction of the Student-t bound: a right-
    skewed sample, as episode costs and importance-weighted sums are, makes the plain t bound
    too low exactly when the sample mean is low). With `prior_var` s0² (p,), the moderated t
    (Smyth 2004, with the prior's weight d0 = m − 1): s² becomes (s0² + s²)/2 on 2(m − 1)
    degrees of freedom, so that a sample with no spread (ten episodes of a sparse cost, all
    zero) does not state a bound of zero. "bernstein" (Maurer & Pontil 2009, Thm 4, scaled to
    [0, b]): on x clipped to [0, b], x̄ + √(2 s² ln(2/α)/m) + 7 b ln(2/α)/(3(m−1)).
    +inf with fewer than 2 values (nothing can be stated)."""
    x = np.asarray(x, np.float64)
    m = len(x)
    if m < 2:
        return np.full(x.shape[1:], np.inf)
    if kind == "bernstein":
        x = np.clip(x, 0.0, value_range)
        return x.mean(0) + half_width(x.std(0, ddof=1), m, alpha, kind, value_range)
    mean, std = x.mean(0), x.std(0, ddof=1)
    df = m - 1
    if prior_var is not None:
        std, df = np.sqrt((np.asarray(prior_var, np.float64) + std**2) / 2), 2 * (m - 1)
    skew = np.zeros_like(mean)  # µ̂₃ / s³, with the s the bound uses
    if m >= 3:
        safe = np.where(std > 0, std, 1.0)
        skew = np.where(std > 0, ((x - mean) ** 3).mean(0) / safe**3, 0.0)
    t = stats.t.ppf(1.0 - alpha, df)
    return mean + std / np.sqrt(m) * (t + np.maximum(skew, 0.0) * (2 * t**2 + 1) / (6 * np.sqrt(m)))


def prior_variances(episodes: list[np.ndarray]) -> list[np.ndarray | None]:
    """Per task, the moderated t's prior s0² (p,): the mean of the *other* tasks' sample
    variances of their episode costs (leave-one-out, so that the prior is information the
    task's own sample does not hold; tasks with 2 finite episodes or more). None, the own
    bound, where fewer than 2 other tasks have one."""
    var = [c.var(0, ddof=1) if len(c) >= 2 and np.all(np.isfinite(c)) else None for c in episodes]
    out: list[np.ndarray | None] = []
    for i in range(len(episodes)):
        others = [v for j, v in enumerate(var) if j != i and v is not None]
        out.append(np.mean(others, axis=0) if len(others) >= 2 else None)
    return out


def half_width(std: np.ndarray, m: int, alpha: float, kind: str = "t",
               value_range: float = 0.0) -> np.ndarray:
    """The width the bound adds to the mean for m values of sample standard deviation `std`."""
    std = np.asarray(std, np.float64)
    if m < 2:
        return np.full(std.shape, np.inf)
    if kind == "bernstein":
        log = np.log(2.0 / alpha)
        return np.sqrt(2.0 * std**2 * log / m) + 7.0 * value_range * log / (3.0 * (m - 1))
    return stats.t.ppf(1.0 - alpha, m - 1) * std / np.sqrt(m)


# ---- the split ---------------------------------------------------------------------------
def split_episodes(roll: Rollout, fraction: float, rng: np.random.Generator) -> tuple[Rollout, Rollout]:
    """Per task, a random `fraction` of its episodes (at least 2, leaving at least 1) held out
    for the safety test; the rest is the candidate part. Whole episodes: they are the
    independent units. A task with fewer than 3 episodes holds none out (its test then
    has nothing to state and keeps π_k)."""
    cand, held = [], []
    for costs in roll.ep_cost:
        n = len(costs)
        m = min(max(2, int(round(fraction * n))), n - 1) if n >= 3 else 0
        perm = rng.permutation(n)
        held.append(np.sort(perm[:m]))
        cand.append(np.sort(perm[m:]))
    return select_episodes(roll, cand), select_episodes(roll, held)


# ---- per-episode surrogates ------------------------------------------------------------------
@dataclass
class EpisodeSample:
    """One task's part (candidate or held out) on the learner device."""

    obs: torch.Tensor
    act: torch.Tensor
    logp_k: torch.Tensor  # log π_k(a|s)
    adv: Advantages
    episode: np.ndarray  # (n,) episode of each transition, 0..m−1
    ep_cost: np.ndarray  # (m, p) π_k's episode costs, of the type the limit binds

    @property
    def m(self) -> int:
        return len(self.ep_cost)

    @classmethod
    def of(cls, roll: Rollout, i: int, adv: Advantages, policy_k: GaussianPolicy, cost_type: str,
           dev: torch.device) -> EpisodeSample:
        task = roll.task(i)
        obs = torch.as_tensor(task.obs, dtype=torch.float32, device=dev)
        act = torch.as_tensor(task.act, dtype=torch.float32, device=dev)
        with torch.no_grad():
            logp_k = policy_k.log_prob(obs, act)
        costs = task.ep_cost[0] if cost_type == "undiscounted" else task.ep_disc_cost[0]
        return cls(obs, act, logp_k, adv, episode_index(task)[0], np.asarray(costs, np.float64))


def episode_surrogates(policy: GaussianPolicy, ref: GaussianPolicy, part: EpisodeSample,
                       lam_c: np.ndarray) -> tuple[np.ndarray, float]:
    """(m, p) X_j of every episode of `part` (module docstring) and E_s[KL(π‖π_k)]."""
    m = part.m
    if m == 0:
        return np.zeros((0, len(lam_c))), 0.0
    with torch.no_grad():
        mean, log_std = policy(part.obs)
        ratio = torch.exp(policy.log_prob(part.obs, part.act) - part.logp_k).double().cpu().numpy()
        mean_k, log_std_k = ref(part.obs)
        kl = gaussian_kl(mean, log_std, mean_k, log_std_k).double().cpu().numpy()
    length = len(ratio) / m  # L̄
    a = part.adv
    change = np.stack([np.bincount(part.episode, (ratio - 1.0) * a.cost_adv[:, c], minlength=m)
                       for c in range(a.cost_adv.shape[1])], 1)
    kl_ep = np.bincount(part.episode, kl, minlength=m)
    x = part.ep_cost + a.kappa * change / length + lam_c[None] * kl_ep[:, None] / length
    return x, float(kl.mean())


def trajectory_ess(policy: GaussianPolicy, part: EpisodeSample) -> float:
    """Effective sample size (Σ W_j)² / Σ W_j² of the trajectory importance weights
    W_j = Π_{t∈j} π(a_t|s_t)/π_k(a_t|s_t) over the episodes of `part`: m when π = π_k, near 1
    when one episode dominates (π's trajectories are not those π_k's episodes show)."""
    if part.m == 0:
        return 0.0
    with torch.no_grad():
        log_ratio = (policy.log_prob(part.obs, part.act) - part.logp_k).double().cpu().numpy()
    log_w = np.bincount(part.episode, log_ratio, minlength=part.m)
    w = np.exp(log_w - log_w.max())
    return float(w.sum() ** 2 / (w**2).sum())


def covered(policy: GaussianPolicy, part: EpisodeSample, cfg: SafeMetaConfig) -> bool:
    """`safety_min_ess`: the trajectory weights' ESS is at least that share of the episodes."""
    return cfg.safety_min_ess <= 0 or trajectory_ess(policy, part) >= cfg.safety_min_ess * part.m


# ---- candidate selection and the test ------------------------------------------------------
@dataclass
class TestOutcome:
    policy: GaussianPolicy
    status: str  # ACCEPTED (the candidate), BACKED_OFF (a fraction of it), KEPT (π_k)
    fraction: float  # of the candidate's step; 0 when π_k is kept
    bound: np.ndarray  # (p,) upper bound on J_c of the last policy tested (π_k's own when none was)
    estimate: np.ndarray  # (p,) held-out mean surrogate of that policy


def own_bound(own: np.ndarray, cfg: SafeMetaConfig, prior_var: np.ndarray | None = None) -> np.ndarray:
    """(p,) the (1 − α/2) upper bound of J_c(π_k) from all of π_k's episodes (m, p): π_k was
    fixed before they were drawn, so no selection touches this half of the test. `prior_var`:
    the tasks' pooled variance, with `safety_variance = moderated` (t only)."""
    prior = prior_var if cfg.safety_variance == "moderated" and cfg.safety_test == "t" else None
    return upper_bound(own, cfg.safety_alpha / 2, cfg.safety_test, cfg.safety_range, prior)


def change_alpha(cfg: SafeMetaConfig) -> float:
    """The level of each test of the change: α/(2K) for K = safety_retests fractions under the
    Bonferroni rule, α/2 under the fixed sequence (each fraction tested at the full half)."""
    if cfg.safety_multiplicity == "fixed_sequence":
        return cfg.safety_alpha / 2
    return cfg.safety_alpha / (2 * cfg.safety_retests)


def change_bound(d: np.ndarray, cfg: SafeMetaConfig) -> np.ndarray:
    """(p,) the (1 − `change_alpha`) upper bound of the mean surrogate change X_j − C_j (m, p)
    on the held-out part (Bernstein: the change lies in [−b, b])."""
    alpha = change_alpha(cfg)
    if cfg.safety_test == "bernstein":
        b = cfg.safety_range
        return upper_bound(d + b, alpha, "bernstein", 2 * b) - b
    return upper_bound(d, alpha, "t")


def change_width(d: np.ndarray, m: int, cfg: SafeMetaConfig) -> np.ndarray:
    """The half-width `change_bound` will have with m held-out values of d's spread."""
    alpha = change_alpha(cfg)
    b = 2 * cfg.safety_range
    return half_width(d.std(0, ddof=1), m, alpha, cfg.safety_test, b)


def decrease_allowed(recovering: np.ndarray, own_ub: np.ndarray, bound: np.ndarray,
                     cfg: SafeMetaConfig) -> np.ndarray:
    """(p,) the constraints on which a verified decrease is enough (`safety_decrease`): those π_k
    violates (`recovering`), and with 'always' also those whose own bound is over d + δ."""
    if cfg.safety_decrease == "always":
        return recovering | (own_ub > bound)
    return recovering


def passes(change_ub: np.ndarray, own_ub: np.ndarray, bound: np.ndarray,
           decrease: np.ndarray) -> np.ndarray:
    """(p,) the test's rule per constraint: the upper bound on J_c of the new policy,
    own_ub + change_ub, is ≤ d + δ; or, where a verified decrease is enough
    (`decrease_allowed`), change_ub < 0 (the paired form of "the new policy's upper bound is
    below π_k's own lower bound": one episode's cost is on both sides)."""
    return (own_ub + change_ub <= bound) | (decrease & (change_ub < 0))


def select_candidate(new: GaussianPolicy, policy_k: GaussianPolicy, part: EpisodeSample, m_test: int,
                     own_ub: np.ndarray, params: AdaptParams, cfg: SafeMetaConfig, decrease: np.ndarray
                     ) -> tuple[GaussianPolicy, np.ndarray, float, int, bool]:
    """Candidate selection on the candidate part: back off θ toward θ_k by halving until the
    candidate would pass the test with `m_test` held-out episodes, as predicted from the
    candidate part (its mean change + safety_inflate × the predicted half-width in place of
    the change's bound), with E_s[KL] ≤ verify_max_kl and `covered`. (policy, surrogate, kl, backoffs,
    found)."""
    theta_k, theta = policy_k.flat_params(), new.flat_params()
    for k in range(cfg.max_backoffs + 1 if m_test >= 2 else 0):  # fewer held out: the test states nothing
        new.set_flat_params(theta_k + 0.5**k * (theta - theta_k))
        x, kl = episode_surrogates(new, policy_k, part, params.lam_c)
        if part.m < 2 or not np.all(np.isfinite(x)):
            break
        d = x - part.ep_cost
        predicted = d.mean(0) + cfg.safety_inflate * change_width(d, m_test, cfg)
        trusted = (cfg.verify_max_kl <= 0 or kl <= cfg.verify_max_kl) and covered(new, part, cfg)
        if np.all(passes(predicted, own_ub, params.bound, decrease)) and trusted:
            return new, x.mean(0), kl, k, True
    return policy_k, part.ep_cost.mean(0) if part.m else np.zeros(len(params.bound)), 0.0, \
        cfg.max_backoffs + 1, False


def safety_test(candidate: GaussianPolicy, policy_k: GaussianPolicy, held: EpisodeSample, own_ub: np.ndarray,
                params: AdaptParams, cfg: SafeMetaConfig, decrease: np.ndarray) -> TestOutcome:
    """The held-out test of the candidate at fractions 1, 1/2, ... of its step; π_k itself
    (the very object) when none passes. `own_ub`: `own_bound` of π_k's episodes;
    `decrease`: `decrease_allowed`.

    Bonferroni (`safety_multiplicity`): the fractions from the largest, each at α/(2K), the
    first that passes is handed out. Fixed sequence: from the smallest, each at α/2, stopping
    at the first that fails; the largest that passed is handed out. A fixed order needs no
    split: an unsafe policy can only be handed out if the first unsafe fraction in the order
    passes its own test (Maurer, Hothorn & Lehmacher 1995). Either way

    P(a policy handed out has J_c > d + δ) ≤ α/2 (π_k's bound) + α/2 (the changes),

    up to the accuracy of the bound and of the surrogate as a bound on J_c; with
    `safety_decrease = always`, for a π_k within d + δ (a verified decrease of a feasible
    π_k stays feasible unless the change's bound fails)."""
    theta_k, theta = policy_k.flat_params(), candidate.flat_params()
    bound, estimate = own_ub, held.ep_cost.mean(0) if held.m else np.full(len(own_ub), np.nan)
    sequence = cfg.safety_multiplicity == "fixed_sequence"
    fractions = [0.5**j for j in range(cfg.safety_retests)]
    passed: TestOutcome | None = None
    for f in fractions[::-1] if sequence else fractions:
        trial = copy.deepcopy(candidate)
        trial.set_flat_params(theta_k + f * (theta - theta_k))
        x, _ = episode_surrogates(trial, policy_k, held, params.lam_c)
        ub = change_bound(x - held.ep_cost, cfg)
        bound, estimate = own_ub + ub, x.mean(0) if held.m else estimate
        ok = bool(np.all(passes(ub, own_ub, params.bound, decrease)) and np.all(np.isfinite(x))
                  and covered(trial, held, cfg))
        if ok:
            passed = TestOutcome(trial, ACCEPTED if f == 1.0 else BACKED_OFF, f, bound, estimate)
        if ok != sequence:  # Bonferroni stops at the first pass, the sequence at the first failure
            break
    return passed if passed is not None else TestOutcome(policy_k, KEPT, 0.0, bound, estimate)


def adapt_tested(
    policies_k: list[GaussianPolicy],
    data: Rollout,
    cand: Rollout,
    held: Rollout,
    advs_c: list[Advantages],
    advs_h: list[Advantages],
    params: AdaptParams,
    cfg: SafeMetaConfig,
    rng: np.random.Generator,
) -> list[AdaptResult]:
    """One adaptation step per task with the held-out safety test: the dual and the projection
    on the candidate part (`adapt_batch`), candidate selection aimed at the test, the test on
    the held-out part. `data` is all of π_k's episodes (cand ∪ held): π_k's own cost bound,
    and whether a task is recovering (π_k's mean cost over d + δ)."""
    dev = torch.device(cfg.device)
    own_all = data.ep_cost if params.cost_type == "undiscounted" else data.ep_disc_cost
    priors = prior_variances(own_all) if cfg.safety_variance == "moderated" else [None] * len(own_all)
    own_ubs = [own_bound(c, cfg, prior) for c, prior in zip(own_all, priors)]
    recovering = np.stack([c.mean(0) > params.bound for c in own_all])
    m_test = [len(c) for c in held.ep_cost]
    own_cand = cand.ep_cost if params.cost_type == "undiscounted" else cand.ep_disc_cost
    # the dual aims at π_k's bound: Ĵ_c(π_k) of the candidate part + this = own_ub; where a
    # decrease is enough without recovering (`safety_decrease = always`), at d + δ: no increase
    decrease = [decrease_allowed(r, ub, params.bound, cfg) for r, ub in zip(recovering, own_ubs)]
    aims = [np.where(dec & ~r, params.bound, ub) for dec, r, ub in zip(decrease, recovering, own_ubs)]
    ucbs = [np.where(np.isfinite(a), a - c.mean(0), 0.0) for a, c in zip(aims, own_cand)]

    def select(i: int, new: GaussianPolicy, learner_k: GaussianPolicy
               ) -> tuple[GaussianPolicy, np.ndarray, float, int, bool]:
        part = EpisodeSample.of(cand, i, advs_c[i], learner_k, params.cost_type, dev)
        return select_candidate(new, learner_k, part, m_test[i], own_ubs[i], params, cfg, decrease[i])

    results = adapt_batch(policies_k, cand, advs_c, params, cfg, rng, select=select, ucbs=ucbs)
    for i, r in enumerate(results):
        r.recovering = bool(recovering[i].any())
        pk = copy.deepcopy(policies_k[i]).to(dev)
        held_i = EpisodeSample.of(held, i, advs_h[i], pk, params.cost_type, dev)
        r.handed_bound = own_ubs[i]  # π_k's own, unless a candidate passes
        if not r.accepted:  # no candidate: π_k is kept, its own bound is reported
            r.status, r.fraction, r.test_bound = KEPT, 0.0, own_ubs[i]
            r.test_estimate = held_i.ep_cost.mean(0) if held_i.m else np.full(len(params.bound), np.nan)
            continue
        out = safety_test(r.policy.to(dev), pk, held_i, own_ubs[i], params, cfg, decrease[i])  # copies it
        r.status, r.fraction = out.status, out.fraction
        r.test_bound, r.test_estimate = out.bound, out.estimate
        if out.status == KEPT:
            r.policy, r.accepted, r.kl = policies_k[i], False, 0.0
        else:
            r.handed_bound = out.bound
            _, r.kl = episode_surrogates(out.policy, pk, held_i, params.lam_c)  # on the held-out states
            r.policy = out.policy.to("cpu")
    return results
