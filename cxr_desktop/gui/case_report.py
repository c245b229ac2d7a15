"""File > Export report...: a one-page PDF case report of the image on screen.

The page holds the image at the window/level the reader chose, the heatmap as the
viewer shows it (or why none is drawn), the finding with its probability and the
model's threshold, any caution or out-of-scope reason, the model and its card summary
(name, version, demonstration flag, warnings, lineage, weights check), measurements
when there are any, and the decision-aid sentence. Patient data (name, ID, birth date,
study date) is printed only when the reader ticks the box in the export dialog.

:func:`render_case_report` lays the page out from a :class:`CaseReport` and two
QImages with Qt's QPdfWriter and QPainter only (no window needed, no new dependency);
:func:`collect_case_report` gathers the data from the main window; the file is
written atomically.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QMarginsF, QRectF, QSizeF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPageLayout, QPageSize, QPainter, QPdfWriter, QPen
from PySide6.QtWidgets import (
    QCheckBox, QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout,
    QWidget,
)

from cxr_desktop import DECISION_AID_NOTICE, __version__

PATIENT_FIELDS = ("Name", "Patient ID", "Birth date", "Study date")
DPI = 150
MAX_LIST_LINES = 6  # per list (warnings, lineage, measurements): the page stays one page


@dataclass
class CaseReport:
    """What the report says (plain data; the images are passed beside it)."""

    finding: str  # "Predicted: opacity", "Not scored: out of scope", ...
    positive_class: str = ""
    probability: float | None = None  # P(positive class)
    threshold: float | None = None
    above_threshold: bool | None = None
    heatmap_note: str = ""  # the legend title, or why no heatmap is drawn
    caution: str | None = None  # the learned check's mark
    out_of_scope: list[str] = field(default_factory=list)
    model_name: str = ""
    model_version: str = ""
    demonstration: bool = False
    untrained: bool = False
    warnings: list[str] = field(default_factory=list)
    lineage: list[str] = field(default_factory=list)
    card_lines: list[str] = field(default_factory=list)  # intended use, test metrics, weights check
    measurements: list[str] = field(default_factory=list)
    patient: dict[str, str] | None = None  # only when the reader ticked "Include patient data"
    notice: str = DECISION_AID_NOTICE
    created: str = field(default_factory=lambda: datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))


# ---------------------------------------------------------------- page layout (no window needed)


class _Page:
    """A cursor down an A4 page: wrapped text blocks and image boxes."""

    def __init__(self, painter: QPainter, rect: QRectF):
        self.p = painter
        self.rect = rect
        self.y = rect.top()

    def font(self, size: float, *, bold: bool = False, italic: bool = False) -> QFont:
        f = QFont("DejaVu Sans")
        f.setPointSizeF(size)
        f.setBold(bold)
        f.setItalic(italic)
        return f

    def text(self, text: str, size: float = 9.0, *, bold: bool = False, italic: bool = False,
             color: QColor | None = None, gap: float = 0.25, indent: float = 0.0) -> None:
        if not text:
            return
        self.p.setFont(self.font(size, bold=bold, italic=italic))
        self.p.setPen(color or QColor(0, 0, 0))
        box = QRectF(self.rect.left() + indent, self.y, self.rect.width() - indent, self.rect.bottom() - self.y)
        flags = int(Qt.TextFlag.TextWordWrap) | int(Qt.AlignmentFlag.AlignLeft) | int(Qt.AlignmentFlag.AlignTop)
        used = self.p.boundingRect(box, flags, text)
        self.p.drawText(box, flags, text)
        self.y += used.height() + gap * self.p.fontMetrics().height()

    def bullets(self, items: list[str], size: float = 8.5) -> None:
        shown = items[:MAX_LIST_LINES]
        for item in shown:
            self.text(f"\u2022 {item}", size, gap=0.05, indent=self.rect.width() * 0.01)
        if len(items) > len(shown):
            self.text(f"... and {len(items) - len(shown)} more (see the model card in the viewer)", size,
                      italic=True, gap=0.05)
        self.y += 0.2 * self.p.fontMetrics().height()

    def heading(self, text: str) -> None:
        self.y += 0.2 * self.p.fontMetrics().height()
        self.text(text, 10.5, bold=True, gap=0.1)

    def rule(self) -> None:
        self.p.setPen(QPen(QColor(150, 150, 150), 2))
        self.p.drawLine(int(self.rect.left()), int(self.y), int(self.rect.right()), int(self.y))
        self.y += self.p.fontMetrics().height() * 0.4


def _draw_image(p: QPainter, image: QImage | None, box: QRectF, caption: str, note: str = "") -> None:
    """``image`` fitted into ``box`` (aspect kept) over a black frame, ``caption`` above, ``note`` inside."""
    cap_h = box.height() * 0.07
    p.setFont(QFont("DejaVu Sans", 8))
    p.setPen(QColor(0, 0, 0))
    p.drawText(QRectF(box.left(), box.top(), box.width(), cap_h),
               int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter | Qt.TextFlag.TextWordWrap), caption)
    frame = QRectF(box.left(), box.top() + cap_h, box.width(), box.height() - cap_h)
    p.fillRect(frame, QColor(0, 0, 0))
    if image is not None and not image.isNull():
        scale = min(frame.width() / image.width(), frame.height() / image.height())
        size = QSizeF(image.width() * scale, image.height() * scale)
        target = QRectF(frame.left() + (frame.width() - size.width()) / 2,
                        frame.top() + (frame.height() - size.height()) / 2, size.width(), size.height())
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        p.drawImage(target, image)
    if note:
        p.setPen(QColor(255, 255, 255))
        p.setFont(QFont("DejaVu Sans", 8))
        inner = frame.adjusted(frame.width() * 0.06, 0, -frame.width() * 0.06, 0)
        p.drawText(inner, int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), note)


def render_case_report(path: str | os.PathLike[str], report: CaseReport, image: QImage | None,
                       heatmap_image: QImage | None = None) -> Path:
    """Write the one-page PDF to ``path`` (atomically: a temporary file renamed into place).

    ``image``: the picture at the reader's window/level, no overlay. ``heatmap_image``: the
    same with the heatmap as the viewer shows it, or None when no heatmap is drawn
    (``report.heatmap_note`` says why).
    """
    out = Path(path)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = QPdfWriter(str(tmp))
    writer.setResolution(DPI)
    writer.setPageLayout(QPageLayout(QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Portrait,
                                     QMarginsF(12, 12, 12, 12), QPageLayout.Unit.Millimeter))
    writer.setTitle("CXR Review case report")
    writer.setCreator(f"CXR Review {__version__}")
    painter = QPainter()
    if not painter.begin(writer):
        tmp.unlink(missing_ok=True)
        raise OSError(f"cannot write a PDF to {out.name}")
    try:
        _lay_out(painter, QRectF(0, 0, writer.width(), writer.height()), report, image, heatmap_image)
    finally:
        painter.end()
    try:
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _lay_out(p: QPainter, rect: QRectF, r: CaseReport, image: QImage | None, heat: QImage | None) -> None:
    page = _Page(p, rect)
    page.text("CXR Review - case report", 15, bold=True, gap=0.1)
    page.text(f"Created {r.created} with CXR Review {__version__}.  {r.notice}", 8.5, italic=True,
              color=QColor(90, 90, 90), gap=0.3)
    if r.patient:
        page.text("   ".join(f"{k}: {r.patient.get(k) or '-'}" for k in PATIENT_FIELDS), 9.5, bold=True, gap=0.2)
    else:
        page.text("Patient data not included.", 8.5, color=QColor(90, 90, 90), gap=0.2)
    page.rule()

    gap = rect.width() * 0.03
    w = (rect.width() - gap) / 2
    h = rect.height() * 0.40
    top = page.y
    _draw_image(p, image, QRectF(rect.left(), top, w, h), "Image (window/level as viewed)")
    heat_caption = f"Heatmap as shown: {r.heatmap_note}" if heat is not None and r.heatmap_note else (
        "Heatmap as shown" if heat is not None else "Heatmap")
    _draw_image(p, heat if heat is not None else image, QRectF(rect.left() + w + gap, top, w, h), heat_caption,
                note="" if heat is not None else (r.heatmap_note or "No heatmap drawn."))
    page.y = top + h + p.fontMetrics().height() * 0.5

    page.heading("Result")
    red = QColor(140, 20, 20)
    page.text(r.finding, 11, bold=True, gap=0.15)
    if r.probability is not None and r.threshold is not None:
        side = "above" if r.above_threshold else "below"
        page.text(f"P({r.positive_class}) = {r.probability:.3f}, {side} the model's decision threshold "
                  f"{r.threshold:.3f}.", 9.5)
    if r.caution:
        page.text(f"CAUTION: {r.caution}", 9, color=QColor(150, 80, 0))
    if r.out_of_scope:
        page.text("OUT OF SCOPE: " + " ".join(r.out_of_scope), 9, color=red)
    if r.measurements:
        page.heading("Measurements")
        page.bullets(list(r.measurements))

    page.heading("Model")
    flags = []
    if r.demonstration:
        flags.append("DEMONSTRATION MODEL - for trying the software only; not validated for clinical use")
    if r.untrained:
        flags.append("UNTRAINED MODEL - its outputs are meaningless")
    page.text(f"{r.model_name} v{r.model_version}", 9.5, bold=True, gap=0.1)
    for f in flags:
        page.text(f, 9, bold=True, color=red, gap=0.1)
    for line in r.card_lines:
        page.text(line, 8.5, gap=0.05)
    if r.lineage:
        page.text("Lineage:", 8.5, bold=True, gap=0.05)
        page.bullets([x.strip() for x in r.lineage])
    if r.warnings:
        page.text("Warnings:", 8.5, bold=True, gap=0.05)
        page.bullets(list(r.warnings))

    # the decision-aid sentence, always, at the foot of the page
    p.setFont(QFont("DejaVu Sans", 9, italic=True))
    foot_h = p.fontMetrics().height() * 2.2
    foot = QRectF(rect.left(), rect.bottom() - foot_h, rect.width(), foot_h)
    p.setPen(QPen(QColor(150, 150, 150), 2))
    p.drawLine(int(foot.left()), int(foot.top()), int(foot.right()), int(foot.top()))
    p.setPen(QColor(0, 0, 0))
    p.drawText(foot, int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), r.notice)


# ---------------------------------------------------------------- data from the viewer


def patient_fields(image: Any) -> dict[str, str]:
    """Name, Patient ID, birth date and study date of the image on screen (for a ticked report only)."""
    md = dict(getattr(image, "metadata", {}) or {})
    out = {"Name": md.get("patient_name") or "", "Patient ID": md.get("patient_id") or "",
           "Birth date": md.get("patient_birth_date") or "", "Study date": md.get("study_date") or ""}
    path = getattr(image, "path", None)
    if getattr(image, "source_format", "") == "dicom" and path and not out["Birth date"]:
        try:  # not kept in the viewer's metadata: read the one element, header only
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientBirthDate"])
            out["Birth date"] = str(ds.get("PatientBirthDate", "") or "")
        except Exception:  # unreadable header: the field stays empty
            pass
    for k in ("Birth date", "Study date"):  # DICOM DA (YYYYMMDD) as YYYY-MM-DD
        v = out[k]
        if len(v) == 8 and v.isdigit():
            out[k] = f"{v[:4]}-{v[4:6]}-{v[6:]}"
    return {k: str(v) for k, v in out.items()}


def card_summary(active: Any) -> tuple[list[str], list[str]]:
    """(card lines, lineage lines) of the model in use: intended use, test metrics, weights check, lineage."""
    from cxr_desktop.gui.dialogs import weights_status_text
    from cxr_desktop.model.lineage import lineage_lines
    from cxr_desktop.training.metrics import format_value_ci

    card = active.card
    lines = [f"Intended use: {card.intended_use}"]
    metrics = card.metrics if isinstance(card.metrics, dict) else {}
    for split in ("test", "validation"):
        m = metrics.get(split)
        if isinstance(m, dict) and "auc" in m:
            bits = []
            for key, name in (("auc", "ROC AUC"), ("sensitivity", "sensitivity"), ("specificity", "specificity")):
                if key in m:
                    try:
                        bits.append(f"{name} {format_value_ci(m, key)}")
                    except (TypeError, ValueError, IndexError):
                        continue
            n = f" ({m['n']} images)" if "n" in m else ""
            lines.append(f"{split.capitalize()} set{n}: " + ", ".join(bits))
            break
    lines.append(f"Weights: {weights_status_text(active)}")
    return lines, lineage_lines(card) if getattr(card, "parent", None) or card.provenance.get("lineage") else []


def collect_case_report(window: Any, *, include_patient: bool = False,
                        measurements: list[str] | None = None) -> tuple[CaseReport, QImage | None, QImage | None]:
    """The report, the plain image and the image with its heatmap, from the main window's state."""
    from cxr_desktop.heatmap_rules import NO_HEATMAP_TEXT, legend_title

    image = window.current_image
    canvas = window.canvas
    active = window.models.active
    outcome = window.current_outcome
    shown = canvas.overlay_shown and window.layer is not None
    with_heat = canvas.render_native() if shown else None
    canvas.set_overlay_visible(False)  # the image alone, at the reader's window/level
    try:
        plain = canvas.render_native()
    finally:
        canvas.set_overlay_visible(window.overlay_panel.overlay_visible)
    report = CaseReport(finding="No result")
    result = outcome.result if outcome is not None else None
    verdict = None
    if image is not None:
        verdict = (window.scope.after_model(image, result.pooled) if result is not None
                   else window.scope.before_model(image))
    if verdict is not None and not verdict.in_scope:
        report.out_of_scope = [r.message for r in verdict.reasons]
    if result is not None and (verdict is None or verdict.in_scope or window.scope.show_anyway):
        pred = result.prediction
        report.finding = (f"Predicted: {pred.label}" if not report.out_of_scope
                          else f"OUT OF SCOPE - predicted: {pred.label} (not reliable)")
        report.probability, report.threshold = float(pred.score), float(pred.threshold)
        report.above_threshold = bool(pred.above_threshold)
        if verdict is not None and verdict.caution is not None:
            from cxr_desktop.viewing.viewer_scope import caution_text

            report.caution = caution_text(verdict.caution).replace("\n", " ")
    elif report.out_of_scope:
        report.finding = "Not scored: out of scope"
    elif outcome is not None and outcome.error:
        report.finding = f"Not scored: {outcome.error}"
    if active is not None:
        card = active.card
        report.positive_class = str(card.positive_class or card.classes[-1])
        report.model_name, report.model_version = str(card.name), str(card.version)
        report.demonstration, report.untrained = bool(card.demonstration), bool(active.untrained)
        report.warnings = list(card.warnings or [])
        report.card_lines, report.lineage = card_summary(active)
    if result is not None:
        below = not result.prediction.above_threshold
        if shown and window.layer is not None:
            report.heatmap_note = legend_title(window.layer.class_name, below_threshold=below)
        else:
            report.heatmap_note = (f"{NO_HEATMAP_TEXT}: P({report.positive_class}) = {result.prediction.score:.3f} "
                                   f"< {result.prediction.threshold:.3f}" if below else "Heatmap hidden in the viewer")
    else:
        report.heatmap_note = "No result: no heatmap"
    report.measurements = list(measurements or [])
    if include_patient and image is not None:
        report.patient = patient_fields(image)
    return report, plain, with_heat


# ---------------------------------------------------------------- the dialog


class ExportReportDialog(QDialog):
    """Where to save the report, and whether to print patient data on it (off unless ticked)."""

    def __init__(self, default_path: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Export report")
        self.path = QLineEdit(default_path)
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        self.include_patient = QCheckBox("Include patient data (name, patient ID, birth date, study date)")
        self.include_patient.setChecked(False)
        note = QLabel("Without it the report carries no patient data; it still names the image's result and "
                      "the model.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("One-page PDF report of the image on screen:"))
        lay.addLayout(row)
        lay.addWidget(self.include_patient)
        lay.addWidget(note)
        lay.addWidget(buttons)
        self.resize(560, 180)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export report", self.path.text(), "PDF (*.pdf)")
        if path:
            self.path.setText(path if path.lower().endswith(".pdf") else path + ".pdf")

    def chosen_path(self) -> str:
        p = self.path.text().strip()
        return p if p.lower().endswith(".pdf") else p + ".pdf"
