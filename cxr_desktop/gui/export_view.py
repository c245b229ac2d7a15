"""Export the image (+ overlay + legend) as a PNG, with no patient data burned in.

Two pictures can be exported: by default the whole image at its native resolution
(one PNG pixel per image pixel, as displayed: window/level, inversion, rotation,
overlay opacity and style; :meth:`ImageCanvas.render_native`), or, on request, the
canvas viewport exactly as shown (zoom and pan included). The colour legend (when a
heatmap is drawn) and a caption are added beside and below it, scaled to the
picture so that they stay legible on a large radiograph. The caption names the
explained class, the probability, the decision threshold and the model (see
:func:`cxr_desktop.heatmap_rules.caption_lines`) and the decision-aid notice:
never a patient name, ID, date or the file's path, unless the user ticks "Patient data in
exports" (:func:`caption_with`). Measurements are drawn on the picture and listed in the
caption with their calibration caveat. The file is written
atomically (temp file + fsync + rename), so an interrupted export never leaves a
half-written PNG under the chosen name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QRect, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter

from cxr_desktop import DECISION_AID_NOTICE
from cxr_desktop.gui.overlay import paint_legend

EXPORT_MODES = ("native", "view")  # the image at its own resolution, or the viewport as shown
LEGEND_WIDTH = 180  # at the reference size; scaled with the picture
CAPTION_FONT_PX = 13
REFERENCE_SIDE = 700  # pictures up to this short side use the sizes above


def export_scale(view: QImage) -> float:
    """How much larger the legend and caption are drawn for a large picture (1 for a screen view)."""
    return max(1.0, min(view.width(), view.height()) / float(REFERENCE_SIDE))


def compose_export(view: QImage, *, colormap: str | None, legend_title: str, caption: str) -> QImage:
    """The picture with a legend column (when an overlay is shown) and a caption row below.

    ``caption`` may hold several lines; :data:`DECISION_AID_NOTICE` is always appended.
    """
    k = export_scale(view)
    legend_w = int(round(LEGEND_WIDTH * k)) if colormap else 0
    font = QFont()
    font.setPixelSize(int(round(CAPTION_FONT_PX * k)))
    text = f"{caption}\n{DECISION_AID_NOTICE}" if caption else DECISION_AID_NOTICE
    w = view.width() + legend_w
    margin = int(round(8 * k))
    flags = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap)
    text_h = QFontMetrics(font).boundingRect(QRect(0, 0, w - 2 * margin, 100000), flags, text).height()
    caption_h = text_h + 2 * margin
    out = QImage(w, view.height() + caption_h, QImage.Format.Format_RGB32)
    out.fill(QColor(0, 0, 0))
    p = QPainter(out)
    p.drawImage(0, 0, view)
    if colormap:
        p.setFont(font)
        legend_h = min(view.height() - 20 * k, 360 * k)
        paint_legend(p, QRectF(view.width() + 6 * k, 10 * k, legend_w - 12 * k, legend_h),
                     colormap, legend_title, text_colour=QColor(235, 235, 235),
                     font_px=int(round(11 * k)))
    p.setFont(font)
    p.setPen(QColor(225, 225, 225))
    p.drawText(QRectF(margin, view.height() + margin, w - 2 * margin, text_h + 2), flags, text)
    p.end()
    return out


def caption_with(caption: str, *, measurements: Sequence[str] = (), patient: Sequence[str] = ()) -> str:
    """The caption plus the measurement list and, only when the user asked for it, patient lines.

    ``patient`` is empty unless the user ticked "Patient data in exports": by default an
    export names no patient (the four-corner overlay's patient lines are left out too,
    :meth:`ImageCanvas.render_viewport`).
    """
    from cxr_desktop.measure import IMAGER_CAVEAT

    parts = [" | ".join(patient)] if patient else []
    parts += [caption] if caption else []
    if measurements:
        tail = f" - {IMAGER_CAVEAT}"
        flagged = any(m.endswith(tail) for m in measurements)  # the caveat once, as a footnote
        items = [m[: -len(tail)] + "*" if m.endswith(tail) else m for m in measurements]
        parts.append("Measurements: " + "; ".join(items) + (f"\n* {IMAGER_CAVEAT}" if flagged else ""))
    return "\n".join(parts)


def png_bytes(image: QImage) -> bytes:
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buf, "PNG"):
        raise OSError("the image could not be encoded as PNG")
    buf.close()
    return bytes(data.data())


def write_atomic(path: str | os.PathLike[str], payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file, fsync, rename)."""
    from cxr_desktop.atomic import write_bytes_atomic

    write_bytes_atomic(path, payload)
    return Path(path)


def export_png(path: str | os.PathLike[str], view: QImage, *, colormap: str | None, legend_title: str,
               caption: str) -> Path:
    """Compose and save; raises OSError with a readable reason when the file cannot be written."""
    return write_atomic(path, png_bytes(compose_export(view, colormap=colormap, legend_title=legend_title,
                                                       caption=caption)))
