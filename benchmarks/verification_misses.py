"""How often does a verified adaptation step from a feasible π_k exceed the limit, and
how much of that is the noise of judging a policy from a few episodes?

For a trained run (its latest checkpoint), on fresh training tasks, repeatedly:
collect π_k's episodes (the "pre" sample), take one safe adaptation step, then collect
the adapted policy's own episodes ("post") and, as a control, a second independent
sample of π_k itself ("null step"). Where the pre sample says π_k is within the limit:

    missed rate = P(post cost > d | step accepted)        (what `n_missed` counts)
    noise rate  = P(second π_k sample > d)                (a step that changes nothing)

A missed rate near the noise rate means the verification is as good as the episode
budget lets anyone judge; a higher one means the surrogate is too optimistic.

    python benchmarks/verification_misses.py RUN_DIR [--rounds 10] [--episodes N]
                                             [--set verify_max_kl=0.03 ...]

`--set` changes a config field of the run (verify_margin, verify_max_kl, max_backoffs,
proj_epochs, dual, ...) for this measurement only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--rounds", type=int, default=10, help="meta-batches of fresh training tasks")
    ap.add_argument("--episodes", type=int, default=None, help="episodes per sample (default: the run's)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    from safemeta import config as C
    from safemeta.experiment.runner import load_algorithm
    from safemeta.meta_learner import Phase

    algo, _, r, _ = load_algorithm(args.run_dir, C.parse_overrides(args.sets), log=lambda m: None)
    cfg = algo.cfg
    algo.rng = np.random.default_rng(12345)  # fresh tasks, not the training stream
    episodes = args.episodes or cfg.episodes_per_task
    limit = algo.cost_limit + algo.relaxation()
    counts = dict(feasible=0, accepted=0, missed=0, noise=0, pre_margin=[])
    t0 = time.perf_counter()
    for k in range(args.rounds):
        tasks = r.suite.sample_tasks(r.cfg.meta_batch, algo.rng, "train")
        base = algo.meta_policies(len(tasks))
        pre = algo.collect(tasks, base, Phase.PRE, 20_000 + k, episodes=episodes)
        adapted = algo.adapt(pre, base)
        post = algo.collect(tasks, adapted, Phase.POST, 20_000 + k, episodes=episodes)
        again = algo.collect(tasks, base, Phase.PRE, 30_000 + k, episodes=episodes)
        pre_c, post_c, again_c = (x.cost_return(algo.cost_type) for x in (pre, post, again))
        feasible = np.all(pre_c <= limit, axis=1)
        accepted = np.array([a.policy is not b.policy for a, b in zip(adapted, base)])  # moved from π_k
        counts["feasible"] += int(feasible.sum())
        counts["accepted"] += int((feasible & accepted).sum())
        counts["missed"] += int((feasible & accepted & np.any(post_c > limit, axis=1)).sum())
        counts["noise"] += int((feasible & np.any(again_c > limit, axis=1)).sum())
        print(f"round {k + 1}/{args.rounds}: {time.perf_counter() - t0:.0f} s", flush=True)
    f, a = counts["feasible"], counts["accepted"]
    print(f"\n{args.run_dir} ({r.spec.env}), {episodes} episodes per sample, limit {limit[0]:g}, "
          f"settings changed: {args.sets or 'none'}")
    print("| tasks with π_k feasible (pre sample) | steps accepted | missed rate | noise rate (null step) |")
    print("|---|---|---|---|")
    print(f"| {f} | {a} | {counts['missed'] / max(a, 1):.3f} ({counts['missed']}/{a}) | "
          f"{counts['noise'] / max(f, 1):.3f} ({counts['noise']}/{f}) |")


if __name__ == "__main__":
    main()
