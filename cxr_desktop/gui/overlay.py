"""Grad-CAM overlay: colourise a finished heatmap and draw its colour legend.

The map itself comes from the inference engine and is never recomputed here:
changing the colormap or style only re-colours the cached map, and changing
opacity only changes how the canvas blends the coloured layer over the image
(``QGraphicsItem.setOpacity``), so all are instant.

Low values are transparent (:func:`cxr_desktop.heatmap_rules.alpha_ramp`): the
layer carries a per-pixel alpha that is 0 up to a floor of the map's range and
reaches 1 at its maximum, so the opacity slider sets the strongest colour and
the rest of the radiograph is never tinted. The contour style draws isolines of
the map instead of filled colour (the radiograph stays fully visible inside).

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

from cxr_desktop.heatmap_rules import ALPHA_FLOOR, CONTOUR_LEVELS, alpha_table, legend_title

# display name -> OpenCV colormap constant name (cv2 is imported lazily: startup time)
COLORMAPS: dict[str, str] = {
    "Turbo": "COLORMAP_TURBO",
    "Jet": "COLORMAP_JET",
    "Viridis (perceptually uniform)": "COLORMAP_VIRIDIS",
    "Inferno (perceptually uniform)": "COLORMAP_INFERNO",
}
STYLES = ("filled", "contours")  # filled colour (transparent where low) or isolines only
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


def layer_argb(heat_u8: np.ndarray, colormap: str, style: str = "filled") -> np.ndarray:
    """uint8 map -> premultiplied 0xAARRGGBB uint32 (h, w) with transparent low values.

    ``filled``: colour everywhere, alpha from :func:`~cxr_desktop.heatmap_rules.alpha_table`.
    ``contours``: isolines at :data:`~cxr_desktop.heatmap_rules.CONTOUR_LEVELS`, in the
    colormap's colour for that level, on a fully transparent layer.
    """
    import cv2

    lut = colormap_lut(colormap).astype(np.uint32)
    if style == "filled":
        alpha = alpha_table().astype(np.uint32)
        pre = (lut * alpha[:, None] + 127) // 255  # premultiplied RGB per level
        table = (alpha << 24) | (pre[:, 0] << 16) | (pre[:, 1] << 8) | pre[:, 2]
        return table.astype(np.uint32)[heat_u8]
    if style != "contours":
        raise ValueError(f"unknown overlay style {style!r}; choose one of {', '.join(STYLES)}")
    h, w = heat_u8.shape
    out = np.zeros((h, w, 4), dtype=np.uint8)  # B, G, R, A (little-endian 0xAARRGGBB)
    thickness = max(2, round(max(h, w) / 300))
    pad = thickness + 2  # regions that reach the image edge close outside it: no line along the border
    for level in CONTOUR_LEVELS:
        k = int(round(level * 255))
        mask = cv2.copyMakeBorder((heat_u8 >= k).astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        r, g, b = (int(v) for v in lut[k])
        cv2.drawContours(out, contours, -1, (b, g, r, 255), thickness, lineType=cv2.LINE_AA, offset=(-pad, -pad))
    # anti-aliased edges blend the colour with alpha: premultiply what drawContours wrote
    a = out[..., 3:4].astype(np.uint16)
    out[..., :3] = ((out[..., :3].astype(np.uint16) * a + 127) // 255).astype(np.uint8)
    return out.view(np.uint32)[..., 0]


class HeatmapLayer:
    """One image's finished heatmap, with coloured versions cached per (colormap, style)."""

    def __init__(self, heatmap: np.ndarray, class_name: str | None):
        self.shape = tuple(int(s) for s in heatmap.shape)  # image rows x columns
        self.class_name = class_name
        self._u8 = heatmap_to_uint8(heatmap)
        self._coloured: dict[tuple[str, str], QImage] = {}
        self.colourings = 0  # how many times a colormap was applied (tests, diagnostics)

    @property
    def overlay_shape(self) -> tuple[int, int]:
        return (int(self._u8.shape[0]), int(self._u8.shape[1]))

    def image(self, colormap: str, style: str = "filled") -> QImage:
        """The coloured layer (premultiplied ARGB, cached; safe to call from a worker thread)."""
        img = self._coloured.get((colormap, style))
        if img is None:
            packed = np.ascontiguousarray(layer_argb(self._u8, colormap, style))
            h, w = packed.shape
            img = QImage(packed.data, w, h, 4 * w, QImage.Format.Format_ARGB32_Premultiplied).copy()
            self._coloured[(colormap, style)] = img
            self.colourings += 1
        return img


def paint_legend(painter: QPainter, rect: QRectF, colormap: str, title: str,
                 *, text_colour: QColor | None = None, font_px: int | None = None) -> None:
    """Draw a vertical colour bar (high at the top) with its labels into ``rect``.

    The bar fades to the background below the alpha floor exactly as the overlay does,
    so the reader sees that low values leave the radiograph untouched.
    """
    lut = colormap_lut(colormap)
    alpha = alpha_table()
    text_colour = text_colour or QColor(230, 230, 230)
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    font = QFont(painter.font())
    if font_px:
        font.setPixelSize(int(font_px))
    else:
        font.setPointSizeF(max(7.0, min(9.0, rect.width() / 14.0)))
    painter.setFont(font)
    fm = painter.fontMetrics()
    line = fm.height()
    wrap = int(Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap)
    title_h = fm.boundingRect(QRectF(rect.left(), rect.top(), rect.width(), 10 * line).toRect(), wrap, title).height()
    note = "Scale: relative per image"
    note_h = fm.boundingRect(QRectF(rect.left(), 0, rect.width(), 10 * line).toRect(), wrap, note).height()
    bar_top = rect.top() + title_h + 0.8 * line
    bar_bottom = rect.bottom() - note_h - 0.6 * line
    bar = QRectF(rect.left() + 6, bar_top, min(2.0 * line, rect.width() * 0.2), max(10.0, bar_bottom - bar_top))
    grad = QLinearGradient(bar.bottomLeft(), bar.topLeft())
    for i in list(range(0, 256, 15)) + [int(ALPHA_FLOOR * 255), 255]:
        r, g, b = (int(v) for v in lut[i])
        grad.setColorAt(i / 255.0, QColor(r, g, b, int(alpha[i])))
    painter.fillRect(bar, grad)
    painter.setPen(QPen(text_colour, 1))
    painter.drawRect(bar)
    painter.drawText(QRectF(rect.left(), rect.top(), rect.width(), title_h + 2), wrap, title)
    x = bar.right() + 5
    painter.drawText(QRectF(x, bar.top(), rect.right() - x, line),
                     int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop), "high")
    floor_y = bar.bottom() - ALPHA_FLOOR * bar.height()
    painter.drawText(QRectF(x, floor_y - line / 2, rect.right() - x, line),
                     int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), "transparent below")
    painter.drawText(QRectF(x, bar.bottom() - line, rect.right() - x, line),
                     int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom), "low")
    painter.drawText(QRectF(rect.left(), bar.bottom() + 0.4 * line, rect.width(), note_h + 2), wrap, note)
    painter.restore()


class ColorLegend(QWidget):
    """The overlay's colour bar: which colours mean high and low model attention."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.colormap = next(iter(COLORMAPS))
        self.class_name: str | None = None
        self.setMinimumSize(QSize(120, 190))
        self.setMaximumHeight(280)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.below_threshold = False
        self.setToolTip("Grad-CAM colour scale: where the model's evidence for the named class is strongest. "
                        "The scale is relative per image: colours are not comparable between images. "
                        "Values in the lowest quarter of the range are transparent.")

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(170, 250)

    @property
    def title(self) -> str:
        return legend_title(self.class_name, below_threshold=self.below_threshold)

    def set_colormap(self, name: str) -> None:
        self.colormap = name
        self.update()

    def set_class_name(self, name: str | None, *, below_threshold: bool = False) -> None:
        self.class_name = name
        self.below_threshold = bool(below_threshold)
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        painter = QPainter(self)
        colour = self.palette().windowText().color()
        paint_legend(painter, QRectF(self.rect()).adjusted(2, 2, -2, -2), self.colormap, self.title,
                     text_colour=colour)
        painter.end()
