"""Meta-iteration time against tasks per iteration and sampling workers, projected from
per-task costs measured by `safemeta bench` (issue 11; the table of docs/scale.md).

    safemeta bench --env halfcheetah-vel --preset paper --algos safemeta --repeats 1 \\
        --set test_tasks=2 --set test_steps=1 --out bench.json
    python benchmarks/scale_projection.py bench.json --bench-tasks 10

`bench` samples in one process, so per task of one iteration (env steps of every
collection of the iteration, on one core):
- s = t_sampling / bench_tasks            sampling
- a = (t_critic + t_adapt) / bench_tasks  critics and adaptation (one learner process)
- o = t_outer / bench_tasks               the outer step (its cost grows with the data)
With N tasks split in contiguous chunks over W workers (`--backend process|ray`), the
slowest chunk has ceil(N / W) tasks, and the learner works through all N:
    today:             T = ceil(N/W) s + N (a + o) + N m / B
    adapt on workers:  T = ceil(N/W) (s + a) + N o + N m / B   (not built: what it would give)
where m is a task's data per iteration (--transfer-mb) and B the head node's bandwidth
(--bandwidth-gbit). Sampling stops being the limit at W* = s / (a + o) workers (today).
"""

from __future__ import annotations

import argparse
import json
import math


def project(s: float, a: float, o: float, n: int, w: int, transfer_s: float, adapt_on_workers: bool) -> float:
    if adapt_on_workers:
        return math.ceil(n / w) * (s + a) + n * o + n * transfer_s
    return math.ceil(n / w) * s + n * (a + o) + n * transfer_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bench", help="bench.json written by `safemeta bench`")
    p.add_argument("--bench-tasks", type=int, required=True, help="tasks per iteration of that bench")
    p.add_argument("--algo", default="safemeta")
    p.add_argument("--tasks", default="10,100,1000")
    p.add_argument("--workers", default="1,2,8,16,64")
    p.add_argument("--transfer-mb", type=float, default=2.0, help="a task's data per iteration, MB")
    p.add_argument("--bandwidth-gbit", type=float, default=10.0, help="the head node's network, Gbit/s")
    args = p.parse_args()
    t = json.load(open(args.bench))[args.algo]
    k = args.bench_tasks
    s, a, o = t["t_sampling"] / k, (t["t_critic"] + t["t_adapt"]) / k, t["t_outer"] / k
    transfer = args.transfer_mb * 8e-3 / args.bandwidth_gbit
    tasks = [int(x) for x in args.tasks.split(",")]
    workers = [int(x) for x in args.workers.split(",")]
    print(f"per task and iteration: sampling s = {s:.3f} s, critics + adaptation a = {a:.3f} s, "
          f"outer o = {o:.3f} s, transfer {transfer * 1e3:.1f} ms ({args.transfer_mb:g} MB at "
          f"{args.bandwidth_gbit:g} Gbit/s)")
    print(f"sampling stops being the limit at W* = s / (a + o) = {s / (a + o):.1f} workers "
          f"(adaptation on the workers too: (s + a) / o = {(s + a) / o:.1f})")
    for adapt_on_workers in (False, True):
        title = "adaptation on the workers too (not built)" if adapt_on_workers else "today"
        print(f"\nseconds per meta-iteration, {title}; in brackets the learner's share")
        print("| tasks | " + " | ".join(f"{w} worker{'s' if w > 1 else ''}" for w in workers) + " |")
        print("|---" * (len(workers) + 1) + "|")
        for n in tasks:
            cells = []
            for w in workers:
                total = project(s, a, o, n, w, transfer, adapt_on_workers)
                learner = n * (o if adapt_on_workers else a + o)
                cells.append(f"{total:,.0f} ({learner / total:.0%})" if total >= 10 else
                             f"{total:.1f} ({learner / total:.0%})")
            print(f"| {n:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
