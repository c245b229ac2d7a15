"""Xvfb screenshots of the panels fixed for issue 14's rough edges and the case report dialog.

Shows each panel as a user would meet it (real xcb platform under Xvfb, not offscreen) and
saves an X screenshot of its window (``QScreen.grabWindow``) as PNG:

- ``decision_aid.png``: main window, narrow decision-aid dock, demonstration banner and
  out-of-scope reasons (wrapped, scrolling);
- ``tags.png``: DICOM tag panel of a real file in a narrow dock (Value column on screen);
- ``shortcuts.png``: Help > Keyboard shortcuts (Notes wrapped);
- ``model_card.png``: Model > Show model card of the bundled model (metrics table);
- ``dicomdir.png``: the study list opened on a DICOMDIR built with pydicom's FileSet;
- ``wizard_results.png`` / ``wizard_close.png``: the training wizard's results page (confusion
  matrix, Grad-CAM gallery) and the question Escape asks;
- ``report_dialog.png``: File > Export report...

Usage: xvfb-run -a -s "-screen 0 1400x900x24" python bench/screenshot_reading_edges.py OUT_DIR
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CXR_SHARED_DATA", REPO.parent / "shared" / "data"))


def main(argv: list[str]) -> int:
    out = Path(argv[1] if len(argv) > 1 else "shots")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="cxr-edges-"))
    os.environ.setdefault("CXR_SETTINGS_FILE", str(tmp / "settings.ini"))
    os.environ.setdefault("CXR_DATA_DIR", str(tmp / "data"))
    os.environ.setdefault("CXR_CACHE_DIR", str(tmp / "cache"))
    from PySide6.QtCore import QSettings, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])

    def settle(ms: int = 400) -> None:
        end = QTimer()
        end.setSingleShot(True)
        end.start(ms)
        while end.isActive():
            app.processEvents()

    def shoot(widget, name: str) -> None:
        settle()
        screen = widget.screen() or app.primaryScreen()
        pix = screen.grabWindow(0, widget.frameGeometry().x(), widget.frameGeometry().y(),
                                widget.frameGeometry().width(), widget.frameGeometry().height())
        pix.save(str(out / name))
        print(out / name, pix.width(), "x", pix.height())

    from cxr_desktop.gui.main_window import MainWindow
    from cxr_desktop.gui.settings import AppSettings

    win = MainWindow(AppSettings(QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat)))
    win.resize(1100, 640)
    win.move(0, 0)
    win.show()
    win.resizeDocks([win.docks["results"]], [280], Qt.Orientation.Horizontal)
    res = win.results
    res.banner.setText("DEMONSTRATION MODEL - for trying the software only; not validated for clinical use.\n"
                       "Inherited from 'demo v2': Demonstration only: trained on synthetic opacities, never on "
                       "real findings; do not use it to read patients' images.")
    res.banner.setStyleSheet("background:#8b1a1a; color:white; padding:6px; border-radius:3px; font-weight:bold;")
    res.banner.setVisible(True)
    res.show_out_of_scope(["The image is a CT slice (Modality CT); the classifier was trained on chest "
                           "radiographs (CR/DX) only, so its score would not mean anything for this image.",
                           "The body part examined is given as ABDOMEN; the classifier expects a frontal chest "
                           "radiograph (PA or AP)."])
    shoot(win, "decision_aid.png")

    # DICOMDIR in the study list, and the tag panel of one of its files
    import pydicom
    from pydicom.fileset import FileSet

    fs = FileSet()
    for name in ("RG1_J2KI.dcm", "MR2_UNCR.dcm", "US1_UNCR.dcm", "SC_rgb.dcm"):
        fs.add(pydicom.dcmread(DATA / "dicom" / name))
    fs.write(tmp / "media")
    win.image_displayed.connect(lambda _i: None)
    win.open_paths([str(tmp / "media" / "DICOMDIR")])
    for _ in range(100):
        settle(100)
        if win.current_image is not None and not win.study_list.scanning:
            break
    win.side_tabs.setCurrentWidget(win.tags)
    shoot(win, "dicomdir.png")
    win.resizeDocks([win.docks["results"]], [300], Qt.Orientation.Horizontal)
    shoot(win, "tags.png")

    from cxr_desktop.gui.shortcuts import ShortcutsDialog

    sc = ShortcutsDialog(win)
    sc.move(20, 20)
    sc.show()
    shoot(sc, "shortcuts.png")
    sc.close()

    from cxr_desktop.gui.case_report import ExportReportDialog

    rep = ExportReportDialog(str(tmp / "report.pdf"), win)
    rep.move(100, 100)
    rep.show()
    shoot(rep, "report_dialog.png")
    rep.close()

    from cxr_desktop.gui.dialogs import ModelCardDialog
    from cxr_desktop.gui.model_controller import load_model_file
    from cxr_desktop.paths import default_model_path

    card = ModelCardDialog(load_model_file(str(default_model_path()), {"device": "cpu", "backend": "torch"}), win)
    card.move(20, 20)
    card.resize(700, 820)
    card.show()
    card.browser.verticalScrollBar().setValue(card.browser.verticalScrollBar().maximum() // 2)
    shoot(card, "model_card.png")
    card.close()

    # the wizard's results page on a real (untrained) model and real images
    sys.path.insert(0, str(REPO / "tests"))
    import numpy as np

    from cxr_desktop.gui.training_wizard import TrainingWizard
    from cxr_desktop.model.modelfile import save_model
    from cxr_desktop.model.weights import init_model
    from cxr_desktop.training.metrics import ThresholdChoice, binary_report
    from cxr_desktop.training.results import Evaluation, SplitPredictions, TrainResult

    model, mcard = init_model(classes=["normal", "opacity"], positive_class="opacity", weights="none",
                              input_size=64, name="shot", seed=0)
    save_model(tmp / "m.safetensors", model, mcard)
    files = sorted(p for p in (DATA / "cxr").iterdir() if p.suffix == ".png")[:8]
    labels = np.array([i % 2 for i in range(len(files))])
    scores = np.array([0.2, 0.7, 0.4, 0.9, 0.6, 0.8, 0.1, 0.3])[: len(files)]
    preds = SplitPredictions("val", labels, np.stack([1 - scores, scores], 1), [f.name for f in files],
                             [str(f) for f in files])
    ev = Evaluation(["normal", "opacity"], 1, ThresholdChoice(0.5, "fixed", None, 0.5, 0.5), preds, None,
                    binary_report(labels, scores, 0.5, n_boot=50), None)
    wiz = TrainingWizard(win, gallery_per_kind=2)
    wiz.training_page.result = TrainResult(model_path=str(tmp / "m.safetensors"), card=mcard, evaluation=ev,
                                           history=[], cancelled=False, work_dir=str(tmp))
    wiz.setStartId(wiz.pageIds()[5])  # open straight on the results page (the run is given above)
    wiz.move(0, 0)
    wiz.show()
    for _ in range(600):
        settle(100)
        if getattr(wiz.evaluation_page, "gallery_done", False):
            break
    shoot(wiz, "wizard_results.png")
    wiz.settings_page.input_size.setValue(128)
    wiz.reject()
    shoot(wiz, "wizard_close.png")
    win.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
