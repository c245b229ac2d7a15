"""The image canvas: a QGraphicsView showing one frame and its Grad-CAM layer.

Interaction (as in the PACS viewers radiologists use): wheel zooms around the
cursor, left-drag pans, right-drag sets window/level (horizontal = width,
vertical = level), fit / 1:1, invert, rotate and flip for viewing only. The
heatmap layer is a child of the image item, so it stays aligned under zoom, pan,
rotation and flips; window/level only changes the image layer below it.

Display values come from :mod:`cxr_desktop.imaging.display` (the same mapping
the model's preprocessing uses), through a look-up table when the pixel data are
integers, so dragging the window on a large radiograph stays smooth. Window
presets are described in :mod:`cxr_desktop.viewing.window_presets`.

Measurements and annotations (:mod:`cxr_desktop.gui.measure_tools`) and the
four-corner overlay (:mod:`cxr_desktop.gui.four_corner`) are drawn in viewport
coordinates over the image, so they stay thin and upright at any zoom or rotation.
With a modifier (Shift or Ctrl), or with :attr:`ImageCanvas.wheel_scrolls_frames`
set, the mouse wheel asks for frame steps (``frame_scroll_requested``) instead of
zooming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QPoint, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QImage, QPainter, QPixmap, QTransform
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPixmapItem, QGraphicsScene, QGraphicsView, QWidget

if TYPE_CHECKING:  # the imaging package (pydicom, ~0.5 s) loads after the window is shown
    from cxr_desktop.viewing.display_mapper import DisplayMapper
    from cxr_desktop.imaging.types import StudyImage, Window

from cxr_desktop.gui.four_corner import ViewState, corner_lines, paint_corners
from cxr_desktop.gui.measure_tools import MeasureLayer

ZOOM_STEP = 1.25
MIN_ZOOM, MAX_ZOOM = 0.02, 64.0


@dataclass(frozen=True)
class PixelReadout:
    """What is under the cursor: image coordinates and the modality value there."""

    row: int
    column: int
    value: float
    rgb: tuple[int, int, int] | None
    units: str

    def text(self) -> str:
        v = f"{self.value:.6g}"
        units = f" {self.units}" if self.units else ""
        colour = f"  RGB {self.rgb[0]},{self.rgb[1]},{self.rgb[2]}" if self.rgb else ""
        return f"x {self.column}, y {self.row}: {v}{units}{colour}"


def array_to_qimage(arr: np.ndarray) -> QImage:
    """uint8 grey (h, w) or RGB (h, w, 3) -> an independent QImage."""
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    if arr.ndim == 2:
        return QImage(arr.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    return QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def packed_to_qimage(packed: np.ndarray) -> QImage:
    """0xFFRRGGBB uint32 (h, w) -> an independent RGB32 QImage (Qt's native format: drawn without conversion)."""
    packed = np.ascontiguousarray(packed, dtype=np.uint32)
    h, w = packed.shape
    return QImage(packed.data, w, h, 4 * w, QImage.Format.Format_RGB32).copy()


class ImageCanvas(QGraphicsView):
    """Shows a :class:`StudyImage` with window/level, zoom, pan, orientation and an overlay layer."""

    pixel_hovered = Signal(object)  # PixelReadout | None
    window_changed = Signal(object)  # Window | None (None: the file's VOI LUT)
    view_changed = Signal()  # zoom or orientation changed
    files_dropped = Signal(list)  # list[str]
    frame_scroll_requested = Signal(int)  # frames to step (wheel with a modifier, or wheel_scrolls_frames)
    measure_save_failed = Signal(str)  # why measurements could not be saved (no patient data)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._scene = QGraphicsScene(self)
        self.setScene(self._scene)
        self.setBackgroundBrush(QBrush(QColor(0, 0, 0)))
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
        self.setMouseTracking(True)
        self.setAcceptDrops(True)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.PreventContextMenu)  # right-drag is window/level
        self.setFrameShape(QGraphicsView.Shape.NoFrame)
        self.setMinimumSize(200, 200)
        self.setToolTip("")

        self._image_item = QGraphicsPixmapItem()
        self._image_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self._scene.addItem(self._image_item)
        self._overlay_item = QGraphicsPixmapItem(self._image_item)  # child: shares orientation
        self._overlay_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self._overlay_item.setZValue(1.0)
        self._overlay_item.setVisible(False)

        self.image: StudyImage | None = None
        self._mapper: DisplayMapper | None = None
        self._window: Window | None = None
        self._user_invert = False
        self._orient = (1, 0, 0, 1)  # screen-relative 2x2 matrix (a, b, c, d)
        self._fit_mode = True
        self._overlay_wanted = True
        self._has_overlay = False
        self._overlay_image: QImage | None = None
        self._overlay_note = ""
        self._message = "Open a file or folder (Ctrl+O / Ctrl+Shift+O), or drop files here."
        self._wl_drag: tuple[QPoint, Window] | None = None
        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(0)
        self._render_timer.timeout.connect(self._render_now)
        self.renders = 0  # image layer renders (diagnostics)
        self.measure = MeasureLayer(self)
        self.measure.changed.connect(self.viewport().update)
        self.corners_visible = False  # the four-corner overlay (toggled by the window's key)
        self.wheel_scrolls_frames = False  # the plain wheel steps frames; with a modifier it zooms
        self._export_patient_data = True  # False while grabbing the viewport for an export
        self._wheel_rest = 0.0

    # ------------------------------------------------------------------ image
    def set_image(self, image: StudyImage | None, *, keep_view: bool = False,
                  mapper: DisplayMapper | None = None, prepared: QImage | None = None) -> None:
        """Show ``image`` (None clears). ``keep_view`` keeps zoom/orientation/window (frame changes).

        ``mapper`` and ``prepared`` (the default-window picture as an RGB32 QImage) may be made
        in a worker (:func:`cxr_desktop.gui.workers.load_for_view`), so that a large image costs
        the GUI thread only the pixmap upload.
        """
        prev = self.image
        self.image = image
        self.clear_overlay()
        self.measure.set_image(image)
        if image is None:
            self._mapper = None
            self._image_item.setPixmap(QPixmap())
            self._scene.setSceneRect(QRectF())
            self.viewport().update()
            return
        if mapper is None:
            from cxr_desktop.viewing.display_mapper import DisplayMapper

            mapper = DisplayMapper(image)
        self._message = ""
        self._mapper = mapper
        keep = keep_view and prev is not None and prev.shape == image.shape
        default_window = None if image.voi_lut is not None else image.window
        if not keep:
            self._window = default_window
            self._user_invert = False
            self._orient = (1, 0, 0, 1)
        if prepared is not None and self._window == default_window and not self._user_invert:
            self._show_qimage(prepared)
        else:
            self._render_now()
        self._apply_orientation()
        if not keep:
            self.fit()
        self.window_changed.emit(self._window)

    def show_message(self, text: str) -> None:
        """Clear the canvas and show ``text`` (e.g. why a file could not be opened)."""
        self.set_image(None)
        self._message = self._repaint_for(self._message, text)

    @property
    def message(self) -> str:
        return self._message

    # ----------------------------------------------------------- window/level
    @property
    def window(self) -> Window | None:
        """The current window (None: the file's VOI LUT)."""
        return self._window

    def effective_window(self) -> Window | None:
        if self._window is not None:
            return self._window
        return self.image.window if self.image is not None else None

    def set_window(self, window: Window | None) -> None:
        if self.image is None:
            return
        self._window = window
        self._render_timer.start()
        self.window_changed.emit(window)

    def reset_window(self) -> None:
        if self.image is not None:
            self.set_window(None if self.image.voi_lut is not None else self.image.window)

    @property
    def inverted(self) -> bool:
        """Whether the user toggled inversion (on top of MONOCHROME1's own inversion)."""
        return self._user_invert

    def set_inverted(self, on: bool) -> None:
        self._user_invert = bool(on)
        self._render_timer.start()

    def toggle_invert(self) -> None:
        self.set_inverted(not self._user_invert)

    def display_array(self) -> np.ndarray | None:
        """The displayed image layer (uint8 grey or RGB) at the image's own size."""
        if self._mapper is None or self.image is None:
            return None
        return self._mapper.render(self._window, self.image.invert_for_display != self._user_invert)

    def _render_now(self) -> None:
        self._render_timer.stop()
        if self._mapper is None or self.image is None:
            return
        packed = self._mapper.render_packed(self._window, self.image.invert_for_display != self._user_invert)
        self._show_qimage(packed_to_qimage(packed))

    def _show_qimage(self, img: QImage) -> None:
        self._image_item.setPixmap(QPixmap.fromImage(img))
        self.renders += 1

    # --------------------------------------------------------------- overlay
    def set_overlay(self, layer_image: QImage, image_shape: tuple[int, int]) -> None:
        """Show a coloured heatmap (any size) stretched over the image's rows x columns."""
        rows, cols = image_shape
        self._overlay_image = layer_image
        self._overlay_item.setPixmap(QPixmap.fromImage(layer_image))
        self._overlay_item.setTransform(
            QTransform.fromScale(cols / max(1, layer_image.width()), rows / max(1, layer_image.height())))
        self._has_overlay = True
        self._overlay_item.setVisible(self._overlay_wanted)

    def clear_overlay(self) -> None:
        self._has_overlay = False
        self._overlay_image = None
        self._overlay_item.setPixmap(QPixmap())
        self._overlay_item.setVisible(False)

    def set_overlay_opacity(self, fraction: float) -> None:
        """Blend weight of the heatmap layer, 0..1 (a re-blend only)."""
        self._overlay_item.setOpacity(max(0.0, min(1.0, float(fraction))))

    @property
    def overlay_opacity(self) -> float:
        return float(self._overlay_item.opacity())

    def set_overlay_visible(self, on: bool) -> None:
        self._overlay_wanted = bool(on)
        self._overlay_item.setVisible(self._overlay_wanted and self._has_overlay)

    @property
    def overlay_shown(self) -> bool:
        return self._overlay_item.isVisible()

    def set_overlay_note(self, text: str) -> None:
        """A short note drawn over the top of the image (e.g. why no heatmap is drawn); "" hides it."""
        self._overlay_note = self._repaint_for(self._overlay_note, text)

    @property
    def overlay_note(self) -> str:
        return self._overlay_note

    def _repaint_for(self, shown: str, text: str) -> str:
        """``text``, after asking for a repaint if it differs from the ``shown`` one (drawForeground draws it)."""
        if text != shown:
            self.viewport().update()
        return text

    # ------------------------------------------------------------ zoom / pan
    @property
    def zoom(self) -> float:
        """Screen pixels per image pixel."""
        t = self.transform()
        return float(np.hypot(t.m11(), t.m12()))

    def fit(self) -> None:
        """Fit the whole image in the window (and keep fitting on resize)."""
        self._fit_mode = True
        if self.image is not None:
            self.fitInView(self._scene.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
        self.view_changed.emit()

    def actual_size(self) -> None:
        """1:1: one image pixel per screen pixel, centred."""
        self._fit_mode = False
        centre = self.mapToScene(self.viewport().rect().center())
        self.setTransform(QTransform())
        self.centerOn(centre)
        self.view_changed.emit()

    def zoom_by(self, factor: float, anchor: QPoint | None = None) -> None:
        """Zoom by ``factor`` keeping the scene point under ``anchor`` (viewport coords) fixed."""
        if self.image is None:
            return
        target = max(MIN_ZOOM, min(MAX_ZOOM, self.zoom * factor))
        factor = target / max(self.zoom, 1e-9)
        if abs(factor - 1.0) < 1e-6:
            return
        self._fit_mode = False
        anchor = anchor if anchor is not None else self.viewport().rect().center()
        fixed = self.mapToScene(anchor)
        old = self.transformationAnchor()
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.scale(factor, factor)
        moved = self.mapFromScene(fixed) - anchor  # scroll so that ``fixed`` is under ``anchor`` again
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + moved.x())
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + moved.y())
        self.setTransformationAnchor(old)
        self.view_changed.emit()

    def pan_by(self, dx: int, dy: int) -> None:
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + dx)
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + dy)

    # ---------------------------------------------- linked views (layouts)
    @property
    def fitting(self) -> bool:
        """Whether the view fits the whole image (and keeps fitting on resize)."""
        return self._fit_mode

    def fit_zoom(self) -> float:
        """The zoom at which the whole image fits the viewport (1.0 without an image)."""
        rect = self._scene.sceneRect()
        if self.image is None or rect.width() <= 0 or rect.height() <= 0:
            return 1.0
        vp = self.viewport().rect()
        return max(1e-6, min(vp.width() / rect.width(), vp.height() / rect.height()))

    def show_at(self, zoom: float, centre: QPointF) -> None:
        """Zoom (screen px per image px) centred on image point ``centre`` (column, row): linked panes."""
        if self.image is None:
            return
        self._fit_mode = False
        zoom = max(MIN_ZOOM, min(MAX_ZOOM, float(zoom)))
        if abs(zoom - self.zoom) > 1e-6 * zoom:  # a pan keeps the transform (and the pan caches)
            self.setTransform(QTransform.fromScale(zoom, zoom))
        self.centerOn(self._image_item.mapToScene(centre))
        self.view_changed.emit()

    def set_pan_cache(self, on: bool) -> None:
        """Keep the drawn image and heatmap as screen-pixel caches, so a pan only moves them.

        For linked multi-pane layouts (several panes repaint per pan step); zoom, window and
        heatmap changes redraw the caches.
        """
        mode = QGraphicsItem.CacheMode.DeviceCoordinateCache if on else QGraphicsItem.CacheMode.NoCache
        self._image_item.setCacheMode(mode)
        self._overlay_item.setCacheMode(mode)

    # ----------------------------------------------------------- orientation
    def _apply_orientation(self) -> None:
        if self.image is None:
            return
        a, b, c, d = self._orient
        cy, cx = self.image.rows / 2.0, self.image.columns / 2.0
        t = QTransform(a, c, b, d, -(a * cx + b * cy), -(c * cx + d * cy))
        self._image_item.setTransform(t)
        self._scene.setSceneRect(self._image_item.sceneBoundingRect())
        if self._fit_mode:
            self.fit()
        self.view_changed.emit()

    def _compose(self, m: tuple[int, int, int, int]) -> None:
        a, b, c, d = self._orient
        p, q, r, s = m
        self._orient = (p * a + q * c, p * b + q * d, r * a + s * c, r * b + s * d)
        self._apply_orientation()

    def rotate_clockwise(self) -> None:
        self._compose((0, -1, 1, 0))

    def rotate_counterclockwise(self) -> None:
        self._compose((0, 1, -1, 0))

    def flip_horizontal(self) -> None:
        self._compose((-1, 0, 0, 1))

    def flip_vertical(self) -> None:
        self._compose((1, 0, 0, -1))

    def reset_orientation(self) -> None:
        self._orient = (1, 0, 0, 1)
        self._apply_orientation()

    @property
    def orientation(self) -> tuple[int, int, int, int]:
        """The screen-relative orientation matrix (a, b, c, d); identity = as acquired."""
        return self._orient

    def reset_view(self) -> None:
        """Window, inversion, orientation and zoom back to how the file opened."""
        self._user_invert = False
        self.reset_window()
        self.reset_orientation()
        self.fit()

    # ---------------------------------------------------------- rendering out
    def render_viewport(self, patient_data: bool = False) -> QImage:
        """What the viewport shows now (image, overlay, measurements, corners), as a QImage.

        The four-corner overlay's patient lines are left out unless ``patient_data``.
        """
        self._export_patient_data = bool(patient_data)
        self.measure.show_selection = False
        try:
            return self.viewport().grab().toImage()
        finally:
            self._export_patient_data = True
            self.measure.show_selection = True

    def render_native(self, measurements: bool = True) -> QImage | None:
        """The whole image at its own resolution (one pixel per image pixel), as displayed.

        Current window/level, inversion, rotation/flip and the overlay as shown (opacity,
        colours, style) and the measurements (unless ``measurements`` is False); no zoom,
        pan, corner texts or on-screen notes. None when no image is shown.
        """
        if self._mapper is None or self.image is None:
            return None
        packed = self._mapper.render_packed(self._window, self.image.invert_for_display != self._user_invert)
        out = packed_to_qimage(packed)
        if self.overlay_shown and self._overlay_image is not None:
            p = QPainter(out)
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            p.setOpacity(self.overlay_opacity)
            p.drawImage(QRectF(0, 0, out.width(), out.height()), self._overlay_image)
            p.end()
        a, b, c, d = self._orient
        if (a, b, c, d) != (1, 0, 0, 1):
            t = QTransform(a, c, b, d, 0, 0)
            true = QImage.trueMatrix(t, out.width(), out.height())  # the mapping transformed() applies
            out = out.transformed(t)
        else:
            true = QTransform()
        if measurements and self.measure.items:
            from cxr_desktop.gui.export_view import export_scale

            p = QPainter(out)
            self.measure.show_selection = False
            try:
                self.measure.paint(p, lambda pt: true.map(QPointF(pt[0], pt[1])), scale=export_scale(out),
                                   bounds=QRectF(0, 0, out.width(), out.height()))
            finally:
                self.measure.show_selection = True
                p.end()
        return out

    def viewport_point(self, image_point: QPointF) -> QPointF:
        """Viewport coordinates of an image (column, row) point (inverse of :meth:`image_point`)."""
        return QPointF(self.mapFromScene(self._image_item.mapToScene(image_point)))

    # ------------------------------------------------------------ four corners
    def set_corners_visible(self, on: bool) -> None:
        self.corners_visible = bool(on)
        self.viewport().update()

    def corner_text(self, patient_data: bool = True) -> dict[str, list[str]]:
        """The four corners' lines for the image on screen ({} without an image)."""
        if self.image is None:
            return {}
        w = self.effective_window()
        wl = "W/L: file VOI LUT" if (self._window is None and self.image.voi_lut is not None) else (
            f"W {w.width:.6g} L {w.center:.6g}" if w is not None else "")
        view = ViewState(window=wl, zoom=self.zoom, frame=self.image.frame_index, frames=self.image.frame_count,
                         inverted=self._user_invert)
        cal = self.measure.calibration
        unit = {"pixel_spacing": "Lengths in mm (Pixel Spacing)",
                "imager_pixel_spacing": "Lengths in mm at the detector (Imager Pixel Spacing)"}.get(
            cal.source, "Lengths in pixels (no calibration)")
        return corner_lines(self.image.metadata, view, patient_data=patient_data, calibration=unit)

    def image_point(self, viewport_pos: QPoint) -> QPointF:
        """Image (column, row) coordinates under a viewport position."""
        return self._image_item.mapFromScene(self.mapToScene(viewport_pos))

    def readout_at(self, viewport_pos: QPoint) -> PixelReadout | None:
        if self.image is None:
            return None
        p = self.image_point(viewport_pos)
        col, row = int(np.floor(p.x())), int(np.floor(p.y()))
        if not (0 <= row < self.image.rows and 0 <= col < self.image.columns):
            return None
        value = float(self.image.pixels[row, col])
        rgb = None
        if self.image.rgb is not None:
            rgb = tuple(int(v) for v in self.image.rgb[row, col][:3])
        return PixelReadout(row, col, value, rgb, self._units())

    @property
    def units(self) -> str:
        """The modality units of the pixel values ("" when the file names none)."""
        return self._units()

    def _units(self) -> str:
        md = self.image.metadata if self.image is not None else {}
        units = md.get("rescale_type") or md.get("units")
        if units:
            return str(units)
        return "HU" if str(md.get("modality", "")).upper() == "CT" else ""

    # ------------------------------------------------------------------ events
    def wheelEvent(self, event) -> None:  # noqa: N802
        delta = event.angleDelta()
        dy = delta.y() if abs(delta.y()) >= abs(delta.x()) else delta.x()  # Shift may turn the wheel sideways
        steps = dy / 120.0
        mods = event.modifiers() & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.ControlModifier)
        frames = self.image is not None and self.image.frame_count > 1 and (bool(mods) != self.wheel_scrolls_frames)
        if steps and frames:
            self._wheel_rest += steps
            whole = int(self._wheel_rest)  # high-resolution wheels send fractions of a notch
            if whole:
                self._wheel_rest -= whole
                self.frame_scroll_requested.emit(-whole)  # wheel down (negative) = next frame
        elif steps and self.image is not None:
            self.zoom_by(ZOOM_STEP ** steps, event.position().toPoint())
        event.accept()

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self._fit_mode and self.image is not None:
            self.fitInView(self._scene.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if self.measure.mouse_press(event.position(), event.button()):
            event.accept()
            return
        if event.button() == Qt.MouseButton.RightButton and self.image is not None:
            start = self.effective_window()
            if start is not None:
                self._wl_drag = (event.position().toPoint(), start)
                self.viewport().setCursor(Qt.CursorShape.SizeAllCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        pos = event.position().toPoint()
        if self._wl_drag is None and self.measure.mouse_move(event.position()):
            event.accept()
        elif self._wl_drag is not None:
            start_pos, start = self._wl_drag
            d = pos - start_pos
            self.set_window(self.dragged_window(start, d.x(), d.y()))
            event.accept()
        else:
            super().mouseMoveEvent(event)
        self.pixel_hovered.emit(self.readout_at(pos))

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        measured = self.measure.mouse_release(event.position(), event.button())
        if event.button() == Qt.MouseButton.RightButton and self._wl_drag is not None:
            self._wl_drag = None
            self.viewport().unsetCursor()
            event.accept()
            return
        if measured:
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def set_tool(self, tool: str | None) -> None:
        """Choose a measurement tool (None: pan); while a tool is on, left-drag measures instead of panning."""
        self.measure.set_tool(tool)
        self.setDragMode(QGraphicsView.DragMode.NoDrag if tool else QGraphicsView.DragMode.ScrollHandDrag)
        self.viewport().setCursor(Qt.CursorShape.CrossCursor) if tool else self.viewport().unsetCursor()

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.pixel_hovered.emit(None)
        super().leaveEvent(event)

    def dragged_window(self, start: Window, dx: float, dy: float) -> Window:
        """Window after a right-drag of (dx, dy) screen pixels: right = wider, down = higher level."""
        assert self.image is not None
        md = self._mapper
        if md is not None and md.value_span is not None:  # integer data: its own range
            span = md.value_span or 1.0
        else:
            span = max(float(start.width), 1e-3) * 4.0
        step = span / 600.0
        width = max(step, float(start.width) + dx * step)
        centre = float(start.center) + dy * step
        from cxr_desktop.imaging.types import Window

        return Window(center=centre, width=width, function=start.function, source="manual",
                      explanation="manual")

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802
        self._note_bottom = 0.0
        if self.image is None and self._message:
            painter.save()
            painter.resetTransform()
            painter.setPen(QColor(200, 200, 200))
            r = self.viewport().rect().adjusted(30, 30, -30, -30)
            painter.drawText(r, int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), self._message)
            painter.restore()
        elif self.image is not None and self._overlay_note:
            painter.save()
            painter.resetTransform()
            flags = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter | Qt.TextFlag.TextWordWrap)
            width = min(self.viewport().width() - 20, 460)
            box = painter.fontMetrics().boundingRect(0, 0, width - 16, 200, flags, self._overlay_note)
            panel = QRectF(10, 10, box.width() + 16, box.height() + 10)
            painter.fillRect(panel, QColor(0, 0, 0, 170))
            self._note_bottom = panel.bottom()
            painter.setPen(QColor(255, 200, 120))
            painter.drawText(panel.adjusted(8, 5, -8, -5), flags, self._overlay_note)
            painter.restore()
        if self.image is not None:
            painter.save()
            painter.resetTransform()
            vp = QRectF(self.viewport().rect())
            if self.corners_visible:
                lines = self.corner_text(patient_data=self._export_patient_data)
                top_left = {"top_left": lines.pop("top_left", [])}
                paint_corners(painter, vp, lines)
                paint_corners(painter, vp.adjusted(0, self._note_bottom, 0, 0), top_left)  # below the note
            bottom = vp.adjusted(0, 0, 0, -(60 if self.corners_visible else 0))
            self.measure.paint(painter, lambda pt: self.viewport_point(QPointF(pt[0], pt[1])), bounds=bottom)
            painter.restore()

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.files_dropped.emit(paths)
            event.acceptProposedAction()
        else:
            event.ignore()
