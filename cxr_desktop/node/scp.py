"""The node's DICOM listener: a pynetdicom Storage SCP (every standard storage SOP class) plus Verification.

Each C-STORE is written by :class:`~cxr_desktop.node.storage.ReceivedStore`
(atomic, fsynced) before the sender gets its success status, then reported to the
:class:`~cxr_desktop.node.tracker.StudyTracker`. pynetdicom calls the handler only
for a data set that arrived in full, so an association aborted mid-transfer leaves
nothing behind; released and aborted associations are reported to the tracker too.

Answers (DICOM PS3.4 Annex B status codes): 0x0000 stored (also for an instance that
was already stored: it is not stored twice), 0xC210 "cannot understand" for a data
set that cannot be parsed or lacks its Study / SOP Instance UID (the bytes are kept
under ``unreadable/`` and reported), 0xA700 "out of resources" when the disk
refuses the write. Log lines name hashed study keys only, never a patient or a UID.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from cxr_desktop.node.storage import ReceivedStore, Stored
from cxr_desktop.node.tracker import StudyTracker

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_OUT_OF_RESOURCES = 0xA700

MAX_PDU_BYTES = 1 << 20
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True)
class Unreadable:
    """A received data set that could not be filed under a study (kept under ``unreadable/``)."""

    relpath: str
    why: str


class StorageSCP:
    """Listen on ``host:port`` as ``ae_title``; file every received object and tell the tracker.

    ``on_stored(Stored)`` and ``on_unreadable(Unreadable)`` are called from the
    association threads (keep them quick and thread-safe).
    """

    def __init__(self, store: ReceivedStore, tracker: StudyTracker, *, ae_title: str, host: str, port: int,
                 on_stored: Callable[[Stored], None] | None = None,
                 on_unreadable: Callable[[Unreadable], None] | None = None,
                 on_aborted: Callable[[int], None] | None = None,
                 network_timeout_s: float = 60.0):
        self.store, self.tracker = store, tracker
        self.ae_title, self.host, self.port = ae_title, host, int(port)
        self.on_stored, self.on_unreadable, self.on_aborted = on_stored, on_unreadable, on_aborted
        self._per_assoc: dict[int, int] = {}  # objects stored per open association
        ae = AE(ae_title=ae_title)
        ae.require_called_aet = True  # a wrong called AE title is rejected: the sender's setup is wrong
        ae.network_timeout = network_timeout_s  # a sender that goes silent mid-transfer is dropped
        ae.acse_timeout = 30
        ae.dimse_timeout = network_timeout_s
        ae.maximum_associations = 16
        # Senders split each object into PDUs of at most this size: 1 MiB instead of pynetdicom's 16 KiB
        # takes less Python work per image (bench_node: about 1.6x the images/s received).
        ae.maximum_pdu_size = MAX_PDU_BYTES
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)  # compressed images too
        ae.add_supported_context(Verification)
        self.ae = ae
        self._server: Any = None
        self._lock = threading.Lock()
        self.received = 0  # objects stored (new) since start
        self.duplicates = 0

    def start(self) -> None:
        """Bind and serve in background threads (``OSError`` when the port is taken)."""
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, lambda _e: STATUS_SUCCESS),
                    (evt.EVT_RELEASED, self._on_released), (evt.EVT_ABORTED, self._on_aborted)]
        self._server = self.ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        self.port = int(self._server.server_address[1])  # the real port when 0 was asked for

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting; let running associations finish for ``grace_s`` s, then abort the rest."""
        if self._server is None:
            return
        self._server.shutdown()  # no new associations
        deadline = time.monotonic() + max(0.0, grace_s)
        while self.ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        self.ae.shutdown()  # aborts what is left: its unfinished object is never written
        self._server = None

    # ----------------------------------------------------------------- handlers (association threads)

    def _on_store(self, event: Any) -> int:
        raw = event.encoded_dataset()  # preamble + file meta + the data set exactly as sent
        try:
            ds = event.dataset
            study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
            sop_uid = str(ds.get("SOPInstanceUID", "") or event.request.AffectedSOPInstanceUID or "").strip()
            image = any(k in ds for k in PIXEL_KEYWORDS)
        except Exception as exc:  # any parse failure: a broken data set, not a broken node
            return self._unreadable(raw, f"the data set cannot be parsed ({exc.__class__.__name__})")
        if not study_uid or not sop_uid:
            return self._unreadable(raw, "the data set has no Study Instance UID or SOP Instance UID")
        try:
            stored = self.store.store(study_uid, sop_uid, raw, image=image)
        except OSError as exc:
            log.error("could not store a received object (%s); the sender was told 'out of resources'",
                      exc.strerror or exc.__class__.__name__)
            return STATUS_OUT_OF_RESOURCES
        with self._lock:
            if stored.new:
                self.received += 1
            else:
                self.duplicates += 1
            self._per_assoc[_assoc_id(event)] = self._per_assoc.get(_assoc_id(event), 0) + 1
        if stored.image:
            self.tracker.arrived(stored.study, _assoc_id(event))
        if self.on_stored is not None:
            self.on_stored(stored)
        return STATUS_SUCCESS

    def _unreadable(self, raw: bytes, why: str) -> int:
        try:
            rel = self.store.store_unreadable(raw)
        except OSError:
            rel = ""
        if self.on_unreadable is not None:
            self.on_unreadable(Unreadable(rel, why))
        return STATUS_CANNOT_UNDERSTAND

    def _on_released(self, event: Any) -> None:
        with self._lock:
            self._per_assoc.pop(_assoc_id(event), None)
        self.tracker.association_ended(_assoc_id(event), released=True)

    def _on_aborted(self, event: Any) -> None:
        with self._lock:
            kept = self._per_assoc.pop(_assoc_id(event), 0)
        self.tracker.association_ended(_assoc_id(event), released=False)
        if self.on_aborted is not None:
            self.on_aborted(kept)


def _assoc_id(event: Any) -> int:
    return id(event.assoc)
