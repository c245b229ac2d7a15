"""File > Export report...: the one-page PDF case report (issue 14).

The PDF is rendered to PNG with poppler's pdftoppm (one page, not blank) and its text is
extracted with pdftotext: result, model, decision-aid sentence always; patient data only
when the export dialog's box is ticked.
"""

from __future__ import annotations

import shutil
import unicodedata
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtGui import QColor, QImage  # noqa: E402

from cxr_desktop import DECISION_AID_NOTICE  # noqa: E402
from cxr_desktop.gui.case_report import CaseReport, render_case_report  # noqa: E402

POPPLER = shutil.which("pdftoppm") and shutil.which("pdftotext")
needs_poppler = pytest.mark.skipif(not POPPLER, reason="poppler-utils (pdftoppm, pdftotext) is not installed")
DEMO = Path(__file__).resolve().parents[1] / "resources" / "models" / "demo-cxr.safetensors"


def pdf_text(pdf: Path) -> str:
    out = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True)
    return " ".join(unicodedata.normalize("NFKC", out.stdout).split())  # ligatures undone, lines joined


def pdf_pages_png(pdf: Path, out_dir: Path) -> list[Path]:
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(pdf), str(out_dir / "page")], check=True, timeout=60)
    return sorted(out_dir.glob("page*.png"))


def _not_blank(png: Path) -> tuple[int, int]:
    img = QImage(str(png)).convertToFormat(QImage.Format.Format_Grayscale8)
    arr = np.frombuffer(img.constBits(), np.uint8, img.bytesPerLine() * img.height()).reshape(img.height(), -1)
    arr = arr[:, : img.width()]
    assert arr.min() < 60 and arr.max() > 200  # dark image boxes and a white page
    return img.width(), img.height()


@needs_poppler
def test_layout_without_a_window(qapp, tmp_path):
    image = QImage(300, 360, QImage.Format.Format_RGB32)
    image.fill(QColor(120, 120, 120))
    heat = QImage(300, 360, QImage.Format.Format_RGB32)
    heat.fill(QColor(220, 60, 20))
    report = CaseReport(
        finding="Predicted: opacity", positive_class="opacity", probability=0.7345, threshold=0.3051,
        above_threshold=True, heatmap_note="Evidence for: opacity", caution=None,
        model_name="demo", model_version="3", demonstration=True,
        warnings=["Demonstration only: trained on synthetic opacities."] * 9,
        lineage=["Trained from 'base v1' (sha256 0123456789abcdef...)"],
        card_lines=["Test set (144 images): ROC AUC 0.936 (0.898-0.968)"],
        measurements=["Distance 42.1 mm", "Angle 31.0 deg"])
    pdf = render_case_report(tmp_path / "r.pdf", report, image, heat)
    assert pdf.exists() and not list(tmp_path.glob(".*tmp"))  # written atomically, no temporary left
    pages = pdf_pages_png(pdf, tmp_path)
    assert len(pages) == 1  # one page, even with a long warning list
    w, h = _not_blank(pages[0])
    assert h > w  # A4 portrait
    text = pdf_text(pdf)
    for needle in ("Predicted: opacity", "P(opacity) = 0.735", "threshold 0.305", "demo v3", "DEMONSTRATION MODEL",
                   "Trained from 'base v1'", "0.936 (0.898-0.968)", "Distance 42.1 mm", "Angle 31.0 deg",
                   "Evidence for: opacity", "and 3 more", "Patient data not included", DECISION_AID_NOTICE):
        assert needle in text, needle


@pytest.fixture
def window(main_window):
    return main_window(engine_options={"device": "cpu", "backend": "torch"})


@needs_poppler
@pytest.mark.skipif(not DEMO.exists(), reason="the bundled demonstration model is not in this checkout")
def test_export_report_from_the_viewer_patient_data_only_when_ticked(qtbot, window, dicom_dir, tmp_path):
    from cxr_desktop.gui.case_report import ExportReportDialog

    window.open_model(str(DEMO))
    qtbot.waitUntil(lambda: window.models.active is not None, timeout=120_000)
    with qtbot.waitSignal(window.prediction_shown, timeout=120_000):
        window.open_paths([str(dicom_dir / "RG1_J2KI.dcm")])  # a CR chest radiograph with patient data
    pred = window.current_outcome.result.prediction
    card = window.models.active.card

    # the dialog: patient data off by default; Save writes the PDF
    window.choose_report()
    dialog = window.report_dialog
    assert isinstance(dialog, ExportReportDialog) and not dialog.include_patient.isChecked()
    dialog.path.setText(str(tmp_path / "plain.pdf"))
    dialog.accept()
    plain = tmp_path / "plain.pdf"
    assert plain.exists()
    text = pdf_text(plain)
    assert f"P({card.positive_class}) = {pred.score:.3f}" in text and f"{pred.threshold:.3f}" in text
    assert f"{card.name} v{card.version}" in text and "DEMONSTRATION MODEL" in text
    status = window.models.active.engine.weights_status  # the bundled file: "verified" or "not verified (...)"
    assert f"Weights: {status}" in text and DECISION_AID_NOTICE in text
    for secret in ("9RG1", "CompressedSamples", "1940-03-05", "19400305", "2004-08-26"):
        assert secret not in text, secret  # no patient data unless ticked
    pages = pdf_pages_png(plain, tmp_path)
    assert len(pages) == 1
    _not_blank(pages[0])

    ticked = window.export_report(str(tmp_path / "with-patient.pdf"), include_patient=True)
    text = pdf_text(ticked)
    for shown in ("9RG1", "CompressedSamples RG1", "1940-03-05", "2004-08-26"):
        assert shown in text, shown
