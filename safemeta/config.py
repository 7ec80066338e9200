"""Typed configuration: dataclasses with a doc per field, presets, overrides, validation.

Every algorithm has one flat config dataclass (CleanRL style) deriving from
`CommonConfig`. Fields are declared with `param(default, doc, low=, high=, choices=)`.
The resolved config is defaults <- preset <- YAML file <- `--set key=value`; unknown
keys, wrong types and out-of-range values raise `ConfigError` with one line naming
the key and what is accepted.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Mapping

import yaml

PRESETS = ("quick", "medium", "paper")  # every algorithm defines each (`Algorithm.presets`)


class ConfigError(ValueError):
    """A user error in the configuration: the message is one line for the user."""


def param(
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A config field with a one-line doc and its accepted range."""
    meta = {"doc": doc, "low": low, "high": high, "low_open": low_open, "choices": choices}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class CommonConfig:
    """Fields every algorithm shares."""

    seed: int = param(0, "root seed; every generator is derived from it", low=0, high=2**32 - 1)
    device: str = param("cpu", "torch device for learners", choices=("cpu", "cuda"))
    iterations: int = param(100, "meta-training iterations", low=0, high=10**7)
    meta_batch: int = param(10, "training tasks per meta-iteration", low=1, high=10_000)
    val_tasks: int = param(10, "validation tasks for the meta-training curves", low=1, high=10_000)
    eval_every: int = param(1, "evaluate on validation tasks every N iterations", low=1, high=10**7)
    test_tasks: int = param(20, "held-out test tasks in meta-test", low=1, high=10_000)
    test_steps: int = param(20, "adaptation steps per test task in meta-test", low=0, high=10_000)
    test_split: str = param(
        "test", "split the meta-test tasks are drawn from: test (fresh draws of the training "
        "distribution) or ood (a shifted, harder one; `safemeta envs` shows both)",
        choices=("test", "ood"))
    checkpoint_every: int = param(10, "write a checkpoint every N iterations", low=1, high=10**7)
    keep_checkpoints: int = param(3, "how many checkpoints to keep", low=1, high=10**4)


@dataclass
class GaussianConfig(CommonConfig):
    """What every algorithm with a Gaussian MLP policy shares: budgets, networks, critics,
    advantages and the trust-region policy step. One default each, whatever the algorithm."""

    gamma: float = param(0.99, "discount γ", low=0, high=0.9999, low_open=True)
    gae_lambda: float = param(0.97, "GAE λ for reward and cost advantages", low=0, high=1)
    episodes_per_task: int = param(
        20, "episodes per task per data collection (pre, post, each meta-test step) "
        "when steps_per_task is 0", low=1, high=10_000
    )
    steps_per_task: int = param(
        0, "step budget per task per data collection: whole episodes until at least N steps "
        "(the paper's 'batch N per task'); 0: episodes_per_task episodes", low=0, high=10**8)
    test_episodes_per_task: int = param(
        0, "meta-test: exploration episodes per task and adaptation step (the data each step adapts "
        "and is safety-tested on); 0: the training budget (steps_per_task or episodes_per_task)",
        low=0, high=10_000)
    envs_per_task: int = param(0, "envs stepped in parallel per task; 0: one per episode "
                               "(with steps_per_task: enough for one round of full-length episodes)",
                               low=0, high=10_000)
    horizon: int = param(0, "episode length; 0: the suite's default", low=0, high=100_000)
    hidden: list[int] = param([64, 64], "policy MLP hidden sizes (tanh)", low=1, high=4096)
    init_log_std: float = param(-0.5, "initial log-std of the Gaussian policy", low=-5, high=2)
    kappa: str = param(
        "auto",
        "advantage-to-return factor in the cost surrogate: gamma = 1/(1−γ); "
        "auto = mean episode length for undiscounted limits",
        choices=("auto", "gamma"),
    )
    normalize_adv: bool = param(True, "standardise reward advantages per task")
    outer_step: str = param(
        "trpo",
        "policy step: TRPO natural gradient with KL bound, or first-order clipped",
        choices=("trpo", "first-order"),
    )
    max_kl: float = param(0.01, "TRPO policy step: KL bound", low=0, low_open=True, high=10)
    cg_iters: int = param(10, "TRPO policy step: conjugate-gradient iterations", low=1, high=1000)
    cg_damping: float = param(0.1, "TRPO policy step: Fisher damping", low=0, high=1e6)
    line_search_steps: int = param(10, "TRPO policy step: backtracking halvings", low=1, high=60)
    fvp_states: int = param(4000, "TRPO policy step: states subsampled for Fisher-vector products",
                            low=100, high=10**7)
    outer_lr: float = param(1e-3, "first-order policy step: Adam learning rate", low=0, low_open=True,
                            high=10)
    max_grad_norm: float = param(1.0, "first-order policy step: gradient-norm clip",
                                 low=0, low_open=True, high=1e6)
    critic: str = param(
        "linear",
        "value critics: per-task linear feature baseline, or one shared MLP",
        choices=("linear", "mlp"),
    )
    critic_reg: float = param(1e-5, "linear critic: ridge coefficient", low=0, high=1e6)
    critic_lr: float = param(1e-3, "mlp critic: Adam learning rate", low=0, low_open=True, high=10)
    critic_epochs: int = param(5, "mlp critic: epochs per fit", low=1, high=10**4)
    eval_episodes: int = param(10, "fresh evaluation episodes per task (validation, meta-test steps)",
                               low=1, high=10_000)
    cost_limit: float | None = param(
        None, "the limit d instead of the suite's (all constraints); `safemeta reference` lifts it",
        low=0, high=1e15)
    eval_max_episodes: int = param(
        0, "meta-test: evaluate a policy in batches of eval_episodes until its task's 95% cost interval "
        "excludes the limit or is within eval_rel_width·d, up to this many episodes (exploration "
        "episodes count); 0: eval_episodes only", low=0, high=100_000)
    eval_rel_width: float = param(0.2, "meta-test: the interval half-width, relative to d, that is "
                                  "precise enough to stop (eval_max_episodes)", low=0, high=100)
    obs_norm: bool = param(True, "update the observation normaliser from pre-adaptation data")
    torch_threads: int = param(1, "torch threads for learners (small MLPs run fastest on one)",
                               low=1, high=1024)


def field_docs(cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


def _type_of(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert `value` (possibly a string from the command line) to `typ`, or ConfigError."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return coerce(key, value, args[0])
    if origin in (list, tuple):
        (inner,) = typing.get_args(typ)[:1] or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        items = [coerce(key, v, inner) for v in value]
        return items if origin is list else tuple(items)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if not math.isfinite(out):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return out
    if typ is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def check_field(cls: type, f: dataclasses.Field, value: Any) -> None:
    m = f.metadata
    choices, low, high = m.get("choices"), m.get("low"), m.get("high")
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if v is None:
            continue
        if choices is not None and v not in choices:
            raise ConfigError(f"{f.name}: got {v!r}; accepted {', '.join(map(str, choices))}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            bad_low = low is not None and (v <= low if m.get("low_open") else v < low)
            if bad_low or (high is not None and v > high):
                lo = "" if low is None else ("> " if m.get("low_open") else ">= ") + f"{low:g}"
                hi = "" if high is None else f"<= {high:g}"
                raise ConfigError(
                    f"{f.name}: got {v!r}; accepted {' and '.join(s for s in (lo, hi) if s)}"
                )


def build(cls: type, *layers: Mapping[str, Any]) -> Any:
    """Instantiate config `cls` from defaults overridden by each mapping in turn."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key not in fields:
                raise ConfigError(
                    f"unknown key {key!r} for {cls.__name__}; accepted: {', '.join(fields)}"
                )
            values[key] = coerce(key, value, _type_of(cls, key))
    cfg = cls(**values)
    validate(cfg)
    return cfg


def validate(cfg: Any) -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        value = coerce(f.name, value, _type_of(type(cfg), f.name))
        setattr(cfg, f.name, value)
        check_field(type(cfg), f, value)
    post = getattr(cfg, "check", None)
    if callable(post):
        post()


def parse_overrides(items: list[str]) -> dict[str, str]:
    """`["a=1", "b=x"]` -> {"a": "1", "b": "x"}; ConfigError on a malformed item."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set: expected key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def load_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as e:
        raise ConfigError(f"--config: cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"--config: {path} is not valid YAML ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of key: value")
    return data


def to_dict(cfg: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def diff(cfg: Any) -> dict[str, Any]:
    """Fields whose value differs from the class default."""
    default = type(cfg)()
    a, b = to_dict(cfg), to_dict(default)
    return {k: v for k, v in a.items() if v != b[k]}


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
