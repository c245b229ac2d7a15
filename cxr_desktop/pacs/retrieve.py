"""Retrieve a study into the cache or a folder, all or nothing, as a cancellable generator.

The one entry point for the GUI and ``cxr-pacs get``::

    for ev in retrieve_study(server, study_uid, cache=cache):          # or dest=folder
        if isinstance(ev, RetrieveProgress): bar.set(ev.received, ev.total)
        elif isinstance(ev, RetrieveDone): open_study(ev.files)

A study already in the cache yields :class:`RetrieveDone` with ``from_cache``
at once (nothing is fetched). Otherwise the instances go to a staging folder
(:mod:`cxr_desktop.pacs.staging`) that becomes the study's folder only when
every image arrived; a failure (:class:`~cxr_desktop.pacs.errors.PacsError`),
``cancel.set()`` or closing the generator deletes it, so no partial files stay.
A retry starts clean.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

from cxr_desktop.pacs.cache import StudyCache, study_key
from cxr_desktop.pacs.config import DicomWebServer, DimseServer, PacsServer, SecretStore
from cxr_desktop.pacs.dimse import SendProgress
from cxr_desktop.pacs.errors import PacsError, PacsProblem
from cxr_desktop.pacs.query import StudyQuery, StudyRow
from cxr_desktop.pacs.staging import RetrieveProgress, StagingFolder

METHODS = ("get", "move", "wado")


@dataclass(frozen=True)
class RetrieveDone:
    """The whole study is on disk: ``folder`` holds ``files`` (instance files, sorted)."""

    folder: Path
    files: tuple[Path, ...]
    from_cache: bool
    elapsed_s: float
    method: str


RetrieveEvent = Union[RetrieveProgress, RetrieveDone]


def method_for(server: PacsServer, method: str | None = None) -> str:
    """The retrieve method: the one asked for, else the server's (DIMSE) or WADO-RS (DICOMweb)."""
    if isinstance(server, DicomWebServer):
        if method not in (None, "wado"):
            raise PacsError(PacsProblem.CONFIG, f"server {server.where} is a DICOMweb server: it retrieves with "
                                                "WADO-RS, not C-GET / C-MOVE.")
        return "wado"
    m = method or server.retrieve
    if m not in ("get", "move"):
        raise PacsError(PacsProblem.CONFIG, f"server {server.where} is a DIMSE server: retrieve with C-GET ('get') "
                                            "or C-MOVE ('move').")
    if m == "move" and not server.our_port:
        raise PacsError(PacsProblem.CONFIG, f"server {server.where}: C-MOVE needs our storage port (our_port); "
                                            "set it or retrieve with C-GET.")
    return m


def _fetch(server: PacsServer, study_uid: str, stage: StagingFolder, method: str,
           cancel: threading.Event | None, secrets: SecretStore | None,
           expected: int | None) -> Iterator[RetrieveProgress]:
    if method == "wado":
        from cxr_desktop.pacs.dicomweb import wado_study_into

        assert isinstance(server, DicomWebServer)
        yield from wado_study_into(server, study_uid, stage, secrets=secrets, cancel=cancel, expected=expected)
        return
    from cxr_desktop.pacs.dimse import get_study_into, move_study_into

    assert isinstance(server, DimseServer)
    fn = move_study_into if method == "move" else get_study_into
    yield from fn(server, study_uid, stage, cancel=cancel, expected=expected)


@contextlib.contextmanager
def _folder_staging(dest: Path, study_uid: str) -> Iterator[tuple[StagingFolder, Path]]:
    """Staging for a plain target folder: ``dest/.staging-*`` renamed to ``dest/<study key>`` when complete."""
    from cxr_desktop.atomic import fsync_dir

    dest.mkdir(parents=True, exist_ok=True)
    target = dest / study_key(study_uid)
    tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest))
    try:
        stage = StagingFolder(tmp)
        yield stage, target
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        fsync_dir(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def retrieve_study(server: PacsServer, study_uid: str, *, cache: StudyCache | None = None,
                   dest: str | os.PathLike[str] | None = None, method: str | None = None,
                   cancel: threading.Event | None = None, secrets: SecretStore | None = None,
                   expected: int | None = None) -> Iterator[RetrieveEvent]:
    """Yield progress, then :class:`RetrieveDone`; exactly one of ``cache`` / ``dest``.

    ``expected``: the image count the search reported (:attr:`StudyRow.images`): fewer is a partial retrieve.
    """
    if (cache is None) == (dest is None):
        raise ValueError("give exactly one of cache= or dest=")
    m = method_for(server, method)
    t0 = time.perf_counter()
    if cache is not None:
        if cache.has(study_uid):
            cache.touch(study_uid)
            yield RetrieveDone(cache.folder(study_uid), tuple(cache.files(study_uid)), True,
                               time.perf_counter() - t0, m)
            return
        try:
            with cache.staging(study_uid) as stage:
                yield from _fetch(server, study_uid, stage, m, cancel, secrets, expected)
        except OSError as exc:
            why = exc.strerror or exc.__class__.__name__
            raise PacsError(PacsProblem.LOCAL, f"cannot write the study cache ({why}); free disk space or choose "
                                               "another cache folder, then retry.") from None
        cache.evict(keep=study_uid)
        yield RetrieveDone(cache.folder(study_uid), tuple(cache.files(study_uid)), False,
                           time.perf_counter() - t0, m)
        return
    folder = Path(dest)  # type: ignore[arg-type]
    try:
        with _folder_staging(folder, study_uid) as (stage, target):
            yield from _fetch(server, study_uid, stage, m, cancel, secrets, expected)
    except OSError as exc:
        why = exc.strerror or exc.__class__.__name__
        raise PacsError(PacsProblem.LOCAL, f"cannot write into {folder.name} ({why}); free disk space or choose "
                                           "another folder, then retry.") from None
    yield RetrieveDone(target, tuple(sorted(target.glob("*.dcm"))), False, time.perf_counter() - t0, m)


def find_studies(server: PacsServer, query: StudyQuery, *, secrets: SecretStore | None = None,
                 limit: int | None = None) -> list[StudyRow]:
    """C-FIND or QIDO-RS, by the server's kind."""
    if isinstance(server, DicomWebServer):
        from cxr_desktop.pacs import dicomweb

        return dicomweb.find_studies(server, query, secrets=secrets, limit=limit)
    from cxr_desktop.pacs import dimse

    return dimse.find_studies(server, query, limit=limit)


def echo(server: PacsServer, *, secrets: SecretStore | None = None) -> float:
    """C-ECHO or a one-study QIDO-RS search ("Test connection"); seconds."""
    if isinstance(server, DicomWebServer):
        from cxr_desktop.pacs import dicomweb

        return dicomweb.echo(server, secrets=secrets)
    from cxr_desktop.pacs import dimse

    return dimse.echo(server)


def send_files(server: PacsServer, paths: list[Path], *, secrets: SecretStore | None = None) -> Iterator[SendProgress]:
    """C-STORE or STOW-RS, by the server's kind; yields :class:`~cxr_desktop.pacs.dimse.SendProgress`."""
    if isinstance(server, DicomWebServer):
        from cxr_desktop.pacs import dicomweb

        return dicomweb.store_files(server, paths, secrets=secrets)
    from cxr_desktop.pacs import dimse

    return dimse.store_files(server, paths)

