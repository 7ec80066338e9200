"""What imports what (ARCHITECTURE.md): the method knows nothing of runs, the sampler
knows no algorithm, and the paper and the baselines stand apart. Read with `ast`, so
imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "safemeta"

# package (folder or module) -> packages it must not import
FORBIDDEN = {
    "core": ("experiment", "baselines", "distributed", "cli"),
    "baselines": ("core", "experiment", "distributed", "cli"),
    "rollout": ("core", "baselines", "updates", "meta_learner", "algorithm", "experiment", "tabular"),
    "nn": ("core", "baselines", "updates", "rollout", "meta_learner", "experiment", "tabular"),
    "updates": ("core", "baselines", "rollout", "meta_learner", "experiment", "tabular"),
    "meta_learner": ("core", "baselines", "experiment", "tabular"),
    "algorithm": ("core", "baselines", "experiment", "tabular", "meta_learner"),
    "config": ("core", "baselines", "experiment", "tabular", "meta_learner", "rollout"),
    "tabular": ("experiment", "baselines", "rollout", "meta_learner"),
    "envs": ("core", "baselines", "experiment", "tabular", "meta_learner", "rollout", "updates"),
}


def imports_of(path: Path) -> set[str]:
    """Every safemeta module `path` imports, as dotted names relative to the package."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out |= {n[len("safemeta."):] for n in names if n.startswith("safemeta.")}
    return out


def unit_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def violations() -> list[str]:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        unit = unit_of(path)
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in FORBIDDEN.get(unit, ()):
                bad.append(f"{path.relative_to(ROOT.parent)} imports safemeta.{name}")
    return bad


def test_no_module_imports_against_the_layering() -> None:
    assert violations() == []


def test_the_walk_sees_real_imports(tmp_path: Path) -> None:
    """The checker itself: a lazy import inside a function is found."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from safemeta.experiment.runner import Run\n    import safemeta.core.meta\n")
    assert imports_of(f) == {"experiment.runner", "experiment.runner.Run", "core.meta"}
    assert "meta_learner" in imports_of(ROOT / "core" / "meta.py")


@pytest.mark.parametrize("unit", sorted(FORBIDDEN))
def test_every_listed_unit_exists_or_is_still_to_come(unit: str) -> None:
    exists = (ROOT / unit).is_dir() or (ROOT / f"{unit}.py").exists()
    assert exists or unit in ("baselines", "distributed")
