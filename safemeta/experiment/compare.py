"""`safemeta compare`: every algorithm on the same tasks and budgets, over seeds (SPEC §3, §5).

A comparison directory:
    compare.yaml         what makes its runs comparable (suite, preset, --set values, and
                         the split of the test tasks when it is not `test`)
    tasks-s<seed>.json   the validation tasks (train split) and test tasks (the comparison's
                         split) of a seed, shared by every algorithm
    <algo>/s<seed>/      one run directory each (`safemeta train`'s layout)
    report/              compare.md, meta_train.png, meta_test.png, time.png, compare.json

Rerunning the command continues: a finished run is kept, an interrupted one resumes
from its checkpoint (exactly, on CPU), a missing one starts; more algorithms or seeds
may be asked for later (the suite, preset, --set values and split must stay: a directory
holds one split, and asking another of it is refused in one line). The report, on
the algorithms and seeds asked for, is written from the runs' metrics alone, so an
interrupted-then-resumed comparison reports the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from safemeta import config as C
from safemeta.envs.base import TEST_SPLITS
from safemeta.experiment import checkpoint
from safemeta.experiment.metrics import read_rows
from safemeta.experiment.runner import Resolved, Run, RunSpec, resolve

# What must be equal for a comparison to be fair: the data every algorithm sees per task
# and the networks it learns with. Iterations are compared among meta-learning algorithms
# only (from-scratch ones do not meta-train).
BUDGET_FIELDS = ("meta_batch", "episodes_per_task", "steps_per_task", "test_episodes_per_task", "horizon",
                 "envs_per_task", "eval_episodes", "val_tasks", "test_tasks", "test_steps", "hidden", "gamma",
                 "critic", "init_log_std")


@dataclass
class CompareSpec:
    env: str
    algos: list[str]
    seeds: int = 3
    preset: str = "quick"
    overrides: dict[str, Any] = field(default_factory=dict)
    out: str | None = None
    split: str = "test"  # the split of the meta-test tasks (the runs' test_split)
    backend: str = "local"  # where the runs sample (a run option: not in compare.yaml)
    workers: int = 0
    ray_address: str | None = None

    def header(self) -> dict[str, Any]:
        """What makes runs comparable; algorithms and seeds may be added to a comparison later.
        The split is written only when it is not `test`, so directories from before it match."""
        head = {"env": self.env, "preset": self.preset,
                "overrides": {k: str(v) for k, v in sorted(self.overrides.items())}}
        return head if self.split == "test" else {**head, "split": self.split}

    def run_overrides(self) -> dict[str, Any]:
        """The --set values and the split, as every run of the comparison gets them."""
        return self.overrides if self.split == "test" else {**self.overrides, "test_split": self.split}


def resolve_all(spec: CompareSpec) -> dict[str, Resolved]:
    """Every algorithm's resolved config (seed 0), or ConfigError with one line: an unknown
    algorithm, a --set key some algorithm lacks, or budgets that differ."""
    if not spec.algos:
        raise C.ConfigError("--algos: got none; accepted a comma-separated list of algorithm ids")
    if len(set(spec.algos)) != len(spec.algos):
        raise C.ConfigError(f"--algos: {','.join(spec.algos)} names an algorithm twice")
    if not 1 <= spec.seeds <= 100:
        raise C.ConfigError(f"--seeds: got {spec.seeds}; accepted 1..100")
    if spec.split not in TEST_SPLITS:
        raise C.ConfigError(f"--split: got {spec.split!r}; accepted {', '.join(TEST_SPLITS)}")
    if "test_split" in spec.overrides:
        raise C.ConfigError("--set test_split: a comparison takes its split from --split")
    out: dict[str, Resolved] = {}
    for algo in spec.algos:
        r = resolve(RunSpec(env=spec.env, algo=algo, preset=spec.preset, overrides={}))
        names = {f for f in C.to_dict(r.cfg)}
        missing = [k for k in spec.overrides if k not in names]
        if missing:
            raise C.ConfigError(f"--set: {algo} has no field {missing[0]!r}; a comparison's --set must "
                                "apply to every algorithm")
        out[algo] = resolve(RunSpec(env=spec.env, algo=algo, preset=spec.preset,
                                    overrides=_run_overrides(spec.run_overrides(), r), backend=spec.backend,
                                    workers=spec.workers, ray_address=spec.ray_address))
    _check_budgets(out)
    return out


def _run_overrides(overrides: dict[str, Any], r: Resolved) -> dict[str, Any]:
    """The --set values, except that from-scratch algorithms keep iterations = 0."""
    meta = getattr(r.algo_cls, "meta_learning", True)
    return {k: v for k, v in overrides.items() if meta or k != "iterations"}


def _check_budgets(resolved: dict[str, Resolved]) -> None:
    first_algo, first = next(iter(resolved.items()))
    base = C.to_dict(first.cfg)
    meta = {a: r for a, r in resolved.items() if getattr(r.algo_cls, "meta_learning", True)}
    for algo, r in resolved.items():
        have = C.to_dict(r.cfg)
        for key in BUDGET_FIELDS:
            if key in base and have.get(key) != base[key]:
                raise C.ConfigError(f"budgets differ: {key} is {base[key]!r} for {first_algo} and "
                                    f"{have.get(key)!r} for {algo}; set it for all with --set {key}=...")
    its = {a: r.cfg.iterations for a, r in meta.items()}
    if len(set(its.values())) > 1:
        raise C.ConfigError(f"budgets differ: iterations {its}; set it for all with --set iterations=N")


def seed_tasks(resolved: Resolved, seed: int) -> dict[str, list[dict[str, Any]]]:
    """The seed's validation and test tasks (of its test_split): the draws `safemeta train
    --seed` makes."""
    task_seq, _ = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(task_seq)
    suite, cfg = resolved.suite, resolved.cfg
    return {"val": [t.to_dict() for t in suite.sample_tasks(cfg.val_tasks, rng, "train")],
            "test": [t.to_dict() for t in suite.sample_tasks(cfg.test_tasks, rng, cfg.test_split)]}


class Comparison:
    def __init__(self, spec: CompareSpec, log: Callable[[str], None] = print) -> None:
        self.spec, self.log = spec, log
        suffix = "" if spec.split == "test" else f"-{spec.split}"
        self.dir = Path(spec.out or f"runs/compare-{spec.env}-{spec.preset}{suffix}")
        self.resolved = resolve_all(spec)

    def prepare(self) -> None:
        path = self.dir / "compare.yaml"
        want = self.spec.header()
        if path.exists():
            have = yaml.safe_load(path.read_text()) or {}
            split = have.get("split", "test") if isinstance(have, dict) else None
            if split is not None and split != self.spec.split:
                raise C.ConfigError(f"out: {self.dir} compares on the {split!r} split, not "
                                    f"{self.spec.split!r}; use another --out or --split {split}")
            if have != want:
                diff = [k for k in want if have.get(k) != want[k]]
                raise C.ConfigError(f"out: {self.dir} holds another comparison (its {', '.join(diff)} "
                                    "differ); use another --out or the same arguments")
            return
        if self.dir.exists() and any(self.dir.iterdir()):
            raise C.ConfigError(f"out: {self.dir} exists and is not a safemeta comparison directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        checkpoint.write_atomic(path, yaml.safe_dump(want, sort_keys=False).encode())

    def run_dir(self, algo: str, seed: int) -> Path:
        return self.dir / algo / f"s{seed}"

    def run(self, progress: bool = True) -> bool:
        """Every missing or unfinished (algo, seed); False if interrupted."""
        self.prepare()
        first = next(iter(self.resolved.values()))
        total, k = self.spec.seeds * len(self.spec.algos), 0
        for seed in range(self.spec.seeds):
            task_file = self.dir / f"tasks-s{seed}.json"
            if not task_file.exists():
                checkpoint.write_atomic(task_file, json.dumps(seed_tasks(first, seed), indent=1).encode())
            for algo in self.spec.algos:
                k += 1
                out = self.run_dir(algo, seed)
                if (out / "DONE").exists():
                    self.log(f"[{k}/{total}] {algo} seed {seed}: done")
                    continue
                resuming = (out / "config.yaml").exists()
                self.log(f"[{k}/{total}] {algo} seed {seed}: {'resuming' if resuming else 'starting'}")
                r = self.resolved[algo]
                spec = RunSpec(env=self.spec.env, algo=algo, preset=self.spec.preset,
                               overrides={**_run_overrides(self.spec.run_overrides(), r), "seed": seed},
                               out=str(out), resume=resuming, task_file=str(task_file),
                               backend=self.spec.backend, workers=self.spec.workers,
                               ray_address=self.spec.ray_address)
                if not Run(resolve(spec), log=self.log).train(progress=progress):
                    return False
        return True

    def videos(self) -> dict[str, str]:
        """algo -> the report GIF of its first seed (copied next to the report), or the
        one line that says why there is none."""
        out = {}
        for algo in self.spec.algos:
            gif = self.run_dir(algo, 0) / "report" / "policy.gif"
            dest = self.dir / "report" / f"{algo}.gif"
            if gif.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(gif.read_bytes())
                out[algo] = f"![{algo}]({dest.name})"
            else:
                out[algo] = f"{algo}: no video (its first seed's report has none)."
        return out

    def rows(self) -> dict[str, list[list[dict[str, Any]]]]:
        """algo -> per seed, the rows of its metrics.csv (finished runs only)."""
        out: dict[str, list[list[dict[str, Any]]]] = {}
        for algo in self.spec.algos:
            out[algo] = [read_rows(self.run_dir(algo, s) / "metrics.csv") for s in range(self.spec.seeds)
                         if (self.run_dir(algo, s) / "DONE").exists()]
        return out


def compare(spec: CompareSpec, progress: bool = True, log: Callable[[str], None] = print,
            report_only: bool = False) -> Path | None:
    """Run what is missing, then write the report; None if interrupted. With `report_only`,
    run nothing: the report of the runs finished so far."""
    from safemeta.experiment.compare_report import write_compare_report

    c = Comparison(spec, log)
    if report_only:
        if not (c.dir / "compare.yaml").exists():
            raise C.ConfigError(f"out: {c.dir} holds no comparison yet; run it first")
        c.prepare()
    elif not c.run(progress):
        return None
    budget = _budget_line(next(iter(c.resolved.values())))
    return write_compare_report(c.dir / "report", spec.env, c.rows(), budget,
                                {a: r.cfg.iterations for a, r in c.resolved.items()}, c.videos())


def _budget_line(r: Resolved) -> str:
    cfg = r.cfg
    horizon = cfg.horizon or r.suite.horizon
    data = (f"{cfg.steps_per_task} environment steps (whole episodes)" if cfg.steps_per_task
            else f"{cfg.episodes_per_task} episodes of at most {horizon} steps")
    explore = f"{cfg.test_episodes_per_task} episodes" if cfg.test_episodes_per_task else "the same budget"
    evaluation = f"{cfg.eval_episodes} evaluation episodes per policy"
    if cfg.eval_max_episodes:
        evaluation += f", more until its cost interval decides (up to {cfg.eval_max_episodes})"
    return (f"budget per task and data collection: {data}; {cfg.meta_batch} tasks per meta-iteration; "
            f"meta-test: {cfg.test_tasks} tasks of the {cfg.test_split!r} split x {cfg.test_steps} "
            f"adaptation steps, each exploring {explore}; {evaluation}")
