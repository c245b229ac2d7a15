"""The local study cache: retrieved studies, private to the user, all-or-nothing, size-limited.

Layout under the root (default ``<user cache>/pacs-studies``, mode 0700)::

    <key>/                one complete study (key: a hash of the Study Instance UID)
        <hash>.dcm        its instances (names carry no identifiers)
        .complete         JSON: file count, bytes; its mtime is the study's last use
    .staging-<random>/    a retrieve in progress (deleted on failure, and on the next start)

A study appears only when complete (its staging folder is renamed into place in
one step), so no reader ever sees part of a study. :meth:`StudyCache.has` says
whether a study is there (then it is not fetched again). :meth:`StudyCache.evict`
removes the least recently used studies until the total is under the size limit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cxr_desktop.pacs.errors import PacsError, PacsProblem
from cxr_desktop.pacs.staging import StagingFolder

DEFAULT_LIMIT_BYTES = 5 * 1024 ** 3  # 5 GiB
MARKER = ".complete"
STAGING_PREFIX = ".staging-"


def default_cache_root() -> Path:
    from cxr_desktop.paths import cache_dir

    return cache_dir() / "pacs-studies"


def study_key(study_uid: str) -> str:
    """Folder name of a study: a hash of its UID (no identifiers in paths)."""
    return hashlib.sha256(str(study_uid).encode("ascii", "replace")).hexdigest()[:32]


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def folder_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file():
                total += p.stat().st_size
    return total


@dataclass(frozen=True)
class CachedStudy:
    key: str
    folder: Path
    files: int
    bytes: int
    last_used: float


class StudyCache:
    """Complete studies on disk, private (0700), at most ``limit_bytes`` after :meth:`evict`."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, limit_bytes: int = DEFAULT_LIMIT_BYTES):
        self.root = Path(root) if root is not None else default_cache_root()
        self.limit_bytes = int(limit_bytes)
        try:
            _private_dir(self.root)
        except OSError as exc:
            raise PacsError(PacsProblem.LOCAL, f"cannot create the study cache folder {self.root} "
                                               f"({exc.strerror or exc.__class__.__name__}); choose another "
                                               "cache folder in the settings.") from None
        self.clean_staging()

    # -- lookup ---------------------------------------------------------
    def folder(self, study_uid: str) -> Path:
        return self.root / study_key(study_uid)

    def has(self, study_uid: str) -> bool:
        return (self.folder(study_uid) / MARKER).is_file()

    def files(self, study_uid: str) -> list[Path]:
        """The study's instance files (sorted), [] when not cached; marks the study as just used."""
        folder = self.folder(study_uid)
        if not (folder / MARKER).is_file():
            return []
        self.touch(study_uid)
        return sorted(folder.glob("*.dcm"))

    def touch(self, study_uid: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.folder(study_uid) / MARKER)

    def studies(self) -> list[CachedStudy]:
        out = []
        for d in self.root.iterdir():
            marker = d / MARKER
            if d.name.startswith(".") or not marker.is_file():
                continue
            try:
                info = json.loads(marker.read_text())
                out.append(CachedStudy(d.name, d, int(info.get("files", 0)), int(info.get("bytes", 0)),
                                       marker.stat().st_mtime))
            except (OSError, ValueError):
                continue
        return out

    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.studies())

    # -- writing ----------------------------------------------------------
    @contextlib.contextmanager
    def staging(self, study_uid: str) -> Iterator[StagingFolder]:
        """A private staging folder; on normal exit it becomes the study's folder, on error it is deleted."""
        tmp = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root))
        os.chmod(tmp, 0o700)
        try:
            stage = StagingFolder(tmp)
            yield stage
            self._commit(study_uid, stage)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _commit(self, study_uid: str, stage: StagingFolder) -> None:
        from cxr_desktop.atomic import fsync_dir

        (stage.path / MARKER).write_text(json.dumps({"files": stage.count, "bytes": folder_bytes(stage.path)}))
        target = self.folder(study_uid)
        if target.exists():  # an incomplete leftover (no marker) or a concurrent retrieve: replace it
            shutil.rmtree(target, ignore_errors=True)
        os.replace(stage.path, target)
        fsync_dir(self.root)

    def clean_staging(self) -> int:
        """Delete staging folders left by a crash, and study folders without their marker; returns how many."""
        n = 0
        for d in list(self.root.iterdir()):
            if d.is_dir() and (d.name.startswith(STAGING_PREFIX) or not (d / MARKER).is_file()):
                if d.name.startswith(STAGING_PREFIX) and time.time() - d.stat().st_mtime < 5.0:
                    continue  # maybe another process's retrieve in progress right now
                shutil.rmtree(d, ignore_errors=True)
                n += 1
        return n

    def remove(self, study_uid: str) -> None:
        shutil.rmtree(self.folder(study_uid), ignore_errors=True)

    def evict(self, *, keep: str | None = None) -> list[str]:
        """Remove least recently used studies until the total is within the limit; returns removed keys.

        ``keep`` (a Study Instance UID) is never removed (the study just retrieved).
        """
        keep_key = study_key(keep) if keep else None
        studies = sorted(self.studies(), key=lambda s: s.last_used)
        total = sum(s.bytes for s in studies)
        removed = []
        for s in studies:
            if total <= self.limit_bytes:
                break
            if s.key == keep_key:
                continue
            shutil.rmtree(s.folder, ignore_errors=True)
            total -= s.bytes
            removed.append(s.key)
        return removed
