"""Suite registry: `safemeta.suite(id)` (SPEC §7).

Built-in suites are listed here. A package installed beside safemeta adds its own through
the entry-point group `safemeta.suites` (name = suite id, value = "module:Suite class or
factory"; see docs/own-suite.md), so `safemeta envs`, `train`, `test`, `render` and
`compare` see it without any change to safemeta. An entry point whose id collides with a
built-in one (or another package's) refuses every lookup with one line: which suite a
command would get must never depend on installation order.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any, Callable

from safemeta.config import ConfigError
from safemeta.envs.base import Suite

ENTRY_POINT_GROUP = "safemeta.suites"

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
BUILTIN_IDS = tuple(_SUITES)

# Entry points found in installed packages, by suite id (filled once per process).
_plugins: dict[str, metadata.EntryPoint] | None = None


class SuiteError(ConfigError):
    """A suite that cannot be used (collision, broken entry point); one line for the user."""


def _where(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    package = f"package {dist.name!r}" if dist is not None else "an installed package"
    return f"{package} (entry point {ep.name} = {ep.value} in group {ENTRY_POINT_GROUP})"


def plugins() -> dict[str, metadata.EntryPoint]:
    """Suite id -> entry point of the installed packages' suites; SuiteError on a collision."""
    global _plugins
    if _plugins is None:
        found: dict[str, metadata.EntryPoint] = {}
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in BUILTIN_IDS:
                raise SuiteError(f"suite {ep.name!r} from {_where(ep)} collides with a built-in suite id; "
                                 "rename it in that package's entry points")
            other = found.get(ep.name)
            if other is not None and other.value != ep.value:  # one package seen twice is no clash
                raise SuiteError(f"suite {ep.name!r} is declared twice: by {_where(other)} and by "
                                 f"{_where(ep)}; uninstall or rename one")
            found[ep.name] = ep
        _plugins = found
    return _plugins


def refresh() -> None:
    """Look for installed packages' suites again at the next lookup (after an install)."""
    global _plugins
    _plugins = None


def suite_ids() -> list[str]:
    return [*_SUITES, *(k for k in plugins() if k not in _SUITES)]


def register(suite_id: str, target: str | Callable[[], Suite]) -> None:
    """Add a suite: `target` is "module:attribute" or a factory."""
    _SUITES[suite_id] = target  # type: ignore[assignment]


def suite_factory(suite_id: str) -> Callable[..., Suite]:
    """The class or factory behind `suite_id` (its module imported); SuiteError when an
    installed package's entry point cannot be loaded, or collides with another suite."""
    eps = plugins()  # a collision refuses built-in ids too: which suite is meant is unclear
    if suite_id in _SUITES:
        target: Any = _SUITES[suite_id]
        if callable(target):
            return target
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)
    if suite_id not in eps:
        raise ValueError(f"env: unknown suite {suite_id!r}; accepted {', '.join(suite_ids())}")
    ep = eps[suite_id]
    try:
        target = ep.load()
    except Exception as e:  # noqa: BLE001 - any failure in a user's package is one line
        raise SuiteError(f"suite {suite_id!r} from {_where(ep)} cannot be loaded: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not callable(target):
        raise SuiteError(f"suite {suite_id!r} from {_where(ep)} is not a Suite class or factory "
                         f"(got {type(target).__name__})")
    declared = getattr(target, "id", suite_id)
    if isinstance(target, type) and declared != suite_id:
        raise SuiteError(f"suite {suite_id!r} from {_where(ep)}: the class's id is {declared!r}; "
                         "the entry-point name and `id` must be the same")
    return target


def load_plugins() -> None:
    """Import every installed package's suite now (`safemeta envs`: fail before printing)."""
    for suite_id in plugins():
        suite_factory(suite_id)


def suite(suite_id: str, **kwargs: object) -> Suite:
    """The task suite named `suite_id`; kwargs go to its constructor."""
    made = suite_factory(suite_id)(**kwargs)
    if suite_id not in _SUITES and not isinstance(made, Suite):
        raise SuiteError(f"suite {suite_id!r}: its factory returned {type(made).__name__}, not a "
                         "safemeta.envs.base.Suite")
    return made
