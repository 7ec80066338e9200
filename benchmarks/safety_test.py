"""How often does an accepted adaptation step from a feasible π_k give a truly unsafe
policy? Today's verification (`safety_test=off`) against the held-out safety test
(`safety_test=t`, α = 0.05), side by side on the same data (issue 10).

For each trained run (its latest checkpoint), on fresh in-distribution tasks, per round
of `meta_batch` tasks: collect π_φ's episodes (the run's data budget), take one
adaptation step with each method from that same sample, then estimate the *true* cost
and reward of π_φ and of every adapted policy from a large fresh evaluation
(`--true-episodes`, default 200 per policy and task), so that a miss is a truly unsafe
policy, not the noise of a 10-episode look.

    miss rate   = P(true cost of the adapted policy > d | π_φ truly feasible, step accepted)
                  (95% Wilson interval); "clearly" when the true-cost estimate's own 95%
                  interval lies above d (a sparse cost's 200-episode mean has a standard
                  error of a few units near the limit)
    reward gain = mean over tasks of true reward(adapted) − true reward(π_φ) (a kept π_φ
                  gains 0), and its ratio to the verification's
    time        = wall time of one adaptation step per task
    coverage    = how often the test's (1 − α) upper bound on a moved policy's cost
                  (`test_bound`) is at least its true cost

    python benchmarks/safety_test.py RUN_DIR [RUN_DIR ...] [--tasks 200] [--true-episodes 200]
                                     [--out results/safety_test.json] [--set KEY=VALUE ...]

Resumable: with --out, every finished round is appended to OUT.rounds.jsonl, and a rerun of
the same command skips the rounds recorded there (a round's tasks, data and learner draws
depend only on the round's index; each round starts from the run's trained critics).

A variant of the test (`--test-set`) needs no new verification: with
`--verification-from OTHER.rounds.jsonl` (a run of the same RUN_DIR, --true-episodes and
--set), the verification's counts of the rounds recorded there are taken as they are (the
file is read again every round), which halves the cost of a round.

Sharded over processes: `--shard I/N` does only the rounds whose index is I modulo N and
appends them to OUT.rounds.jsonl (one write per round, so N processes may share the file);
the same command without --shard then reads them all and writes OUT.json (with
`--recorded-only`, from the rounds recorded so far, measuring nothing: the interim numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

# today's verification with its defaults before the safety test (λ_c = 10·d), and the test's defaults
VERIFICATION = "verification (off)"
METHODS = {VERIFICATION: {"safety_test": "off", "lam_c_scale": 10.0},
           "safety test (t, α=0.05)": {"safety_test": "t"}}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z**2 / n
    mid = (p + z**2 / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def records(path: Path | None):  # type: ignore[no-untyped-def]
    """The round records of a rounds file (none when it does not exist); a line cut by a
    kill is skipped, so that round is done again."""
    if path is None or not path.exists():
        return
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            yield rec, json.loads(rec["key"])
        except (json.JSONDecodeError, KeyError):
            continue


def parse_shard(text: str | None) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N; None -> (0, 1), every round."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise SystemExit(f"--shard: got {text!r}; accepted I/N with 0 <= I < N, e.g. 0/2")
    return i, n


def append_record(path: Path, rec: dict) -> None:
    """One round's line, in a single write to a file opened for appending: shards sharing
    the rounds file never interleave their lines."""
    data = ("\n" + json.dumps(rec) + "\n").encode()  # a line cut by a kill costs only itself
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def load_rounds(path: Path | None, run_dir: Path, key: str) -> dict[int, dict]:
    """Round index -> its recorded counts per method, for this run and settings."""
    return {int(rec["round"]): rec["counts"] for rec, _ in records(path)
            if rec.get("run") == str(run_dir) and rec["key"] == key}


def recorded_verification(paths: list[Path], run_dir: Path, true_episodes: int,
                          sets: list[str]) -> dict[int, dict]:
    """Round index -> the verification's counts recorded in any of `paths` for this run with
    these --true-episodes and --set (the verification does not depend on --test-set)."""
    return {int(rec["round"]): rec["counts"][VERIFICATION] for path in paths for rec, key in records(path)
            if rec.get("run") == str(run_dir) and key.get("true_episodes") == true_episodes
            and key.get("sets") == sets and VERIFICATION in rec["counts"]}


def measure(run_dir: Path, n_tasks: int, true_episodes: int, sets: list[str], test_sets: list[str],
            partial=None, rounds_file: Path | None = None,  # type: ignore[no-untyped-def]
            verification_from: list[Path] = (), shard: tuple[int, int] = (0, 1),
            recorded_only: bool = False) -> dict:
    from safemeta import config as C
    from safemeta.experiment.runner import load_algorithm
    from safemeta.meta_learner import Phase

    algos = {}
    for name, over in METHODS.items():
        own = C.parse_overrides(test_sets) if over["safety_test"] != "off" else {}
        algos[name], _, r, payload = load_algorithm(run_dir, over, C.parse_overrides(sets), own,
                                                    log=lambda m: None)
    first = next(iter(algos.values()))
    # of the sample each step adapts on: meta-test's exploration budget
    episodes = first.cfg.test_episodes_per_task or first.cfg.episodes_per_task
    limit = first.cost_limit + first.relaxation()
    rng = np.random.default_rng(777)
    batch = r.cfg.meta_batch
    out = {name: dict(feasible=0, accepted=0, missed=0, kept=0, gains=[], times=[], tasks=[],
                      missed_clearly=0, accepted_with_se=0) for name in algos}
    key = json.dumps({"true_episodes": true_episodes, "sets": sets, "test_sets": test_sets})
    recorded = load_rounds(rounds_file, run_dir, key)
    t0, done, rnd, counted = time.perf_counter(), 0, 0, 0
    while done < n_tasks:
        tasks = r.suite.sample_tasks(min(batch, n_tasks - done), rng, "train")
        if rnd in recorded:  # measured before this rerun
            for name, counts in recorded[rnd].items():
                for k, v in counts.items():
                    out[name][k] += v
            done, counted, rnd = done + len(tasks), counted + len(tasks), rnd + 1
            continue
        if rnd % shard[1] != shard[0] or recorded_only:  # not this process's round (its tasks are drawn)
            done += len(tasks)
            rnd += 1
            continue
        for algo in algos.values():  # every round from the trained critics, its own learner draws
            algo.load_state_dict(payload["algo"])
            algo.rng = np.random.default_rng([2026, rnd])  # the same for both methods
        counts: dict[str, dict] = {}
        reused = recorded_verification(list(verification_from), run_dir, true_episodes, sets).get(rnd)
        base = first.meta_policies(len(tasks))
        ev0 = first.collect(tasks, base, Phase.TEST_EVAL, 60_000 + rnd, episodes=true_episodes)
        cost0, rew0 = ev0.cost_return(first.cost_type), ev0.reward_return()
        se0 = standard_errors(ev0, first.cost_type)
        feasible = np.all(cost0 <= limit, axis=1)
        for m, (name, algo) in enumerate(algos.items()):
            if name == VERIFICATION and reused is not None:  # the same round, measured by another run
                counts[name] = reused
                for k, v in reused.items():
                    out[name][k] += v
                continue
            data = first.collect(tasks, base, Phase.PRE, 50_000 + rnd,  # the same sample, fresh cache
                                 episodes=first.cfg.test_episodes_per_task or None)
            ts = time.perf_counter()
            adapted = algo.adapt(data, base)
            out[name]["times"].append((time.perf_counter() - ts) / len(tasks))
            moved = [i for i, a in enumerate(adapted) if a.policy is not base[i].policy]
            cost, rew, se = cost0.copy(), rew0.copy(), se0.copy()
            if moved:
                ev = first.collect([tasks[i] for i in moved], [adapted[i] for i in moved], Phase.TEST_EVAL,
                                   70_000 + 1000 * m + rnd, episodes=true_episodes)
                cost[moved], rew[moved] = ev.cost_return(first.cost_type), ev.reward_return()
                se[moved] = standard_errors(ev, first.cost_type)
            acc = np.zeros(len(tasks), bool)
            acc[moved] = True
            missed = feasible & acc & np.any(cost > limit, axis=1)
            # over beyond the true-cost evaluation's own noise: its 95% interval lies above d
            clearly = feasible & acc & np.any(cost - 1.96 * se > limit, axis=1)
            counts[name] = {"feasible": int(feasible.sum()), "accepted": int((feasible & acc).sum()),
                            "missed": int(missed.sum()), "kept": int((~acc).sum()),
                            "missed_clearly": int(clearly.sum()),
                            "accepted_with_se": int((feasible & acc).sum()),
                            "gains": (rew - rew0).tolist(), "times": [out[name]["times"].pop()],
                            "tasks": [task_record(a.log, cost0[i], cost[i], i in moved, se0[i], se[i])
                                      for i, a in enumerate(adapted)]}
            for i in np.flatnonzero(missed):
                t = counts[name]["tasks"][i]
                print(f"  {name}, task {i}: miss: true cost {cost0[i, 0]:.1f} -> {cost[i, 0]:.1f}, "
                      f"KL {t['kl']:.4f}, test bound {t['test_bound']}, surrogate {t['surrogate_cost']:.1f}",
                      flush=True)
            for k, v in counts[name].items():
                out[name][k] += v
        if rounds_file is not None:
            append_record(rounds_file, {"run": str(run_dir), "key": key, "round": rnd, "counts": counts})
        done, counted, rnd = done + len(tasks), counted + len(tasks), rnd + 1
        print(f"{run_dir}: {done}/{n_tasks} tasks, {time.perf_counter() - t0:.0f} s", flush=True)
        if partial is not None and shard[1] == 1:  # the numbers so far, in case the run is stopped
            partial(summary(run_dir, r, limit, counted, true_episodes, test_sets, out, episodes))
    return summary(run_dir, r, limit, counted, true_episodes, test_sets, out, episodes)


def standard_errors(ev, cost_type: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """(tasks, p) the standard error of each task's true-cost estimate (its episodes' spread)."""
    eps = ev.ep_cost if cost_type == "undiscounted" else ev.ep_disc_cost
    return np.stack([c.std(0, ddof=1) / np.sqrt(len(c)) for c in eps])


def task_record(log: dict, cost_k: np.ndarray, cost: np.ndarray, moved: bool,
                se_k: np.ndarray | None = None, se: np.ndarray | None = None) -> dict:
    """One task's step, for reading a miss: π_k's and the handed-out policy's true costs (and
    their standard errors), and what the method saw (its step's KL, back-offs, the test's bound
    and held-out estimate, the candidate's surrogate cost)."""
    keys = ("kl", "backoffs", "test_bound", "test_estimate", "surrogate_cost")
    errors = {} if se is None else {"true_cost_k_se": se_k.tolist(), "true_cost_se": se.tolist()}
    return {"moved": moved, "true_cost_k": cost_k.tolist(), "true_cost": cost.tolist(), **errors,
            **{k: log.get(k) for k in keys}}


def summary(run_dir: Path, r, limit, n_tasks: int, true_episodes: int, test_sets: list[str],  # type: ignore[no-untyped-def]
            out: dict, episodes: int) -> dict:
    res = {"run": str(run_dir), "env": r.spec.env, "test_sets": test_sets, "limit": float(limit[0]),
           "tasks": n_tasks, "true_episodes": true_episodes, "episodes_per_task": episodes,
           "methods": {}}
    ref_gain = None
    for name, o in out.items():
        lo, hi = wilson(o["missed"], o["accepted"])
        # does the test's (1 − α) upper bound on a moved policy's cost cover its true cost? (rounds
        # with per-task records; constraint 0. A kept π_k's record holds the bound of the last
        # fraction tested, not π_k's own, so kept tasks are not counted)
        cover = [0, 0]
        for t in o.get("tasks", []):
            if t.get("test_bound") is not None and t["moved"]:
                cover[0] += int(t["test_bound"] >= t["true_cost"][0])
                cover[1] += 1
        gain = float(np.mean(o["gains"]))
        ref_gain = gain if ref_gain is None else ref_gain
        res["methods"][name] = {
            "feasible": o["feasible"], "accepted": o["accepted"], "missed": o["missed"], "kept": o["kept"],
            # of the accepted steps of the rounds recorded with the true costs' standard errors
            "missed_clearly": [o.get("missed_clearly", 0), o.get("accepted_with_se", 0)],
            "miss_rate": o["missed"] / max(o["accepted"], 1), "miss_ci": [lo, hi],
            "reward_gain": gain, "gain_vs_verification": gain / ref_gain if ref_gain else float("nan"),
            "s_per_step": float(np.mean(o["times"])),
            "bound_covers": cover,
        }
    return res


def label(name: str, res: dict) -> str:
    changed = res["test_sets"] if "test" in name else []
    return " ".join([name, *changed])


def table(results: list[dict]) -> str:
    lines = ["| suite | method | π_φ feasible | accepted | missed | miss rate (95% CI) | kept | "
             "reward gain / step | × verification | s / step | bound ≥ true cost (moved) |",
             "|" + "---|" * 11]
    for res in results:
        for name, m in res["methods"].items():
            k, n = m.get("bound_covers", (0, 0))
            covers = f"{k}/{n}" if n else ""
            c, n = m.get("missed_clearly", (0, 0))
            missed = f"{m['missed']}" + (f" (clearly {c} of {n})" if n else "")
            lines.append(
                f"| {res['env']} | {label(name, res)} | {m['feasible']} | {m['accepted']} | {missed} | "
                f"{m['miss_rate']:.3f} ({m['miss_ci'][0]:.3f}-{m['miss_ci'][1]:.3f}) | {m['kept']} | "
                f"{m['reward_gain']:.2f} | {m['gain_vs_verification']:.2f} | {m['s_per_step']:.3f} | "
                f"{covers} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--tasks", type=int, default=200, help="task-steps per run (fresh training tasks)")
    ap.add_argument("--true-episodes", type=int, default=200, help="episodes of each true-cost evaluation")
    ap.add_argument("--out", type=Path, default=None, help="JSON of the results")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a config field of both methods")
    ap.add_argument("--test-set", dest="test_sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a config field of the safety-test method only (e.g. lam_c_scale=1)")
    ap.add_argument("--verification-from", type=Path, action="append", default=[], metavar="ROUNDS.jsonl",
                    help="take the verification's counts of the rounds recorded there (same run and --set)")
    ap.add_argument("--shard", default=None, metavar="I/N",
                    help="only the rounds with index I modulo N (needs --out; rerun without it for OUT.json)")
    ap.add_argument("--recorded-only", action="store_true",
                    help="write OUT.json from the rounds recorded so far (while shards run); measure nothing")
    args = ap.parse_args()
    shard = parse_shard(args.shard)
    if shard[1] > 1 and args.out is None:
        raise SystemExit("--shard: needs --out, whose rounds file the shards share")
    if args.recorded_only and args.out is None:
        raise SystemExit("--recorded-only: needs --out, whose rounds file holds the rounds")
    results: list[dict] = []

    def save(current: dict | None = None) -> None:
        if args.out and shard[1] == 1:
            args.out.write_text(json.dumps(results + ([current] if current else []), indent=1))

    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    for run in args.run_dirs:
        rounds = args.out.with_suffix(".rounds.jsonl") if args.out else None
        results.append(measure(run, args.tasks, args.true_episodes, args.sets, args.test_sets, save, rounds,
                               args.verification_from, shard, args.recorded_only))
        save()
    print()
    if shard[1] > 1:
        print(f"shard {args.shard} done; the same command without --shard writes {args.out} from the rounds")
        return
    print(table(results))


if __name__ == "__main__":
    main()
