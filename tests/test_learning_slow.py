"""Long learning checks of the `quick` presets (issue 4), marked slow: run them with
`python -m pytest -m slow`. Each is a full `safemeta train` run (minutes on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from safemeta.cli import main
from safemeta.experiment.metrics import read_rows

pytestmark = pytest.mark.slow


def quick_run(env: str, out: Path) -> tuple[list[dict], list[dict]]:
    assert main(["train", "--env", env, "--preset", "quick", "--out", str(out), "--no-progress"]) == 0
    rows = read_rows(out / "metrics.csv")
    return ([r for r in rows if r["phase"] == "meta_train"],
            [r for r in rows if r["phase"] == "meta_test"])


@pytest.mark.parametrize("env,gain", [("halfcheetah-vel", 30.0), ("point-circle", 5.0)])
def test_quick_preset_learns_and_meta_test_is_anytime_safe(tmp_path: Path, env: str, gain: float) -> None:
    train, test = quick_run(env, tmp_path / env)
    post = np.array([r["post_reward"] for r in train])
    # Post-adaptation reward rises over meta-training (mean of the last 5 vs the first 5).
    assert post[-5:].mean() > post[:5].mean() + gain
    # Meta-test: every policy that collected data on a test task stayed within the limit,
    # and adaptation did not lose reward.
    assert [r["step"] for r in test] == [0, 1, 2, 3]
    assert all(r["violation_rate"] == 0.0 and r["cost_max"] <= r["cost_limit"] for r in test)
    assert test[-1]["reward_mean"] >= test[0]["reward_mean"]
