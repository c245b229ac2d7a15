"""Screening dialog: screen a folder, watch progress, and work through a ranked worklist.

A thin Qt layer over :func:`cxr_desktop.screening.runner.screen_folder`: the
generator runs on a worker thread (decoding runs in its worker processes), its
typed events arrive here as signals. The worklist is a model/view table
(:class:`WorklistModel` + :class:`WorklistFilter`) sorted by score and
filterable by status, label and threshold; thumbnails are decoded on demand,
only for rows the view shows. Double-clicking a row emits
:attr:`ScreeningDialog.open_study_requested` with the file's path; the main
window opens it in the viewer with its Grad-CAM. Results are kept per (folder,
model) in the user data folder, so reopening the folder offers them.

A row with a caution (the learned check: unlike the training images) is a scored
row: it shows its score with a warning sign, a tinted background and a "Caution"
cell, and ranks by its score among the scored rows, never below them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from PySide6.QtCore import (
    QModelIndex, QObject, QPersistentModelIndex, QSortFilterProxyModel, Qt, Signal,
)
from PySide6.QtGui import QCloseEvent, QImage
from PySide6.QtWidgets import (
    QAbstractItemView, QApplication, QCheckBox, QComboBox, QDialog, QFileDialog, QGridLayout, QHBoxLayout, QHeaderView,
    QLabel, QLineEdit, QPushButton, QTableView, QVBoxLayout, QWidget,
)

from cxr_desktop import DECISION_AID_NOTICE
from cxr_desktop.durations import clock
from cxr_desktop.gui.dialog_parts import add_progress_and_status, end_busy
from cxr_desktop.gui.result_table import ResultRowsModel
from cxr_desktop.gui.workers import WorkerRunner
from cxr_desktop.screening.results import (
    STATUS_ERROR, STATUS_OK, STATUS_OUT_OF_SCOPE, JournalHeader, ResultRow, sorted_rows, summarise, write_csv,
    write_json,
)
from cxr_desktop.screening.store import (
    RESULTS_NAME, PreviousResults, find_previous, load_rows, model_sha256, store_dir,
)

log = logging.getLogger(__name__)

SORT_ROLE = int(Qt.ItemDataRole.UserRole) + 1
ROW_ROLE = int(Qt.ItemDataRole.UserRole) + 2
THUMB_SIDE = 64
THUMB_CACHE_ITEMS = 400
#: Status-filter value that shows only scored rows with a caution (not a row status of its own).
CAUTION_FILTER = "caution"
CAUTION_SIGN = "\u26a0"

EngineFactory = Callable[[Path], Any]


def _cautioned(summary: dict[str, Any]) -> str:
    n = int(summary.get("cautioned", 0) or 0)
    return f", {n} with a caution (unusual image, scored)" if n else ""


# --------------------------------------------------------------------------- worklist model


class WorklistModel(ResultRowsModel):
    """Screening rows as a table; thumbnails requested lazily when the view asks for them."""

    COLUMNS = ("", "File", "Status", "Label", "Score", "Above threshold", "Reason", "Caution")
    COL_THUMB, COL_PATH, COL_STATUS, COL_LABEL, COL_SCORE, COL_ABOVE, COL_REASON, COL_CAUTION = range(8)

    thumbnail_wanted = Signal(str)  # relative path

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._rows: list[ResultRow] = []
        self._where: dict[str, int] = {}
        self._thumbs: OrderedDict[str, QImage | None] = OrderedDict()
        self._asked: set[str] = set()

    # -- data in
    def set_rows(self, rows: Sequence[ResultRow]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self._where = {r.path: i for i, r in enumerate(self._rows)}
        self.endResetModel()

    def add_rows(self, rows: Sequence[ResultRow]) -> None:
        """Append new rows; a row for a path already shown replaces it."""
        fresh = []
        for r in rows:
            i = self._where.get(r.path)
            if i is None:
                fresh.append(r)
            else:
                self._rows[i] = r
                self.dataChanged.emit(self.index(i, 0), self.index(i, len(self.COLUMNS) - 1))
        if fresh:
            start = len(self._rows)
            self.beginInsertRows(QModelIndex(), start, start + len(fresh) - 1)
            for k, r in enumerate(fresh):
                self._where[r.path] = start + k
            self._rows.extend(fresh)
            self.endInsertRows()

    def clear(self) -> None:
        self.set_rows([])
        self._thumbs.clear()
        self._asked.clear()

    def rows(self) -> list[ResultRow]:
        return list(self._rows)

    def row_at(self, i: int) -> ResultRow:
        return self._rows[i]

    def set_thumbnail(self, relpath: str, image: QImage | None) -> None:
        self._thumbs[relpath] = image
        self._thumbs.move_to_end(relpath)
        while len(self._thumbs) > THUMB_CACHE_ITEMS:
            old, _ = self._thumbs.popitem(last=False)
            self._asked.discard(old)  # may be asked for again when scrolled back into view
        i = self._where.get(relpath)
        if i is not None:
            idx = self.index(i, self.COL_THUMB)
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])

    def cached_thumbnail(self, relpath: str) -> QImage | None:
        return self._thumbs.get(relpath)

    # -- Qt model API
    def _role_data(self, r: ResultRow, col: int, role: int) -> Any:
        if role == SORT_ROLE:
            return self._sort_value(r, col)
        if role == ROW_ROLE:
            return r
        if role == Qt.ItemDataRole.DecorationRole and col == self.COL_THUMB:
            if r.path in self._thumbs:
                return self._thumbs[r.path]
            if r.path not in self._asked:
                self._asked.add(r.path)
                self.thumbnail_wanted.emit(r.path)
        return None

    #: Out-of-scope rows that carry a score (``cxr-screen --show-anyway``) show it only when this is on.
    show_out_of_scope_scores = False

    def set_show_out_of_scope_scores(self, on: bool) -> None:
        """Reveal (or hide again) the scores of out-of-scope rows that carry one."""
        self.show_out_of_scope_scores = bool(on)
        if self._rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._rows) - 1, len(self.COLUMNS) - 1))

    def has_out_of_scope_scores(self) -> bool:
        """Whether any out-of-scope row carries a score (only then is a 'show anyway' toggle useful)."""
        return any(r.status == STATUS_OUT_OF_SCOPE and r.score is not None for r in self._rows)

    def _hidden(self, r: ResultRow) -> bool:
        return r.status == STATUS_OUT_OF_SCOPE and not self.show_out_of_scope_scores

    def _display(self, r: ResultRow, col: int) -> str | None:
        if r.status == STATUS_OUT_OF_SCOPE and col in (self.COL_LABEL, self.COL_SCORE, self.COL_ABOVE):
            if self._hidden(r) or r.score is None:
                return "out of scope" if col == self.COL_SCORE else ""
            if col == self.COL_SCORE:
                return f"{r.score:.3f} (OUT OF SCOPE)"
        if col == self.COL_CAUTION:
            return "" if r.caution is None else f"{CAUTION_SIGN} {r.caution.short}"
        if col == self.COL_PATH:
            return r.path
        if col == self.COL_STATUS:
            return r.status.replace("_", " ")
        if col == self.COL_LABEL:
            return r.label or ""
        if col == self.COL_SCORE:
            if r.score is None:
                return ""
            return f"{r.score:.3f} {CAUTION_SIGN}" if r.caution is not None else f"{r.score:.3f}"
        if col == self.COL_ABOVE:
            return "" if r.above_threshold is None else ("yes" if r.above_threshold else "no")
        if col == self.COL_REASON:
            return r.reason
        return None

    def _sort_value(self, r: ResultRow, col: int) -> Any:
        if col in (self.COL_SCORE, self.COL_THUMB):
            # unscored rows sink below every score; a cautioned row is scored and ranks by its score
            return -1.0 if r.score is None or self._hidden(r) else float(r.score)
        if col == self.COL_CAUTION:
            return -1.0 if r.caution is None else float(r.caution.distance)
        if col == self.COL_ABOVE:
            return -1 if r.above_threshold is None else int(r.above_threshold)
        return (self._display(r, col) or "").lower()


class WorklistFilter(QSortFilterProxyModel):
    """Sort by :data:`SORT_ROLE`; filter by status, predicted label and 'above threshold only'."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(True)
        self._status: str | None = None
        self._label: str | None = None
        self._above_only = False

    def set_status(self, status: str | None) -> None:
        self._refilter("_status", status or None)

    def set_label(self, label: str | None) -> None:
        self._refilter("_label", label or None)

    def set_above_only(self, on: bool) -> None:
        self._refilter("_above_only", bool(on))

    def _refilter(self, attr: str, value: Any) -> None:
        if hasattr(self, "endFilterChange"):  # Qt >= 6.9
            self.beginFilterChange()
            setattr(self, attr, value)
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            setattr(self, attr, value)
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        model = self.sourceModel()
        if not isinstance(model, WorklistModel):
            return True
        r = model.row_at(source_row)
        if self._status == CAUTION_FILTER:
            if r.caution is None:
                return False
        elif self._status is not None and r.status != self._status:
            return False
        if self._label is not None and r.label != self._label:
            return False
        if self._above_only and not r.above_threshold:
            return False
        return True


# --------------------------------------------------------------------------- jobs (worker threads)


@dataclasses.dataclass
class _Loading:
    message: str


@dataclasses.dataclass
class _EngineReady:
    header: JournalHeader
    device: str


@dataclasses.dataclass
class _PriorRows:
    rows: list[ResultRow]


@dataclasses.dataclass
class _FinalRows:
    rows: list[ResultRow]


def _screen_job(folder: Path, model_path: Path, results_root: Path | None, factory: EngineFactory,
                template: Any, resume: bool, cancel: threading.Event) -> Iterator[Any]:
    """Worker thread: load the engine, then drive :func:`screen_folder`, passing its events on.

    Everything slow (importing torch, hashing and loading the model) happens here, off the GUI thread.
    """
    from cxr_desktop.screening.runner import RowsDone, ScreenFinished, ScreenOptions, screen_folder

    yield _Loading("Loading the model…")
    out_csv = store_dir(folder, model_sha256(model_path), results_root) / RESULTS_NAME
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    options = dataclasses.replace(template or ScreenOptions(), resume=resume, json_path=None, heatmaps_dir=None)
    engine = factory(model_path)
    header = JournalHeader.from_card(engine.card, engine.model_sha256)
    yield _EngineReady(header, engine.device_label)
    shown: set[str] = set()
    if options.resume:
        prior = load_rows(out_csv)
        if prior:
            shown.update(r.path for r in prior)
            yield _PriorRows(prior)
    for ev in screen_folder(folder, engine, out_csv, options=options, cancel=cancel):
        yield ev
        if isinstance(ev, RowsDone):
            shown.update(r.path for r in ev.rows)
        elif isinstance(ev, ScreenFinished) and ev.rows_written != len(shown):
            yield _FinalRows(load_rows(out_csv))  # files removed since the last run drop out


def _thumbnail_job(folder: str, relpath: str) -> tuple[str, Any]:
    """Worker thread: a small display rendering (uint8 array) of one file, or None if it cannot be read."""
    from cxr_desktop.viewing.study_scan import make_thumbnail

    try:
        thumb = make_thumbnail(os.path.join(folder, relpath), THUMB_SIDE)
    except Exception:  # a bad file only costs its thumbnail
        return relpath, None
    return relpath, thumb.pixels


def _sha_job(token: int, folder: str, model_path: str) -> tuple[int, str, str | None, str | None]:
    """Worker thread: (token, folder, model SHA-256 or None, error class name or None)."""
    try:
        return token, folder, model_sha256(model_path), None
    except OSError as exc:
        return token, folder, None, exc.__class__.__name__


# --------------------------------------------------------------------------- dialog


class ScreeningDialog(QDialog):
    """Screen a folder and review the ranked worklist.

    ``engine_factory(model_path)`` builds the engine on the worker thread (default:
    :func:`cxr_desktop.inference.engine.load_engine`); the main window may pass one
    that reuses its engine. ``results_root`` is where results are kept (default:
    ``data_dir()/screening``). ``screen_options`` (a ``ScreenOptions``) sets workers
    and batch size.
    """

    open_study_requested = Signal(str)
    run_finished = Signal(object)  # ScreenFinished
    previous_checked = Signal(object)  # PreviousResults | None

    def __init__(self, parent: QWidget | None = None, *, folder: str | os.PathLike[str] | None = None,
                 model_path: str | os.PathLike[str] | None = None, engine_factory: EngineFactory | None = None,
                 results_root: str | os.PathLike[str] | None = None, screen_options: Any = None):
        super().__init__(parent)
        self.setWindowTitle("Screen a folder")
        self.resize(980, 680)
        self._factory = engine_factory or _default_engine_factory
        self._results_root = Path(results_root) if results_root is not None else None
        self._options_template = screen_options
        self._runner = WorkerRunner("cxr-screening", threads=1)
        self._thumb_runner = WorkerRunner("cxr-screening-thumbs", threads=1)
        self._worker: Any = None
        self._cancel: threading.Event | None = None
        self._header: JournalHeader | None = None
        self._run_folder: Path | None = None
        self._previous: PreviousResults | None = None
        self._model_sha: str | None = None
        self._check_token = 0
        self.last_error: str | None = None
        self.last_finished: Any = None
        self._build_ui()
        app = QApplication.instance()
        if app is not None:  # quitting the app stops a run cleanly (finished rows are kept)
            app.aboutToQuit.connect(self._stop_run)
        if model_path is None:
            from cxr_desktop.paths import default_model_path

            model_path = default_model_path() if default_model_path().is_file() else None
        if model_path is not None:
            self.model_edit.setText(str(model_path))
        if folder is not None:
            self.folder_edit.setText(str(folder))
        self._inputs_changed()

    # -- UI
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        grid = QGridLayout()
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("Folder of studies (searched recursively)")
        browse_folder = QPushButton("Browse…")
        browse_folder.clicked.connect(self._browse_folder)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("Model file (.safetensors)")
        browse_model = QPushButton("Browse…")
        browse_model.clicked.connect(self._browse_model)
        grid.addWidget(QLabel("Folder:"), 0, 0)
        grid.addWidget(self.folder_edit, 0, 1)
        grid.addWidget(browse_folder, 0, 2)
        grid.addWidget(QLabel("Model:"), 1, 0)
        grid.addWidget(self.model_edit, 1, 1)
        grid.addWidget(browse_model, 1, 2)
        layout.addLayout(grid)
        self.folder_edit.editingFinished.connect(self._inputs_changed)
        self.model_edit.editingFinished.connect(self._inputs_changed)

        self.previous_banner = QWidget()
        banner = QHBoxLayout(self.previous_banner)
        banner.setContentsMargins(0, 0, 0, 0)
        self.previous_label = QLabel()
        self.open_previous_button = QPushButton("Open them")
        self.open_previous_button.clicked.connect(self.open_previous)
        banner.addWidget(self.previous_label, 1)
        banner.addWidget(self.open_previous_button)
        self.previous_banner.hide()
        layout.addWidget(self.previous_banner)

        run_row = QHBoxLayout()
        self.start_button = QPushButton("Start screening")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.fresh_check = QCheckBox("Screen again from scratch")
        self.fresh_check.setToolTip("Unticked: files already screened with this model are kept and skipped.")
        run_row.addWidget(self.start_button)
        run_row.addWidget(self.cancel_button)
        run_row.addWidget(self.fresh_check)
        run_row.addStretch(1)
        layout.addLayout(run_row)

        self.progress, self.status_label = add_progress_and_status(layout, "Choose a folder and a model, then start.")

        filters = QHBoxLayout()
        self.status_filter = QComboBox()
        self.status_filter.addItem("All statuses", None)
        for s in (STATUS_OK, STATUS_ERROR, STATUS_OUT_OF_SCOPE):
            self.status_filter.addItem(s.replace("_", " "), s)
        self.status_filter.addItem(f"{CAUTION_SIGN} with caution (unusual image)", CAUTION_FILTER)
        self.label_filter = QComboBox()
        self.label_filter.addItem("All labels", None)
        self.above_only = QCheckBox("Above threshold only")
        filters.addWidget(QLabel("Show:"))
        filters.addWidget(self.status_filter)
        filters.addWidget(self.label_filter)
        filters.addWidget(self.above_only)
        self.show_oos_scores = QCheckBox("Show out-of-scope scores anyway")
        self.show_oos_scores.setToolTip(
            "Out-of-scope rows scored with 'cxr-screen --show-anyway' reveal their score, marked out of scope.")
        filters.addWidget(self.show_oos_scores)
        filters.addStretch(1)
        layout.addLayout(filters)

        self.model = WorklistModel(self)
        self.proxy = WorklistFilter(self)
        self.proxy.setSourceModel(self.model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(WorklistModel.COL_SCORE, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setDefaultSectionSize(THUMB_SIDE + 4)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(WorklistModel.COL_PATH, QHeaderView.ResizeMode.Stretch)
        self.table.setColumnWidth(WorklistModel.COL_THUMB, THUMB_SIDE + 8)
        self.table.doubleClicked.connect(self._double_clicked)
        layout.addWidget(self.table, 1)
        self.status_filter.currentIndexChanged.connect(lambda _i: self.proxy.set_status(self.status_filter.currentData()))
        self.label_filter.currentIndexChanged.connect(lambda _i: self.proxy.set_label(self.label_filter.currentData()))
        self.above_only.toggled.connect(self.proxy.set_above_only)
        self.show_oos_scores.toggled.connect(self.model.set_show_out_of_scope_scores)
        self.model.thumbnail_wanted.connect(self._want_thumbnail)

        bottom = QHBoxLayout()
        notice = QLabel(DECISION_AID_NOTICE)
        notice.setWordWrap(True)
        self.export_csv_button = QPushButton("Export CSV…")
        self.export_json_button = QPushButton("Export JSON…")
        self.export_csv_button.clicked.connect(self._export_csv_clicked)
        self.export_json_button.clicked.connect(self._export_json_clicked)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        bottom.addWidget(notice, 1)
        bottom.addWidget(self.export_csv_button)
        bottom.addWidget(self.export_json_button)
        bottom.addWidget(close)
        layout.addLayout(bottom)
        self._update_buttons()

    # -- inputs and previous results
    def set_folder(self, folder: str | os.PathLike[str]) -> None:
        self.folder_edit.setText(str(folder))
        self._inputs_changed()

    def set_model_path(self, path: str | os.PathLike[str]) -> None:
        self.model_edit.setText(str(path))
        self._inputs_changed()

    def _browse_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Folder to screen", self.folder_edit.text())
        if d:
            self.set_folder(d)

    def _browse_model(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Model file", self.model_edit.text(), "Model files (*.safetensors)")
        if f:
            self.set_model_path(f)

    def _folder(self) -> Path | None:
        t = self.folder_edit.text().strip()
        return Path(t) if t and Path(t).is_dir() else None

    def _model_path(self) -> Path | None:
        t = self.model_edit.text().strip()
        return Path(t) if t and Path(t).is_file() else None

    def _inputs_changed(self) -> None:
        """Hash the model off the GUI thread, then look for earlier results of this folder + model."""
        self.previous_banner.hide()
        self._previous = None
        self._model_sha = None
        self._check_token += 1
        folder, model = self._folder(), self._model_path()
        self._update_buttons()
        if folder is None or model is None:
            return
        # Bound methods as slots: Qt drops the connection if this dialog is gone first.
        self._thumb_runner.start_function(_sha_job, self._check_token, str(folder), str(model),
                                          returned=self._sha_ready)

    def _sha_ready(self, result: tuple[int, str, str | None, str | None]) -> None:
        token, folder_text, sha, error = result
        if token != self._check_token:
            return  # the user has chosen another folder or model since
        if sha is None:
            self.status_label.setText(f"The model file cannot be read ({error}).")
            self.previous_checked.emit(None)
            return
        folder = Path(folder_text)
        self._model_sha = sha
        prev = find_previous(folder, sha, self._results_root)
        self._previous = prev
        if prev is not None:
            state = "complete" if prev.complete else "interrupted; starting continues it"
            self.previous_label.setText(
                f"Previous results found for this folder and model ({prev.rows} files, {state}) — open them?")
            self.previous_banner.show()
        self._update_buttons()
        self.previous_checked.emit(prev)

    def open_previous(self) -> None:
        """Show the previous results of this folder and model in the worklist."""
        if self._previous is None:
            return
        try:
            rows = load_rows(self._previous.out_csv)
        except (OSError, ValueError) as exc:
            self.status_label.setText(f"The previous results cannot be read ({exc.__class__.__name__}).")
            return
        self._run_folder = self._folder()
        self._header = self._header_from_file()
        self._show_rows(rows)
        self.previous_banner.hide()
        s = summarise(rows)
        self.status_label.setText(f"Previous results: {s['files']} files, {s['above_threshold']} above threshold"
                                  f"{_cautioned(s)}.")

    def _header_from_file(self) -> JournalHeader | None:
        model = self._model_path()
        if model is None:
            return None
        try:
            from cxr_desktop.model.modelfile import read_card

            card = read_card(model)
        except Exception:
            return None
        return JournalHeader.from_card(card, self._model_sha or "")

    def _show_rows(self, rows: Sequence[ResultRow]) -> None:
        self.model.clear()
        self.model.set_rows(rows)
        self._refresh_label_filter()
        self._update_buttons()

    def _refresh_label_filter(self) -> None:
        labels = set(self._header.classes) if self._header else set()
        labels |= {r.label for r in self.model.rows() if r.label}
        have = {self.label_filter.itemData(i) for i in range(1, self.label_filter.count())}
        for lab in sorted(labels - have):
            self.label_filter.addItem(lab, lab)

    @property
    def run_folder(self) -> Path | None:
        """The folder whose rows the worklist shows (None before a run or previous results)."""
        return self._run_folder

    # -- running
    @property
    def running(self) -> bool:
        return self._worker is not None

    def start(self) -> bool:
        """Start screening the chosen folder; False (with a message) if inputs are missing."""
        if self.running:
            return False
        folder, model = self._folder(), self._model_path()
        if folder is None:
            self.status_label.setText("Choose an existing folder to screen.")
            return False
        if model is None:
            self.status_label.setText("Choose a model file (.safetensors).")
            return False
        self.model.clear()
        self.previous_banner.hide()
        self.last_error = None
        self.last_finished = None
        self._run_folder = folder
        self._cancel = threading.Event()
        self.progress.setRange(0, 0)  # busy until the file count is known
        self.status_label.setText("Starting…")
        self._worker = self._runner.start_generator(
            _screen_job, folder, model, self._results_root, self._factory, self._options_template,
            not self.fresh_check.isChecked(), self._cancel,
            yielded=self._on_event, errored=self._on_error, finished=self._on_worker_finished,
        )
        self._update_buttons()
        return True

    def cancel(self) -> None:
        """Stop after the current batch; finished rows are kept (and saved)."""
        if self._cancel is not None:
            self._cancel.set()
            self.status_label.setText("Cancelling after the current batch…")
            self.cancel_button.setEnabled(False)

    def _on_event(self, ev: Any) -> None:
        from cxr_desktop.screening.runner import RowsDone, ScreenFinished, ScreenNote, ScreenStarted, WalkProgress

        if isinstance(ev, _Loading):
            self.status_label.setText(ev.message)
        elif isinstance(ev, _EngineReady):
            self._header = ev.header
            self._device = ev.device
            self._refresh_label_filter()
        elif isinstance(ev, (_PriorRows, _FinalRows)):
            self.model.set_rows(ev.rows)
            self._refresh_label_filter()
        elif isinstance(ev, WalkProgress):
            self.status_label.setText(f"Looking for images… {ev.found} found")
        elif isinstance(ev, ScreenStarted):
            self.progress.setRange(0, max(1, ev.total))
            self.progress.setValue(ev.already_done)
            kept = f", {ev.already_done} kept from before" if ev.already_done else ""
            self.status_label.setText(f"{ev.total} files{kept}; screening on {ev.device}…")
        elif isinstance(ev, ScreenNote):
            self.status_label.setText(ev.message)
        elif isinstance(ev, RowsDone):
            self.model.add_rows(ev.rows)
            self.progress.setValue(ev.done)
            self.status_label.setText(f"{ev.done} / {ev.total} files · {ev.rate:.1f} img/s · "
                                      f"ETA {clock(ev.eta_s)}")
            if any(r.label for r in ev.rows):
                self._refresh_label_filter()
        elif isinstance(ev, ScreenFinished):
            self.last_finished = ev
            s = ev.summary
            verb = "Cancelled" if ev.cancelled else "Done"
            self.progress.setValue(self.progress.maximum() if not ev.cancelled else s["files"])
            self.status_label.setText(
                f"{verb}: {s['files']} files ({', '.join(f'{k} {v}' for k, v in sorted(s['status'].items()))}), "
                f"{s['above_threshold']} above threshold{_cautioned(s)}, {clock(ev.elapsed_s)} at "
                f"{ev.rate:.1f} img/s.")

    def _on_error(self, exc: Exception) -> None:
        from cxr_desktop.errors import CxrError

        if isinstance(exc, CxrError):
            msg = str(exc)
        else:
            msg = (f"Screening stopped: {exc.__class__.__name__}. Finished rows are kept; "
                   "start again to continue.")
        log.warning("screening failed: %s", exc.__class__.__name__)
        self.last_error = msg
        self.status_label.setText(msg)

    def _on_worker_finished(self) -> None:
        self._worker = None
        self._cancel = None
        end_busy(self.progress)
        self._update_buttons()
        self.run_finished.emit(self.last_finished)

    def _update_buttons(self) -> None:
        running = self.running
        self.start_button.setEnabled(not running and self._folder() is not None and self._model_path() is not None)
        self.cancel_button.setEnabled(running)
        has_rows = self.model.rowCount() > 0
        self.export_csv_button.setEnabled(has_rows and not running)
        self.export_json_button.setEnabled(has_rows and not running and self._header is not None)

    # -- worklist actions
    def _double_clicked(self, proxy_index: QModelIndex) -> None:
        if not proxy_index.isValid() or self._run_folder is None:
            return
        row = self.proxy.mapToSource(proxy_index).row()
        self.open_study_requested.emit(str(self._run_folder / self.model.row_at(row).path))

    def _want_thumbnail(self, relpath: str) -> None:
        if self._run_folder is None:
            return
        self._thumb_runner.start_function(_thumbnail_job, str(self._run_folder), relpath,
                                          returned=self._thumbnail_ready)

    def _thumbnail_ready(self, result: tuple[str, Any]) -> None:
        relpath, pixels = result
        image = None
        if pixels is not None:
            from cxr_desktop.gui.canvas import array_to_qimage

            image = array_to_qimage(pixels)
        self.model.set_thumbnail(relpath, image)

    def export_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the worklist (all rows, ranked by score) as CSV, atomically."""
        classes = self._header.classes if self._header else sorted({k for r in self.model.rows()
                                                                    for k in r.probabilities})
        write_csv(path, sorted_rows(self.model.rows()), classes)

    def export_json(self, path: str | os.PathLike[str]) -> None:
        """Write the worklist with the model and a summary as JSON, atomically."""
        if self._header is None:
            raise ValueError("no model information for these rows")
        write_json(path, sorted_rows(self.model.rows()), self._header)

    def _export_csv_clicked(self) -> None:
        f, _ = QFileDialog.getSaveFileName(self, "Export worklist as CSV", "screening.csv", "CSV files (*.csv)")
        if f:
            self._export(self.export_csv, f)

    def _export_json_clicked(self) -> None:
        f, _ = QFileDialog.getSaveFileName(self, "Export worklist as JSON", "screening.json", "JSON files (*.json)")
        if f:
            self._export(self.export_json, f)

    def _export(self, fn: Callable[[str], None], path: str) -> None:
        try:
            fn(path)
        except (OSError, ValueError) as exc:
            self.status_label.setText(f"Could not write {Path(path).name} ({exc.__class__.__name__}); "
                                      "choose another folder or free some space.")
        else:
            self.status_label.setText(f"Exported {Path(path).name}.")

    # -- closing
    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel a run and wait for the worker threads (for closing the app and tests)."""
        if self._cancel is not None:
            self._cancel.set()  # a clean stop: the run writes its CSV of finished rows
        ok = bool(self._runner.pool.waitForDone(timeout_ms)) or self._runner.shutdown(2000)
        return self._thumb_runner.shutdown(timeout_ms) and ok

    def _stop_run(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def done(self, result: int) -> None:  # Close / Esc: stop the run, keep finished rows
        self._stop_run()
        super().done(result)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - window closed
        self._stop_run()
        super().closeEvent(event)


def _default_engine_factory(model_path: Path) -> Any:
    from cxr_desktop.inference.engine import load_engine

    return load_engine(model_path)
