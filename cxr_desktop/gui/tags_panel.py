"""Searchable DICOM tag list for the image on screen (patient data shown here only, never logged).

The file's rows are built once per file: stepping through the frames of a multi-frame
file (cine) only updates the "current frame" rows at the top, the frame's Per-frame
Functional Groups item, in place; while the panel is hidden even that waits until it is shown.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QHeaderView, QLabel, QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget,
)

COLUMNS = ("Tag", "Name", "VR", "Value")
NAME_SHARE = 0.4  # the Name column takes at most this share of the width left after Tag and VR
MIN_VALUE_WIDTH = 80  # the Value column keeps at least this many pixels on screen (it is what is read)


class TagsPanel(QWidget):
    """Tag / name / VR / value rows with a filter box matching any column (case-insensitive)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search tags (e.g. 0028, Window, CR)")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.apply_filter)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        header = self.tree.header()
        header.setStretchLastSection(True)  # Value takes whatever the other columns leave
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.tree.viewport().installEventFilter(self)  # columns refit when the dock is resized
        self.note = QLabel("No DICOM file shown.")
        self.note.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.search)
        lay.addWidget(self.tree, 1)
        lay.addWidget(self.note)
        self._rows: list[tuple[str, str, str, str]] | None = None  # the file's rows on show
        self._note = ""
        self._frame_items: list[QTreeWidgetItem] = []  # heading + rows of the current frame, at the top
        self._frame_shown: tuple[int, int, tuple] | None = None  # (frame, count, rows) on screen
        self._frame_pending: tuple[int, int, tuple] | None = None  # what to show once the panel is visible
        self.rebuilds = 0  # full rebuilds of the list (a frame change of the same file makes none)

    @staticmethod
    def _item(row: tuple[str, ...]) -> QTreeWidgetItem:
        item = QTreeWidgetItem([str(c) for c in row])
        item.setToolTip(1, str(row[1]))
        item.setToolTip(3, str(row[3]))  # a long value is cut on screen: whole in the tooltip
        return item

    def set_tags(self, rows: list[tuple[str, str, str, str]] | None, note: str = "", *,
                 frame: tuple[int, int] | None = None,
                 frame_rows: list[tuple[str, str, str, str]] | None = None) -> None:
        """Show ``rows``; ``None`` clears the list and shows ``note`` instead.

        ``frame`` = (index, count) and ``frame_rows`` (that frame's per-frame functional
        groups) go in a section at the top. The same ``rows`` again (another frame of the
        same file) rebuild nothing: only the frame section is updated.
        """
        if rows and rows == self._rows and (note or "") == self._note:
            self.set_frame(frame, frame_rows)
            return
        self.rebuilds += 1
        self.tree.setUpdatesEnabled(False)
        try:
            self.tree.clear()
            self._frame_items = []
            self._frame_shown = None
            if rows:
                self.tree.addTopLevelItems([self._item(row) for row in rows])
        finally:
            self.tree.setUpdatesEnabled(True)
        self._rows = list(rows) if rows else None
        self._note = note or ""
        self.note.setText(note or (f"{len(rows)} elements" if rows else "No DICOM tags."))
        self._frame_pending = None
        self.set_frame(frame, frame_rows)
        self.apply_filter(self.search.text())
        self.fit_columns()

    def set_frame(self, frame: tuple[int, int] | None, rows: list[tuple[str, str, str, str]] | None) -> None:
        """Show the values of frame ``frame`` = (index, count) at the top (nothing for a one-frame file)."""
        want = (int(frame[0]), int(frame[1]), tuple(rows or ())) if frame and frame[1] > 1 and rows else None
        if want == self._frame_shown:
            self._frame_pending = None
            return
        if not self.isVisible():  # a hidden tab: update when it is shown (cine stays cheap)
            self._frame_pending = want if want is not None else (-1, 0, ())
            return
        self._frame_pending = None
        self._apply_frame(want)

    def _apply_frame(self, want: tuple[int, int, tuple] | None) -> None:
        tree = self.tree
        if want is None:
            for item in self._frame_items:
                tree.takeTopLevelItem(tree.indexOfTopLevelItem(item))
            self._frame_items = []
            self._frame_shown = None
            return
        index, count, rows = want
        heading = (f"Frame {index + 1} of {count}: per-frame functional groups", "", "", "")
        wanted = [heading, *rows]
        same_shape = len(wanted) == len(self._frame_items) and all(  # the heading's text changes anyway
            item.text(0) == r[0] and item.text(1) == r[1] for item, r in zip(self._frame_items[1:], rows))
        if same_shape:  # usual case: the same elements, other values - change only what differs
            self._frame_items[0].setText(0, heading[0])
            for item, r in zip(self._frame_items[1:], rows):
                for c in (1, 3):
                    if item.text(c) != r[c]:
                        item.setText(c, str(r[c]))
                        item.setToolTip(c, str(r[c]))
        else:
            tree.setUpdatesEnabled(False)
            try:
                for item in self._frame_items:
                    tree.takeTopLevelItem(tree.indexOfTopLevelItem(item))
                self._frame_items = [self._item(r) for r in wanted]
                bold = QFont(tree.font())
                bold.setBold(True)
                self._frame_items[0].setFont(0, bold)
                tree.insertTopLevelItems(0, self._frame_items)
                self._frame_items[0].setFirstColumnSpanned(True)  # the heading reads across the columns
            finally:
                tree.setUpdatesEnabled(True)
        self._frame_shown = want
        needle = self.search.text().strip().lower()
        if needle:
            for item in self._frame_items:
                item.setHidden(not any(needle in item.text(c).lower() for c in range(len(COLUMNS))))

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        if self._frame_pending is not None:
            pending, self._frame_pending = self._frame_pending, None
            self._apply_frame(None if pending[1] == 0 else pending)

    def fit_columns(self) -> None:
        """Tag and VR to their contents, Name capped, Value the rest: Value never leaves the panel's edge."""
        tree = self.tree
        width = tree.viewport().width()
        for i in (0, 2):
            tree.resizeColumnToContents(i)
        tag_w, vr_w = tree.columnWidth(0), tree.columnWidth(2)
        tree.resizeColumnToContents(1)
        room = max(0, width - tag_w - vr_w)
        name_w = min(tree.columnWidth(1), max(60, int(NAME_SHARE * room), room - MIN_VALUE_WIDTH))
        tree.setColumnWidth(1, max(40, name_w))

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() == QEvent.Type.Resize and obj is self.tree.viewport():
            self.fit_columns()
        return False

    def apply_filter(self, text: str) -> int:
        """Hide rows that do not contain ``text``; returns how many rows stay visible."""
        needle = text.strip().lower()
        shown = 0
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            match = not needle or any(needle in item.text(c).lower() for c in range(len(COLUMNS)))
            item.setHidden(not match)
            shown += int(match)
        return shown

    def visible_rows(self) -> list[tuple[str, ...]]:
        out = []
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if not item.isHidden():
                out.append(tuple(item.text(c) for c in range(len(COLUMNS))))
        return out
