"""Where a retrieve writes while it runs, and the progress it reports.

Every received instance is written into a private staging folder, each file
atomically (``.part`` then rename), named by a hash of its SOP Instance UID so
that names carry no identifiers and a re-sent instance replaces itself. Only a
complete study leaves staging (the cache or the target folder renames the
whole folder at once); a failed or cancelled retrieve deletes it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RetrieveProgress:
    """Instances received so far (``total`` where the server says how many are coming)."""

    received: int
    total: int | None
    bytes: int
    elapsed_s: float
    method: str  # "get", "move" or "wado"


def instance_file_name(sop_instance_uid: str) -> str:
    """File name of one instance: a hash of its UID (no identifiers in paths)."""
    return hashlib.sha256(str(sop_instance_uid).encode("ascii", "replace")).hexdigest()[:40] + ".dcm"


class StagingFolder:
    """A folder that receives instances (thread-safe: a storage SCP writes from its own threads)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self.count = 0
        self.bytes = 0
        self.names: set[str] = set()

    def add(self, sop_instance_uid: str, data: bytes) -> Path:
        """Write one instance (Part 10 bytes) atomically; returns its path."""
        name = instance_file_name(sop_instance_uid)
        target = self.path / name
        tmp = self.path / f".{name}.{threading.get_ident()}.part"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        with self._lock:
            if name not in self.names:
                self.names.add(name)
                self.count += 1
            self.bytes += len(data)
        return target
