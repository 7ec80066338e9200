"""Save rendered frames as a short video (issue 3: "saving a short GIF/MP4 of a policy").

    frames = [env.render() for _ in ...]       # env made with render_mode="rgb_array"
    save_video(frames, "run/cheetah.gif", fps=30)

GIF is written with imageio's Pillow plugin (always available). MP4 needs an
ffmpeg writer (``pip install imageio-ffmpeg``); without one a clear error names
the missing package instead of a deep imageio traceback.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

VIDEO_EXTENSIONS = (".gif", ".mp4")


def save_video(frames: Sequence[np.ndarray], path: str, fps: int = 30) -> None:
    """Write `frames` (each H×W×3 uint8 RGB, all one shape) to `path` (.gif or .mp4)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in VIDEO_EXTENSIONS:
        raise ValueError(f"path: extension {ext!r} not supported; accepted {list(VIDEO_EXTENSIONS)}")
    if not isinstance(fps, int) or fps <= 0:
        raise ValueError(f"fps: got {fps!r}; accepted a positive integer")
    stack = _check_frames(frames)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    if ext == ".gif":
        _write_gif(stack, path, fps)
    else:
        _write_mp4(stack, path, fps)


def _check_frames(frames: Sequence[np.ndarray]) -> np.ndarray:
    if len(frames) == 0:
        raise ValueError("frames: got an empty list; accepted one or more H×W×3 arrays")
    shapes = {np.shape(f) for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"frames: all frames must have one shape; got {sorted(shapes)}")
    shape = shapes.pop()
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"frames: each frame must be H×W×3 RGB; got shape {shape}")
    stack = np.stack([np.asarray(f) for f in frames])
    if stack.dtype != np.uint8:
        stack = np.clip(stack, 0, 255).astype(np.uint8)
    return stack


def _write_gif(stack: np.ndarray, path: str, fps: int) -> None:
    import imageio.v3 as iio

    # Pillow's GIF writer takes the frame duration in milliseconds; loop=0 repeats.
    iio.imwrite(path, stack, extension=".gif", duration=1000.0 / fps, loop=0)


def _write_mp4(stack: np.ndarray, path: str, fps: int) -> None:
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "save_video: writing .mp4 needs an ffmpeg writer; install it with "
            "`pip install imageio-ffmpeg`, or save a .gif instead"
        ) from exc
    import imageio.v2 as iio2

    # H.264 wants even dimensions; crop a trailing row/column if needed.
    h, w = stack.shape[1] // 2 * 2, stack.shape[2] // 2 * 2
    iio2.mimwrite(path, list(stack[:, :h, :w]), fps=fps, macro_block_size=1)
