"""Grad-CAM overlay: colourise a finished heatmap and draw its colour legend.

The map itself comes from the inference engine and is never recomputed here:
changing the colormap only re-colours the cached map, and changing opacity
only changes how the canvas blends the coloured layer over the image
(``QGraphicsItem.setOpacity``), so both are instant.

Colormaps: Jet and Turbo (the rainbow maps radiologists know from Grad-CAM
papers) and Viridis / Inferno (perceptually uniform: equal steps in the map
look like equal steps in colour, and they stay readable in greyscale print and
for most colour-vision deficiencies).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QImage, QLinearGradient, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

# display name -> OpenCV colormap constant name (cv2 is imported lazily: startup time)
COLORMAPS: dict[str, str] = {
    "Turbo": "COLORMAP_TURBO",
    "Jet": "COLORMAP_JET",
    "Viridis (perceptually uniform)": "COLORMAP_VIRIDIS",
    "Inferno (perceptually uniform)": "COLORMAP_INFERNO",
}
OVERLAY_MAX_SIDE = 1024  # heatmaps are smooth (upsampled from 7x7): no visible loss, 5x less work


def colormap_lut(name: str) -> np.ndarray:
    """The colormap as a (256, 3) uint8 RGB table."""
    import cv2

    if name not in COLORMAPS:
        raise ValueError(f"unknown colormap {name!r}; choose one of {', '.join(COLORMAPS)}")
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    bgr = cv2.applyColorMap(ramp, getattr(cv2, COLORMAPS[name]))
    return np.ascontiguousarray(bgr[:, 0, ::-1])


def heatmap_to_uint8(heatmap: np.ndarray, max_side: int = OVERLAY_MAX_SIDE) -> np.ndarray:
    """[0, 1] float map -> uint8, shrunk so the long side is at most ``max_side``."""
    import cv2

    h, w = heatmap.shape
    scale = min(1.0, max_side / float(max(h, w)))
    m = np.clip(np.nan_to_num(heatmap.astype(np.float32, copy=False)), 0.0, 1.0)
    if scale < 1.0:
        m = cv2.resize(m, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return np.rint(m * 255.0).astype(np.uint8)


def colourise(heat_u8: np.ndarray, name: str) -> np.ndarray:
    """uint8 map -> RGB uint8 (h, w, 3) through a colormap (a table look-up only)."""
    return colormap_lut(name)[heat_u8]


def colourise_packed(heat_u8: np.ndarray, name: str) -> np.ndarray:
    """uint8 map -> 0xFFRRGGBB uint32 (h, w): one table look-up, drawn by Qt without conversion."""
    lut = colormap_lut(name).astype(np.uint32)
    table = np.uint32(0xFF000000) | (lut[:, 0] << 16) | (lut[:, 1] << 8) | lut[:, 2]
    return table.astype(np.uint32)[heat_u8]


class HeatmapLayer:
    """One image's finished heatmap, with coloured versions cached per colormap."""

    def __init__(self, heatmap: np.ndarray, class_name: str | None):
        self.shape = tuple(int(s) for s in heatmap.shape)  # image rows x columns
        self.class_name = class_name
        self._u8 = heatmap_to_uint8(heatmap)
        self._coloured: dict[str, QImage] = {}
        self.colourings = 0  # how many times a colormap was applied (tests, diagnostics)

    @property
    def overlay_shape(self) -> tuple[int, int]:
        return (int(self._u8.shape[0]), int(self._u8.shape[1]))

    def image(self, colormap: str) -> QImage:
        """The coloured layer for ``colormap`` (cached; safe to call from a worker thread)."""
        img = self._coloured.get(colormap)
        if img is None:
            packed = np.ascontiguousarray(colourise_packed(self._u8, colormap))
            h, w = packed.shape
            img = QImage(packed.data, w, h, 4 * w, QImage.Format.Format_RGB32).copy()
            self._coloured[colormap] = img
            self.colourings += 1
        return img


def paint_legend(painter: QPainter, rect: QRectF, colormap: str, title: str,
                 *, text_colour: QColor | None = None) -> None:
    """Draw a vertical colour bar (high at the top) with its labels into ``rect``."""
    lut = colormap_lut(colormap)
    text_colour = text_colour or QColor(230, 230, 230)
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    font = QFont(painter.font())
    font.setPointSizeF(max(7.0, min(9.0, rect.width() / 12.0)))
    painter.setFont(font)
    fm = painter.fontMetrics()
    line = fm.height()
    bar_top = rect.top() + 2.2 * line
    bar_bottom = rect.bottom() - 1.4 * line
    bar = QRectF(rect.left() + 6, bar_top, min(18.0, rect.width() * 0.3), max(10.0, bar_bottom - bar_top))
    grad = QLinearGradient(bar.bottomLeft(), bar.topLeft())
    for i in range(0, 256, 15):
        r, g, b = (int(v) for v in lut[i])
        grad.setColorAt(i / 255.0, QColor(r, g, b))
    r, g, b = (int(v) for v in lut[255])
    grad.setColorAt(1.0, QColor(r, g, b))
    painter.fillRect(bar, grad)
    painter.setPen(QPen(text_colour, 1))
    painter.drawRect(bar)
    painter.drawText(QRectF(rect.left(), rect.top(), rect.width(), 2 * line),
                     int(Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap), title)
    x = bar.right() + 5
    painter.drawText(QRectF(x, bar.top(), rect.right() - x, line),
                     int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop), "high")
    painter.drawText(QRectF(x, bar.bottom() - line, rect.right() - x, line),
                     int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom), "low")
    painter.drawText(QRectF(rect.left(), bar.bottom() + 4, rect.width(), line * 1.3),
                     int(Qt.AlignmentFlag.AlignLeft), "relative, per image")
    painter.restore()


class ColorLegend(QWidget):
    """The overlay's colour bar: which colours mean high and low model attention."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.colormap = next(iter(COLORMAPS))
        self.class_name: str | None = None
        self.setMinimumSize(QSize(110, 150))
        self.setMaximumHeight(240)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.setToolTip("Grad-CAM colour scale: where the model's evidence for the class is strongest "
                        "(scaled per image, so colours are not comparable between images).")

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(150, 220)

    @property
    def title(self) -> str:
        return f"Grad-CAM: {self.class_name}" if self.class_name else "Grad-CAM"

    def set_colormap(self, name: str) -> None:
        self.colormap = name
        self.update()

    def set_class_name(self, name: str | None) -> None:
        self.class_name = name
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        painter = QPainter(self)
        colour = self.palette().windowText().color()
        paint_legend(painter, QRectF(self.rect()).adjusted(2, 2, -2, -2), self.colormap, self.title,
                     text_colour=colour)
        painter.end()
