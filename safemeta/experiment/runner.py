"""The run driver: resolve and validate a run, then train, checkpoint, resume, test, report.

Run directory (SPEC §5):
    config.yaml        resolved config (env, algo, preset, every field; test_split names
                       the split the test tasks are drawn from)
    config_diff.yaml   what differs from the defaults
    tasks.json         validation tasks (train split) and test tasks (test_split) of the run
    metrics.csv        one row per meta-training iteration and per meta-test step
    tb/                TensorBoard scalars
    checkpoints/       ckpt_<iteration>.pt, atomic, verified
    events.log         rejected iterations, checkpoint fallbacks, interruptions
    meta_test_tasks.json  per test task: cost by step, started over the limit, back under at
    report/            report.md, meta_train.png, meta_test.png
    test/, test-<split>/  `safemeta test` on the run's test tasks, or on fresh tasks of a split
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import yaml

from safemeta import config as C
from safemeta.algorithm import Algorithm
from safemeta.algos import algorithm
from safemeta.envs.base import SPLITS, TEST_SPLITS, Suite, Task, split_refusal
from safemeta.envs.registry import suite as make_suite
from safemeta.experiment import checkpoint, faults
from safemeta.experiment.metrics import MetricsWriter
from safemeta.experiment.render import report_video
from safemeta.experiment.report import write_report
from safemeta.rollout import backends


class RunError(RuntimeError):
    """A run cannot go on; the message is one line for the user."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived during meta-test (which restarts from the final checkpoint)."""


MAX_CONSECUTIVE_REJECTIONS = 10


@dataclass
class RunSpec:
    """What the user asked for on the command line (or in Python)."""

    env: str
    algo: str = "safemeta"
    preset: str = "quick"
    overrides: dict[str, Any] = field(default_factory=dict)
    config_file: str | None = None
    out: str | None = None
    resume: bool = False
    backend: str = "local"  # where sampling runs: auto | local | process | ray (a run option, not saved)
    task_file: str | None = None  # JSON of validation/test tasks (see `read_task_file`)
    workers: int = 0  # sampling processes or Ray actors; 0: the backend's default
    ray_address: str | None = None  # the Ray cluster (default RAY_ADDRESS, else a local Ray)

    def sampling(self) -> backends.Backend:
        return backends.Backend(self.backend, self.workers, self.ray_address)


@dataclass
class Resolved:
    spec: RunSpec
    suite: Suite
    algo_cls: type[Algorithm]
    cfg: Any
    out: Path
    given_tasks: dict[str, list[Task]] = field(default_factory=dict)  # from --task-file

    def header(self) -> dict[str, Any]:
        return {"env": self.spec.env, "algo": self.spec.algo, "preset": self.spec.preset}


def resolve(spec: RunSpec) -> Resolved:
    """Validate everything before any work: raises ConfigError with one line."""
    backends.check(spec.sampling())
    if spec.preset not in C.PRESETS:
        raise C.ConfigError(f"preset: got {spec.preset!r}; accepted {', '.join(C.PRESETS)}")
    try:
        suite = make_suite(spec.env)
    except ValueError as e:
        raise C.ConfigError(str(e)) from None
    algo_cls = algorithm(spec.algo, suite.family)
    layers = [_preset_for(spec, algo_cls)]
    if spec.config_file:
        layers.append(C.load_yaml(spec.config_file))
    layers.append(spec.overrides)
    cfg = C.build(algo_cls.Config, *layers)
    if getattr(cfg, "cost_limit", None) is not None:  # this run's limit instead of the suite's
        suite.cost_limit = float(cfg.cost_limit)
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise C.ConfigError("device: 'cuda' requested but no CUDA device is available; accepted: cpu")
    if cfg.test_split not in suite.splits:
        raise C.ConfigError(split_refusal(suite, cfg.test_split, "test_split"))
    default_out = f"runs/{spec.env}-{spec.algo}-s{cfg.seed}"
    given = read_task_file(suite, spec.task_file) if spec.task_file else {}
    return Resolved(spec, suite, algo_cls, cfg, Path(spec.out or default_out), given)


def _preset_for(spec: RunSpec, algo_cls: type[Algorithm]) -> dict[str, Any]:
    """The preset's fields, less those a resumed run's saved config lacks: such a field was
    added to safemeta after the run was written and keeps its default, the behaviour the run
    had (a preset that now sets it, e.g. medium's test_episodes_per_task, does not change an
    old run); a value given on the command line still counts, and is checked against it."""
    preset = algo_cls.presets(spec.env).get(spec.preset, {})
    saved = Path(spec.out) / "config.yaml" if spec.resume and spec.out else None
    if saved is None or not saved.exists():
        return preset
    try:
        have = (yaml.safe_load(saved.read_text()) or {}).get("config")
    except (OSError, yaml.YAMLError, AttributeError):
        return preset  # a damaged config.yaml is reported by Run.prepare
    if not isinstance(have, dict):
        return preset
    return {k: v for k, v in preset.items() if k in have}


def read_task_file(suite: Suite, path: str | Path) -> dict[str, list[Task]]:
    """Tasks a user chose: a JSON list of tasks (the test tasks), or an object with a
    "val" and/or a "test" list. A task is an object of its parameters, as `safemeta envs`
    lists them and as a run's tasks.json holds them. ConfigError with one line otherwise."""
    where = f"task-file: {path}"
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise C.ConfigError(f"{where}: cannot read: {e.strerror}") from None
    except (ValueError, RecursionError) as e:
        raise C.ConfigError(f"{where}: not JSON: {str(e) or type(e).__name__}") from None
    if isinstance(data, list):
        data = {"test": data}
    if not isinstance(data, dict) or not data or set(data) - {"val", "test"}:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise C.ConfigError(f"{where}: got {got}; accepted a list of tasks or an object with "
                            "'val' and/or 'test' lists of tasks")
    out: dict[str, list[Task]] = {}
    for split, items in data.items():
        if not isinstance(items, list) or not items:
            raise C.ConfigError(f"{where}: {split!r} must be a non-empty list of tasks")
        tasks = []
        for i, d in enumerate(items):
            try:
                tasks.append(suite.task_from_dict(d))
            except (ValueError, TypeError, OverflowError) as e:
                raise C.ConfigError(f"{where}: {split} task {i}: {str(e).splitlines()[0]}") from None
        out[split] = tasks
    return out


class Run:
    """One run directory: config, tasks, metrics, checkpoints, events."""

    def __init__(self, r: Resolved, log: Callable[[str], None] = print) -> None:
        self.r, self.dir, self.log = r, r.out, log
        self.ckpt_dir = self.dir / "checkpoints"
        self._stop = False
        self._in_meta_test = False

    # ------------------------------------------------------------ setup

    def prepare(self) -> None:
        """Create the run directory or check that it belongs to this config (resume)."""
        saved = self.dir / "config.yaml"
        want = {**self.r.header(), "config": C.to_dict(self.r.cfg)}
        if saved.exists():
            if not self.r.spec.resume:
                raise C.ConfigError(f"out: {self.dir} already holds a run; pass --resume or another --out")
            have = read_run_config(saved)
            diffs = _differences(have, want, C.to_dict(type(self.r.cfg)()), ignore=("iterations",))
            if diffs:
                raise C.ConfigError(f"out: {self.dir} belongs to another config ({diffs}); "
                                    "use another --out or the same settings")
            before = have.get("config", {}).get("iterations", self.r.cfg.iterations)
            if before != self.r.cfg.iterations:
                if not self._asked("iterations"):  # e.g. a preset that changed since: not an extension
                    raise C.ConfigError(f"out: {self.dir} belongs to another config (iterations: saved "
                                        f"{before}, requested {self.r.cfg.iterations} by the preset); use "
                                        "another --out, or --set iterations=N to extend the run")
                self._extend(before, want)
            return
        if self.dir.exists() and not self.dir.is_dir():
            raise C.ConfigError(f"out: {self.dir} is a file; give a directory")
        # A crash between creating the directory and writing config.yaml leaves only these.
        leftovers = {"config_diff.yaml"}
        if self.dir.exists() and any(p.name not in leftovers and not p.name.startswith(".config")
                                     for p in self.dir.iterdir()):
            raise C.ConfigError(f"out: {self.dir} exists and is not a safemeta run directory")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            diff = {**self.r.header(), "changed": C.diff(self.r.cfg)}
            for name, data in (("config_diff.yaml", diff), ("config.yaml", want)):
                checkpoint.write_atomic(self.dir / name, yaml.safe_dump(data, sort_keys=False).encode())
        except OSError as e:
            raise RunError(f"out: cannot write to {self.dir}: {e.strerror}") from None

    def _extend(self, before: int, want: dict[str, Any]) -> None:
        """--resume with more iterations: train on from the last checkpoint, then meta-test
        again. Nothing in training depends on the total, so the result equals a run started
        with the new total (tests/test_reliability.py)."""
        now = self.r.cfg.iterations
        if now < before:
            raise C.ConfigError(f"iterations: saved {before}, requested {now}; a run can be extended "
                                "(--resume with more iterations), not shortened; use another --out")
        (self.dir / "DONE").unlink(missing_ok=True)  # first: its meta-test is of the shorter run
        diff = {**self.r.header(), "changed": C.diff(self.r.cfg)}
        for name, data in (("config_diff.yaml", diff), ("config.yaml", want)):
            checkpoint.write_atomic(self.dir / name, yaml.safe_dump(data, sort_keys=False).encode())
        tests = sorted(p.name for p in self.dir.glob("test*") if p.is_dir())
        held = f"; {', '.join(tests)} hold meta-tests of the {before}-iteration policy" if tests else ""
        self.event(f"extended from {before} to {now} iterations{held}")

    def _asked(self, key: str) -> bool:
        """Whether the user gave `key` (--set or --config), not the preset."""
        given = dict(self.r.spec.overrides)
        if self.r.spec.config_file:
            given.update(C.load_yaml(self.r.spec.config_file))
        return key in given

    def tasks(self, seq: np.random.SeedSequence) -> dict[str, list[Task]]:
        path = self.dir / "tasks.json"
        suite = self.r.suite
        if path.exists():
            try:
                data = json.loads(path.read_text())
                have = {k: [suite.task_from_dict(d) for d in v] for k, v in data.items()}
            except (ValueError, TypeError, AttributeError) as e:
                raise C.ConfigError(f"{path}: {str(e).splitlines()[0]}") from None
            changed = [k for k, v in self.r.given_tasks.items() if have.get(k) != v]
            if changed:
                raise C.ConfigError(f"task-file: its {', '.join(changed)} tasks differ from those of the run "
                                    f"in {self.dir} ({path.name}); use another --out")
            return have
        rng = np.random.default_rng(seq)
        cfg = self.r.cfg
        tasks = {"val": suite.sample_tasks(cfg.val_tasks, rng, "train"),
                 "test": suite.sample_tasks(cfg.test_tasks, rng, cfg.test_split)}
        tasks.update(self.r.given_tasks)  # --task-file replaces the sampled split
        data = {k: [t.to_dict() for t in v] for k, v in tasks.items()}
        checkpoint.write_atomic(path, json.dumps(data, indent=1).encode())
        return tasks

    def event(self, msg: str) -> None:
        self.log(msg)
        with open(self.dir / "events.log", "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}\n")

    # ------------------------------------------------------------ signals

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop:  # second signal: stop now
            raise KeyboardInterrupt
        self._stop = True
        if self._in_meta_test:  # nothing to save: meta-test reruns from the final checkpoint
            raise Interrupted
        self.log(f"{signal.Signals(signum).name}: finishing the current iteration, then checkpointing")

    def _install_signals(self) -> dict[int, Any]:
        old = {}
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                old[s] = signal.signal(s, self._on_signal)
            except ValueError:  # not the main thread
                pass
        return old

    # ------------------------------------------------------------ train

    def train(self, progress: bool = True) -> bool:
        """Meta-train (resuming if asked), meta-test, report. False if interrupted."""
        cfg = self.r.cfg
        self.prepare()
        checkpoint.remove_partial(self.dir)
        root = np.random.SeedSequence(cfg.seed)
        task_seq, algo_seq = root.spawn(2)
        tasks = self.tasks(task_seq)
        with backends.use(self.r.spec.sampling()):
            algo = self.r.algo_cls(cfg, self.r.suite, tasks, algo_seq)
        metrics = MetricsWriter(self.dir / "metrics.csv", algo.extra_columns, self.dir / "tb")
        start, rejected = self._restore(algo, metrics)
        old = self._install_signals()
        try:
            if start < cfg.iterations or not _has_phase(metrics, "meta_test"):
                if not self._loop(algo, metrics, start, rejected, progress):
                    return False
                self._in_meta_test = True
                try:
                    rows = algo.meta_test(tasks["test"], cfg.test_steps)
                except Interrupted:
                    self.event("interrupted during meta-test; it reruns on resume")
                    self.log(f"resume with: {resume_command(self.r)}")
                    return False
                finally:
                    self._in_meta_test = False
                for row in rows:
                    row["iteration"] = cfg.iterations
                    metrics.write(row)
                    faults.point("meta_test_row")
                write_meta_test_tasks(algo, self.dir)
            video = report_video(algo, tasks["test"][0], cfg.test_steps, self.dir / "report")
        finally:
            metrics.close()
            algo.close()
            for s, h in old.items():
                signal.signal(s, h)
        title = f"{self.r.spec.algo} on {self.r.spec.env} (seed {cfg.seed}; {_test_source(self.r)})"
        write_report(self.dir, title, video=video)
        (self.dir / "DONE").write_text("complete\n")
        return True

    def _restore(self, algo: Algorithm, metrics: MetricsWriter) -> tuple[int, int]:
        checkpoint.remove_partial(self.ckpt_dir)
        found = checkpoint.load_latest(self.ckpt_dir, self._accept, warn=self.event)
        if found is None:
            if len(metrics):
                metrics.truncate(0)
            return 0, 0
        path, payload = found
        algo.load_state_dict(payload["algo"])
        metrics.truncate(payload["metrics_rows"])
        self.log(f"resumed from {path} (iteration {payload['next_iteration']})")
        return payload["next_iteration"], payload.get("rejected", 0)

    def _accept(self, payload: dict[str, Any]) -> str | None:
        want = {**self.r.header(), "config": C.to_dict(self.r.cfg)}
        have = payload.get("run", {})
        # a checkpoint of the run before it was extended (Run._extend) continues it
        shorter = have.get("config", {}).get("iterations", -1) <= self.r.cfg.iterations
        return _differences(have, want, C.to_dict(type(self.r.cfg)()),
                            ignore=("iterations",) if shorter else ()) or None

    def _save(self, algo: Algorithm, next_it: int, rows: int, rejected: int) -> None:
        payload = {"run": {**self.r.header(), "config": C.to_dict(self.r.cfg)}, "algo": algo.state_dict(),
                   "next_iteration": next_it, "metrics_rows": rows, "rejected": rejected}
        try:
            checkpoint.save(self.ckpt_dir, next_it, payload, keep=self.r.cfg.keep_checkpoints)
        except checkpoint.CheckpointError as e:
            raise RunError(str(e)) from None

    def _loop(self, algo: Algorithm, metrics: MetricsWriter, start: int, rejected: int,
              progress: bool) -> bool:
        cfg = self.r.cfg
        bar = _progress(progress, start, cfg.iterations)
        good = copy.deepcopy(algo.state_dict())
        n_rows = len(metrics)
        it = start
        streak = 0
        for it in range(start, cfg.iterations):
            row, bad = self._attempt(algo, it)
            if bad:
                rejected, streak = rejected + 1, streak + 1
                self.event(f"iteration {it} rejected: non-finite or failed step ({bad}); "
                           "continuing from the last good state")
                if streak >= MAX_CONSECUTIVE_REJECTIONS:
                    self._save_good(algo, good, n_rows, rejected, it)
                    raise RunError(f"{streak} consecutive iterations rejected (last: {bad}); "
                                   f"the last good state is checkpointed in {self.ckpt_dir}")
                algo.load_state_dict({**good, "rng": algo.state_dict().get("rng")})
            else:
                streak = 0
                metrics.write(row)
                faults.point("after_metrics")
                n_rows += 1
                good = copy.deepcopy(algo.state_dict())
            last = it + 1 == cfg.iterations
            if (it + 1) % cfg.checkpoint_every == 0 or last or self._stop:
                self._save(algo, it + 1, n_rows, rejected)
                faults.point("after_checkpoint")
            if bar is not None:
                bar.update(1)
            if bar is not None and row is not None:
                bar.set_postfix(reward=f"{row['reward_mean']:.3g}", cost_max=f"{row['cost_max']:.3g}",
                                limit=f"{row['cost_limit']:.3g}")
            if self._stop and not last:
                self.event(f"interrupted after iteration {it}; checkpoint written")
                self.log(f"resume with: {resume_command(self.r)}")
                break
        if bar is not None:
            bar.close()
        if cfg.iterations == 0 or start == cfg.iterations:
            self._save(algo, cfg.iterations, n_rows, rejected)
        return not (self._stop and it + 1 < cfg.iterations)


    def _attempt(self, algo: Algorithm, it: int) -> tuple[dict[str, Any] | None, str | None]:
        """One iteration; (row, None) when it is good, (row or None, reason) when rejected."""
        try:
            row = algo.train_iteration(it)
        except C.ConfigError:
            raise
        except (ValueError, ArithmeticError, RuntimeError) as e:  # NaN/inf reaching a solver
            return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        bad = _non_finite(row)
        if bad is None and not algo.finite():
            bad = "parameters"
        return row, bad

    def _save_good(self, algo: Algorithm, good: dict[str, Any], n_rows: int, rejected: int,
                   it: int) -> None:
        algo.load_state_dict({**good, "rng": algo.state_dict().get("rng")})
        self._save(algo, it, n_rows, rejected)


def _progress(enabled: bool, start: int, total: int) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="meta-train", unit="it", file=sys.stderr,
                dynamic_ncols=True, mininterval=1.0)


def _non_finite(row: dict[str, Any]) -> str | None:
    for k, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            return k
    return None


def write_meta_test_tasks(algo: Algorithm, where: Path) -> None:
    """meta_test_tasks.json beside the metrics: per test task its cost by step and whether,
    and when, it recovered from a start over the limit (`meta_learner.recovery`)."""
    per_task = getattr(algo, "meta_test_tasks", None)
    if per_task:
        checkpoint.write_atomic(where / "meta_test_tasks.json", json.dumps(per_task, indent=1).encode())


def _has_phase(metrics: MetricsWriter, phase: str) -> bool:
    from safemeta.experiment.metrics import read_rows

    return any(r["phase"] == phase for r in read_rows(metrics.path))


def _test_source(r: Resolved) -> str:
    """Where a run's meta-test tasks come from, for its report's title."""
    if "test" in r.given_tasks:
        return f"meta-test on the tasks of {r.spec.task_file}"
    return f"meta-test on the {r.cfg.test_split!r} split"


def _differences(have: dict[str, Any], want: dict[str, Any],
                 defaults: dict[str, Any] | None = None, ignore: tuple[str, ...] = ()) -> str:
    """The saved run's header and config against the requested ones, but for the fields in
    `ignore`. A field the saved config lacks was added to safemeta after the run was written
    (e.g. test_split): it counts as its default, which keeps the behaviour the run had."""
    out = []
    for k in ("env", "algo", "preset"):
        if have.get(k) != want.get(k):
            out.append(f"{k}: saved {have.get(k)!r}, requested {want.get(k)!r}")
    hc, wc = {**(defaults or {}), **(have.get("config", {}) or {})}, want.get("config", {})
    for k in sorted((set(hc) | set(wc)) - set(ignore)):
        if hc.get(k) != wc.get(k):
            out.append(f"{k}: saved {hc.get(k)!r}, requested {wc.get(k)!r}")
    return "; ".join(out[:4]) + (" ..." if len(out) > 4 else "")


def read_yaml(path: Path) -> dict[str, Any]:
    """A run's YAML file, or ConfigError naming it when it is damaged."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise C.ConfigError(f"{path}: unreadable or damaged ({type(e).__name__})") from None
    if not isinstance(data, dict) or not data:
        raise C.ConfigError(f"{path}: empty or damaged; restore it or start a new run")
    return data


def read_run_config(path: Path) -> dict[str, Any]:
    """config.yaml of a run, checked complete; ConfigError naming it otherwise."""
    saved = read_yaml(path)
    missing = [k for k in ("env", "algo", "preset", "config") if k not in saved]
    if missing:
        raise C.ConfigError(f"{path}: missing {', '.join(missing)}; not a complete safemeta run config")
    return saved


def resume_command(r: Resolved) -> str:
    sets = " ".join(f"--set {k}={v}" for k, v in r.spec.overrides.items())
    conf = f" --config {r.spec.config_file}" if r.spec.config_file else ""
    tasks = f" --task-file {r.spec.task_file}" if r.spec.task_file else ""
    return (f"safemeta train --env {r.spec.env} --algo {r.spec.algo} --preset {r.spec.preset}"
            f"{conf}{tasks} {sets} --out {r.out}{_backend_args(r.spec)} --resume").replace("  ", " ")


def _backend_args(spec: RunSpec) -> str:
    """The sampling options of `spec` on a command line (none for the command line's
    default, `auto`)."""
    if spec.backend == "auto" and not spec.workers:
        return ""
    address = f" --ray-address {spec.ray_address}" if spec.backend == "ray" and spec.ray_address else ""
    workers = f" --workers {spec.workers}" if spec.workers else ""
    return f" --backend {spec.backend}{workers}{address}"


def load_run(run_dir: Path) -> tuple[Resolved, dict[str, Any]]:
    """The resolved config and the latest good checkpoint payload of a finished run."""
    path = run_dir / "config.yaml"
    if not path.exists():
        raise C.ConfigError(f"RUN_DIR: {run_dir} is not a safemeta run directory (no config.yaml)")
    saved = read_run_config(path)
    spec = RunSpec(env=saved["env"], algo=saved["algo"], preset=saved["preset"],
                   overrides=saved["config"], out=str(run_dir), resume=True)
    r = resolve(spec)
    found = checkpoint.load_latest(run_dir / "checkpoints", warn=print)
    if found is None:
        raise C.ConfigError(f"RUN_DIR: {run_dir} has no usable checkpoint; train it first")
    return r, found[1]


class Loaded(NamedTuple):
    """A finished run's algorithm at its latest checkpoint, with what it was built from."""
    algo: Algorithm
    tasks: dict[str, list[Task]]  # the run's own tasks, by split
    run: Resolved
    payload: dict[str, Any]  # the checkpoint (payload["algo"] restores the trained state)


def load_algorithm(run_dir: Path, *overrides: dict[str, Any], log: Callable[[str], None] = print) -> Loaded:
    """The algorithm of a finished run, its config with each of `overrides` applied in turn
    (benchmarks' settings; the trained state is the checkpoint's), its own seeds and tasks."""
    r, payload = load_run(run_dir)
    cfg = C.build(type(r.cfg), C.to_dict(r.cfg), *overrides) if overrides else r.cfg
    task_seq, algo_seq = np.random.SeedSequence(cfg.seed).spawn(2)
    tasks = Run(r, log).tasks(task_seq)
    algo = r.algo_cls(cfg, r.suite, tasks, algo_seq)
    algo.load_state_dict(payload["algo"])
    return Loaded(algo, tasks, r, payload)


# What `safemeta test --set` may change: how the meta-test adapts and evaluates, never what
# was trained (networks, budgets of meta-training).
TEST_SETTABLE = ("fallback", "safety_test", "safety_alpha", "safety_split", "safety_retests",
                 "safety_multiplicity", "safety_min_ess", "safety_inflate", "safety_range", "safety_variance",
                 "safety_decrease", "eval_episodes", "eval_max_episodes", "eval_rel_width",
                 "test_episodes_per_task")


def test_run(run_dir: Path, n_tasks: int | None = None, steps: int | None = None,
             log: Callable[[str], None] = print, task_file: str | Path | None = None,
             split: str | None = None, sampling: backends.Backend | None = None,
             overrides: dict[str, Any] | None = None) -> Path:
    """Meta-test a trained run on its test tasks (more are sampled if `n_tasks` asks), on
    the test tasks of `task_file` (see `read_task_file`), or on `n_tasks` (default the run's
    test_tasks) fresh tasks of `split`. Writes metrics.csv and a report to RUN_DIR/test, or
    RUN_DIR/test-<split> with `split`, with `-KEY=VALUE,...` appended for `overrides` (meta-
    test settings, TEST_SETTABLE); returns the report path. `sampling`: where the meta-test
    samples (default local)."""
    sampling = sampling or backends.Backend()
    backends.check(sampling)
    r, payload = load_run(run_dir)
    overrides = overrides or {}
    for key in overrides:
        if key not in TEST_SETTABLE or not hasattr(r.cfg, key):
            accepted = [k for k in TEST_SETTABLE if hasattr(r.cfg, k)]
            raise C.ConfigError(f"--set: got {key!r}; accepted meta-test settings of {r.algo_cls.id}: "
                                f"{', '.join(accepted)}")
    cfg = C.build(type(r.cfg), dataclasses.asdict(r.cfg), overrides) if overrides else r.cfg
    if split is not None:
        _check_test_split(r.suite, split, task_file)
    given = read_task_file(r.suite, task_file) if task_file else {}
    if task_file and "test" not in given:
        raise C.ConfigError(f"task-file: {task_file} has no 'test' tasks; accepted a list of tasks "
                            "or an object with a 'test' list")
    if given and n_tasks and n_tasks > len(given["test"]):
        raise C.ConfigError(f"--tasks: got {n_tasks}; the task file holds {len(given['test'])} test task(s)")
    run = Run(r, log)
    root = np.random.SeedSequence(cfg.seed)
    task_seq, algo_seq = root.spawn(2)
    tasks = run.tasks(task_seq)
    if given:
        tasks["test"] = given["test"]
    elif split is not None:
        tasks["test"] = split_tasks(r.suite, n_tasks or cfg.test_tasks, cfg.seed, split)
    n = n_tasks or len(tasks["test"])
    if n > len(tasks["test"]):
        extra_rng = np.random.default_rng(root.spawn(3)[2])
        tasks["test"] += r.suite.sample_tasks(n - len(tasks["test"]), extra_rng, cfg.test_split)
    with backends.use(sampling):
        algo = r.algo_cls(cfg, r.suite, tasks, algo_seq)
    algo.load_state_dict(payload["algo"])
    out = run_dir / ("test" if split is None else f"test-{split}")
    if overrides:
        out = out.with_name(out.name + "-" + ",".join(f"{k}={v}" for k, v in overrides.items()))
    out.mkdir(exist_ok=True)
    metrics_path = out / "metrics.csv"
    if metrics_path.exists():
        metrics_path.unlink()
    metrics = MetricsWriter(metrics_path, algo.extra_columns)
    steps = cfg.test_steps if steps is None else steps
    try:
        for row in algo.meta_test(tasks["test"][:n], steps):
            row["iteration"] = payload["next_iteration"]
            metrics.write(row)
        write_meta_test_tasks(algo, out)
        video = report_video(algo, tasks["test"][0], steps, out)
    finally:
        metrics.close()
        algo.close()
    if given:
        source = f"the tasks of {task_file}"
    elif split is not None:
        source = f"{n} fresh tasks of the {split!r} split"
    else:
        source = f"the run's {n} test tasks (tasks.json; test_split {cfg.test_split!r})"
    if overrides:
        source += " with " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    return write_report(run_dir, f"meta-test of {run_dir} on {source}", metrics=metrics_path, out=out,
                        video=video)


def _check_test_split(suite: Suite, split: str, task_file: str | Path | None) -> None:
    if split not in TEST_SPLITS:
        raise C.ConfigError(f"--split: got {split!r}; accepted {', '.join(TEST_SPLITS)}")
    if split not in suite.splits:
        raise C.ConfigError(split_refusal(suite, split, "--split"))
    if task_file:
        raise C.ConfigError("--split: the task file gives the test tasks; pass --split or --task-file")


def split_tasks(suite: Suite, n: int, seed: int, split: str) -> list[Task]:
    """`n` fresh tasks of `split` for `safemeta test --split`: a random stream of their own
    (the run's seed and the split), apart from every draw of the run's tasks.json."""
    rng = np.random.default_rng([seed, 1 + SPLITS.index(split)])
    return suite.sample_tasks(n, rng, split)
