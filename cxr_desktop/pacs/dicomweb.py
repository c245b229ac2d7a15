"""DICOMweb client (dicomweb-client): QIDO-RS study search, WADO-RS retrieve, STOW-RS send.

Same contract as :mod:`cxr_desktop.pacs.dimse`: typed rows and progress, one
:class:`~cxr_desktop.pacs.errors.PacsError` with what to do, no patient data in
messages or logs (dicomweb-client's records, which show URLs with UIDs, are kept
at WARNING and above). Passwords and tokens come from a
:class:`~cxr_desktop.pacs.config.SecretStore` and are never logged.
"""

from __future__ import annotations

import logging
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any, Iterable, Iterator

from cxr_desktop.pacs.config import DicomWebServer, SecretStore
from cxr_desktop.pacs.dimse import SendProgress
from cxr_desktop.pacs.errors import PacsError, PacsProblem
from cxr_desktop.pacs.query import StudyQuery, StudyRow, parse_da, split_multi, to_int
from cxr_desktop.pacs.staging import RetrieveProgress, StagingFolder

logging.getLogger("dicomweb_client").setLevel(logging.WARNING)

_QIDO_FIELDS = ("StudyDescription", "NumberOfStudyRelatedInstances", "ModalitiesInStudy", "PatientName",
                "PatientID", "AccessionNumber", "StudyDate")


def client(server: DicomWebServer, secrets: SecretStore | None = None) -> Any:
    """A ``DICOMwebClient`` with the server's authentication and timeout."""
    import requests
    from dicomweb_client import DICOMwebClient

    session = requests.Session()
    session.trust_env = False  # no proxies from the environment: traffic goes where the settings say
    if server.auth != "none":
        secret = secrets.get(server.name) if secrets is not None else None
        if not secret:
            raise PacsError(PacsProblem.AUTH, f"server {server.where} needs a "
                                              f"{'password' if server.auth == 'basic' else 'token'}; enter it in "
                                              "the PACS settings.")
        if server.auth == "basic":
            session.auth = (server.username, secret)
        else:
            session.headers["Authorization"] = f"Bearer {secret}"
    c = DICOMwebClient(url=server.url, session=session, timeout=float(server.timeout_s))
    # no silent retries with back-off (5 attempts = 30 s on a dead server): fail fast, the user retries
    c.set_http_retry_params(retry=False)
    return c


def translate(server: DicomWebServer, exc: BaseException, what: str) -> PacsError:
    """A requests / HTTP error -> PacsError with what to do."""
    import requests

    if isinstance(exc, PacsError):
        return exc
    if isinstance(exc, requests.exceptions.Timeout):
        return PacsError(PacsProblem.TIMEOUT, f"DICOMweb server {server.where} did not answer {what} within "
                                              f"{float(server.timeout_s):g} s; try again, or raise the timeout.")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return PacsError(PacsProblem.UNREACHABLE, f"DICOMweb server {server.where} is unreachable: check the URL "
                                                  "in the PACS settings and that the server is running.")
    if isinstance(exc, requests.exceptions.HTTPError):
        code = exc.response.status_code if exc.response is not None else 0
        if code in (401, 403):
            return PacsError(PacsProblem.AUTH, f"DICOMweb server {server.where} refused our credentials (HTTP "
                                               f"{code}); check the user name and password or token.")
        if code == 404:
            return PacsError(PacsProblem.NOT_FOUND, f"DICOMweb server {server.where} does not have what {what} "
                                                    "asked for (HTTP 404): the study may have been deleted since "
                                                    "the search, or the URL is wrong; search again.")
        return PacsError(PacsProblem.REFUSED, f"DICOMweb server {server.where} failed {what} (HTTP {code}); try "
                                              "again later or ask its administrator.")
    return PacsError(PacsProblem.REFUSED, f"DICOMweb server {server.where} failed {what} "
                                          f"({exc.__class__.__name__}); check the URL and try again.")


def _qido_filters(query: StudyQuery) -> dict[str, str]:
    f = {}
    if query.patient_id:
        f["PatientID"] = query.patient_id
    if query.patient_name:
        f["PatientName"] = query.patient_name
    if query.accession_number:
        f["AccessionNumber"] = query.accession_number
    if query.date_range():
        f["StudyDate"] = query.date_range()
    if query.modalities:
        f["ModalitiesInStudy"] = ",".join(query.modalities)  # QIDO-RS: comma-separated list matching
    if query.study_uid:
        f["StudyInstanceUID"] = query.study_uid
    return f


def _value(entry: dict[str, Any], tag: str) -> Any:
    vals = (entry.get(tag) or {}).get("Value") or []
    if not vals:
        return ""
    v = vals[0]
    if isinstance(v, dict):  # PN
        return v.get("Alphabetic", "")
    return v if len(vals) == 1 else "\\".join(str(x) for x in vals)


def row_from_json(entry: dict[str, Any]) -> StudyRow:
    return StudyRow(
        study_uid=str(_value(entry, "0020000D")),
        patient_name=str(_value(entry, "00100010")),
        patient_id=str(_value(entry, "00100020")),
        accession_number=str(_value(entry, "00080050")),
        study_date=parse_da(_value(entry, "00080020")),
        description=str(_value(entry, "00081030")),
        modalities=split_multi(_value(entry, "00080061")),
        images=to_int(_value(entry, "00201208")),
    )


def find_studies(server: DicomWebServer, query: StudyQuery, *, secrets: SecretStore | None = None,
                 limit: int | None = None) -> list[StudyRow]:
    """QIDO-RS study search."""
    c = client(server, secrets)
    try:
        found = c.search_for_studies(search_filters=_qido_filters(query), fields=list(_QIDO_FIELDS), limit=limit)
    except Exception as exc:  # noqa: BLE001 - translated
        raise translate(server, exc, "the search") from None
    return [row_from_json(e) for e in found]


def echo(server: DicomWebServer, *, secrets: SecretStore | None = None) -> float:
    """"Test connection": a QIDO-RS search for one study; returns the round trip in seconds."""
    t0 = time.perf_counter()
    c = client(server, secrets)
    try:
        c.search_for_studies(limit=1)
    except Exception as exc:  # noqa: BLE001
        raise translate(server, exc, "the connection test") from None
    return time.perf_counter() - t0


def _part10(ds: Any) -> tuple[str, bytes]:
    """(SOP Instance UID, Part 10 bytes) of a dataset dicomweb-client decoded."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta.setdefault("TransferSyntaxUID", ExplicitVRLittleEndian)
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return str(ds.SOPInstanceUID), buf.getvalue()


def wado_study_into(server: DicomWebServer, study_uid: str, staging: StagingFolder, *,
                    secrets: SecretStore | None = None, cancel: threading.Event | None = None,
                    expected: int | None = None) -> Iterator[RetrieveProgress]:
    """WADO-RS: stream the study's instances (as stored, no transcoding) into ``staging``."""
    c = client(server, secrets)
    t0 = time.perf_counter()
    try:
        for ds in c.iter_study(study_uid, media_types=(("application/dicom", "*"),)):
            if cancel is not None and cancel.is_set():
                raise PacsError(PacsProblem.CANCELLED, "the retrieve was cancelled; nothing was kept.")
            uid, data = _part10(ds)
            staging.add(uid, data)
            yield RetrieveProgress(staging.count, expected, staging.bytes, time.perf_counter() - t0, "wado")
    except PacsError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise translate(server, exc, "the retrieve") from None
    if staging.count == 0:
        raise PacsError(PacsProblem.NOT_FOUND, f"DICOMweb server {server.where} sent no images for the study; it "
                                               "may have been deleted since the search - search again.")
    if expected is not None and staging.count < expected:
        raise PacsError(PacsProblem.PARTIAL, f"only {staging.count} of {expected} images arrived from "
                                             f"{server.where}; nothing was kept - retry the retrieve.")
    yield RetrieveProgress(staging.count, expected, staging.bytes, time.perf_counter() - t0, "wado")


def store_files(server: DicomWebServer, paths: Iterable[str | Path], *,
                secrets: SecretStore | None = None) -> Iterator[SendProgress]:
    """STOW-RS each file (one request per study); raises PARTIAL when the server refused some."""
    import pydicom

    files = [Path(p) for p in paths]
    by_study: dict[str, list[tuple[Path, Any]]] = {}
    for p in files:
        try:
            ds = pydicom.dcmread(p)
        except Exception as exc:  # noqa: BLE001
            raise PacsError(PacsProblem.LOCAL, f"{p.name} is not a readable DICOM file ({exc.__class__.__name__});"
                                               " only DICOM files can be sent.") from None
        by_study.setdefault(str(ds.StudyInstanceUID), []).append((p, ds))
    c = client(server, secrets)
    sent, failed = 0, []
    for study_uid, items in by_study.items():
        try:
            answer = c.store_instances([ds for _, ds in items], study_instance_uid=study_uid)
        except Exception as exc:  # noqa: BLE001
            raise translate(server, exc, "sending") from None
        refused = {str(x.get("ReferencedSOPInstanceUID", "")) for x in answer.get("FailedSOPSequence", [])}
        for p, ds in items:
            if str(ds.SOPInstanceUID) in refused:
                failed.append(p.name)
            else:
                sent += 1
        yield SendProgress(sent=sent, total=len(files), failed=tuple(failed))
    if failed:
        raise PacsError(PacsProblem.PARTIAL, f"DICOMweb server {server.where} refused {len(failed)} of {len(files)} "
                                             f"files (first: {failed[0]}); check that it accepts these object "
                                             "types, then send them again.")
