"""File -> Query PACS...: search a PACS for studies and retrieve the chosen ones into the local study cache.

The search (C-FIND or QIDO-RS) and the retrieve (C-GET, C-MOVE or WADO-RS, per the
server's setting) run in workers; the retrieve reports progress, can be cancelled
(a cancelled or failed study leaves nothing in the cache) and skips studies already
cached. When it ends, :attr:`QueryPacsDialog.studies_retrieved` carries the cached
study folders, which the main window opens in the study list. The table shows
patient data because the reader needs it; none of it is ever logged.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from PySide6.QtCore import QDate, QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QDateEdit, QGridLayout, QHBoxLayout, QHeaderView, QLabel,
    QLineEdit, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from cxr_desktop.gui.dialog_parts import add_button_row, add_progress_and_status, end_busy
from cxr_desktop.gui.pacs_settings import PacsDialog, describe
from cxr_desktop.pacs import (
    DEFAULT_MODALITIES, PacsError, PacsProblem, PacsServer, RetrieveDone, RetrieveProgress, SecretStore, StudyCache,
    StudyQuery, StudyRow, find_studies, retrieve_study,
)

log = logging.getLogger(__name__)

COLUMNS = ("Patient", "Patient ID", "Study date", "Description", "Modality", "Images")


@dataclass(frozen=True)
class StudyStarted:
    """Retrieve of study ``index`` (0-based, of ``count``) begins."""

    index: int
    count: int


@dataclass(frozen=True)
class StudyProgress:
    index: int
    progress: RetrieveProgress


@dataclass(frozen=True)
class StudyRetrieved:
    index: int
    done: RetrieveDone


def retrieve_job(server: PacsServer, rows: list[StudyRow], cache: StudyCache, cancel: threading.Event,
                 secrets: SecretStore | None) -> Iterator[Any]:
    """Worker: retrieve each study in turn (cached ones come at once); stops at the first failure."""
    for i, row in enumerate(rows):
        if cancel.is_set():
            return
        yield StudyStarted(i, len(rows))
        for ev in retrieve_study(server, row.study_uid, cache=cache, cancel=cancel, secrets=secrets,
                                 expected=row.images):
            if isinstance(ev, RetrieveProgress):
                yield StudyProgress(i, ev)
            elif isinstance(ev, RetrieveDone):
                yield StudyRetrieved(i, ev)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class QueryPacsDialog(PacsDialog):
    """Search a configured PACS and retrieve studies into the local cache."""

    studies_retrieved = Signal(list)  # list[str]: cached study folders, in the order retrieved
    search_finished = Signal(bool, str)  # ok, status text
    retrieve_finished = Signal(bool, str)  # ok (every study is in the cache), status text

    def __init__(self, parent: QWidget | None = None, *, settings: QSettings | None = None,
                 secrets: SecretStore | None = None):
        super().__init__("Query PACS", (900, 560), "cxr-pacs-query", parent, settings, secrets)
        self.rows: list[StudyRow] = []
        self._worker: Any = None
        self._cancel: threading.Event | None = None
        self._retrieving: list[StudyRow] = []
        self._folders: list[str] = []
        self._from_cache = 0
        self._images_done = 0
        self._retrieve_error: str | None = None
        self._search_outcome: tuple[bool, str] = (False, "")
        self.last_status = ""
        self._build_ui()
        self.reload_servers()

    # -- UI
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        grid = QGridLayout()
        self.server_combo = QComboBox()
        self.patient_id_edit = QLineEdit()
        self.patient_name_edit = QLineEdit()
        self.patient_name_edit.setPlaceholderText("e.g. DOE^J*")
        self.accession_edit = QLineEdit()
        self.modality_edit = QLineEdit(",".join(DEFAULT_MODALITIES))
        self.modality_edit.setToolTip("Comma-separated modalities; empty = every modality.")
        self.date_check = QCheckBox("Study date from")
        self.date_from = QDateEdit(QDate.currentDate().addYears(-1))
        self.date_to = QDateEdit(QDate.currentDate())
        for d in (self.date_from, self.date_to):
            d.setCalendarPopup(True)
            d.setDisplayFormat("yyyy-MM-dd")
            d.setEnabled(False)
        self.date_check.toggled.connect(self.date_from.setEnabled)
        self.date_check.toggled.connect(self.date_to.setEnabled)
        grid.addWidget(QLabel("PACS:"), 0, 0)
        grid.addWidget(self.server_combo, 0, 1, 1, 3)
        grid.addWidget(QLabel("Patient ID:"), 1, 0)
        grid.addWidget(self.patient_id_edit, 1, 1)
        grid.addWidget(QLabel("Patient name:"), 1, 2)
        grid.addWidget(self.patient_name_edit, 1, 3)
        grid.addWidget(QLabel("Accession number:"), 2, 0)
        grid.addWidget(self.accession_edit, 2, 1)
        grid.addWidget(QLabel("Modality:"), 2, 2)
        grid.addWidget(self.modality_edit, 2, 3)
        dates = QHBoxLayout()
        dates.addWidget(self.date_check)
        dates.addWidget(self.date_from)
        dates.addWidget(QLabel("to"))
        dates.addWidget(self.date_to)
        dates.addStretch(1)
        grid.addLayout(dates, 3, 0, 1, 4)
        layout.addLayout(grid)

        buttons = QHBoxLayout()
        self.search_button = QPushButton("Search")
        self.search_button.setDefault(True)
        self.search_button.clicked.connect(self.search)
        buttons.addWidget(self.search_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.doubleClicked.connect(lambda _i: self.retrieve_selected())
        layout.addWidget(self.table, 1)

        self.progress, self.status_label = add_progress_and_status(layout, "Choose a PACS and search.")

        self.retrieve_button, self.cancel_button, _close = add_button_row(
            layout, ("Retrieve and open", self.retrieve_selected), ("Cancel", self.cancel), ("Close", self.reject))
        self._update_buttons()

    def reload_servers(self) -> None:
        current = self.server_combo.currentData()
        self.server_combo.clear()
        for s in self.store.servers():
            self.server_combo.addItem(describe(s), s.name)
        i = self.server_combo.findData(current)
        self.server_combo.setCurrentIndex(max(0, i))
        if not self.server_combo.count():
            self._status("No PACS is set up: add one in Tools > PACS settings.")
        self._update_buttons()

    def server(self) -> PacsServer | None:
        name = self.server_combo.currentData()
        return self.store.server(name) if name else None

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def _update_buttons(self) -> None:
        busy = self.busy
        self.search_button.setEnabled(not busy and self.server_combo.count() > 0)
        self.retrieve_button.setEnabled(not busy and bool(self.table.selectionModel().selectedRows()))
        self.cancel_button.setEnabled(busy and self._cancel is not None)

    def _status(self, text: str) -> None:
        self.last_status = text
        self.status_label.setText(text)

    # -- search
    def query(self) -> StudyQuery:
        mods = tuple(m.strip().upper() for m in self.modality_edit.text().replace(" ", ",").split(",") if m.strip())
        date_from = date_to = None
        if self.date_check.isChecked():
            date_from = _dt.date.fromisoformat(self.date_from.date().toString("yyyy-MM-dd"))
            date_to = _dt.date.fromisoformat(self.date_to.date().toString("yyyy-MM-dd"))
        return StudyQuery(patient_id=self.patient_id_edit.text().strip(),
                          patient_name=self.patient_name_edit.text().strip(),
                          accession_number=self.accession_edit.text().strip(),
                          date_from=date_from, date_to=date_to, modalities=mods)

    def search(self) -> None:
        server = self.server()
        if server is None or self.busy:
            return
        self._status(f"Searching {server.where}…")
        self.progress.setRange(0, 0)  # busy
        self._worker = self._runner.start_function(
            find_studies, server, self.query(), secrets=self.store.secrets,
            returned=self._show_rows, errored=self._search_failed, finished=self._search_done)
        self._update_buttons()

    def _show_rows(self, rows: list[StudyRow]) -> None:
        self.rows = list(rows)
        self.table.setRowCount(len(self.rows))
        for r, row in enumerate(self.rows):
            values = (row.patient_name.replace("^", " ").strip(), row.patient_id,
                      row.study_date.isoformat() if row.study_date else "", row.description,
                      "/".join(row.modalities), _text(row.images))
            for c, v in enumerate(values):
                item = QTableWidgetItem(v)
                if c == 5:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        text = f"{len(self.rows)} stud{'y' if len(self.rows) == 1 else 'ies'} found."
        if self.rows:
            text += " Select studies and press Retrieve."
        self._status(text)
        self._search_outcome = (True, text)

    def _search_failed(self, exc: BaseException) -> None:
        text = self._failure("Search failed", exc)
        self._status(text)
        self._search_outcome = (False, text)

    def _search_done(self) -> None:
        self._worker_done()  # the dialog is ready for the next search or retrieve when the signal goes out
        ok, text = self._search_outcome
        self.search_finished.emit(ok, text)

    @staticmethod
    def _failure(what: str, exc: BaseException) -> str:
        if isinstance(exc, PacsError):
            return f"{what}: {exc}"
        log.warning("%s: %s", what, exc.__class__.__name__)  # the class only: a message may carry patient data
        return f"{what} ({exc.__class__.__name__}); check the PACS settings and try again."

    def _worker_done(self) -> None:
        self._worker = None
        self._cancel = None
        end_busy(self.progress)
        self._update_buttons()

    # -- retrieve
    def selected_rows(self) -> list[StudyRow]:
        return [self.rows[i.row()] for i in sorted(self.table.selectionModel().selectedRows(), key=lambda i: i.row())]

    def retrieve_selected(self) -> None:
        self.retrieve(self.selected_rows())

    def retrieve(self, rows: list[StudyRow]) -> None:
        server = self.server()
        if server is None or self.busy or not rows:
            return
        try:
            cache = self.store.cache()
        except PacsError as exc:
            self._status(str(exc))
            return
        self._retrieving = list(rows)
        self._folders = []
        self._from_cache = 0
        self._images_done = 0
        total = sum(r.images or 0 for r in rows)
        self.progress.setRange(0, max(1, total) if all(r.images for r in rows) else len(rows))
        self.progress.setValue(0)
        self._status(f"Retrieving {len(rows)} stud{'y' if len(rows) == 1 else 'ies'} from {server.where}…")
        self._cancel = threading.Event()
        self._worker = self._runner.start_generator(
            retrieve_job, server, list(rows), cache, self._cancel, self.store.secrets,
            yielded=self._on_retrieve_event, errored=self._retrieve_failed, finished=self._retrieve_done)
        self._update_buttons()

    def _by_images(self) -> bool:
        return self.progress.maximum() != len(self._retrieving) or all(r.images for r in self._retrieving)

    def _on_retrieve_event(self, ev: Any) -> None:
        n = len(self._retrieving)
        if isinstance(ev, StudyStarted):
            self._status(f"Study {ev.index + 1} of {n}…")
        elif isinstance(ev, StudyProgress):
            p = ev.progress
            if self._by_images():
                self.progress.setValue(min(self.progress.maximum(), self._images_done + p.received))
            of = f" of {p.total}" if p.total else ""
            self._status(f"Study {ev.index + 1} of {n}: {p.received}{of} images "
                         f"({p.bytes / 1e6:.1f} MB, {p.method.upper()})…")
        elif isinstance(ev, StudyRetrieved):
            self._folders.append(str(ev.done.folder))
            self._from_cache += int(ev.done.from_cache)
            self._images_done += len(ev.done.files)
            self.progress.setValue(min(self.progress.maximum(),
                                       self._images_done if self._by_images() else ev.index + 1))

    def _retrieve_failed(self, exc: BaseException) -> None:
        if isinstance(exc, PacsError) and exc.kind == PacsProblem.CANCELLED:
            return  # said by _retrieve_done
        kept = f" {len(self._folders)} stud{'y was' if len(self._folders) == 1 else 'ies were'} retrieved " \
               "before it and are opened." if self._folders else ""
        self._retrieve_error = self._failure("Retrieve failed", exc) + kept

    def _retrieve_done(self) -> None:
        error = self._retrieve_error
        self._retrieve_error = None
        cancelled = self._cancel is not None and self._cancel.is_set()
        self._worker_done()
        n, got = len(self._retrieving), len(self._folders)
        if error:
            text = error
        elif cancelled and got < n:
            text = (f"Cancelled: {got} of {n} studies retrieved (a study cut short leaves nothing in the cache; "
                    "retrieve it again to finish).")
        else:
            cached = f" ({self._from_cache} already in the local cache, not fetched again)" if self._from_cache else ""
            text = f"{got} of {n} stud{'y' if n == 1 else 'ies'} retrieved{cached}; opened in the study list."
            self.progress.setValue(self.progress.maximum())
        self._status(text)
        if self._folders:
            self.studies_retrieved.emit(list(self._folders))
        self.retrieve_finished.emit(not error and got == n, text)

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self._status("Cancelling…")
        if self._worker is not None:
            try:
                self._worker.quit()
            except (RuntimeError, AttributeError):
                pass
        self.cancel_button.setEnabled(False)

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        if self._cancel is not None:
            self._cancel.set()
        return self._runner.shutdown(timeout_ms)

    def done(self, result: int) -> None:  # Close / Esc: a retrieve in flight is cancelled (nothing partial kept)
        self.shutdown(5000)
        super().done(result)
