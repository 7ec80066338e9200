"""Atomic, verified checkpoints (SPEC §8).

A checkpoint file is MAGIC, a SHA-256 of the payload, then the payload (torch.save of
a dict). It is written to a temporary file in the same directory, flushed and
fsynced, then renamed over the target, so a crash (even kill -9) leaves either the
old file or the new one. Loading verifies the hash and the format version; a damaged
or incompatible file is reported by name and the previous good one is used.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from safemeta.experiment import faults

MAGIC = b"SAFEMETA-CKPT-1\n"
FORMAT = 1
_NAME = re.compile(r"^ckpt_(\d{6,})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or none could be read; message is for the user."""


def name_for(iteration: int) -> str:
    return f"ckpt_{iteration:06d}.pt"


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file, fsync, rename, fsync dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        faults.point("before_rename" + path.suffix)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(directory: Path, iteration: int, payload: dict[str, Any], keep: int = 3) -> Path:
    """Write checkpoint `ckpt_<iteration>.pt`; keep the newest `keep` files."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buf)
    body = buf.getvalue()
    path = directory / name_for(iteration)
    try:
        write_atomic(path, MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
    except OSError as e:
        good = latest_name(directory)
        raise CheckpointError(
            f"cannot write checkpoint {path}: {e.strerror or e}; "
            f"last good checkpoint: {good or 'none'} (intact)"
        ) from None
    for old in list_checkpoints(directory)[:-keep]:
        try:
            old.unlink()
        except OSError:
            pass
    return path


def remove_partial(directory: Path) -> None:
    """Delete temporary files left by a write that was killed before its rename."""
    if directory.is_dir():
        for p in directory.glob(".*.tmp"):
            p.unlink(missing_ok=True)


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not directory.is_dir():
        return []
    files = [p for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(files, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_name(directory: Path) -> str | None:
    files = list_checkpoints(directory)
    return files[-1].name if files else None


def read(path: Path) -> dict[str, Any]:
    """Load and verify one checkpoint; ValueError with the reason when it is not usable."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"unreadable ({e.strerror})") from None
    if not raw.startswith(MAGIC):
        raise ValueError("not a safemeta checkpoint (bad header)")
    rest = raw[len(MAGIC):]
    digest, _, body = rest.partition(b"\n")
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise ValueError("damaged or truncated (checksum mismatch)")
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means damaged
        raise ValueError(f"damaged ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"incompatible format (expected {FORMAT})")
    return payload


def load_latest(
    directory: Path,
    accept: Callable[[dict[str, Any]], str | None] | None = None,
    warn: Callable[[str], None] = print,
) -> tuple[Path, dict[str, Any]] | None:
    """The newest usable checkpoint. Each unusable one is reported in one line by name;
    `accept(payload)` returns a reason to reject (e.g. another config) or None."""
    for path in reversed(list_checkpoints(directory)):
        try:
            payload = read(path)
            reason = accept(payload) if accept else None
            if reason:
                raise ValueError(reason)
        except ValueError as e:
            warn(f"checkpoint {path} skipped: {e}; trying the previous one")
            continue
        return path, payload
    return None
