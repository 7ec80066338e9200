"""Command line (SPEC §7). Thin: parses, then calls the run driver.

User errors print one line `safemeta: error: ...` and exit 2, with no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from safemeta import config as C

if TYPE_CHECKING:
    from safemeta.rollout.backends import Backend


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse prints usage too)
        sys.stderr.write(f"safemeta: error: {message}\n")
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="safemeta", description="Safe meta-reinforcement learning (Xu & Zhu, NeurIPS 2025).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = sub.add_parser("demo", help="the default main job: meta-train and meta-test, then a report")
    d.add_argument("--env", default="point-circle",
                   help="suite (default point-circle, a few minutes; tabular-grid: seconds)")
    d.add_argument("--out", default=None, help="run directory (default runs/demo-<env>-<time>)")
    d.add_argument("--seed", type=int, default=0)

    sub.add_parser("envs", help="task suites, their task parameters and limits")

    f = sub.add_parser("reference", help="the unconstrained reference of a suite and preset: `safemeta` "
                       "with the limit lifted, stored in safemeta/references.json for every report")
    f.add_argument("--env", required=True, help="suite id")
    f.add_argument("--preset", default="quick", help=" | ".join(C.PRESETS))
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", default=None, help="run directory "
                   "(default runs/reference-<env>-<preset>-s<seed>)")
    f.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field (a reference for other settings than the preset's)")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")

    t = sub.add_parser("train", help="meta-train an algorithm on a suite, then meta-test")
    t.add_argument("--env", required=True, help="suite id (see `safemeta envs`)")
    t.add_argument("--algo", default="safemeta", help="algorithm id")
    t.add_argument("--preset", default="quick", help=" | ".join(C.PRESETS))
    t.add_argument("--seed", type=int, default=None, help="root seed (same as --set seed=N)")
    t.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field (repeatable)")
    t.add_argument("--config", default=None, help="YAML file of config overrides")
    t.add_argument("--task-file", default=None, metavar="FILE",
                   help="JSON: a list of test tasks, or {\"val\": [...], \"test\": [...]}; "
                        "a task is an object of its parameters (see `safemeta envs`)")
    t.add_argument("--out", default=None, help="run directory (default runs/<env>-<algo>-s<seed>)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (larger --set iterations=N: extend)")
    _sampling_options(t)
    t.add_argument("--device", default=None, help="cpu | cuda (same as --set device=...)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    c = sub.add_parser("compare", help="several algorithms over seeds on the same tasks and budgets; "
                       "reruns continue where they stopped")
    c.add_argument("--env", required=True, help="suite id (see `safemeta envs`)")
    c.add_argument("--algos", required=True, help="comma-separated algorithm ids, e.g. safemeta,meta-cpo")
    c.add_argument("--seeds", type=int, default=3, help="seeds 0..K-1 per algorithm (default 3)")
    c.add_argument("--preset", default="quick", help=" | ".join(C.PRESETS))
    c.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field of every algorithm (repeatable)")
    c.add_argument("--split", default="test", choices=("test", "ood"),
                   help="meta-test tasks from this split: test (fresh draws of the training distribution; "
                        "default) or ood (shifted, harder); one split per comparison directory")
    c.add_argument("--out", default=None,
                   help="comparison directory (default runs/compare-<env>-<preset>, -ood appended for ood)")
    c.add_argument("--no-progress", action="store_true", help="no progress bars")
    _sampling_options(c)
    c.add_argument("--report-only", action="store_true",
                   help="run nothing: write the report of the runs finished so far")

    b = sub.add_parser("bench", help="time one meta-training iteration and one meta-test per algorithm, "
                       "interleaved and repeated")
    b.add_argument("--env", default="halfcheetah-vel", help="suite id (default halfcheetah-vel)")
    b.add_argument("--algos", default=None, help="comma-separated ids (default: every algorithm)")
    b.add_argument("--preset", default="quick", help=" | ".join(C.PRESETS))
    b.add_argument("--repeats", type=int, default=3, help="repetitions (medians are reported)")
    b.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field of every algorithm (repeatable)")
    b.add_argument("--out", default="bench.json", help="JSON file of the medians (default bench.json)")

    e = sub.add_parser("test", help="meta-test a trained run")
    e.add_argument("run_dir", help="a run directory written by `safemeta train`")
    e.add_argument("--tasks", type=int, default=None, help="number of test tasks")
    e.add_argument("--steps", type=int, default=None, help="adaptation steps per task")
    e.add_argument("--task-file", default=None, metavar="FILE",
                   help="JSON list of test tasks (or {\"test\": [...]}) instead of the run's own")
    e.add_argument("--split", default=None, choices=("test", "ood"),
                   help="fresh tasks of this split instead of the run's own (writes RUN_DIR/test-<split>/; "
                        "test: the training distribution, ood: shifted, harder)")
    e.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a meta-test setting for this test only (repeatable; e.g. fallback=known_safe, "
                        "safety_alpha=0.1, eval_max_episodes=100); the results go to "
                        "RUN_DIR/test[-SPLIT]-KEY=VALUE/")
    _sampling_options(e)

    v = sub.add_parser("render", help="watch a trained run's meta-policy and its safe adaptation on one "
                       "task (a GIF or MP4 with reward, cost and limit on every frame)")
    v.add_argument("run_dir", help="a run directory written by `safemeta train`")
    which = v.add_mutually_exclusive_group()
    which.add_argument("--task", type=int, default=None, metavar="K",
                       help="test task K of the run (tasks.json; default 0)")
    which.add_argument("--task-file", default=None, metavar="FILE",
                       help="JSON list of tasks (as `safemeta envs` shows); its first task is rendered")
    v.add_argument("--steps", type=int, default=None, metavar="T",
                   help="adaptation steps (default the run's test_steps); policies 0..T are shown")
    v.add_argument("--out", default=None, metavar="FILE",
                   help="a .gif or .mp4 (mp4 needs imageio-ffmpeg; default RUN_DIR/render/task<K>.gif)")
    v.add_argument("--frames", type=int, default=40, help="frames per policy (default 40)")
    v.add_argument("--every", type=int, default=0,
                   help="env steps between frames (default: the horizon spread over --frames)")
    v.add_argument("--size", default="320x270", metavar="WxH",
                   help="one policy's panel in pixels, labels included (default 320x270)")
    v.add_argument("--layout", default="auto",
                   help="side | sequence | auto (side by side up to 4 policies; default)")
    v.add_argument("--fps", type=int, default=10, help="frames per second (default 10)")
    v.add_argument("--mean", action="store_true",
                   help="act with the mean action (default: sampled actions, what the costs measure)")
    v.add_argument("--seed", type=int, default=0, help="start state and action noise of the episodes")
    v.add_argument("--hq", action="store_true",
                   help="MuJoCo's shadows, reflections and anti-aliasing (about 10x slower without a GPU)")
    return p


def _sampling_options(p: argparse.ArgumentParser) -> None:
    """Where sampling runs: run options, not config fields (a run may resume on another backend)."""
    p.add_argument("--backend", default="auto",
                   help="auto (default: worker processes, one per core, for collections of 5,000+ "
                        "steps) | local (this process) | process (--workers local processes) | "
                        "ray (--workers Ray actors; pip install safemeta[ray]); same numbers on each")
    p.add_argument("--workers", type=int, default=0,
                   help="processes or Ray actors (default: auto one per core up to 8, else 2)")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster to join (default $RAY_ADDRESS, else a local Ray for the run)")


def _sampling(args: argparse.Namespace) -> Backend:
    from safemeta.rollout.backends import Backend

    return Backend(args.backend, args.workers, args.ray_address)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except C.ConfigError as e:
        sys.stderr.write(f"safemeta: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("safemeta: interrupted\n")
        return 130
    except OSError as e:  # disk full, read-only directory: one line, checkpoints intact
        where = f"{e.filename}: " if e.filename else ""
        sys.stderr.write(f"safemeta: error: {where}{e.strerror or e}; "
                         "the last checkpoint written is intact\n")
        return 1
    except Exception as e:  # noqa: BLE001 - RunError / CheckpointError / MetricsError: one line
        from safemeta.experiment.checkpoint import CheckpointError
        from safemeta.experiment.metrics import MetricsError
        from safemeta.experiment.runner import RunError

        if isinstance(e, (RunError, CheckpointError, MetricsError)):
            sys.stderr.write(f"safemeta: error: {e}\n")
            return 1
        raise


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "envs":
        from safemeta.experiment.envs_table import print_envs

        print_envs()
        return 0
    if args.command == "test":
        return _test(args)
    if args.command == "demo":
        return _demo(args)
    if args.command == "compare":
        return _compare(args)
    if args.command == "bench":
        return _bench(args)
    if args.command == "render":
        return _render(args)
    if args.command == "reference":
        return _reference(args)
    return _train(args)


def _reference(args: argparse.Namespace) -> int:
    from safemeta.experiment import reference
    from safemeta.experiment.metrics import read_rows
    from safemeta.experiment.runner import Run, RunSpec, resolve

    out = args.out or os.path.join("runs", f"reference-{args.env}-{args.preset}-s{args.seed}")
    sets = C.parse_overrides(args.sets)
    spec = RunSpec(env=args.env, algo="safemeta", preset=args.preset, out=out, resume=Path(out).exists(),
                   overrides={**sets, "seed": args.seed, "cost_limit": reference.LIFTED})
    r = resolve(spec)
    if not Run(r).train(progress=not args.no_progress):
        return 0  # interrupted: rerun the same command to continue
    entry = reference.summarize(read_rows(r.out / "metrics.csv"))
    command = " ".join([f"safemeta reference --env {args.env} --preset {args.preset} --seed {args.seed}",
                        *(f"--set {k}={v}" for k, v in sets.items())])
    reference.store(args.env, args.preset, {**entry, "command": command})
    print(f"unconstrained reference of {args.env} ({args.preset}): meta-test reward {entry['reward']:.4g}, "
          f"mean cost {entry['cost_mean']:.4g}, max cost {entry['cost_max']:.4g}; stored in {reference.PATH}")
    return 0


def _render(args: argparse.Namespace) -> int:
    from safemeta.experiment.render import VideoSpec, render_run

    try:
        width, height = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        raise C.ConfigError(f"--size: got {args.size!r}; accepted WIDTHxHEIGHT, e.g. 320x270") from None
    spec = VideoSpec(frames=args.frames, every=args.every, size=(width, height), layout=args.layout,
                     fps=args.fps, mean=args.mean, seed=args.seed, hq=args.hq)
    path, clips = render_run(Path(args.run_dir), args.task, args.task_file, args.steps,
                             Path(args.out) if args.out else None, spec)
    for c in clips:
        print(f"step {c.step}: reward {c.reward[-1]:.4g}, cost {c.cost[-1, 0]:.4g} over {c.t[-1]} env steps; "
              f"{int(c.marks.sum())} of {len(c.marks)} frames with positive cost")
    print(f"video: {path}")
    return 0


def _algos(text: str | None) -> list[str]:
    from safemeta.algos import ALGO_IDS

    return [a.strip() for a in text.split(",") if a.strip()] if text else list(ALGO_IDS)


def _compare(args: argparse.Namespace) -> int:
    from safemeta.experiment.compare import CompareSpec, compare

    spec = CompareSpec(env=args.env, algos=_algos(args.algos), seeds=args.seeds, preset=args.preset,
                       overrides=C.parse_overrides(args.sets), out=args.out, split=args.split,
                       backend=args.backend, workers=args.workers, ray_address=args.ray_address)
    path = compare(spec, progress=not args.no_progress, report_only=args.report_only)
    if path is None:
        print("interrupted: rerun the same command to continue")
        return 0
    print(f"report: {path}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from safemeta.experiment.bench import bench, table

    if not 1 <= args.repeats <= 100:
        raise C.ConfigError(f"--repeats: got {args.repeats}; accepted 1..100")
    result = bench(args.env, _algos(args.algos), args.preset, args.repeats, C.parse_overrides(args.sets),
                   Path(args.out))
    print(table(result))
    print(f"medians of {args.repeats} interleaved repeats written to {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from safemeta.experiment.runner import Run, RunSpec, resolve

    overrides: dict[str, Any] = C.parse_overrides(args.sets)
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.device is not None:
        overrides["device"] = args.device
    spec = RunSpec(env=args.env, algo=args.algo, preset=args.preset, overrides=overrides,
                   config_file=args.config, out=args.out, resume=args.resume, backend=args.backend,
                   task_file=args.task_file, workers=args.workers, ray_address=args.ray_address)
    r = resolve(spec)
    t0 = time.perf_counter()
    done = Run(r).train(progress=not args.no_progress)
    if not done:
        return 0  # interrupted: the run printed its resume command
    print(f"run complete in {time.perf_counter() - t0:.1f} s: {r.out}")
    print(f"report: {r.out / 'report' / 'report.md'}")
    return 0


def _test(args: argparse.Namespace) -> int:
    from safemeta.experiment.runner import test_run

    for name in ("tasks", "steps"):
        v = getattr(args, name)
        if v is not None and v < (1 if name == "tasks" else 0):
            raise C.ConfigError(f"--{name}: got {v}; accepted an integer >= {1 if name == 'tasks' else 0}")
    path = test_run(Path(args.run_dir), args.tasks, args.steps, task_file=args.task_file, split=args.split,
                    sampling=_sampling(args), overrides=C.parse_overrides(args.sets))
    _print_table(path.parent / "metrics.csv")
    print(f"report: {path}")
    return 0


# The demo's meta-test evaluates each policy until its cost interval decides, up to this
# many episodes per task (sparse costs: 15 episodes leave most tasks undecided).
DEMO_EVAL_MAX_EPISODES = 40


def _demo(args: argparse.Namespace) -> int:
    from safemeta.experiment.runner import Run, RunSpec, resolve

    out = args.out or os.path.join("runs", f"demo-{args.env}-{time.strftime('%Y%m%d-%H%M%S')}")
    spec = RunSpec(env=args.env, algo="safemeta", preset="quick", overrides={"seed": args.seed},
                   out=out, backend="auto")
    r = resolve(spec)
    if hasattr(r.cfg, "eval_max_episodes"):  # meta-test costs decided by their 95% intervals
        spec.overrides["eval_max_episodes"] = DEMO_EVAL_MAX_EPISODES
        r = resolve(spec)
    print(f"safemeta demo: meta-train and meta-test `safemeta` on {args.env} (quick preset)")
    t0 = time.perf_counter()
    if not Run(r).train(progress=True):
        return 0  # interrupted: the run printed its resume command
    _print_table(r.out / "metrics.csv")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    print(f"report: {r.out / 'report' / 'report.md'} (figures next to it)")
    return 0


def _print_table(path: Path) -> None:
    from safemeta.experiment.metrics import read_rows
    from safemeta.experiment.report import markdown_table

    rows = [r for r in read_rows(path) if r["phase"] == "meta_test"]
    if rows:
        print("meta-test (reward mean over tasks, max cost over tasks, limit; tasks over the limit by "
              "their estimate, by their 95% interval, possibly over; episodes per task):")
        print(markdown_table(["step", "reward mean", "cost max", "limit", "violation rate", "over (CI)",
                              "possibly over", "episodes"],
                             [[r["step"], r["reward_mean"], r["cost_max"], r["cost_limit"],
                               r["violation_rate"], r.get("n_over"), r.get("n_possibly_over"),
                               r.get("eval_episodes_mean")] for r in rows]))
