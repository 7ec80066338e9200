"""Pseudo-lidar of Safety-Gymnasium 1.0 (SPEC §4.2), in the agent's frame.

For each object at egocentric (x, y): distance d, angle a in [0, 2π); bin b = ⌊a / w⌋
with w = 2π / num_bins; reading s = max(0, max_dist − d) / max_dist; bin b takes
max(bin, s), and with aliasing the neighbours take α·s (bin b+1) and (1 − α)·s
(bin b−1), α = (a − b·w) / w, all modulo num_bins.

Objects are few (≤ 8 per type), so a scalar loop with `math` beats numpy's per-call
overhead; the world→agent transform is one small matrix product.
"""

from __future__ import annotations

import math

import numpy as np

NUM_BINS = 16
TWO_PI = 2.0 * math.pi


def ego_xy(points: np.ndarray, agent_pos: np.ndarray, agent_mat: np.ndarray) -> np.ndarray:
    """Egocentric (x, y) of world points (k, 2) lying on the floor (z = 0).

    As Safety-Gymnasium's `_ego_xy`: ((x, y, 0) − agent_pos) @ R, first two components,
    with R the agent's 3×3 orientation (body → world).
    """
    rel = np.empty((len(points), 3))
    rel[:, :2] = points - agent_pos[:2]
    rel[:, 2] = -agent_pos[2]
    return (rel @ agent_mat.reshape(3, 3))[:, :2]


def add_point(out: list[float], x: float, y: float, max_dist: float,
              num_bins: int = NUM_BINS, alias: bool = True) -> None:
    """Accumulate one object at egocentric (x, y) into the lidar `out` (max-pooling)."""
    sensor = max(0.0, max_dist - math.hypot(x, y)) / max_dist
    if sensor <= 0.0:
        return
    bin_size = TWO_PI / num_bins
    angle = math.atan2(y, x) % TWO_PI
    b = int(angle / bin_size) % num_bins  # `% num_bins` guards angle rounding to 2π
    if sensor > out[b]:
        out[b] = sensor
    if not alias:
        return
    frac = min(max((angle - b * bin_size) / bin_size, 0.0), 1.0)
    up, down = (b + 1) % num_bins, (b - 1) % num_bins
    if frac * sensor > out[up]:
        out[up] = frac * sensor
    if (1.0 - frac) * sensor > out[down]:
        out[down] = (1.0 - frac) * sensor


def lidar(ego: np.ndarray, max_dist: float, num_bins: int = NUM_BINS,
          alias: bool = True) -> np.ndarray:
    """The lidar of objects at egocentric positions `ego` (k, 2)."""
    out = np.zeros(num_bins)
    fill(out, ego, max_dist, num_bins, alias)
    return out


def fill(out: np.ndarray, ego: np.ndarray, max_dist: float, num_bins: int = NUM_BINS,
         alias: bool = True) -> None:
    """Overwrite `out` (num_bins,) with the lidar of the objects at `ego` (k, 2)."""
    vals = [0.0] * num_bins
    for x, y in ego.tolist():
        add_point(vals, x, y, max_dist, num_bins, alias)
    out[:] = vals
