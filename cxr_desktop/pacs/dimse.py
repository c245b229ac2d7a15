"""DIMSE client (pynetdicom): C-ECHO, study C-FIND, C-GET / C-MOVE retrieve, C-STORE send.

Every failure is a :class:`~cxr_desktop.pacs.errors.PacsError` whose message says
what to do; none carries patient data. Retrieval functions write into a
:class:`~cxr_desktop.pacs.staging.StagingFolder` and yield
:class:`~cxr_desktop.pacs.staging.RetrieveProgress`; closing the generator (or
setting ``cancel``) aborts the association. Use :func:`cxr_desktop.pacs.retrieve.retrieve_study`
for the cache-aware, all-or-nothing retrieve.

pynetdicom's own log records (which can show dataset contents at debug level)
are kept at WARNING and above.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator, Iterable, Iterator

from pydicom.dataset import Dataset
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, build_role, evt
from pynetdicom import sop_class as _sop_classes
from pynetdicom.association import Association
from pynetdicom.presentation import AllStoragePresentationContexts, build_context
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove, Verification,
)

from cxr_desktop.pacs.config import DimseServer
from cxr_desktop.pacs.errors import PacsError, PacsProblem
from cxr_desktop.pacs.query import StudyQuery, StudyRow, parse_da, split_multi, to_int
from cxr_desktop.pacs.staging import RetrieveProgress, StagingFolder

logging.getLogger("pynetdicom").setLevel(logging.WARNING)

#: Storage SOP classes we accept on a C-GET (max 128 contexts per association, one is the GET model).
GET_STORAGE_CLASSES = (
    "ComputedRadiographyImageStorage", "DigitalXRayImageStorageForPresentation",
    "DigitalXRayImageStorageForProcessing", "SecondaryCaptureImageStorage",
    "MultiFrameGrayscaleByteSecondaryCaptureImageStorage", "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
    "MultiFrameTrueColorSecondaryCaptureImageStorage", "MultiFrameSingleBitSecondaryCaptureImageStorage",
    "BasicTextSRStorage", "EnhancedSRStorage", "ComprehensiveSRStorage", "Comprehensive3DSRStorage",
    "CTImageStorage", "EnhancedCTImageStorage", "MRImageStorage", "EnhancedMRImageStorage",
    "UltrasoundImageStorage", "UltrasoundMultiFrameImageStorage", "NuclearMedicineImageStorage",
    "PositronEmissionTomographyImageStorage", "DigitalMammographyXRayImageStorageForPresentation",
    "XRayAngiographicImageStorage", "XRayRadiofluoroscopicImageStorage", "VLPhotographicImageStorage",
    "GrayscaleSoftcopyPresentationStateStorage", "EncapsulatedPDFStorage", "SegmentationStorage",
    "RTImageStorage", "RTStructureSetStorage", "RTDoseStorage",
)

#: Radiograph classes get one context per transfer-syntax family, so the PACS can send a compressed
#: file as stored (a PACS that would have to transcode, e.g. JPEG 2000 to uncompressed, may refuse).
GET_NATIVE_CLASSES = ("ComputedRadiographyImageStorage", "DigitalXRayImageStorageForPresentation",
                      "DigitalXRayImageStorageForProcessing", "SecondaryCaptureImageStorage",
                      "DigitalMammographyXRayImageStorageForPresentation")
_TS_FAMILIES = (
    ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"),  # uncompressed
    ("1.2.840.10008.1.2.4.50",), ("1.2.840.10008.1.2.4.51",), ("1.2.840.10008.1.2.4.57",),  # JPEG
    ("1.2.840.10008.1.2.4.70",), ("1.2.840.10008.1.2.4.80",), ("1.2.840.10008.1.2.4.81",),  # JPEG (LS)
    ("1.2.840.10008.1.2.4.90",), ("1.2.840.10008.1.2.4.91",), ("1.2.840.10008.1.2.5",),  # J2K, RLE
)

# C-MOVE / C-GET final status codes (PS3.4 C.4.2.1.5 / C.4.3.1.4)
_MOVE_DEST_UNKNOWN = 0xA801
_OUT_OF_RESOURCES = (0xA701, 0xA702)
_SUBOPS_FAILED = 0xB000
_CANCELLED = 0xFE00


def _status(ds: Dataset | None) -> int | None:
    return None if ds is None or "Status" not in ds else int(ds.Status)


def _probe(server: DimseServer) -> None:
    """A plain TCP connect first, so "nothing listens" and "listens but does not answer" read differently."""
    try:
        with socket.create_connection((server.host, server.port), timeout=min(10.0, float(server.timeout_s))):
            pass
    except socket.timeout:
        raise PacsError(PacsProblem.UNREACHABLE, f"PACS {server.where} did not accept a connection within "
                                                 f"{min(10.0, float(server.timeout_s)):g} s: check the host, the "
                                                 "port and any firewall between here and the PACS.") from None
    except OSError as exc:
        why = exc.strerror or exc.__class__.__name__
        raise PacsError(PacsProblem.UNREACHABLE, f"PACS {server.where} is unreachable ({why}): check the host "
                                                 "and port in the PACS settings and that the PACS is running."
                        ) from None


def _new_ae(server: DimseServer) -> AE:
    ae = AE(ae_title=server.our_ae)
    t = float(server.timeout_s)
    ae.acse_timeout = t
    ae.dimse_timeout = t
    ae.network_timeout = t
    ae.connection_timeout = min(10.0, t)
    ae.maximum_pdu_size = 0  # no limit on what we receive
    return ae


def associate(server: DimseServer, ae: AE, *, ext_neg: list[Any] | None = None,
              evt_handlers: list[Any] | None = None) -> Association:
    """An established association with ``server`` (contexts already requested on ``ae``), or a PacsError."""
    _probe(server)
    t0 = time.monotonic()
    assoc = ae.associate(server.host, server.port, ae_title=server.called_ae, ext_neg=ext_neg,
                         evt_handlers=evt_handlers)
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        raise PacsError(PacsProblem.REJECTED, f"PACS {server.where} rejected the association: check that its "
                                              f"AE title is {server.called_ae!r} and that it knows our AE title "
                                              f"{server.our_ae!r} (ask the PACS administrator to add it).")
    waited = time.monotonic() - t0
    if assoc.is_aborted and waited < 0.9 * float(server.timeout_s):  # aborted by the peer, not by our ACSE timeout
        raise PacsError(PacsProblem.REJECTED, f"PACS {server.where} aborted the association request: check the "
                                              "AE titles and that this service (echo/find/retrieve/store) is "
                                              "allowed for our AE on the PACS.")
    raise PacsError(PacsProblem.TIMEOUT, f"PACS {server.where} accepted the connection but did not answer within "
                                         f"{float(server.timeout_s):g} s: the PACS may be overloaded or the port "
                                         "may belong to another service; check the port, or raise the timeout.")


def _timed_out(server: DimseServer, what: str) -> PacsError:
    return PacsError(PacsProblem.TIMEOUT, f"PACS {server.where} stopped answering during {what} (no reply within "
                                          f"{float(server.timeout_s):g} s); try again, or raise the timeout.")


# --------------------------------------------------------------------------- echo


def echo(server: DimseServer) -> float:
    """C-ECHO ("Test connection"); returns the round trip in seconds."""
    ae = _new_ae(server)
    ae.add_requested_context(Verification)
    t0 = time.perf_counter()
    assoc = associate(server, ae)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = _status(status)
    if code is None:
        raise _timed_out(server, "the echo")
    if code != 0x0000:
        raise PacsError(PacsProblem.REFUSED, f"PACS {server.where} answered the echo with status 0x{code:04X}; "
                                             "ask the PACS administrator to allow C-ECHO for our AE title.")
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- find


def study_identifier(query: StudyQuery) -> Dataset:
    """The C-FIND identifier of a study-level search (also the return keys we want)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = query.patient_name
    ds.PatientID = query.patient_id
    ds.AccessionNumber = query.accession_number
    ds.StudyDate = query.date_range()
    ds.StudyTime = ""
    ds.StudyDescription = ""
    ds.ModalitiesInStudy = "\\".join(query.modalities)
    ds.StudyInstanceUID = query.study_uid
    ds.NumberOfStudyRelatedInstances = ""
    return ds


def row_from_identifier(ds: Dataset) -> StudyRow:
    return StudyRow(
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        patient_name=str(ds.get("PatientName", "") or ""),
        patient_id=str(ds.get("PatientID", "") or ""),
        accession_number=str(ds.get("AccessionNumber", "") or ""),
        study_date=parse_da(ds.get("StudyDate", "")),
        description=str(ds.get("StudyDescription", "") or ""),
        modalities=split_multi(ds.get("ModalitiesInStudy", "")),
        images=to_int(ds.get("NumberOfStudyRelatedInstances", "")),
    )


def find_studies(server: DimseServer, query: StudyQuery, *, limit: int | None = None) -> list[StudyRow]:
    """Study-level C-FIND (Study Root). ``limit`` stops after that many rows (C-CANCEL is implicit: release)."""
    ae = _new_ae(server)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = associate(server, ae)
    rows: list[StudyRow] = []
    try:
        for status, ident in assoc.send_c_find(study_identifier(query), StudyRootQueryRetrieveInformationModelFind):
            code = _status(status)
            if code is None:
                raise _timed_out(server, "the search")
            if code in (0xFF00, 0xFF01) and ident is not None:
                if limit is None or len(rows) < limit:  # past the limit: drain (a release mid-find warns)
                    rows.append(row_from_identifier(ident))
            elif code == 0x0000:
                break
            else:
                raise PacsError(PacsProblem.REFUSED, f"PACS {server.where} refused the search (status "
                                                     f"0x{code:04X}); simplify the search (fewer wildcards) or "
                                                     "ask the PACS administrator to allow C-FIND for our AE.")
    finally:
        if assoc.is_established:
            assoc.release()
    return rows


# --------------------------------------------------------------------------- retrieve


def _retrieve_identifier(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return ds


def _storage_handler(staging: StagingFolder) -> Any:
    def handle_store(event: Any) -> int:
        try:
            staging.add(str(event.request.AffectedSOPInstanceUID), event.encoded_dataset(include_meta=True))
        except OSError:
            return 0xA700  # Out of resources: the PACS counts the sub-operation as failed
        return 0x0000

    return handle_store


@dataclass
class _Counts:
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int | None = None
    max_total: int = 0  # the most images the PACS said the study holds

    def update(self, status: Dataset) -> None:
        self.completed = int(status.get("NumberOfCompletedSuboperations", self.completed) or 0)
        self.failed = int(status.get("NumberOfFailedSuboperations", self.failed) or 0)
        self.warning = int(status.get("NumberOfWarningSuboperations", self.warning) or 0)
        rem = status.get("NumberOfRemainingSuboperations")
        self.remaining = None if rem is None or rem == "" else int(rem)
        if self.total is not None:
            self.max_total = max(self.max_total, self.total)

    @property
    def total(self) -> int | None:
        return None if self.remaining is None else self.completed + self.failed + self.warning + self.remaining


def _study_exists(server: DimseServer, study_uid: str) -> bool | None:
    """Whether the server still has the study (None: the search itself failed)."""
    try:
        return bool(find_studies(server, StudyQuery(study_uid=study_uid, modalities=()), limit=1))
    except PacsError:
        return None


def _final(server: DimseServer, study_uid: str, method: str, code: int | None, counts: _Counts,
           staging: StagingFolder, expected: int | None = None) -> None:
    """Raise the PacsError that the final status (and what arrived) means; return when all arrived."""
    what = "C-MOVE" if method == "move" else "C-GET"
    if code is None:
        raise _timed_out(server, f"the retrieve ({what})")
    if code == _MOVE_DEST_UNKNOWN:
        raise PacsError(PacsProblem.MOVE_DESTINATION_UNKNOWN,
                        f"PACS {server.where} does not know the C-MOVE destination {server.our_ae!r}: ask the PACS "
                        f"administrator to add our AE title {server.our_ae!r} at this computer's address, port "
                        f"{server.our_port}, or retrieve with C-GET instead.")
    if method == "move" and staging.count == 0 and counts.completed == 0 and code >= 0xA000 \
            and code not in _OUT_OF_RESOURCES and _study_exists(server, study_uid):
        # The study is there but the PACS would not start sending: the usual cause is a destination it does
        # not know (some PACS, e.g. Orthanc, answer 0xC000 instead of 0xA801).
        raise PacsError(PacsProblem.MOVE_DESTINATION_UNKNOWN,
                        f"PACS {server.where} did not send the study to our AE title {server.our_ae!r} (C-MOVE status "
                        f"0x{code:04X}): most likely it does not know {server.our_ae!r} as a C-MOVE destination - ask "
                        f"the PACS administrator to add it at this computer's address, port {server.our_port}, or "
                        "retrieve with C-GET instead.")
    if code == _CANCELLED:
        raise PacsError(PacsProblem.CANCELLED, "the retrieve was cancelled; nothing was kept.")
    if staging.count == 0 and counts.failed == 0 and code in (0x0000, _SUBOPS_FAILED, 0xC000, 0xC001) \
            or (staging.count == 0 and code >= 0xA000 and code not in _OUT_OF_RESOURCES):
        if _study_exists(server, study_uid) is False:
            raise PacsError(PacsProblem.NOT_FOUND, f"the study is no longer on PACS {server.where} (it may have "
                                                   "been deleted or moved since the search); search again.")
    if code == 0x0000 and staging.count == 0:
        raise PacsError(PacsProblem.NOT_FOUND, f"PACS {server.where} sent no images for the study; search again, "
                                               "and check that the study still holds images.")
    if code == 0x0000 and counts.failed == 0 and staging.count >= max(counts.completed, expected or 0):
        return
    expected = max(counts.max_total, counts.completed + counts.failed + counts.warning, expected or 0)
    if code in (0x0000, _SUBOPS_FAILED) or code in _OUT_OF_RESOURCES or (staging.count or expected):
        raise PacsError(PacsProblem.PARTIAL, f"only {staging.count} of {max(expected, staging.count)} images of the "
                                             f"study arrived from PACS {server.where} ({what} status 0x{code:04X}); "
                                             "nothing was kept - retry the retrieve.")
    raise PacsError(PacsProblem.REFUSED, f"PACS {server.where} refused the retrieve ({what} status 0x{code:04X}); "
                                         "check that retrieve is allowed for our AE title, or try the other "
                                         "retrieve method (C-GET / C-MOVE).")


def _progress(staging: StagingFolder, counts: _Counts, t0: float, method: str) -> RetrieveProgress:
    return RetrieveProgress(received=staging.count, total=counts.total, bytes=staging.bytes,
                            elapsed_s=time.perf_counter() - t0, method=method)


def _follow_retrieve(assoc, responses: Iterator, staging: StagingFolder, t0: float, method: str,
                     cancel: threading.Event | None) -> Generator[RetrieveProgress, None, tuple[int | None, _Counts]]:
    """Follow a C-GET/C-MOVE's pending responses, yielding progress; returns (last status code, counts).

    The association is released when the responses end, aborted on cancel, error or when the caller stops.
    """
    counts, code, finished = _Counts(), None, False
    try:
        for status, _ in responses:
            if cancel is not None and cancel.is_set():
                raise PacsError(PacsProblem.CANCELLED, "the retrieve was cancelled; nothing was kept.")
            code = _status(status)
            if code is not None:
                counts.update(status)
            if code in (0xFF00, 0xFF01):
                yield _progress(staging, counts, t0, method)
                continue
            break
        finished = True
    finally:
        if assoc.is_established:
            if finished:
                assoc.release()
            else:
                assoc.abort()
    return code, counts


def get_study_into(server: DimseServer, study_uid: str, staging: StagingFolder, *,
                   cancel: threading.Event | None = None, expected: int | None = None) -> Iterator[RetrieveProgress]:
    """C-GET the study into ``staging`` (one association; the PACS sends on it)."""
    ae = _new_ae(server)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for name in GET_STORAGE_CLASSES:
        uid = getattr(_sop_classes, name, None)
        if uid is None:
            continue
        for family in (_TS_FAMILIES if name in GET_NATIVE_CLASSES else (_TS_FAMILIES[0],)):
            ae.add_requested_context(uid, list(family))
        roles.append(build_role(uid, scp_role=True))
    t0 = time.perf_counter()
    assoc = associate(server, ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, _storage_handler(staging))])
    responses = assoc.send_c_get(_retrieve_identifier(study_uid), StudyRootQueryRetrieveInformationModelGet)
    code, counts = yield from _follow_retrieve(assoc, responses, staging, t0, "get", cancel)
    _final(server, study_uid, "get", code, counts, staging, expected)
    yield _progress(staging, counts, t0, "get")


def _bind_for(server: DimseServer) -> str:
    """Where our storage SCP listens: loopback only when the PACS is on this computer, else every interface
    (a PACS elsewhere must be able to connect back)."""
    import ipaddress

    host = server.host.strip().lower()
    try:
        loop = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loop = False
    return "127.0.0.1" if loop else ""


class StorageSCP:
    """Our C-STORE SCP for C-MOVE: listens on ``our_port`` as ``our_ae`` while a move runs.

    Instances go to ``staging``; stop with :meth:`close` (or use as a context manager).
    """

    def __init__(self, server: DimseServer, staging: StagingFolder, *, bind: str = ""):
        self.ae = _new_ae(server)
        self.ae.supported_contexts = [build_context(c.abstract_syntax, ALL_TRANSFER_SYNTAXES)
                                      for c in AllStoragePresentationContexts]
        self.ae.require_called_aet = True
        try:
            self._server = self.ae.start_server((bind or "", server.our_port), block=False,
                                                evt_handlers=[(evt.EVT_C_STORE, _storage_handler(staging))])
        except OSError as exc:
            raise PacsError(PacsProblem.LOCAL, f"cannot listen on our storage port {server.our_port} "
                                               f"({exc.strerror or exc.__class__.__name__}): another program uses "
                                               "it; choose another port (and tell the PACS administrator), or "
                                               "retrieve with C-GET.") from None

    def close(self) -> None:
        self._server.shutdown()

    def __enter__(self) -> "StorageSCP":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def move_study_into(server: DimseServer, study_uid: str, staging: StagingFolder, *,
                    cancel: threading.Event | None = None, expected: int | None = None) -> Iterator[RetrieveProgress]:
    """C-MOVE the study to our own storage SCP (``our_ae`` at ``our_port``), which writes into ``staging``."""
    t0 = time.perf_counter()
    with StorageSCP(server, staging, bind=_bind_for(server)):
        ae = _new_ae(server)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = associate(server, ae)
        responses = assoc.send_c_move(_retrieve_identifier(study_uid), server.our_ae,
                                      StudyRootQueryRetrieveInformationModelMove)
        code, counts = yield from _follow_retrieve(assoc, responses, staging, t0, "move", cancel)
    _final(server, study_uid, "move", code, counts, staging, expected)
    yield _progress(staging, counts, t0, "move")


# --------------------------------------------------------------------------- store


@dataclass(frozen=True)
class SendProgress:
    """Files sent so far; ``failed`` holds the file names the PACS did not accept (names only)."""

    sent: int
    total: int
    failed: tuple[str, ...] = ()


def _read_for_send(path: Path) -> Dataset:
    """The file's header (no pixels): its SOP class and transfer syntax choose the presentation context."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID)
        return ds
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear refusal
        raise PacsError(PacsProblem.LOCAL, f"{path.name} is not a readable DICOM file ({exc.__class__.__name__}); "
                                           "only DICOM files can be sent.") from None


def store_files(server: DimseServer, paths: Iterable[str | Path]) -> Iterator[SendProgress]:
    """C-STORE each file (one association); raises PARTIAL at the end when the PACS refused some.

    Files are sent as stored (pynetdicom reads each from disk when its turn comes: memory stays flat).
    """
    files = [Path(p) for p in paths]
    datasets = [_read_for_send(p) for p in files]
    ae = _new_ae(server)
    contexts: set[tuple[str, str]] = set()
    for ds in datasets:
        contexts.add((str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
    if len(contexts) > 128:
        raise PacsError(PacsProblem.LOCAL, "too many kinds of DICOM object to send at once; send fewer files.")
    by_class: dict[str, set[str]] = {}
    for cls, ts in contexts:
        by_class.setdefault(cls, set()).add(ts)
    for cls, tss in sorted(by_class.items()):
        for ts in sorted(tss):
            ae.add_requested_context(cls, [ts])
    assoc = associate(server, ae)
    failed: list[str] = []
    try:
        for i, (path, ds) in enumerate(zip(files, datasets), start=1):
            status = assoc.send_c_store(path)
            code = _status(status)
            if code is None:
                raise _timed_out(server, "sending")
            if code != 0x0000 and not (0xB000 <= code <= 0xBFFF):
                failed.append(path.name)
            yield SendProgress(sent=i - len(failed), total=len(files), failed=tuple(failed))
    finally:
        if assoc.is_established:
            assoc.release()
    if failed:
        raise PacsError(PacsProblem.PARTIAL, f"PACS {server.where} refused {len(failed)} of {len(files)} files "
                                             f"(first: {failed[0]}); check that it accepts these object types, then "
                                             "send them again.")
