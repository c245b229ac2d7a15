"""The study list: every opened file with a thumbnail, grouped as radiologists expect.

DICOM files are grouped patient / study / series (the Patient ID is shown on
screen only, never logged), other files by folder. Unreadable files are listed
too, in red, with the image pipeline's reason and message. Scanning and
thumbnails run in a worker (:mod:`cxr_desktop.viewing.study_scan` generators), so a
large folder never blocks the window, and the first readable file can be shown
while the rest are still being found.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView, QLabel, QStyle, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget,
)

from cxr_desktop.gui.canvas import array_to_qimage
from cxr_desktop.viewing.study_scan import StudyEntry, Thumbnail, group_path, scan_paths, thumbnails
from cxr_desktop.gui.workers import WorkerRunner

ENTRY_ROLE = Qt.ItemDataRole.UserRole + 1
ICON_SIZE = QSize(56, 56)
_BAD = QColor(200, 40, 40)


def _scan_job(paths: list[str]):
    """Worker generator: entries first (fast), then thumbnails of the readable ones."""
    entries = []
    for entry in scan_paths(paths):
        entries.append(entry)
        yield entry
    yield from thumbnails(e.path for e in entries if e.ok)


class StudyListWidget(QWidget):
    """Tree of opened files; emits :attr:`entry_selected` when the user picks a readable one."""

    entry_selected = Signal(object)  # StudyEntry
    bad_entry_selected = Signal(object)  # StudyEntry (unreadable: the reason is shown)
    scan_finished = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.tree = QTreeWidget(self)
        self.tree.setHeaderHidden(True)
        self.tree.setIconSize(ICON_SIZE)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setUniformRowHeights(False)
        self.tree.setAnimated(False)
        self.tree.setAlternatingRowColors(False)
        self.tree.setExpandsOnDoubleClick(True)
        self.tree.currentItemChanged.connect(self._on_current_changed)
        self.summary = QLabel("No files open", self)
        self.summary.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.tree, 1)
        lay.addWidget(self.summary)

        self._groups: dict[str, QTreeWidgetItem] = {}
        self._items: dict[str, QTreeWidgetItem] = {}
        self._runner = WorkerRunner("study-scan", threads=1)
        self._scans = 0
        self._auto_select = False
        self._suppress_signal = False
        self.selection_is_auto = False  # the current entry was chosen by opening, not by the user

    # ------------------------------------------------------------ opening
    def add_paths(self, paths: Iterable[str], *, select_first: bool = True) -> None:
        """Scan ``paths`` in a worker; entries appear as they are found."""
        paths = [str(p) for p in paths]
        if not paths:
            return
        self._auto_select = select_first
        self._scans += 1
        self._update_summary()
        self._runner.start_generator(_scan_job, paths, yielded=self._on_yielded,
                                     finished=self._on_scan_finished, errored=self._on_scan_error)

    def clear(self) -> None:
        """Remove every entry (scans still running keep adding to the new list)."""
        self._suppress_signal = True
        try:
            self.tree.clear()
        finally:
            self._suppress_signal = False
        self._groups.clear()
        self._items.clear()
        self._update_summary()

    @property
    def scanning(self) -> bool:
        return self._scans > 0

    def _on_scan_finished(self) -> None:
        self._scans = max(0, self._scans - 1)
        self._update_summary()
        self.scan_finished.emit()

    def _on_scan_error(self, exc: Exception) -> None:  # a bug, not a bad file: keep what was found
        self.summary.setText(f"Scanning stopped early ({type(exc).__name__}); the files found are listed.")

    def _on_yielded(self, item: object) -> None:
        if isinstance(item, StudyEntry):
            self._add_entry(item)
        elif isinstance(item, Thumbnail):
            self._set_thumbnail(item)

    # ------------------------------------------------------------ entries
    def _group_item(self, entry: StudyEntry) -> QTreeWidgetItem:
        parent: QTreeWidgetItem | None = None
        for key, label in group_path(entry).levels:
            item = self._groups.get(key)
            if item is None:
                item = QTreeWidgetItem([label])
                item.setFlags(Qt.ItemFlag.ItemIsEnabled)
                font = item.font(0)
                font.setBold(True)
                item.setFont(0, font)
                if parent is None:
                    self.tree.addTopLevelItem(item)
                else:
                    parent.addChild(item)
                item.setExpanded(True)
                self._groups[key] = item
            parent = item
        assert parent is not None
        return parent

    def _add_entry(self, entry: StudyEntry) -> None:
        existing = self._items.get(entry.path)
        if existing is not None:  # opened again: just go there
            if self._auto_select and existing.data(0, ENTRY_ROLE).ok:
                self._auto_select = False
                self._select(existing, auto=True)
            return
        item = QTreeWidgetItem()
        item.setData(0, ENTRY_ROLE, entry)
        self._items[entry.path] = item
        self._style_item(item, entry)
        self._group_item(entry).addChild(item)
        self._update_summary()
        if entry.ok and self._auto_select:
            self._auto_select = False
            self._select(item, auto=True)

    def _style_item(self, item: QTreeWidgetItem, entry: StudyEntry) -> None:
        if entry.ok:
            info = entry.info
            size = f"{info.columns}x{info.rows}" if info is not None else ""
            frames = f", {entry.frames} frames" if entry.frames > 1 else ""
            item.setText(0, f"{entry.name}\n{size}{frames}")
            item.setToolTip(0, f"{entry.name}: {size}{frames}")
            item.setForeground(0, QBrush())
        else:
            item.setText(0, f"{entry.name}\nCannot open: {entry.reason}")
            item.setToolTip(0, entry.message or "")
            item.setForeground(0, QBrush(_BAD))
            item.setIcon(0, self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning))

    def _set_thumbnail(self, thumb: Thumbnail) -> None:
        item = self._items.get(thumb.path)
        if item is None:
            return
        entry: StudyEntry = item.data(0, ENTRY_ROLE)
        if thumb.error is not None:
            self.mark_failed(entry.path, thumb.error)
            return
        if thumb.pixels is not None:
            item.setIcon(0, QIcon(QPixmap.fromImage(array_to_qimage(np.ascontiguousarray(thumb.pixels)))))

    def mark_failed(self, path: str, error) -> None:
        """Show that ``path`` could not be decoded (reason from the pipeline)."""
        item = self._items.get(path)
        if item is None:
            return
        entry: StudyEntry = item.data(0, ENTRY_ROLE)
        entry.mark_failed(error)
        item.setData(0, ENTRY_ROLE, entry)
        self._style_item(item, entry)
        self._update_summary()

    def _update_summary(self) -> None:
        entries = self.entries()
        bad = sum(1 for e in entries if not e.ok)
        text = f"{len(entries)} file(s)" if entries else "No files open"
        if bad:
            text += f", {bad} cannot be opened (red; hover for the reason)"
        if self._scans:
            text += " - scanning..."
        self.summary.setText(text)

    # ------------------------------------------------------------ navigation
    def entries(self) -> list[StudyEntry]:
        """Every entry in display order."""
        return [item.data(0, ENTRY_ROLE) for item in self._leaf_items()]

    def _leaf_items(self) -> list[QTreeWidgetItem]:
        out: list[QTreeWidgetItem] = []

        def walk(item: QTreeWidgetItem) -> None:
            if item.data(0, ENTRY_ROLE) is not None:
                out.append(item)
            for i in range(item.childCount()):
                walk(item.child(i))

        for i in range(self.tree.topLevelItemCount()):
            walk(self.tree.topLevelItem(i))
        return out

    def current_entry(self) -> StudyEntry | None:
        item = self.tree.currentItem()
        return item.data(0, ENTRY_ROLE) if item is not None else None

    def _select(self, item: QTreeWidgetItem, *, auto: bool = False) -> None:
        self.selection_is_auto = auto
        try:
            self.tree.setCurrentItem(item)
        finally:
            self.selection_is_auto = auto

    def select_path(self, path: str) -> bool:
        item = self._items.get(path)
        if item is None:
            return False
        self._select(item)
        return True

    def select_readable_after(self, path: str, *, auto: bool = True) -> bool:
        """Select the first readable entry after ``path`` (an opened file that turned out unreadable)."""
        leaves = self._leaf_items()
        start = next((i for i, it in enumerate(leaves) if it.data(0, ENTRY_ROLE).path == path), -1)
        for item in leaves[start + 1:]:
            if item.data(0, ENTRY_ROLE).ok:
                self._select(item, auto=auto)
                return True
        if self._scans:  # more files may still come: select the next readable one found
            self._auto_select = True
        return False

    def step(self, delta: int) -> bool:
        """Select the next (+1) or previous (-1) readable entry; False at the ends."""
        leaves = [it for it in self._leaf_items() if it.data(0, ENTRY_ROLE).ok]
        if not leaves:
            return False
        cur = self.tree.currentItem()
        if cur in leaves:
            i = leaves.index(cur) + delta
        else:
            i = 0 if delta > 0 else len(leaves) - 1
        if not 0 <= i < len(leaves):
            return False
        self._select(leaves[i])
        return True

    def _on_current_changed(self, current: QTreeWidgetItem | None, _previous) -> None:
        if self._suppress_signal or current is None:
            return
        entry = current.data(0, ENTRY_ROLE)
        if entry is None:
            return
        if entry.ok:
            self.entry_selected.emit(entry)
        else:
            self.bad_entry_selected.emit(entry)

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        return self._runner.shutdown(timeout_ms)
