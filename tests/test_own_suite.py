"""Suites from installed packages (entry-point group `safemeta.suites`, issue 13): the example
package in examples/own_suite is seen by `envs`, trains and renders through the command
line; a colliding id and a broken entry point are one line and exit 2.

"Installed" here is what `pip install -e examples/own_suite` leaves behind, made by hand in
a temporary folder on the path: a `.dist-info` whose `entry_points.txt` is generated from
the example's own pyproject.toml, next to the package's source (milliseconds instead of a
build). The slow test installs it with pip for real (`pip install --target`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import imageio.v3 as iio
import pytest

from safemeta.cli import main
from safemeta.envs import registry
from safemeta.experiment.metrics import read_rows

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_suite"
TINY = [a for kv in ("iterations=2", "meta_batch=2", "episodes_per_task=3", "val_tasks=1", "test_tasks=1",
                     "test_steps=1", "eval_episodes=2", "hidden=16") for a in ("--set", kv)]


def fake_install(site: Path, entry_points: dict[str, str], name: str = "own_suite") -> Path:
    """A distribution `name` whose entry points in `safemeta.suites` are `entry_points`."""
    info = site / f"{name}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1.0\n")
    lines = [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("[safemeta.suites]\n" + "\n".join(lines) + "\n")
    return site


def example_entry_points() -> dict[str, str]:
    """The `safemeta.suites` table of the example's pyproject.toml."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    return project["entry-points"]["safemeta.suites"]


def cli(*args: str, path: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "SAFEMETA_REPORT_VIDEO": "1",
           "PYTHONPATH": os.pathsep.join(map(str, path + [Path(__file__).resolve().parents[1]]))}
    return subprocess.run([sys.executable, "-m", "safemeta", *args], capture_output=True, text=True, env=env,
                          cwd=cwd)


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install entry points into this process (sys.path + a fresh registry lookup)."""
    def install(entry_points: dict[str, str]) -> None:
        site = fake_install(tmp_path / "site", entry_points)
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.syspath_prepend(str(EXAMPLE))
        registry.refresh()

    yield install
    registry.refresh()  # the next lookup sees only what is really installed


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("safemeta: error: "), err
    return err


def test_the_example_suite_is_listed_trains_and_renders_through_the_command_line(
        tmp_path: Path, installed, capsys) -> None:
    """`envs` and `render` in this process, `train` in a fresh one (what an installed package
    meets): the suite is listed with its sizes, trains for two iterations, and renders."""
    assert example_entry_points() == {"reach-hazard": "own_suite:ReachHazardSuite"}
    installed(example_entry_points())
    assert main(["envs"]) == 0
    listed = capsys.readouterr().out
    assert "reach-hazard  [continuous]" in listed and "obs 6  act 2  horizon 50  cost limit 2" in listed
    out = tmp_path / "run"
    res = cli("train", "--env", "reach-hazard", *TINY, "--no-progress", "--out", str(out),
              path=[tmp_path / "site", EXAMPLE], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = read_rows(out / "metrics.csv")
    assert [r["iteration"] for r in rows if r["phase"] == "meta_train"] == [0, 1]
    assert [r["step"] for r in rows if r["phase"] == "meta_test"] == [0, 1]
    assert all(r["cost_limit"] == 2.0 for r in rows)
    # its env renders with numpy: the report's video and `render` need no GL
    assert "![policy](policy.gif)" in (out / "report" / "report.md").read_text()
    gif = tmp_path / "v.gif"
    assert main(["render", str(out), "--frames", "5", "--size", "150x140", "--out", str(gif)]) == 0
    assert iio.imread(gif, index=None).shape[:3] == (5, 140, 300)


def test_a_suite_id_colliding_with_a_built_in_one_is_refused_in_one_line(installed, capsys) -> None:
    installed({"point-circle": "own_suite:ReachHazardSuite"})
    assert main(["envs"]) == 2
    err = one_line_error(capsys)
    assert "suite 'point-circle' from package 'own-suite'" in err
    assert "collides with a built-in suite id" in err
    assert main(["train", "--env", "point-circle", "--no-progress"]) == 2
    assert "collides with a built-in suite id" in one_line_error(capsys)
    assert capsys.readouterr().out == ""


def test_a_broken_entry_point_is_one_line_and_exit_2(installed, capsys, tmp_path: Path) -> None:
    installed({"broken-suite": "own_suite_not_there:Suite"})
    assert main(["envs"]) == 2
    err = one_line_error(capsys)
    assert "suite 'broken-suite' from package 'own-suite'" in err
    assert "cannot be loaded: ModuleNotFoundError: No module named 'own_suite_not_there'" in err
    assert capsys.readouterr().out == ""  # refused before printing any suite
    assert main(["train", "--env", "broken-suite", "--no-progress", "--out", str(tmp_path / "o")]) == 2
    assert "cannot be loaded" in one_line_error(capsys)
    assert not (tmp_path / "o").exists()
    # an entry point whose class says another id
    registry.refresh()
    shutil.rmtree(tmp_path / "site")
    installed({"other-id": "own_suite:ReachHazardSuite"})
    assert main(["train", "--env", "other-id", "--no-progress"]) == 2
    assert "the class's id is 'reach-hazard'" in one_line_error(capsys)


def test_an_installed_suite_works_from_python_and_built_ins_are_unchanged(installed) -> None:
    installed(example_entry_points())
    assert registry.suite_ids()[: len(registry.BUILTIN_IDS)] == list(registry.BUILTIN_IDS)
    assert registry.suite_ids()[-1] == "reach-hazard"
    s = registry.suite("reach-hazard")
    task = s.sample_tasks(1, __import__("numpy").random.default_rng(0), "test")[0]
    env = s.make(task)
    obs, _ = env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    assert obs.shape == (6,) and isinstance(info["cost"], float)


@pytest.mark.slow
def test_pip_installs_the_example_and_safemeta_sees_it(tmp_path: Path) -> None:
    """The real thing: pip builds and installs the example (into a folder, not this venv)."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(src)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    listed = cli("envs", path=[site], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "reach-hazard  [continuous]" in listed.stdout
