"""Where the node keeps what it receives: hashed names, atomic writes, nothing that names a patient.

Layout under the node's ``--out`` folder::

    node-key                      random secret (0600) keying the hashed names
    received/<study>/<inst>.dcm   image objects (they have pixel data): these are screened
    other/<study>/<inst>.dcm      objects without pixel data (SR, presentation states): kept, not screened
    unreadable/<sha>.dcm          data sets that could not be parsed or lack their UIDs: kept, reported

``<study>`` and ``<inst>`` are HMAC-SHA256 digests (keyed by ``node-key``) of the
Study and SOP Instance UIDs, so paths, logs and the worklist carry no UID, name or
ID, and an outsider cannot test a known UID against them. Every file is written
atomically (hidden temp file, fsync, rename, fsync of the folder) *before* the
sender is told it was stored, so a file that exists is complete, and an object
whose transfer was cut off never becomes a file. Temp files start with '.', so the
folder walk of screening never sees them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cxr_desktop.atomic import fsync_dir, write_bytes_atomic

RECEIVED = "received"
OTHER = "other"
UNREADABLE = "unreadable"
KEY_FILE = "node-key"
KEY_LEN = 20  # hex digits of a study / instance key (80 bits)
SUFFIX = ".dcm"


@dataclass(frozen=True)
class Stored:
    """One received object on disk: its study key, path relative to the node folder, and whether it is new."""

    study: str
    relpath: str
    new: bool
    image: bool


class ReceivedStore:
    """The received objects of one node folder (thread-safe: every write is an independent atomic rename)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        for sub in (RECEIVED, OTHER, UNREADABLE):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._key = _load_or_create_key(self.root / KEY_FILE)

    # ----------------------------------------------------------------- names

    def key_for(self, uid: str) -> str:
        """The hashed key of a UID (stable for this node folder)."""
        return hmac.new(self._key, str(uid).strip().encode("ascii", "replace"), hashlib.sha256).hexdigest()[:KEY_LEN]

    def study_dir(self, study: str) -> Path:
        return self.root / RECEIVED / study

    # ----------------------------------------------------------------- writing

    def store(self, study_uid: str, sop_uid: str, data: bytes, *, image: bool) -> Stored:
        """Write one complete object (DICOM file bytes) under its hashed names; an existing instance is kept.

        A second copy of an instance already stored is not written again (the first
        one may already be screened; re-scoring it would count it twice).
        """
        study = self.key_for(study_uid)
        folder = self.root / (RECEIVED if image else OTHER) / study
        name = self.key_for(sop_uid) + SUFFIX
        target = folder / name
        rel = target.relative_to(self.root).as_posix()
        if target.exists():
            return Stored(study, rel, new=False, image=image)
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, data)
        return Stored(study, rel, new=True, image=image)

    def store_unreadable(self, data: bytes) -> str:
        """Keep a data set that could not be parsed (named by its content hash); returns its relative path."""
        target = self.root / UNREADABLE / (hashlib.sha256(data).hexdigest()[:KEY_LEN] + SUFFIX)
        if not target.exists():
            write_bytes_atomic(target, data)
        return target.relative_to(self.root).as_posix()

    # ----------------------------------------------------------------- reading

    def studies(self) -> list[str]:
        """Keys of the studies with received images, oldest folder first."""
        base = self.root / RECEIVED
        dirs = [d for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")]
        return [d.name for d in sorted(dirs, key=lambda d: (d.stat().st_mtime_ns, d.name))]

    def instances(self, study: str) -> list[str]:
        """Relative paths (to the node folder) of a study's received images."""
        folder = self.study_dir(study)
        if not folder.is_dir():
            return []
        return sorted(f"{RECEIVED}/{study}/{p.name}" for p in folder.iterdir()
                      if p.is_file() and not p.name.startswith(".") and p.name.endswith(SUFFIX))

    def remove_temp_files(self) -> int:
        """Delete hidden temp files a killed process left behind (never complete objects); returns how many."""
        n = 0
        for sub in (RECEIVED, OTHER, UNREADABLE):
            for dirpath, _dirs, files in os.walk(self.root / sub):
                for name in files:
                    if name.startswith(".") and name.endswith(".tmp"):
                        try:
                            os.unlink(os.path.join(dirpath, name))
                            n += 1
                        except OSError:
                            pass
        return n


def _load_or_create_key(path: Path) -> bytes:
    """The node's secret, created once (0600, atomically) and reused by every later start."""
    try:
        key = path.read_bytes()
        if len(key) >= 16:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return key
