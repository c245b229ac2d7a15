"""Searchable DICOM tag list for the image on screen (patient data shown here only, never logged)."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject
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

    def set_tags(self, rows: list[tuple[str, str, str, str]] | None, note: str = "") -> None:
        """Show ``rows``; ``None`` clears the list and shows ``note`` instead."""
        self.tree.setUpdatesEnabled(False)
        try:
            self.tree.clear()
            if rows:
                items = []
                for row in rows:
                    item = QTreeWidgetItem([str(c) for c in row])
                    item.setToolTip(1, str(row[1]))
                    item.setToolTip(3, str(row[3]))  # a long value is cut on screen: whole in the tooltip
                    items.append(item)
                self.tree.addTopLevelItems(items)
        finally:
            self.tree.setUpdatesEnabled(True)
        self.note.setText(note or (f"{len(rows)} elements" if rows else "No DICOM tags."))
        self.apply_filter(self.search.text())
        self.fit_columns()

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
