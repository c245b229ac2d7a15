"""The screening worklist docked in the main window: read it beside the viewer, unread first by score.

Rows are the screening results (:class:`~cxr_desktop.screening.results.ResultRow`)
in worklist order (score, highest first; a row with a caution ranks by its score,
never below the scored ones; unscored rows last). Patient, study and date come
from each file's header, read in a worker and shown on screen only: they are
never logged and never written to the results. Read status is saved per screened
folder (:func:`read_status_path`: a small JSON in the screening results store, keyed
by a hash of each row's path, so no file name or patient data is in it), written
atomically at each change and read back when the dock shows that folder again
(whichever model scored it: reading an image does not depend on the model).
Keys (window-wide, in :data:`~cxr_desktop.gui.shortcuts.SHORTCUTS`): U next unread,
Shift+U previous unread, M mark read / unread. Opening a row (double-click, Enter,
or the keys) shows the study in the viewer; the dock stays docked and usable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView, QDockWidget, QHBoxLayout, QHeaderView, QLabel, QPushButton, QTableView, QVBoxLayout, QWidget,
)

from cxr_desktop import DECISION_AID_NOTICE
from cxr_desktop.gui.study_facts import StudyFacts, read_facts
from cxr_desktop.gui.result_table import ResultRowsModel
from cxr_desktop.gui.workers import WorkerRunner
from cxr_desktop.screening.results import STATUS_OUT_OF_SCOPE, ResultRow, sorted_rows

log = logging.getLogger(__name__)

CAUTION_SIGN = "\u26a0"
READ_STATUS_NAME = "read-status.json"
READ_STATUS_FORMAT = "cxr-reading-status"
READ_STATUS_VERSION = 1
_READ_STATUS_STORE = "reading-status"  # in place of a model hash: reading an image does not depend on the model


def row_key(relpath: str) -> str:
    """A row's key in the read-status file: a hash of its path (file names may carry patient names)."""
    return hashlib.sha256(relpath.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def read_status_path(folder: str | os.PathLike[str], results_root: str | os.PathLike[str] | None = None) -> Path:
    """Where the read status of the screened ``folder`` is kept: the screening results store (beside
    the runs' results and journals), one file per folder whatever model scored it."""
    from cxr_desktop.screening.store import store_dir

    return store_dir(folder, _READ_STATUS_STORE, results_root) / READ_STATUS_NAME


def load_read_status(path: Path) -> set[str]:
    """The read row keys saved at ``path`` (empty when absent or unreadable: nothing is read yet)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return set()
    except (OSError, ValueError):
        log.warning("the worklist's read-status file cannot be read; rows start unread")
        return set()
    if not isinstance(data, dict) or data.get("format") != READ_STATUS_FORMAT:
        return set()
    return {str(k) for k in data.get("read", []) if isinstance(k, str)}


def save_read_status(path: Path, keys: set[str]) -> None:
    """Write the read row keys atomically (a crash leaves the old file or the new one, never half)."""
    from cxr_desktop.atomic import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"format": READ_STATUS_FORMAT, "version": READ_STATUS_VERSION, "read": sorted(keys)})


def _facts_job(folder: str, relpaths: list[str]) -> Iterator[StudyFacts]:
    """Worker: header facts of each row's file (patient data: for the screen only)."""
    for rel in relpaths:
        yield read_facts(os.path.join(folder, rel))


class ReadingWorklistModel(ResultRowsModel):
    """Worklist rows in reading order with patient/study/date and read status."""

    COLUMNS = ("Read", "Score", "Patient", "Study", "Date", "Caution", "File")
    COL_READ, COL_SCORE, COL_PATIENT, COL_STUDY, COL_DATE, COL_CAUTION, COL_FILE = range(7)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._rows: list[ResultRow] = []
        self._facts: dict[str, StudyFacts] = {}
        self._read: set[str] = set()  # row keys (row_key of the path), also of rows not listed (yet)

    def set_rows(self, rows: Sequence[ResultRow], read: set[str] | None = None) -> None:
        """Replace the rows (kept in worklist order); ``read`` replaces the read row keys when given."""
        self.beginResetModel()
        self._rows = sorted_rows(rows)
        if read is not None:
            self._read = set(read)
        self.endResetModel()

    def read_keys(self) -> set[str]:
        return set(self._read)

    def rows(self) -> list[ResultRow]:
        return list(self._rows)

    def row_at(self, i: int) -> ResultRow:
        return self._rows[i]

    def index_of(self, path: str) -> int:
        return next((i for i, r in enumerate(self._rows) if r.path == path), -1)

    def set_facts(self, relpath: str, facts: StudyFacts) -> None:
        self._facts[relpath] = facts
        i = self.index_of(relpath)
        if i >= 0:
            self.dataChanged.emit(self.index(i, self.COL_PATIENT), self.index(i, self.COL_DATE))

    def has_facts(self, relpath: str) -> bool:
        return relpath in self._facts

    def is_read(self, i: int) -> bool:
        return row_key(self._rows[i].path) in self._read

    def set_read(self, i: int, on: bool) -> None:
        key = row_key(self._rows[i].path)
        (self._read.add if on else self._read.discard)(key)
        self.dataChanged.emit(self.index(i, 0), self.index(i, len(self.COLUMNS) - 1))

    def unread_count(self) -> int:
        return sum(1 for r in self._rows if row_key(r.path) not in self._read)

    # -- Qt model API
    def _role_data(self, r: ResultRow, col: int, role: int) -> Any:
        if role == Qt.ItemDataRole.FontRole and row_key(r.path) not in self._read:
            font = QFont()
            font.setBold(True)  # unread rows stand out, as in a mail client
            return font
        return None

    def _display(self, r: ResultRow, col: int) -> str:
        facts = self._facts.get(r.path)
        if col == self.COL_READ:
            return "read" if row_key(r.path) in self._read else "unread"
        if col == self.COL_SCORE:
            if r.status == STATUS_OUT_OF_SCOPE:
                return "out of scope"
            if r.score is None:
                return r.status.replace("_", " ")
            return f"{r.score:.3f} {CAUTION_SIGN}" if r.caution is not None else f"{r.score:.3f}"
        if col == self.COL_CAUTION:
            return "" if r.caution is None else f"{CAUTION_SIGN} {r.caution.short}"
        if col == self.COL_PATIENT:
            if facts is None:
                return ""
            return " / ".join(t for t in (facts.patient_name, facts.patient_id) if t)
        if col == self.COL_STUDY:
            return facts.study_description if facts is not None else ""
        if col == self.COL_DATE:
            return facts.date_text if facts is not None else ""
        if col == self.COL_FILE:
            return r.path
        return ""


class WorklistDock(QDockWidget):
    """The worklist as a dock of the main window (never covering the viewer)."""

    open_requested = Signal(str)  # absolute path of the row to show

    def __init__(self, parent: QWidget | None = None, *, results_root: str | os.PathLike[str] | None = None):
        super().__init__("Worklist", parent)
        self.setObjectName("worklist")
        self.folder: Path | None = None
        self.results_root = results_root  # the screening results store (None: the app's default)
        self.status_file: Path | None = None
        self.model = ReadingWorklistModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setWordWrap(False)
        self.table.setMinimumHeight(48)  # the dock may be short on a small screen; the table scrolls
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(ReadingWorklistModel.COL_FILE, QHeaderView.ResizeMode.Stretch)
        # the caution's full sentence is in the tooltip; the sign is also beside the score, the row tinted
        header.setSectionResizeMode(ReadingWorklistModel.COL_CAUTION, QHeaderView.ResizeMode.Interactive)
        self.table.setColumnWidth(ReadingWorklistModel.COL_CAUTION, 200)
        self.table.activated.connect(lambda idx: self.open_row(idx.row()))
        self.table.doubleClicked.connect(lambda idx: self.open_row(idx.row()))
        self.summary = QLabel("No screening results yet: Tools > Screen a folder.")
        self.summary.setWordWrap(True)
        notice = QLabel(DECISION_AID_NOTICE)
        notice.setWordWrap(True)
        buttons = QHBoxLayout()
        self.prev_button = QPushButton("Previous unread")
        self.next_button = QPushButton("Next unread")
        self.read_button = QPushButton("Mark as read")
        self.prev_button.clicked.connect(lambda: self.step_unread(-1))
        self.next_button.clicked.connect(lambda: self.step_unread(+1))
        self.read_button.clicked.connect(self.toggle_read)
        for b in (self.prev_button, self.next_button, self.read_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        body = QWidget()
        col = QVBoxLayout(body)
        col.setContentsMargins(4, 4, 4, 4)
        col.addLayout(buttons)
        col.addWidget(self.table, 1)
        col.addWidget(self.summary)
        col.addWidget(notice)
        self.setWidget(body)
        self.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self._runner = WorkerRunner("worklist-facts", threads=1)
        self._facts_worker: Any = None
        self.current = -1

    # ------------------------------------------------------------ rows
    def set_results(self, folder: str | os.PathLike[str], rows: Sequence[ResultRow]) -> None:
        """Show ``rows`` of the screened ``folder``; read their header facts in the background."""
        folder = Path(folder)
        same = self.folder == folder
        current_path = self.model.row_at(self.current).path if 0 <= self.current < self.model.rowCount() else None
        self.folder = folder
        read = None
        if not same:  # another folder: its saved read status
            self.status_file = read_status_path(folder, self.results_root)
            read = load_read_status(self.status_file)
        self.model.set_rows(rows, read)
        self.current = self.model.index_of(current_path) if same and current_path else -1
        if self.current >= 0:
            self.table.selectRow(self.current)
        wanted = [r.path for r in self.model.rows() if not (same and self.model.has_facts(r.path))]
        if wanted:
            if self._facts_worker is not None:
                try:
                    self._facts_worker.quit()
                except RuntimeError:
                    pass
            self._facts_worker = self._runner.start_generator(_facts_job, str(folder), wanted,
                                                              yielded=self._facts_ready)
        self._update_summary()

    def _facts_ready(self, facts: StudyFacts) -> None:
        if self.folder is None:
            return
        try:
            rel = Path(facts.path).relative_to(self.folder).as_posix()
        except ValueError:
            return
        self.model.set_facts(rel, facts)

    def _update_summary(self) -> None:
        n = self.model.rowCount()
        self.summary.setText(f"{n} studies, {self.model.unread_count()} unread" if n
                             else "No screening results yet: Tools > Screen a folder.")

    # ------------------------------------------------------------ reading
    def open_row(self, i: int) -> None:
        """Show row ``i`` in the viewer (the dock stays where it is, usable)."""
        if not 0 <= i < self.model.rowCount() or self.folder is None:
            return
        self.current = i
        self.table.selectRow(i)
        self.table.scrollTo(self.model.index(i, 0))
        self.open_requested.emit(str(self.folder / self.model.row_at(i).path))

    def step_unread(self, direction: int) -> bool:
        """Open the next (+1) or previous (-1) unread row in score order; False if there is none."""
        n = self.model.rowCount()
        start = self.current if self.current >= 0 else (-1 if direction > 0 else n)
        i = start + direction
        while 0 <= i < n:
            if not self.model.is_read(i):
                self.open_row(i)
                return True
            i += direction
        self.summary.setText(f"No {'further' if direction > 0 else 'earlier'} unread study. "
                             f"{self.model.unread_count()} unread in all.")
        return False

    def toggle_read(self) -> None:
        """Mark the current row as read (or back to unread)."""
        i = self.current
        if not 0 <= i < self.model.rowCount():
            return
        self.set_read(i, not self.model.is_read(i))

    def set_read(self, i: int, on: bool = True) -> None:
        self.model.set_read(i, on)
        self._update_summary()
        if self.status_file is not None:
            try:
                save_read_status(self.status_file, self.model.read_keys())
            except OSError as exc:  # the mark stays for the session; say why it is not kept
                self.summary.setText(f"{self.summary.text()} Read status not saved "
                                     f"({exc.strerror or exc.__class__.__name__}): check the results folder.")

    def shutdown(self, timeout_ms: int) -> bool:
        return self._runner.shutdown(timeout_ms)
