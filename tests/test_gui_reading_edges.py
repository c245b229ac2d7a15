"""Rough edges of the reading room (issue 14): panels that clipped their text, the model card,
DICOMDIR, Open recent, quitting, the training wizard's close. Each test failed before its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QRect, Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

TIMEOUT = 30_000


# ------------------------------------------------------------------ DICOM tags panel


def test_tag_value_column_stays_on_screen_in_a_narrow_dock(qtbot, cxr_dir):
    from cxr_desktop.gui.tags_panel import MIN_VALUE_WIDTH, TagsPanel
    from cxr_desktop.imaging import read_dicom_tags

    rows = read_dicom_tags(cxr_dir / "siim_pneumothorax_sample.dcm")
    long_name = max(rows, key=lambda r: len(r[1]))
    panel = TagsPanel()
    qtbot.addWidget(panel)
    panel.resize(320, 500)
    panel.show()
    qtbot.waitExposed(panel)
    panel.set_tags(rows)
    QApplication.processEvents()
    tree, header = panel.tree, panel.tree.header()
    view_w = tree.viewport().width()
    value_left = header.sectionViewportPosition(3)
    assert value_left + MIN_VALUE_WIDTH <= view_w, (value_left, view_w)  # the Value column is on screen
    # the full name and value are still reachable (tooltip), even where the column cuts them
    item = next(tree.topLevelItem(i) for i in range(tree.topLevelItemCount())
                if tree.topLevelItem(i).text(1) == long_name[1])
    assert item.toolTip(1) == long_name[1] and item.toolTip(3) == str(long_name[3])
    # wider dock: the Name column gets its whole text back
    panel.resize(1000, 500)
    QApplication.processEvents()
    fm = tree.fontMetrics()
    assert tree.columnWidth(1) >= fm.horizontalAdvance(long_name[1])
    assert header.sectionViewportPosition(3) + MIN_VALUE_WIDTH <= tree.viewport().width()


# ------------------------------------------------------------------ shortcuts dialog


def _cell_fits(table, r: int, c: int) -> bool:
    text = table.item(r, c).text()
    if not text:
        return True
    fm = table.fontMetrics()
    width = table.columnWidth(c) - 8  # the item's margins
    need = fm.boundingRect(QRect(0, 0, width, 10_000), int(Qt.TextFlag.TextWordWrap), text)
    return need.width() <= width and need.height() <= table.rowHeight(r)


def test_shortcuts_dialog_shows_every_note_whole(qtbot):
    from cxr_desktop.gui.shortcuts import ShortcutsDialog

    dialog = ShortcutsDialog()
    qtbot.addWidget(dialog)
    dialog.resize(700, 560)
    dialog.show()
    qtbot.waitExposed(dialog)
    QApplication.processEvents()
    table = dialog.table
    right = table.horizontalHeader().sectionViewportPosition(3) + table.columnWidth(3)
    assert right <= table.viewport().width() + 1  # Notes is not pushed off the right edge
    clipped = [table.item(r, 3).text() for r in range(table.rowCount()) if not _cell_fits(table, r, 3)]
    assert not clipped, clipped
    assert any(len(table.item(r, 3).text()) > 50 for r in range(table.rowCount()))  # long notes exist


# ------------------------------------------------------------------ model card


def test_model_card_metrics_are_a_formatted_table_with_lineage_and_weights(qtbot, tmp_path):
    from cxr_desktop.gui.dialogs import ModelCardDialog
    from cxr_desktop.gui.model_controller import load_model_file
    from cxr_desktop.model.modelfile import file_sha256, save_model
    from cxr_desktop.model.weights import init_model

    parent = tmp_path / "demo.safetensors"
    model, card = init_model(classes=["normal", "opacity"], positive_class="opacity", weights="none",
                             input_size=64, name="demo", seed=0)
    card.version, card.demonstration = "2", True
    save_model(parent, model, card)
    model, card = init_model(classes=["normal", "opacity"], positive_class="opacity", weights=str(parent),
                             input_size=64, name="child", seed=0)
    card.metrics = {"ci": "95 % percentile bootstrap over patients",
                    "test": {"auc": 0.9357638888888888, "auc_ci95": [0.8980928485563695, 0.9677355373056286],
                             "sensitivity": 0.9027777777777778, "sensitivity_ci95": [0.8356121033466274, 0.96876],
                             "n": 144, "n_positive": 72, "confusion_matrix": [[52, 20], [7, 65]]},
                    "validation": {"auc": 0.9650848765432098, "auc_ci95": [0.93001, 0.99111], "n": 144}}
    child = tmp_path / "child.safetensors"
    save_model(child, model, card)
    active = load_model_file(str(child), {"device": "cpu"})
    dialog = ModelCardDialog(active)
    qtbot.addWidget(dialog)
    text = dialog.text
    assert "0.936 (0.898-0.968)" in text and "0.965 (0.930-0.991)" in text and "0.903 (0.836-0.969)" in text
    assert "0.9357638888888888" not in text and "0.89809" not in text  # no raw 16-digit floats
    assert "TN 52, FP 20, FN 7, TP 65" in text
    assert "ROC AUC" in text and "Validation" in text and "Test" in text
    assert f"Trained from 'demo v2' (sha256 {file_sha256(parent)[:16]}..., demonstration model)" in text
    assert "Weights" in text and "verified (tensors match the checksum" in text
    assert dialog.browser.document().toHtml().count("<table") >= 2  # facts and metrics are tables


# ------------------------------------------------------------------ decision-aid panel

LONG_REASONS = [
    "The image is a CT slice (Modality CT); the classifier was trained on chest radiographs (CR/DX) only, "
    "so its score would not mean anything for this image.",
    "The body part examined is given as ABDOMEN; the classifier expects a frontal chest radiograph (PA or AP).",
]


@pytest.fixture
def window(main_window):
    return main_window(size=(1000, 560))


def _fully_readable(label, area) -> bool:
    """The label is given the height its wrapped text needs, and scrolling to it shows all of it."""
    if label.height() < label.heightForWidth(label.width()):
        return False
    if area is not None:
        area.ensureWidgetVisible(label, 0, 0)
        QApplication.processEvents()
    return label.visibleRegion().boundingRect().size() == label.rect().size()


def test_decision_aid_text_wraps_and_is_never_clipped(qtbot, window):
    from cxr_desktop.gui.results_panel import OUT_OF_SCOPE_MARK

    res = window.results
    dock = window.docks["results"]
    window.resizeDocks([dock], [260], Qt.Orientation.Horizontal)  # a narrow decision-aid dock
    banner = ("DEMONSTRATION MODEL - for trying the software only; not validated for clinical use.\n"
              "Inherited from 'demo v2': Demonstration only: trained on synthetic opacities, never on real "
              "findings; do not use it to read patients' images.")
    res.banner.setText(banner)
    res.banner.setStyleSheet("background:#8b1a1a; color:white; padding:6px;")
    res.banner.setVisible(True)
    res.show_out_of_scope(LONG_REASONS)
    QApplication.processEvents()
    area = getattr(window, "results_scroll", None)  # (before the fix there was none: text was squeezed)
    width = area.viewport().width() if area is not None else res.width()
    labels = [res.banner, res.scope_label, res.notice_label]
    assert OUT_OF_SCOPE_MARK in res.scope_label.text() and LONG_REASONS[0] in res.scope_label.text()
    for lab in labels:
        assert lab.wordWrap(), lab.text()[:40]
        assert lab.width() <= width, lab.text()[:40]  # never wider than what is shown
        assert _fully_readable(lab, area), lab.text()[:40]
    # a window too short for all of it: the panel scrolls rather than squeezing the text
    window.resize(1000, 420)
    QApplication.processEvents()
    for lab in labels:
        assert _fully_readable(lab, area), lab.text()[:40]


# ------------------------------------------------------------------ DICOMDIR


@pytest.fixture
def dicomdir(tmp_path, dicom_dir) -> tuple[Path, int]:
    """A DICOMDIR written by pydicom's FileSet over a few real files (three patients, CR/MR/US/SC)."""
    import pydicom
    from pydicom.fileset import FileSet

    fs = FileSet()
    names = ["RG1_J2KI.dcm", "MR2_UNCR.dcm", "US1_UNCR.dcm", "SC_rgb.dcm"]
    for name in names:
        fs.add(pydicom.dcmread(dicom_dir / name))
    media = tmp_path / "media"
    fs.write(media)
    return media / "DICOMDIR", len(names)


def test_dicomdir_lists_its_images_not_itself(dicomdir):
    from cxr_desktop.viewing.study_scan import is_dicomdir, scan_paths

    path, n = dicomdir
    assert is_dicomdir(path)
    entries = list(scan_paths([path]))
    assert len(entries) == n and all(e.ok for e in entries), [(e.name, e.reason) for e in entries]
    assert all(e.name != "DICOMDIR" and Path(e.path).is_relative_to(path.parent) for e in entries)
    assert {e.info.metadata.get("modality") for e in entries} >= {"MR", "US"}
    # the folder holding it: each image once, the index not listed as a red entry
    in_folder = list(scan_paths([path.parent, path]))
    assert sorted(e.path for e in in_folder) == sorted(e.path for e in entries)


def test_damaged_dicomdir_says_what_it_is(dicomdir, tmp_path):
    from cxr_desktop.viewing.study_scan import scan_paths

    path, _ = dicomdir
    bad = tmp_path / "cut" / "DICOMDIR"
    bad.parent.mkdir()
    data = path.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    (entry,) = list(scan_paths([bad]))
    assert not entry.ok and "DICOMDIR" in entry.message and "Open the folder" in entry.message


def test_study_list_opens_a_dicomdir_grouped_by_patient(qtbot, dicomdir):
    from cxr_desktop.gui.study_list import StudyListWidget

    path, n = dicomdir
    lst = StudyListWidget()
    qtbot.addWidget(lst)
    with qtbot.waitSignal(lst.scan_finished, timeout=TIMEOUT):
        lst.add_paths([str(path)])
    entries = lst.entries()
    assert len(entries) == n and all(e.ok for e in entries)
    assert "cannot be opened" not in lst.summary.text()
    top = [lst.tree.topLevelItem(i).text(0) for i in range(lst.tree.topLevelItemCount())]
    assert all(t.startswith("Patient ") for t in top) and len(top) >= 2
    lst.shutdown()


# ------------------------------------------------------------------ Open recent


def test_open_recent_gets_one_entry_per_opening_and_no_missing_path(qtbot, window, cxr_dir, tmp_path):
    files = sorted(p for p in cxr_dir.iterdir() if p.suffix == ".png")[:3]
    assert len(files) == 3
    with qtbot.waitSignal(window.study_list.scan_finished, timeout=TIMEOUT):
        window.open_paths([str(f) for f in files])  # a multi-file launch
    assert window.settings.recent_files == [str(cxr_dir.resolve())]  # one entry: their folder
    assert [a.text() for a in window.recent_menu.actions()] == window.settings.recent_files
    missing = tmp_path / "gone" / "nothing.png"
    with qtbot.waitSignal(window.study_list.scan_finished, timeout=TIMEOUT):
        window.open_paths([str(missing)])
    assert window.settings.recent_files == [str(cxr_dir.resolve())]  # the missing path is not remembered
    with qtbot.waitSignal(window.study_list.scan_finished, timeout=TIMEOUT):
        window.open_paths([str(files[0])])  # one file: itself, first
    assert window.settings.recent_files == [str(files[0].resolve()), str(cxr_dir.resolve())]


def test_recent_entry_rules(tmp_path):
    from cxr_desktop.viewing.study_scan import recent_entry

    a, b = tmp_path / "a" / "x.png", tmp_path / "b" / "y.png"
    for f in (a, b):
        f.parent.mkdir()
        f.write_bytes(b"x")
    assert recent_entry([a]) == str(a.resolve())
    assert recent_entry([a, b]) == str(tmp_path.resolve())  # the folder they share
    assert recent_entry([a, tmp_path / "missing.png"]) == str(a.resolve())  # missing ones ignored
    assert recent_entry([tmp_path / "missing.png"]) is None
    assert recent_entry([a, "/etc/hostname"]) == str(a.resolve())  # only the root in common: the first


# ------------------------------------------------------------------ quitting


def test_closing_drops_queued_work_and_shares_one_short_wait(qtbot, monkeypatch, main_window):
    """Closing cancels what waits and never waits per pool: one short budget for all of them."""
    import threading

    from cxr_desktop.gui import main_window as mw
    from cxr_desktop.gui.workers import WorkerRunner

    calls: list[tuple[int, bool]] = []  # (timeout given, finished in time) per pool, in order
    real = WorkerRunner.shutdown

    def recording(self, timeout_ms=10000):
        done = real(self, timeout_ms)
        calls.append((int(timeout_ms), bool(done)))
        return done

    monkeypatch.setattr(WorkerRunner, "shutdown", recording)
    w = main_window(size=None, show=False)
    release = threading.Event()
    ran: list[str] = []
    w.loader.runner.start_function(lambda: release.wait(20))  # a large file still decoding
    w.engine_runner.start_function(lambda: release.wait(20))  # a model still loading
    w.engine_runner.start_function(lambda: ran.append("queued"))  # waits behind it
    try:
        w.close()
    finally:
        release.set()
    assert mw.CLOSE_WAIT_MS <= 500
    assert all(t <= mw.CLOSE_WAIT_MS for t, _ in calls)
    first_busy = next(i for i, (_, done) in enumerate(calls) if not done)
    # the first busy pool used up the budget: no later pool is waited for (before: 2 s for each)
    assert all(t <= 20 for t, _ in calls[first_busy + 1:]), calls
    assert sum(1 for _, done in calls if not done) == 2
    assert w.engine_runner.pool.waitForDone(5000)
    QApplication.processEvents()
    assert ran == []  # the queued job was dropped, not run after the user quit


# ------------------------------------------------------------------ training wizard


def _press_escape(qtbot, wiz) -> None:
    from PySide6.QtGui import QKeySequence  # noqa: F401 - keeps the Qt key enum import local

    qtbot.keyClick(wiz, Qt.Key.Key_Escape)
    QApplication.processEvents()


def test_wizard_asks_before_escape_closes_it_and_keeps_settings_for_the_session(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox, QWidget

    from cxr_desktop.gui.training_wizard import TrainingWizard

    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "user"))
    owner = QWidget()  # the main window in the app: the session's settings live with it
    qtbot.addWidget(owner)
    wiz = TrainingWizard(owner)
    wiz.show()
    qtbot.waitExposed(wiz)
    # nothing changed: Escape closes at once
    _press_escape(qtbot, wiz)
    assert not wiz.isVisible() and wiz.close_box is None

    wiz = TrainingWizard(owner)
    wiz.show()
    qtbot.waitExposed(wiz)
    wiz.folder_page.data.setText(str(tmp_path))
    wiz.folder_page.regex.setText(r"^(\d+)_")
    wiz.split_page.seed.setValue(1234)
    wiz.settings_page.input_size.setValue(128)
    wiz.settings_page.epochs_finetune.setValue(3)
    wiz.settings_page.hflip.setChecked(True)
    _press_escape(qtbot, wiz)
    box = wiz.close_box
    assert box is not None and box.isVisible() and wiz.isVisible()  # asked, not closed
    assert "kept for this session" in box.text()
    box.button(QMessageBox.StandardButton.No).click()
    QApplication.processEvents()
    assert wiz.isVisible()
    _press_escape(qtbot, wiz)
    wiz.close_box.button(QMessageBox.StandardButton.Yes).click()
    QApplication.processEvents()
    assert not wiz.isVisible()

    again = TrainingWizard(owner)  # reopened in the same session: every setting is back (owner deletes it)
    assert again.folder_page.data.text() == str(tmp_path)
    assert again.folder_page.regex.text() == r"^(\d+)_"
    assert again.split_page.seed.value() == 1234
    assert again.settings_page.input_size.value() == 128 and again.settings_page.epochs_finetune.value() == 3
    assert again.settings_page.hflip.isChecked()
    assert again.form_state() == wiz.form_state()
    fresh = TrainingWizard()  # another session (no owner): the defaults
    qtbot.addWidget(fresh)
    assert fresh.settings_page.input_size.value() == 224

    # a run going: the question says that closing stops it
    again.show()
    again.training_page.running = True  # as TrainingPage.initializePage sets it while its worker runs
    _press_escape(qtbot, again)
    assert again.isVisible() and "Training is running" in again.close_box.text()
    again.close_box.button(QMessageBox.StandardButton.No).click()
    again.training_page.running = False


@pytest.fixture
def trained(tmp_path, cxr_dir):
    """A real TrainResult: a saved 64 px model, its card, and an evaluation of real images."""
    import numpy as np

    from cxr_desktop.model.modelfile import save_model
    from cxr_desktop.model.weights import init_model
    from cxr_desktop.training.metrics import ThresholdChoice, binary_report
    from cxr_desktop.training.results import Evaluation, SplitPredictions, TrainResult

    model, card = init_model(classes=["normal", "opacity"], positive_class="opacity", weights="none",
                             input_size=64, name="wizard-test", seed=0)
    path = tmp_path / "m.safetensors"
    save_model(path, model, card)
    files = sorted(p for p in cxr_dir.iterdir() if p.suffix == ".png")[:8]
    labels = np.array([i % 2 for i in range(len(files))])
    scores = np.array([0.2, 0.7, 0.4, 0.9, 0.6, 0.8, 0.1, 0.3])[: len(files)]
    probs = np.stack([1 - scores, scores], axis=1)
    preds = SplitPredictions("val", labels, probs, [f.name for f in files], [str(f) for f in files])
    metrics = binary_report(labels, scores, 0.5, n_boot=50)
    ev = Evaluation(["normal", "opacity"], 1, ThresholdChoice(0.5, "fixed", None, 0.5, 0.5), preds, None,
                    metrics, None)
    return TrainResult(model_path=str(path), card=card, evaluation=ev, history=[], cancelled=False,
                       work_dir=str(tmp_path))


def test_wizard_results_page_headers_and_gallery_are_not_clipped(qtbot, trained):
    from cxr_desktop.gui.training_wizard import TrainingWizard

    wiz = TrainingWizard(gallery_per_kind=1)
    qtbot.addWidget(wiz)
    wiz.resize(980, 760)
    wiz.show()
    wiz.training_page.result = trained
    page = wiz.evaluation_page
    page.initializePage()
    wiz.evaluation_page.show()
    QApplication.processEvents()
    t = page.confusion
    fm = t.horizontalHeader().fontMetrics()
    for c in range(2):
        text = t.horizontalHeaderItem(c).text()
        assert text.startswith("predicted ")
        assert fm.horizontalAdvance(text) + 6 <= t.columnWidth(c), (text, t.columnWidth(c))
        assert fm.height() <= t.horizontalHeader().height()
    for r in range(2):
        assert fm.horizontalAdvance(t.verticalHeaderItem(r).text()) <= t.verticalHeader().width()
    assert t.minimumWidth() >= t.verticalHeader().width() + t.columnWidth(0) + t.columnWidth(1)
    qtbot.waitUntil(lambda: getattr(page, "gallery_done", False), timeout=120_000)
    QApplication.processEvents()
    lay = page.gallery_layout
    for row in range(lay.rowCount()):
        label = lay.itemAtPosition(row, 0)
        if label is None:
            continue
        lab = label.widget().geometry()
        for col in range(1, lay.columnCount()):
            cell = lay.itemAtPosition(row, col)
            if cell is not None:
                geo = cell.widget().geometry()
                assert geo.left() >= lab.right(), (row, col)  # images right of their row label
                assert geo.top() <= lab.top() + 2  # the label sits at the top of its row
