"""Drawing and editing measurements on the canvas (the geometry is in :mod:`cxr_desktop.measure`).

A :class:`MeasureLayer` belongs to one :class:`~cxr_desktop.gui.canvas.ImageCanvas`. It holds
the measurements of the frame on screen, draws them in viewport coordinates (lines one
pixel wide and labels upright and legible at any zoom, rotation or flip) and paints the
same picture onto an exported image. Mouse: with a tool chosen, left-click places points
(or press-drag-release for two-point tools; an angle takes three clicks: arm, vertex,
arm); with or without a tool, dragging a handle moves that point, dragging a line or
ROI moves it whole; a right-click on a measurement offers Delete / Edit text; the Delete
key removes the selected one. Every change is saved at once in the
:class:`~cxr_desktop.measure.MeasurementStore` (session + JSON in the user data folder).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QInputDialog, QMenu

from cxr_desktop.measure import (
    IMAGER_CAVEAT, POINTS_NEEDED, Calibration, Measurement, MeasurementStore, Point, calibration_for,
    default_folder, describe_all, value_text,
)

if TYPE_CHECKING:
    from cxr_desktop.gui.canvas import ImageCanvas
    from cxr_desktop.imaging.types import StudyImage

TOOLS = ("distance", "angle", "rectangle", "ellipse", "arrow", "text")
TOOL_NAMES = {"distance": "Distance", "angle": "Angle", "rectangle": "Rectangle ROI", "ellipse": "Ellipse ROI",
              "arrow": "Arrow", "text": "Text"}
COLOUR = QColor(255, 214, 10)
SELECTED = QColor(80, 220, 255)
HANDLE_PX = 7.0  # grab distance and handle size on screen
CLICK_PX = 4.0  # a press and release closer than this is a click, not a drag

_shared_store: MeasurementStore | None = None


def shared_store() -> MeasurementStore:
    """The store the canvases use unless given one (the user data folder's ``measurements/``)."""
    global _shared_store
    folder = default_folder()
    if _shared_store is None or _shared_store.folder != folder:
        _shared_store = MeasurementStore(folder)
    return _shared_store


def _seg_distance(p: QPointF, a: QPointF, b: QPointF) -> float:
    dx, dy = b.x() - a.x(), b.y() - a.y()
    n = dx * dx + dy * dy
    t = 0.0 if n == 0 else max(0.0, min(1.0, ((p.x() - a.x()) * dx + (p.y() - a.y()) * dy) / n))
    return math.hypot(p.x() - (a.x() + t * dx), p.y() - (a.y() + t * dy))


class MeasureLayer(QObject):
    """The measurements of the image on one canvas: state, mouse editing and painting."""

    changed = Signal()  # added, moved, edited or deleted (and when the image changes)

    def __init__(self, canvas: ImageCanvas):
        super().__init__(canvas)
        self.canvas = canvas
        self.store: MeasurementStore | None = None  # None: :func:`shared_store` when first needed
        self.items: list[Measurement] = []
        self.tool: str | None = None  # None: pan / select
        self.selected: str | None = None
        self._image: StudyImage | None = None
        self._cal = Calibration()
        self._placing: Measurement | None = None  # being placed; its last point follows the mouse
        self._press_at: QPointF | None = None
        self._drag: tuple[str, int | None, Point] | None = None  # (id, point index or None = whole, last pos)
        self._right_at: tuple[QPointF, str] | None = None
        self.show_selection = True  # False while an export is drawn (no selection colour or handles)
        # id -> ((kind, points, text, units), value text): ROI statistics are not recomputed on every paint
        self._values: dict[str, tuple[tuple[Any, ...], str]] = {}

    # ------------------------------------------------------------ state
    def _store(self) -> MeasurementStore:
        if self.store is None:
            self.store = shared_store()
        return self.store

    def set_image(self, image: StudyImage | None) -> None:
        """Show the measurements kept for ``image`` (its file and frame)."""
        self._placing = None
        self._drag = None
        self.selected = None
        self._image = image
        self._values = {}
        if image is None:
            self.items = []
            self._cal = Calibration()
        else:
            self._cal = calibration_for(image.metadata, image.shape, image.full_shape)
            self.items = self._store().get(image.path, image.frame_index, image.shape) if image.path else []
        self.changed.emit()

    @property
    def calibration(self) -> Calibration:
        return self._cal

    def set_tool(self, tool: str | None) -> None:
        """Choose the tool for new measurements (None: back to pan / select)."""
        if tool is not None and tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}")
        self.tool = tool
        self._placing = None
        self.changed.emit()

    def add(self, m: Measurement) -> Measurement:
        """Add a finished measurement (also how the text tool and tests add one)."""
        self.items.append(m)
        self.selected = m.id
        self._commit()
        return m

    def find(self, mid: str | None) -> Measurement | None:
        return next((m for m in self.items if m.id == mid), None)

    def delete(self, mid: str | None) -> bool:
        before = len(self.items)
        self.items = [m for m in self.items if m.id != mid]
        if len(self.items) == before:
            return False
        if self.selected == mid:
            self.selected = None
        self._commit()
        return True

    def delete_selected(self) -> bool:
        """Remove the selected measurement (the Delete key); False when none is selected."""
        if self._placing is not None:
            self._placing = None
            self.changed.emit()
            return True
        return self.delete(self.selected)

    def move_point(self, mid: str, index: int, to: Point) -> None:
        """Move one point of a measurement (what dragging its handle does)."""
        m = self.find(mid)
        if m is not None and 0 <= index < len(m.points):
            m.points[index] = (float(to[0]), float(to[1]))
            self._commit()

    def set_text(self, mid: str, text: str) -> None:
        m = self.find(mid)
        if m is not None:
            m.text = text
            self._commit()

    def _commit(self) -> None:
        im = self._image
        if im is not None and im.path:
            if not self._store().put(im.path, im.frame_index, self.items, im.shape):
                self.canvas.measure_save_failed.emit(self._store().last_error)
        self.changed.emit()

    def value(self, m: Measurement) -> str:
        key = (m.kind, tuple(m.points), m.text, self.canvas.units)
        kept = self._values.get(m.id)
        if kept is not None and kept[0] == key:
            return kept[1]
        im = self._image
        text = value_text(m, self._cal, im.pixels if im is not None else None, self.canvas.units,
                          im.padding_mask if im is not None else None)
        self._values[m.id] = (key, text)
        return text

    def descriptions(self) -> list[str]:
        """One line per measurement on screen (for the case report), with the calibration caveat."""
        im = self._image
        return describe_all(self.items, self._cal, im.pixels if im is not None else None, self.canvas.units,
                            im.padding_mask if im is not None else None)

    def has_lengths(self) -> bool:
        return any(m.kind in ("distance", "rectangle", "ellipse") for m in self.items)

    # ------------------------------------------------------------ mouse (viewport coordinates)
    def _img(self, pos: QPointF) -> Point:
        p = self.canvas.image_point(pos.toPoint())
        return (p.x(), p.y())

    def _vp(self, p: Point) -> QPointF:
        return QPointF(self.canvas.viewport_point(QPointF(p[0], p[1])))

    def hit(self, pos: QPointF) -> tuple[Measurement, int | None] | None:
        """The measurement under ``pos``: (it, handle index) or (it, None) for its body."""
        for m in reversed(self.items):
            for i, p in enumerate(m.points):
                q = self._vp(p)
                if math.hypot(q.x() - pos.x(), q.y() - pos.y()) <= HANDLE_PX:
                    return m, i
        for m in reversed(self.items):
            pts = [self._vp(p) for p in m.points]
            if m.kind in ("distance", "arrow") and len(pts) >= 2 and _seg_distance(pos, pts[0], pts[1]) <= 5:
                return m, None
            if m.kind == "angle" and len(pts) >= 3 and min(_seg_distance(pos, pts[1], pts[0]),
                                                           _seg_distance(pos, pts[1], pts[2])) <= 5:
                return m, None
            if m.kind in ("rectangle", "ellipse") and len(pts) >= 2:
                if QRectF(pts[0], pts[1]).normalized().adjusted(-4, -4, 4, 4).contains(pos):
                    return m, None
            if m.kind == "text" and pts and QRectF(pts[0].x() - 4, pts[0].y() - 18, 120, 24).contains(pos):
                return m, None
        return None

    def mouse_press(self, pos: QPointF, button: Qt.MouseButton) -> bool:
        """Handle a press; True when it was for a measurement (the canvas then does not pan)."""
        if self._image is None:
            return False
        if button == Qt.MouseButton.RightButton:
            found = self.hit(pos)
            self._right_at = (pos, found[0].id) if found else None
            return False  # a right-drag is still window/level
        if button != Qt.MouseButton.LeftButton:
            return False
        self._press_at = pos
        p = self._img(pos)
        if self._placing is not None:
            self._fix_point(p)
            return True
        found = self.hit(pos)
        if found is not None:
            m, index = found
            self.selected = m.id
            self._drag = (m.id, index, p)
            self.changed.emit()
            return True
        if self.tool is None:
            if self.selected is not None:
                self.selected = None
                self.changed.emit()
            return False
        if self.tool == "text":
            self._new_text(p)
            return True
        self._placing = Measurement(self.tool, [p, p])
        self.selected = self._placing.id
        self.changed.emit()
        return True

    def mouse_move(self, pos: QPointF) -> bool:
        if self._placing is not None:
            self._placing.points[-1] = self._img(pos)
            self.changed.emit()
            return True
        if self._drag is not None:
            mid, index, last = self._drag
            m = self.find(mid)
            if m is None:
                self._drag = None
                return False
            p = self._img(pos)
            if index is None:
                dx, dy = p[0] - last[0], p[1] - last[1]
                m.points = [(x + dx, y + dy) for x, y in m.points]
            else:
                m.points[index] = p
            self._drag = (mid, index, p)
            self.changed.emit()
            return True
        return False

    def mouse_release(self, pos: QPointF, button: Qt.MouseButton) -> bool:
        if button == Qt.MouseButton.RightButton:
            right, self._right_at = self._right_at, None
            if right is not None and math.hypot(pos.x() - right[0].x(), pos.y() - right[0].y()) < CLICK_PX:
                self.selected = right[1]
                self.changed.emit()
                menu = self.context_menu(right[1])
                if menu is not None:
                    menu.popup(self.canvas.viewport().mapToGlobal(pos.toPoint()))
                return True
            return False
        if button != Qt.MouseButton.LeftButton:
            return False
        press, self._press_at = self._press_at, None
        if self._drag is not None:
            self._drag = None
            self._commit()
            return True
        if self._placing is not None:
            dragged = press is not None and math.hypot(pos.x() - press.x(), pos.y() - press.y()) >= CLICK_PX
            if dragged:  # press-drag-release: the release places the point
                self._fix_point(self._img(pos))
            return True
        return False

    def _fix_point(self, p: Point) -> None:
        m = self._placing
        assert m is not None
        m.points[-1] = p
        if len(m.points) >= POINTS_NEEDED[m.kind]:
            self._placing = None
            self.add(m)
        else:
            m.points.append(p)
            self.changed.emit()

    def _new_text(self, p: Point) -> None:
        text, ok = QInputDialog.getText(self.canvas, "Text annotation", "Text:")
        if ok and text.strip():
            self.add(Measurement("text", [p], text.strip()))

    def context_menu(self, mid: str) -> QMenu | None:
        """Delete (and Edit text for text and arrows) for one measurement."""
        m = self.find(mid)
        if m is None:
            return None
        menu = QMenu(self.canvas)
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        act = menu.addAction("Delete measurement")
        act.triggered.connect(lambda _c=False, i=mid: self.delete(i))
        if m.kind in ("text", "arrow"):
            edit = menu.addAction("Edit text...")
            edit.triggered.connect(lambda _c=False, i=mid: self._edit_text(i))
        return menu

    def _edit_text(self, mid: str) -> None:
        m = self.find(mid)
        if m is None:
            return
        text, ok = QInputDialog.getText(self.canvas, "Edit text", "Text:", text=m.text)
        if ok:
            self.set_text(mid, text.strip())

    # ------------------------------------------------------------ painting
    def paint(self, painter: QPainter, to_out: Callable[[Point], QPointF], *, scale: float = 1.0,
              bounds: QRectF | None = None) -> None:
        """Draw every measurement, mapping image points with ``to_out`` (viewport or export pixels).

        ``bounds``: the picture's rectangle, for the calibration footnote at its bottom.
        """
        items = list(self.items) + ([self._placing] if self._placing is not None else [])
        if not items:
            return
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        font = QFont(painter.font())
        font.setPixelSize(max(9, int(round(12 * scale))))
        painter.setFont(font)
        selected = self.selected if self.show_selection else None
        for m in items:
            colour = SELECTED if m.id == selected else COLOUR
            self._paint_one(painter, m, [to_out(p) for p in m.points], colour, scale, m.id == selected)
        if bounds is not None and self._cal.source == "imager_pixel_spacing" and self.has_lengths():
            self._label(painter, QPointF(bounds.left() + 8 * scale, bounds.bottom() - 8 * scale),
                        f"* {IMAGER_CAVEAT}", COLOUR, anchor="bottom-left")
        painter.restore()

    def _paint_one(self, painter: QPainter, m: Measurement, pts: list[QPointF], colour: QColor,
                   scale: float, selected: bool) -> None:
        pen = QPen(colour, max(1.0, 1.5 * scale))
        pen.setCosmetic(True)
        shadow = QPen(QColor(0, 0, 0, 200), max(1.0, 1.5 * scale) + 2)
        shadow.setCosmetic(True)
        text = self.value(m)
        star = "*" if self._cal.source == "imager_pixel_spacing" and m.kind in ("distance", "rectangle",
                                                                                  "ellipse") else ""

        def stroke(draw: Callable[[], None]) -> None:
            for p in (shadow, pen):
                painter.setPen(p)
                painter.setBrush(Qt.BrushStyle.NoBrush)
                draw()

        if m.kind in ("distance", "arrow") and len(pts) >= 2:
            stroke(lambda: painter.drawLine(pts[0], pts[1]))
            if m.kind == "arrow":
                head = self._arrow_head(pts[1], pts[0], 12 * scale)
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(QBrush(colour))
                painter.drawPolygon(head)
                if m.text:
                    self._label(painter, pts[1] + QPointF(6 * scale, 0), m.text, colour)
            else:
                self._label(painter, pts[1] + QPointF(8 * scale, -8 * scale), text + star, colour)
        elif m.kind == "angle" and len(pts) >= 2:
            poly = QPolygonF(pts[:3])
            stroke(lambda: painter.drawPolyline(poly))
            if len(pts) >= 3 and text:
                self._label(painter, pts[1] + QPointF(10 * scale, 10 * scale), text, colour)
        elif m.kind in ("rectangle", "ellipse") and len(pts) >= 2:
            rect = QRectF(pts[0], pts[1]).normalized()
            stroke(lambda: painter.drawRect(rect) if m.kind == "rectangle" else painter.drawEllipse(rect))
            if text:  # two lines on the image: mean/SD, then count and area
                self._label(painter, QPointF(rect.left(), rect.bottom() + 6 * scale),
                            text.replace(" (n ", star + "\nn ").rstrip(")"), colour)
        elif m.kind == "text" and pts:
            self._label(painter, pts[0], m.text, colour, anchor="bottom-left")
        if selected or m is self._placing:
            painter.setPen(QPen(QColor(0, 0, 0), 1))
            painter.setBrush(QBrush(colour))
            h = HANDLE_PX * scale * 0.8
            for q in pts:
                painter.drawRect(QRectF(q.x() - h / 2, q.y() - h / 2, h, h))

    @staticmethod
    def _arrow_head(tip: QPointF, tail: QPointF, size: float) -> QPolygonF:
        ang = math.atan2(tip.y() - tail.y(), tip.x() - tail.x())
        left = QPointF(tip.x() - size * math.cos(ang - 0.4), tip.y() - size * math.sin(ang - 0.4))
        right = QPointF(tip.x() - size * math.cos(ang + 0.4), tip.y() - size * math.sin(ang + 0.4))
        return QPolygonF([tip, left, right])

    @staticmethod
    def _label(painter: QPainter, at: QPointF, text: str, colour: QColor, anchor: str = "top-left") -> None:
        if not text:
            return
        fm = QFontMetricsF(painter.font())
        lines = text.split("\n")
        w, h = max(fm.horizontalAdvance(t) for t in lines) + 8, fm.height() * len(lines) + 4
        top = at.y() - h if anchor == "bottom-left" else at.y()
        box = QRectF(at.x(), top, w, h)
        path = QPainterPath()
        path.addRoundedRect(box, 3, 3)
        painter.fillPath(path, QColor(0, 0, 0, 170))
        painter.setPen(colour)
        painter.drawText(box, int(Qt.AlignmentFlag.AlignCenter), text)
