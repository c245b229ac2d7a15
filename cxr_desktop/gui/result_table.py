"""The table model both worklists (screening dialog, reading-room dock) build on.

Rows are screening :class:`ResultRow` s with fixed ``COLUMNS``; a row with a caution is shaded amber and its
tooltip gives the reason, so an uncertain image is never a plain row among the scored ones.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor

from cxr_desktop.screening.results import ResultRow

CAUTION_BACKGROUND = QColor(255, 170, 0, 70)  # translucent amber: readable on light and dark themes


class ResultRowsModel(QAbstractTableModel):
    """Rows in ``self._rows``, headers from ``COLUMNS``; subclasses give ``_display`` and their own roles."""

    COLUMNS: tuple[str, ...] = ()
    COL_SCORE: int  # right-aligned
    _rows: list[ResultRow]

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(r, col)
        if role in (Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.BackgroundRole):
            return self.caution_data(r, role)
        if role == Qt.ItemDataRole.TextAlignmentRole and col == self.COL_SCORE:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return self._role_data(r, col, role)

    def _display(self, r: ResultRow, col: int) -> str | None:
        """The text of column ``col`` for row ``r``."""
        raise NotImplementedError

    def _role_data(self, r: ResultRow, col: int, role: int) -> Any:
        """The subclass's own roles (sort key, thumbnail, font, ...); None for the rest."""
        return None

    @staticmethod
    def caution_data(r: ResultRow, role: int) -> Any:
        """The tooltip (caution message and detail, else detail or path) and the caution shading; else None."""
        if role == Qt.ItemDataRole.ToolTipRole:
            if r.caution is not None:
                return "\n".join(t for t in (r.caution.message, r.detail) if t)
            return r.detail or r.path
        if role == Qt.ItemDataRole.BackgroundRole and r.caution is not None:
            return QBrush(CAUTION_BACKGROUND)
        return None
