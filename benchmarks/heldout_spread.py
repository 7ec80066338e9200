"""Why does the held-out safety test keep π_k? The spread behind its bound, per task (issue 14).

For a trained run (its latest checkpoint), on fresh in-distribution tasks: the meta-policy
explores `--episodes` episodes per task, then one meta-test adaptation step runs with the
held-out safety test (`core/safety_test.py`). Per task it prints, for the candidate part
(candidate selection) and the held-out part (the test), the standard deviation of the cost
advantages, and per step fraction tested the mean and standard deviation of the
per-episode change X_j − C_j, its upper bound, π_k's own bound, and the outcome.

A held-out spread of cost advantages far above the candidate part's means the critics,
fitted on the candidate part only, extrapolate badly to the held-out episodes.

    python benchmarks/heldout_spread.py RUN_DIR [--tasks 3] [--episodes 40] [--set critic_reg=1 ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--tasks", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    import safemeta.core.safety_test as ST
    from safemeta import config as C
    from safemeta.experiment.runner import load_algorithm
    from safemeta.meta_learner import Phase

    algo = load_algorithm(args.run_dir, C.parse_overrides(args.sets), log=lambda m: None).algo
    cfg = algo.cfg
    log: list[dict] = []
    surrogates, test = ST.episode_surrogates, ST.safety_test

    def recorded_surrogates(policy, ref, part, lam_c):  # type: ignore[no-untyped-def]
        x, kl = surrogates(policy, ref, part, lam_c)
        if part.m:
            d = x - part.ep_cost
            log.append({"m": part.m, "kl": kl, "adv_sd": float(part.adv.cost_adv[:, 0].std()),
                        "mean": float(d[:, 0].mean()), "sd": float(d[:, 0].std(ddof=1)),
                        "ub": float(ST.change_bound(d, cfg)[0])})
        return x, kl

    def recorded_test(candidate, policy_k, held, own_ub, params, cfg_, recovering):  # type: ignore[no-untyped-def]
        log.append({"test": True, "own_ub": float(own_ub[0]), "limit": float(params.bound[0])})
        out = test(candidate, policy_k, held, own_ub, params, cfg_, recovering)
        log.append({"outcome": out.status, "fraction": out.fraction})
        return out

    ST.episode_surrogates, ST.safety_test = recorded_surrogates, recorded_test
    try:
        tasks = algo.suite.sample_tasks(args.tasks, np.random.default_rng(99), "test")
        base = algo.meta_policies(len(tasks))
        data = algo.collect(tasks, base, Phase.TEST_DATA, 0, episodes=args.episodes)
        algo.adapt(data, base)
    finally:
        ST.episode_surrogates, ST.safety_test = surrogates, test
        algo.close()

    print(f"{args.run_dir}: {args.tasks} fresh tasks x {args.episodes} episodes, settings changed: "
          f"{args.sets or 'none'}")
    print("| part | m | KL | sd of cost advantages | mean change | sd of change | change bound | note |")
    print("|---|---|---|---|---|---|---|---|")
    part = "candidate selection"
    for rec in log:
        if "test" in rec:
            part = "held-out test"
            print(f"| held-out test | | | | | | | π_k's own bound {rec['own_ub']:.1f}, limit + δ "
                  f"{rec['limit']:.1f} |")
        elif "outcome" in rec:
            print(f"| outcome | | | | | | | {rec['outcome']} (fraction {rec['fraction']:g}) |")
            part = "candidate selection"
        else:
            print(f"| {part} | {rec['m']} | {rec['kl']:.3g} | {rec['adv_sd']:.3g} | {rec['mean']:.3g} "
                  f"| {rec['sd']:.3g} | {rec['ub']:.3g} | |")


if __name__ == "__main__":
    main()
