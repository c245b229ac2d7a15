"""The four-corner overlay of a reading viewer: who, what, how it is displayed.

Top left: patient name and ID, study date (patient data). Top right: modality, series
and instance, laterality and view position. Bottom left: window/level, zoom and frame.
Bottom right: the length unit and its calibration. Patient lines are drawn on screen
only while the overlay is on, and in an export only when the user asks for patient data
(:mod:`cxr_desktop.gui.export_view`): :func:`corner_lines` leaves them out otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


@dataclass(frozen=True)
class ViewState:
    """What the display does now (bottom-left corner)."""

    window: str = ""  # e.g. "W 400 L 40"
    zoom: float = 1.0
    frame: int = 0
    frames: int = 1
    inverted: bool = False


def _date(d: Any) -> str:
    d = str(d or "").strip()
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


def corner_lines(metadata: Mapping[str, Any], view: ViewState, *, patient_data: bool = True,
                 calibration: str = "") -> dict[str, list[str]]:
    """The text of each corner; ``patient_data`` False leaves out name, ID and study date."""
    md = metadata
    top_left: list[str] = []
    if patient_data:
        name, pid, date = md.get("patient_name"), md.get("patient_id"), _date(md.get("study_date"))
        top_left += [str(name)] if name else []
        top_left += [f"ID {pid}"] if pid else []
        top_left += [f"Study {date}"] if date else []
    top_right: list[str] = []
    modality = md.get("modality") or str(md.get("source_format") or "").upper()
    if modality:
        top_right.append(str(modality))
    series = md.get("series_number")
    desc = md.get("series_description")
    if series is not None or desc:
        top_right.append(" ".join(x for x in (f"Se {series}" if series is not None else "", str(desc or "")) if x))
    if md.get("instance_number") is not None:
        top_right.append(f"Im {md.get('instance_number')}")
    side = " ".join(str(x) for x in (md.get("laterality"), md.get("view_position")) if x)
    if side:
        top_right.append(side)
    bottom_left = [view.window] if view.window else []
    bottom_left.append(f"Zoom {view.zoom * 100:.0f} %" + ("  inverted" if view.inverted else ""))
    if view.frames > 1:
        bottom_left.append(f"Frame {view.frame + 1}/{view.frames}")
    bottom_right = [calibration] if calibration else []
    return {"top_left": top_left, "top_right": top_right, "bottom_left": bottom_left, "bottom_right": bottom_right}


def paint_corners(painter: QPainter, rect: QRectF, lines: Mapping[str, list[str]], *, scale: float = 1.0) -> None:
    """Draw the corner texts inside ``rect`` (white with a dark outline: legible on any grey)."""
    painter.save()
    font = QFont(painter.font())
    font.setPixelSize(max(9, int(round(13 * scale))))
    painter.setFont(font)
    fm = QFontMetricsF(font)
    lh = fm.height()
    margin = 8 * scale
    for corner, texts in lines.items():
        if not texts:
            continue
        right = corner.endswith("right")
        bottom = corner.startswith("bottom")
        y0 = rect.bottom() - margin - lh * len(texts) if bottom else rect.top() + margin
        for i, text in enumerate(texts):
            box = QRectF(rect.left() + margin, y0 + i * lh, rect.width() - 2 * margin, lh)
            flags = int((Qt.AlignmentFlag.AlignRight if right else Qt.AlignmentFlag.AlignLeft)
                        | Qt.AlignmentFlag.AlignVCenter)
            painter.setPen(QColor(0, 0, 0, 220))
            for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                painter.drawText(box.translated(dx, dy), flags, text)
            painter.setPen(QColor(235, 235, 235))
            painter.drawText(box, flags, text)
    painter.restore()
