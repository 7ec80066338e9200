"""Input checks shared by the tabular public functions: one ValueError naming the argument."""

from __future__ import annotations

import numpy as np


def array(name: str, x: object, shape: tuple[int | None, ...]) -> np.ndarray:
    """`x` as a float64 array of `shape` (None = any size), finite, or ValueError."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a numeric array, got {type(x).__name__}") from None
    want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
    if a.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, a.shape)):
        raise ValueError(f"{name}: expected shape {want}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def gamma(g: object) -> float:
    try:
        v = float(g)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"gamma: expected a float in (0, 1), got {g!r}") from None
    if not 0.0 < v < 1.0:
        raise ValueError(f"gamma: expected a float in (0, 1), got {g!r}")
    return v


def nonneg(name: str, x: object, *, strict: bool = False) -> float:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {x!r}") from None
    if not np.isfinite(v) or v < 0 or (strict and v == 0):
        raise ValueError(f"{name}: expected a finite number {'> 0' if strict else '>= 0'}, got {x!r}")
    return v


def distribution(name: str, x: np.ndarray, axis: int = -1) -> None:
    if np.any(x < -1e-12) or not np.allclose(x.sum(axis=axis), 1.0, atol=1e-8):
        raise ValueError(f"{name}: expected probabilities that sum to 1 along axis {axis}")
