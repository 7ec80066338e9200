"""Does the held-out test's cost surrogate see what a step does to the true cost? (issue 10)

For a trained run (its latest checkpoint), on fresh in-distribution tasks: the meta-policy
π_k explores `--episodes` episodes per task and one meta-test adaptation step runs with
the held-out safety test. For every task whose candidate reached the test, its full step
π' is compared on the same held-out episodes of π_k by two estimates of the change
J_c(π') − J_c(π_k), each with its (1 − α/(2K)) upper bound (the test's Bonferroni level):

    surrogate  the test's per-episode change X_j − C_j: first order in the policy change
               (per-step ratios times cost advantages, plus λ_c·KL; `core/safety_test.py`)
    per-decision importance sampling  Σ_t (W_t − 1) c_t with W_t = Π_{u ≤ t} π'(a_u|s_u)/π_k(a_u|s_u)
               over the episode: unbiased for the change wherever π_k's episodes reach the
               costly states, with the variance of the trajectory weights (their effective
               sample size, ESS, is reported)

and the truth: the change between `--true-episodes` fresh episodes of π' and of π_k.
A surrogate bound below the true change on a step the test accepted is a miss.

    python benchmarks/surrogate_bias.py RUN_DIR [--tasks 10] [--episodes 40] [--true-episodes 100]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch


def per_decision_change(policy, held_roll, sample) -> np.ndarray:  # type: ignore[no-untyped-def]
    """(m,) Σ_t (W_t − 1) c_t per held-out episode (constraint 0)."""
    with torch.no_grad():
        log_ratio = (policy.log_prob(sample.obs, sample.act) - sample.logp_k).double().cpu().numpy()
    cost = held_roll.cost[:, 0]
    out = np.zeros(sample.m)
    for j in range(sample.m):
        idx = np.flatnonzero(sample.episode == j)
        out[j] = float(((np.exp(np.cumsum(log_ratio[idx])) - 1.0) * cost[idx]).sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--episodes", type=int, default=40, help="exploration episodes of π_k per task")
    ap.add_argument("--true-episodes", type=int, default=100, help="fresh episodes per policy for the truth")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    import safemeta.core.meta as M
    import safemeta.core.safety_test as ST
    from safemeta import config as C
    from safemeta.experiment.runner import load_algorithm
    from safemeta.meta_learner import Phase, TaskPolicy

    algo = load_algorithm(args.run_dir, C.parse_overrides(args.sets), log=lambda m: None).algo
    split, test = M.split_episodes, ST.safety_test
    held_rolls: list = []
    seen: list[dict] = []

    def recorded_split(roll, fraction, rng):  # type: ignore[no-untyped-def]
        cand, held = split(roll, fraction, rng)
        held_rolls.append(held)
        return cand, held

    def recorded_test(candidate, policy_k, held, own_ub, params, cfg_, recovering):  # type: ignore[no-untyped-def]
        out = test(candidate, policy_k, held, own_ub, params, cfg_, recovering)
        # which task: the held-out rollout's task whose observations these are
        roll = held_rolls[-1]
        first = held.obs[0].cpu().numpy()
        i = next(k for k in range(roll.num_tasks)
                 if len(roll.task(k).obs) == len(held.obs) and np.allclose(roll.task(k).obs[0], first))
        x, kl = ST.episode_surrogates(candidate, policy_k, held, params.lam_c)
        sur = (x - held.ep_cost)[:, 0]
        pdis, ess = per_decision_change(candidate, roll.task(i), held), ST.trajectory_ess(candidate, held)
        seen.append({"task": i, "policy": copy.deepcopy(candidate).cpu(), "kl": kl, "m": held.m,
                     "own_ub": float(own_ub[0]), "limit": float(params.bound[0]),
                     "sur": float(sur.mean()), "sur_ub": float(ST.change_bound(sur[:, None], cfg_)[0]),
                     "pdis": float(pdis.mean()), "pdis_ub": float(ST.change_bound(pdis[:, None], cfg_)[0]),
                     "ess": ess, "outcome": out.status, "fraction": out.fraction})
        return out

    M.split_episodes, ST.safety_test = recorded_split, recorded_test
    try:
        tasks = algo.suite.sample_tasks(args.tasks, np.random.default_rng(99), "test")
        base = algo.meta_policies(len(tasks))
        data = algo.collect(tasks, base, Phase.TEST_DATA, 0, episodes=args.episodes)
        algo.adapt(data, base)
        M.split_episodes, ST.safety_test = split, test
        idx = [s["task"] for s in seen]
        truth_k = algo.collect([tasks[i] for i in idx], [base[i] for i in idx], Phase.TEST_EVAL, 1,
                               episodes=args.true_episodes, index=idx).cost_return(algo.cost_type)[:, 0]
        truth_new = algo.collect([tasks[i] for i in idx], [TaskPolicy(s["policy"]) for s in seen],
                                 Phase.TEST_EVAL, 2, episodes=args.true_episodes,
                                 index=idx).cost_return(algo.cost_type)[:, 0]
    finally:
        M.split_episodes, ST.safety_test = split, test
        algo.close()

    print(f"{args.run_dir}: {args.tasks} fresh tasks x {args.episodes} episodes, full candidate steps "
          f"tested on the held-out episodes, truth from {args.true_episodes} episodes per policy; "
          f"settings changed: {args.sets or 'none'}")
    print("| task | KL | held out | π_k true cost | π' true cost | true change | surrogate change (bound) "
          "| per-decision IS change (bound) | ESS | π_k's own bound + surrogate bound vs d + δ | test |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s, ck, cn in zip(seen, truth_k, truth_new):
        print(f"| {s['task']} | {s['kl']:.4f} | {s['m']} | {ck:.1f} | {cn:.1f} | {cn - ck:+.1f} | "
              f"{s['sur']:+.1f} ({s['sur_ub']:+.1f}) | {s['pdis']:+.1f} ({s['pdis_ub']:+.1f}) | "
              f"{s['ess']:.1f} | "
              f"{s['own_ub'] + s['sur_ub']:.1f} vs {s['limit']:.0f} | {s['outcome']} ({s['fraction']:g}) |")


if __name__ == "__main__":
    main()
