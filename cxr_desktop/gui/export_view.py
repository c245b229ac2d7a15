"""Export the current view (image + overlay + legend) as a PNG, with no patient data burned in.

The picture is the canvas viewport exactly as shown (zoom, orientation,
window/level, overlay opacity), with the colour legend and a caption beside it.
The caption names only the model, the explained class and the decision-aid
notice: never a patient name, ID, date or the file's path. The file is written
atomically (temp file + fsync + rename), so an interrupted export never leaves
a half-written PNG under the chosen name.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter

from cxr_desktop import DECISION_AID_NOTICE
from cxr_desktop.gui.overlay import paint_legend

LEGEND_WIDTH = 150
CAPTION_HEIGHT = 40


def compose_export(view: QImage, *, colormap: str | None, legend_title: str, caption: str) -> QImage:
    """The viewport picture with a legend column (when an overlay is shown) and a caption row."""
    legend_w = LEGEND_WIDTH if colormap else 0
    w, h = view.width() + legend_w, view.height() + CAPTION_HEIGHT
    out = QImage(w, h, QImage.Format.Format_RGB32)
    out.fill(QColor(0, 0, 0))
    p = QPainter(out)
    p.drawImage(0, 0, view)
    if colormap:
        paint_legend(p, QRectF(view.width() + 6, 10, legend_w - 12, min(view.height() - 20, 320)),
                     colormap, legend_title, text_colour=QColor(235, 235, 235))
    p.setPen(QColor(220, 220, 220))
    p.drawText(QRectF(8, view.height() + 2, w - 16, CAPTION_HEIGHT - 4),
               int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter | Qt.TextFlag.TextWordWrap),
               f"{caption}\n{DECISION_AID_NOTICE}" if caption else DECISION_AID_NOTICE)
    p.end()
    return out


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
