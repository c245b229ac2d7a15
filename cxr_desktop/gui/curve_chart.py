"""A small line chart painted with QPainter: named series of (x, y) points, optional markers and
vertical lines. The training wizard draws its loss, AUC and ROC curves with it (no plotting library
in the GUI thread)."""

from __future__ import annotations

import math
from typing import Any, Sequence

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QWidget


class CurveChart(QWidget):
    """Small line chart painted with QPainter: named series of (x, y) points."""

    COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")

    def __init__(self, title: str, *, y_range: tuple[float, float] | None = None, parent: QWidget | None = None,
                 diagonal: bool = False):
        super().__init__(parent)
        self.title = title
        self.y_range = y_range
        self.diagonal = diagonal
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.markers: list[tuple[float, float, str]] = []
        self.vlines: list[float] = []
        self.setMinimumSize(260, 180)

    def set_series(self, name: str, points: Sequence[tuple[float, float]]) -> None:
        self.series[name] = [(float(x), float(y)) for x, y in points if math.isfinite(y)]
        self.update()

    def add_point(self, name: str, x: float, y: float) -> None:
        if math.isfinite(y):
            self.series.setdefault(name, []).append((float(x), float(y)))
            self.update()

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = QRectF(self.rect()).adjusted(40, 22, -10, -28)
        p.fillRect(self.rect(), self.palette().base())
        p.setPen(self.palette().text().color())
        p.drawText(QRectF(0, 2, self.width(), 18), Qt.AlignmentFlag.AlignCenter, self.title)
        pts = [pt for s in self.series.values() for pt in s]
        xs = [x for x, _ in pts] or [0.0, 1.0]
        ys = [y for _, y in pts] or [0.0, 1.0]
        x0, x1 = min(xs), max(xs)
        if x1 - x0 < 1e-9:
            x0, x1 = x0 - 0.5, x1 + 0.5
        y0, y1 = self.y_range if self.y_range else (min(ys), max(ys))
        if y1 - y0 < 1e-9:
            y0, y1 = y0 - 0.5, y1 + 0.5

        def at(x: float, y: float) -> QPointF:
            return QPointF(r.left() + (x - x0) / (x1 - x0) * r.width(), r.bottom() - (y - y0) / (y1 - y0) * r.height())

        p.setPen(QPen(QColor("#999999"), 1))
        p.drawRect(r)
        p.drawText(QRectF(0, r.top() - 6, 38, 14), Qt.AlignmentFlag.AlignRight, f"{y1:.3g}")
        p.drawText(QRectF(0, r.bottom() - 8, 38, 14), Qt.AlignmentFlag.AlignRight, f"{y0:.3g}")
        p.drawText(QRectF(r.left(), r.bottom() + 2, 60, 14), Qt.AlignmentFlag.AlignLeft, f"{x0:.3g}")
        p.drawText(QRectF(r.right() - 60, r.bottom() + 2, 60, 14), Qt.AlignmentFlag.AlignRight, f"{x1:.3g}")
        if self.diagonal:
            p.setPen(QPen(QColor("#bbbbbb"), 1, Qt.PenStyle.DotLine))
            p.drawLine(at(x0, y0), at(x1, y1))
        for v in self.vlines:
            p.setPen(QPen(QColor("#888888"), 1, Qt.PenStyle.DashLine))
            p.drawLine(at(v, y0), at(v, y1))
        legend_y = r.top() + 4
        for i, (name, s) in enumerate(self.series.items()):
            colour = QColor(self.COLOURS[i % len(self.COLOURS)])
            p.setPen(QPen(colour, 2))
            if len(s) == 1:
                p.drawEllipse(at(*s[0]), 3, 3)
            elif s:
                path = QPainterPath(at(*s[0]))
                for x, y in s[1:]:
                    path.lineTo(at(x, y))
                p.drawPath(path)
            p.drawText(QRectF(r.left() + 6, legend_y, r.width() - 12, 14), Qt.AlignmentFlag.AlignLeft, name)
            legend_y += 14
        for x, y, label in self.markers:
            p.setPen(QPen(QColor("#d62728"), 2))
            p.drawEllipse(at(x, y), 5, 5)
            p.drawText(at(x, y) + QPointF(8, 12), label)
        p.end()
