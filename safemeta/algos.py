"""Algorithm registry: algorithm id x suite family -> implementation."""

from __future__ import annotations

import importlib

from safemeta.algorithm import Algorithm
from safemeta.config import ConfigError

# Imported when asked for, so that starting safemeta imports no algorithm.
_ALGOS: dict[tuple[str, str], str] = {
    ("safemeta", "tabular"): "safemeta.tabular.meta:TabularSafeMeta",
    ("safemeta", "continuous"): "safemeta.core.meta:SafeMeta",
    ("maml-lag", "continuous"): "safemeta.baselines.maml_lag:MAMLLag",
    ("meta-cpo", "continuous"): "safemeta.baselines.meta_cpo:MetaCPO",
    ("meta-crpo", "continuous"): "safemeta.baselines.meta_crpo:MetaCRPO",
    ("cpo", "continuous"): "safemeta.baselines.cpo:CPO",
    ("ppo-lag", "continuous"): "safemeta.baselines.ppo_lag:PPOLag",
}

ALGO_IDS = ("safemeta", "maml-lag", "meta-cpo", "meta-crpo", "cpo", "ppo-lag")


def algorithm(algo_id: str, family: str) -> type[Algorithm]:
    known = sorted({a for a, _ in _ALGOS})
    if algo_id not in known:
        raise ConfigError(f"algo: unknown or not yet available {algo_id!r}; accepted {', '.join(known)}")
    key = (algo_id, family)
    if key not in _ALGOS:
        fams = [f for a, f in _ALGOS if a == algo_id]
        raise ConfigError(f"algo: {algo_id!r} does not run on {family} suites; it runs on {fams}")
    module, attr = _ALGOS[key].split(":")
    return getattr(importlib.import_module(module), attr)
