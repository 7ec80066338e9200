"""The held-out safety test's error rate and power on a bandit whose true costs are known
exactly (issue 10), for both ways its step fractions share α (`safety_multiplicity`).

The bandit of `tests/test_safety_test.py`: one state, cost a² per step, 10 steps per
episode, π_k = N(0, 0.3²) (true cost 0.9), the candidate N(μ, 0.3²) (KL μ²/0.18). Per cell,
over fresh held-out samples of m episodes of π_k:

    unsafe accepted = P(a policy handed out has a true cost over the limit), the limit midway
                      between the half step's and the full step's true cost (the full step is
                      unsafe, its halves safe); the test's target is ≤ α = 0.05
    full step       = P(the full step is handed out) when the limit is the full step's cost
                      plus half its increase (every fraction safe): the test's power

    python benchmarks/safety_bandit.py [--seeds 400]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' bandit

RULES = ("bonferroni", "fixed_sequence")
MEANS = (0.05, 0.1, 0.15, 0.2)
HELD_OUT = (4, 8, 20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=400, help="held-out samples per cell")
    args = ap.parse_args()
    from test_safety_test import SIGMA, H, _accept_rates

    print(f"unsafe accepted / full step accepted, {args.seeds} held-out samples per cell (α = 0.05)")
    print("| rule | candidate KL | " + " | ".join(f"m = {m}" for m in HELD_OUT) + " |")
    print("|---|---|" + "---|" * len(HELD_OUT))
    for rule in RULES:
        for mu in MEANS:
            full, half, own = H * (mu**2 + SIGMA**2), H * (mu**2 / 4 + SIGMA**2), H * SIGMA**2
            cells = []
            for m in HELD_OUT:
                bad, _, _ = _accept_rates(0.0, mu, 0.5 * (half + full), args.seeds, m=m,
                                          safety_multiplicity=rule)
                _, power, _ = _accept_rates(0.0, mu, full + 0.5 * (full - own), args.seeds, m=m,
                                            safety_multiplicity=rule)
                cells.append(f"{bad:.3f} / {power:.2f}")
            print(f"| {rule} | {mu**2 / (2 * SIGMA**2):.3f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
