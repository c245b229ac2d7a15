"""Send the decision aid's result objects (Secondary Capture + Structured Report) to a PACS, or write them.

Two sources: the viewer's current image (its prediction, heatmap and input-safety
verdict, :func:`viewer_finding`) and the screening worklist (selected rows or every
row above the threshold, :func:`worklist_rows`). The objects are written with the
Qt-free writers of :mod:`cxr_desktop.dicom_results` into a private temporary folder,
then sent with :func:`cxr_desktop.pacs.send_files` (C-STORE or STOW-RS, per the
server); all of it runs in a worker (:class:`SendResultsDialog`). File -> Export as
DICOM uses the same writer into a folder the user chooses. Errors name files and
servers only, never patient data.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from cxr_desktop.gui.dialog_parts import add_button_row, add_progress_and_status, end_busy
from cxr_desktop.gui.pacs_settings import PacsDialog, describe
from cxr_desktop.pacs import PacsError, PacsServer, SecretStore, SendProgress, send_files

log = logging.getLogger(__name__)

DECISION_AID_NOTE = "The results are a decision aid, not a diagnosis."


class NothingToSend(ValueError):
    """The viewer or worklist has no result that can become a DICOM object; ``str`` says why and what to do."""


@dataclass(frozen=True)
class ViewerResult:
    """What the viewer knows about its current image, enough to write the SC + SR (worker side)."""

    source: Path
    finding: Any  # ImageFinding
    model: Any  # ModelInfo
    heat: np.ndarray | None


@dataclass(frozen=True)
class Stage:
    """A step of a send job, for the status line."""

    text: str
    done: int = 0
    total: int = 0


def viewer_finding(window: Any) -> ViewerResult:
    """The current image's result from the main window (GUI thread); raises :class:`NothingToSend`."""
    from cxr_desktop.dicom_results import ImageFinding, ModelInfo

    image = window.current_image
    if image is None:
        raise NothingToSend("Open an image first.")
    if getattr(image, "source_format", "") != "dicom":
        raise NothingToSend("Result objects need a DICOM source (they join its study); this image is not DICOM.")
    active = window.models.active
    if active is None:
        raise NothingToSend("Load a model first (Model > Open model file).")
    verdict = window.scope.before_model(image)
    outcome = window.current_outcome
    result = outcome.result if outcome is not None and outcome.key.path == str(image.path) else None
    if result is None and verdict.in_scope:
        raise NothingToSend("The image has no result yet; wait until its score is shown.")
    if result is not None and outcome.key.cam_class is not None:
        raise NothingToSend("The heatmap on screen explains another class; switch it back to the finding class "
                            "and send again.")
    if result is not None and not verdict.in_scope and not window.scope.show_anyway:
        result = None  # out of scope: the objects carry the reasons, not a score nobody was shown
    caution = None
    if result is not None and result.pooled is not None:
        caution = window.scope.after_model(image, result.pooled).caution
    pred = result.prediction if result is not None else None
    finding = ImageFinding(score=pred.score if pred is not None else None,
                           above_threshold=pred.above_threshold if pred is not None else None,
                           in_scope=verdict.in_scope,
                           reason_codes=",".join(r.code for r in verdict.reasons),
                           reason_text="; ".join(r.message for r in verdict.reasons), caution=caution)
    heat = result.heatmap if result is not None and pred is not None and pred.above_threshold else None
    return ViewerResult(Path(image.path), finding, ModelInfo.from_engine(active.engine), heat)


def write_viewer_result(result: ViewerResult, folder: Path) -> tuple[Path, Path]:
    """SC + SR of the viewer's image into ``folder`` (named after the source file); returns their paths."""
    from cxr_desktop.dicom_results import SC_SUFFIX, SR_SUFFIX, write_result_objects

    folder.mkdir(parents=True, exist_ok=True)
    stem = result.source.name
    sc, sr = folder / (stem + SC_SUFFIX), folder / (stem + SR_SUFFIX)
    write_result_objects(result.source, result.finding, result.model, sc, sr, heat=result.heat)
    return sc, sr


def export_viewer_job(result: ViewerResult, folder: Path) -> tuple[Path, Path]:
    """Worker: File -> Export as DICOM."""
    return write_viewer_result(result, Path(folder))


def _send(server: PacsServer, files: list[Path], secrets: SecretStore | None,
          cancel: threading.Event) -> Iterator[Any]:
    yield Stage(f"Sending {len(files)} objects to {server.where}…", 0, len(files))
    for ev in send_files(server, files, secrets=secrets):
        yield ev
        if cancel.is_set():
            return


def send_viewer_job(result: ViewerResult, server: PacsServer, secrets: SecretStore | None,
                    cancel: threading.Event) -> Iterator[Any]:
    """Worker: write the SC + SR of the viewer's image to a private temporary folder and send them."""
    tmp = Path(tempfile.mkdtemp(prefix="cxr-send-"))
    try:
        yield Stage("Writing the Secondary Capture and the Structured Report…")
        files = list(write_viewer_result(result, tmp))
        yield from _send(server, files, secrets, cancel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def send_worklist_job(folder: Path, rows: list[Any], engine_factory: Callable[[Path], Any], model_path: Path,
                      server: PacsServer, secrets: SecretStore | None, cancel: threading.Event) -> Iterator[Any]:
    """Worker: SC + SR for each worklist row (DICOM sources only), then send them all in one association."""
    from cxr_desktop.dicom_results import export_screening_results

    tmp = Path(tempfile.mkdtemp(prefix="cxr-send-"))
    try:
        yield Stage("Loading the model…")
        engine = engine_factory(model_path)
        files: list[Path] = []
        errors: list[str] = []
        for i, res in enumerate(export_screening_results(folder, rows, engine, tmp), start=1):
            if cancel.is_set():
                return
            if res.error:
                errors.append(res.error)
            else:
                files += [res.sc_path, res.sr_path]
            yield Stage(f"Writing result objects… {i} of {len(rows)}", i, len(rows))
        if errors:
            yield Stage(f"{len(errors)} rows had no result object: {errors[0]}")
        if not files:
            raise NothingToSend("None of these rows is a DICOM image that was scored or found out of scope; "
                                "result objects join a DICOM study, so there is nothing to send.")
        yield from _send(server, files, secrets, cancel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def worklist_rows(dialog: Any, *, above_only: bool) -> list[Any]:
    """Rows of the screening dialog: the selected ones, or every scored row at or above the threshold."""
    from cxr_desktop.screening.results import STATUS_OK, STATUS_OUT_OF_SCOPE

    if above_only:
        return [r for r in dialog.model.rows() if r.status == STATUS_OK and r.above_threshold]
    rows = []
    for index in dialog.table.selectionModel().selectedRows():
        src = dialog.proxy.mapToSource(index)
        rows.append(dialog.model.row_at(src.row()))
    return [r for r in rows if r.status in (STATUS_OK, STATUS_OUT_OF_SCOPE)]


class SendResultsDialog(PacsDialog):
    """Choose a PACS and send; the job is ``job(server, secrets, cancel)`` -> generator (run in a worker)."""

    sent = Signal(bool, str)  # ok, the sentence shown

    def __init__(self, job: Callable[[PacsServer, SecretStore, threading.Event], Iterator[Any]], what: str,
                 parent: QWidget | None = None, *, settings: QSettings | None = None,
                 secrets: SecretStore | None = None):
        super().__init__("Send results to PACS", (620, 220), "cxr-pacs-send", parent, settings, secrets)
        self._job = job
        self._worker: Any = None
        self._cancel: threading.Event | None = None
        self._error: str | None = None
        self._last: SendProgress | None = None
        self.last_status = ""

        layout = QVBoxLayout(self)
        intro = QLabel(f"{what}\nA Secondary Capture (image with heatmap and caption) and a Structured Report per "
                       f"image, in new series of the image's study. {DECISION_AID_NOTE}")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        row = QHBoxLayout()
        row.addWidget(QLabel("PACS:"))
        self.server_combo = QComboBox()
        for s in self.store.servers():
            self.server_combo.addItem(describe(s), s.name)
        row.addWidget(self.server_combo, 1)
        layout.addLayout(row)
        self.progress, self.status_label = add_progress_and_status(
            layout, "" if self.server_combo.count() else "No PACS is set up: add one in Tools > PACS settings.")
        self.send_button, self.cancel_button, _close = add_button_row(
            layout, ("Send", self.send), ("Cancel", self.cancel), ("Close", self.reject))
        self._update_buttons()

    def _update_buttons(self) -> None:
        busy = self._worker is not None
        self.send_button.setEnabled(not busy and self.server_combo.count() > 0)
        self.cancel_button.setEnabled(busy)

    def _status(self, text: str) -> None:
        self.last_status = text
        self.status_label.setText(text)

    def send(self) -> None:
        name = self.server_combo.currentData()
        server = self.store.server(name) if name else None
        if server is None or self._worker is not None:
            return
        self._error = None
        self._last = None
        self._cancel = threading.Event()
        self.progress.setRange(0, 0)
        self._worker = self._runner.start_generator(self._job, server, self.store.secrets, self._cancel,
                                                    yielded=self._on_event, errored=self._on_error,
                                                    finished=self._on_finished)
        self._update_buttons()

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, Stage):
            if ev.total:
                self.progress.setRange(0, ev.total)
                self.progress.setValue(ev.done)
            self._status(ev.text)
        elif isinstance(ev, SendProgress):
            self._last = ev
            self.progress.setRange(0, max(1, ev.total))
            self.progress.setValue(ev.sent + len(ev.failed))
            self._status(f"Sent {ev.sent} of {ev.total} objects…")

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, (PacsError, NothingToSend)):
            self._error = f"Not sent: {exc}"
        else:
            log.warning("sending results failed: %s", exc.__class__.__name__)
            self._error = (f"Not sent ({exc.__class__.__name__}): the result objects could not be made or sent; "
                           "check the image and the PACS settings, then try again.")

    def _on_finished(self) -> None:
        cancelled = self._cancel is not None and self._cancel.is_set()
        self._worker = None
        self._cancel = None
        last = self._last
        if self._error:
            ok, text = False, self._error
        elif cancelled:
            ok, text = False, f"Cancelled after {last.sent if last else 0} objects were sent."
        elif last is not None and last.sent == last.total:
            ok, text = True, f"Sent: {last.sent} objects accepted by the PACS."
        else:
            ok, text = False, "Nothing was sent."
        end_busy(self.progress)
        if ok:
            self.progress.setValue(self.progress.maximum())
        self._status(text)
        self._update_buttons()
        self.sent.emit(ok, text)

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self._status("Cancelling after the current object…")

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        if self._cancel is not None:
            self._cancel.set()
        return self._runner.shutdown(timeout_ms)

    def done(self, result: int) -> None:
        self.shutdown(5000)
        super().done(result)
