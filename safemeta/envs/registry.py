"""Suite registry: `safemeta.suite(id)` (SPEC §7)."""

from __future__ import annotations

import importlib
from typing import Callable

from safemeta.envs.base import Suite

# id -> "module:attribute"; modules import lazily so `import safemeta` stays light.
_SUITES: dict[str, str] = {
    "tabular-random": "safemeta.tabular.suites:RandomCMDPSuite",
    "tabular-grid": "safemeta.tabular.suites:GridSuite",
    "halfcheetah-vel": "safemeta.envs.locomotion:HalfCheetahVelSuite",
    "hopper-vel": "safemeta.envs.locomotion:HopperVelSuite",
    "humanoid-dir": "safemeta.envs.locomotion:HumanoidDirSuite",
    "swimmer-vel": "safemeta.envs.locomotion:SwimmerVelSuite",
    "point-circle": "safemeta.envs.navigation:PointCircleSuite",
    "car-circle": "safemeta.envs.navigation:CarCircleSuite",
    "car-circle-nohazards": "safemeta.envs.navigation:CarCircleNoHazardsSuite",
    "point-button": "safemeta.envs.navigation:PointButtonSuite",
}


def suite_ids() -> list[str]:
    return list(_SUITES)


def register(suite_id: str, target: str | Callable[[], Suite]) -> None:
    """Add a suite: `target` is "module:attribute" or a factory."""
    _SUITES[suite_id] = target  # type: ignore[assignment]


def suite(suite_id: str, **kwargs: object) -> Suite:
    """The task suite named `suite_id`; kwargs go to its constructor."""
    if suite_id not in _SUITES:
        raise ValueError(f"env: unknown suite {suite_id!r}; accepted {', '.join(_SUITES)}")
    target = _SUITES[suite_id]
    if callable(target):
        return target(**kwargs)
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)(**kwargs)
