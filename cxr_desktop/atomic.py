"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

Temp file in the same folder, flush + fsync, ``os.replace``, then fsync of the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

T = TypeVar("T")


def write_stream_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], T]) -> T:
    """Replace ``path`` with what ``write(fh)`` writes, atomically; returns ``write``'s result.

    For large outputs written in pieces (model files, hashed as they are written).
    """
    p = Path(path)
    mode = (p.stat().st_mode & 0o777) if p.exists() else 0o644  # mkstemp's 0600 would hide reports from others
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name[:80]}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            result = write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(p.parent)
    return result


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""

    def _write(fh: BinaryIO) -> None:
        view = memoryview(data)
        for start in range(0, len(view), 16 << 20):
            fh.write(view[start:start + (16 << 20)])

    write_stream_atomic(path, _write)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], data: object) -> None:
    write_text_atomic(path, json.dumps(data))


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename durable (POSIX; a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
