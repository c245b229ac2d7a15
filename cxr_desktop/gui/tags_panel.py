"""Searchable DICOM tag list for the image on screen (patient data shown here only, never logged)."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

COLUMNS = ("Tag", "Name", "VR", "Value")


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
                self.tree.addTopLevelItems([QTreeWidgetItem([str(c) for c in row]) for row in rows])
                for i in range(3):
                    self.tree.resizeColumnToContents(i)
        finally:
            self.tree.setUpdatesEnabled(True)
        self.note.setText(note or (f"{len(rows)} elements" if rows else "No DICOM tags."))
        self.apply_filter(self.search.text())

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
