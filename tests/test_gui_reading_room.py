"""Reading room (issue 14): 1x2/2x2 layouts, the prior beside the current image, linked views,
one result per pane, the docked worklist, dark theme and a window that fits the screen.

Small DICOM files (same Patient ID, different Study Dates) are written with pydicom in tmp_path.
Only the per-pane result test loads a (64 px, random-weight) model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtWidgets import QApplication

from cxr_desktop.gui.layout import initial_geometry
from cxr_desktop.gui.main_window import MainWindow
from cxr_desktop.gui.study_facts import StudyFacts, facts_from_metadata, find_prior, read_facts
from cxr_desktop.gui.theme import current_theme, is_dark
from cxr_desktop.gui.worklist_dock import ReadingWorklistModel, WorklistDock, read_status_path
from cxr_desktop.imaging.types import Window
from cxr_desktop.scope.learned import Caution
from cxr_desktop.screening.results import STATUS_ERROR, STATUS_OK, ResultRow
from dicom_builders import new_dataset
from window_helpers import open_and_wait
from model_builders import untrained_model_file

TIMEOUT = 60_000


def make_study(path: Path, patient: str, date: str, *, seed: int, size: tuple[int, int] = (96, 80),
               description: str = "CHEST PA") -> Path:
    """A small MONOCHROME2 DICOM chest image of ``patient`` dated ``date`` (YYYYMMDD)."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random(size) * 3000).astype(np.uint16)
    pixels[size[0] // 4: size[0] // 2, size[1] // 4: size[1] // 2] += 800  # some structure to look at
    ds = new_dataset()
    ds.PatientName = f"Test^{patient}"
    ds.PatientID = patient
    ds.StudyDate = date
    ds.StudyDescription = description
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.set_pixel_data(pixels, "MONOCHROME2", 12)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def studies(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "studies"
    folder.mkdir()
    return {
        "current": make_study(folder / "a_current.dcm", "PAT-1", "20240310", seed=1),
        "prior": make_study(folder / "b_prior.dcm", "PAT-1", "20210105", seed=2, size=(120, 100)),
        "older": make_study(folder / "c_older.dcm", "PAT-1", "20150601", seed=3),
        "other": make_study(folder / "d_other_patient.dcm", "PAT-2", "20230101", seed=4),
    }


@pytest.fixture
def window(main_window):
    return main_window(engine_options={"device": "cpu", "backend": "torch"})


def open_main(qtbot, window: MainWindow, path: Path):
    return open_and_wait(qtbot, window, path, TIMEOUT)


def open_pane(qtbot, window: MainWindow, index: int, path: Path):
    pane = window.reading_room.panes[index - 1]
    with qtbot.waitSignal(pane.image_shown, timeout=TIMEOUT) as blocker:
        window.reading_room.open_in_pane(index, str(path))
    return blocker.args[0]


def centre_fraction(canvas) -> tuple[float, float]:
    p = canvas.image_point(canvas.viewport().rect().center())
    return p.x() / canvas.image.columns, p.y() / canvas.image.rows


# ------------------------------------------------------------------ priors


def test_find_prior_same_patient_latest_earlier_date(studies):
    facts = {k: read_facts(p) for k, p in studies.items()}
    assert facts["current"].patient_id == "PAT-1" and facts["current"].date_text == "2024-03-10"
    assert find_prior(facts["current"], facts.values()).path == str(studies["prior"])  # latest earlier one
    assert find_prior(facts["prior"], facts.values()).path == str(studies["older"])
    assert find_prior(facts["older"], facts.values()) is None  # nothing earlier
    assert find_prior(facts["other"], facts.values()) is None  # another patient's studies never count
    assert read_facts(Path(__file__)) == StudyFacts(str(Path(__file__)))  # not DICOM: no facts, no error
    from cxr_desktop.imaging import probe

    scanned = facts_from_metadata(studies["prior"], probe(studies["prior"]).metadata)  # the study list's scan
    assert (scanned.patient_id, scanned.study_date) == ("PAT-1", "20210105")
    assert facts_from_metadata("x.png", {"patient_id": None, "study_date": None}) is None


def test_prior_opens_beside_the_current_image_with_the_shortcut(qtbot, window, studies):
    room = window.reading_room
    with qtbot.waitSignal(window.study_list.scan_finished, timeout=TIMEOUT):
        with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT):
            window.open_paths([str(studies["current"].parent)])
    if window.current_image.path != str(studies["current"]):
        with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT):
            window.study_list.select_path(str(studies["current"]))
    assert room.layout_name == "1x1"
    window.activateWindow()
    window.canvas.setFocus()
    with qtbot.waitSignal(room.panes[0].image_shown, timeout=TIMEOUT) as blocker:
        qtbot.keyClick(window.canvas, Qt.Key.Key_P, Qt.KeyboardModifier.ShiftModifier)
    assert room.layout_name == "1x2"
    assert blocker.args[0].path == str(studies["prior"])
    assert room.frames[1].isVisible() and room.frames[1].canvas.image is not None
    assert window.current_image.path == str(studies["current"])  # the current image stays where it was
    assert room.frames[1].text().startswith("2021-01-05")  # the prior's date on its header
    assert room.frames[0].text().startswith("2024-03-10")
    # the earliest study has no prior: said in the status bar, nothing opened
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT):
        window.study_list.select_path(str(studies["older"]))
    with qtbot.waitSignal(room.prior_searched, timeout=TIMEOUT) as searched:
        assert room.open_prior()  # the headers are read in a worker
    assert searched.args[0] is None
    assert "No prior found" in window.statusBar().currentMessage()
    assert room.panes[0].path == str(studies["prior"])


# ------------------------------------------------------------------ layouts and linking


def test_layout_switching_keeps_every_pane_image(qtbot, window, studies):
    room = window.reading_room
    open_main(qtbot, window, studies["current"])
    room.set_layout("2x2")
    for i, key in ((1, "prior"), (2, "older"), (3, "other")):
        open_pane(qtbot, window, i, studies[key])
    assert [f.isVisible() for f in room.frames] == [True, True, True, True]
    expect = [str(studies[k]) for k in ("current", "prior", "older", "other")]
    for name, shown in (("1x2", 2), ("1x1", 1), ("2x2", 4), ("1x2", 2)):
        window.reading_room.actions[name].trigger()
        qtbot.wait(10)
        assert room.layout_name == name
        assert [f.isVisible() for f in room.frames] == [i < shown for i in range(4)]
        assert [f.canvas.image.path for f in room.frames] == expect  # hidden panes keep their images
    # the visible panes share the central area
    widths = [f.width() for f in room.frames[:2]]
    assert abs(widths[0] - widths[1]) <= 4 and sum(widths) <= window.centralWidget().width()


def test_linked_zoom_pan_and_window_follow_unlinked_do_not(qtbot, window, studies):
    room = window.reading_room
    open_main(qtbot, window, studies["current"])
    room.set_layout("1x2")
    open_pane(qtbot, window, 1, studies["prior"])  # another size: followed as a fraction of the image
    main, other = room.frames[0].canvas, room.frames[1].canvas
    qtbot.wait(20)
    # unlinked: nothing propagates
    main.zoom_by(3.0)
    main.pan_by(40, 25)
    main.set_window(Window(center=1500.0, width=900.0, function="LINEAR", source="manual", explanation="manual"))
    assert other.fitting and other.window != main.window
    # linking brings the other pane to the same relative zoom, centre and window at once
    room.actions["link"].trigger()
    assert room.link.enabled
    rel = main.zoom / main.fit_zoom()
    assert other.zoom / other.fit_zoom() == pytest.approx(rel, rel=0.02)
    assert centre_fraction(other) == pytest.approx(centre_fraction(main), abs=0.02)
    assert other.window == main.window
    # and every later change, from either pane
    main.zoom_by(1.5)
    main.pan_by(-30, 15)
    assert other.zoom / other.fit_zoom() == pytest.approx(main.zoom / main.fit_zoom(), rel=0.02)
    assert centre_fraction(other) == pytest.approx(centre_fraction(main), abs=0.02)
    other.set_window(Window(center=900.0, width=400.0, function="LINEAR", source="manual", explanation="manual"))
    assert main.window == other.window
    main.fit()
    assert other.fitting
    # unlinked again: independent
    room.actions["link"].trigger()
    assert not room.link.enabled
    before = (other.zoom, other.window)
    main.zoom_by(2.0)
    main.set_window(Window(center=2000.0, width=500.0, function="LINEAR", source="manual", explanation="manual"))
    assert (other.zoom, other.window) == before


def _compare(qtbot, window, studies):
    """The current study in pane 0, its prior in pane 1, pane 1 made active by a click (as a reader does)."""
    room = window.reading_room
    open_main(qtbot, window, studies["current"])
    room.set_layout("1x2")
    open_pane(qtbot, window, 1, studies["prior"])
    qtbot.wait(20)
    pane1 = room.frames[1].canvas
    qtbot.mouseClick(pane1.viewport(), Qt.MouseButton.LeftButton, pos=pane1.viewport().rect().center())
    assert room.active == 1 and room.active_canvas() is pane1
    window.activateWindow()
    pane1.setFocus()
    return room, room.frames[0].canvas, pane1


def _state(canvas) -> tuple:
    return (round(canvas.zoom / canvas.fit_zoom(), 3), canvas.fitting, canvas.orientation, canvas.inverted,
            canvas.window)


def test_view_keys_act_on_the_active_pane_not_pane_0(qtbot, window, studies):
    room, main, pane1 = _compare(qtbot, window, studies)
    main_before = _state(main)
    qtbot.keyClick(pane1, Qt.Key.Key_Plus)  # zoom in
    assert pane1.zoom / pane1.fit_zoom() == pytest.approx(1.25, rel=0.02) and not pane1.fitting
    qtbot.keyClick(pane1, Qt.Key.Key_R)  # rotate right
    assert pane1.orientation == (0, -1, 1, 0)
    qtbot.keyClick(pane1, Qt.Key.Key_H)  # flip horizontal
    assert pane1.orientation != (0, -1, 1, 0)
    qtbot.keyClick(pane1, Qt.Key.Key_I)  # invert
    assert pane1.inverted and window.actions["invert"].isChecked()
    # the Presets menu offers the active pane's image's presets; Ctrl+3 applies the third to pane 1
    pane_presets = room.panes[0].presets
    assert window.presets == pane_presets and pane_presets[2].window is not None
    qtbot.keyClick(pane1, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
    assert pane1.window == pane_presets[2].window
    qtbot.keyClick(pane1, Qt.Key.Key_1)  # 1:1
    assert pane1.zoom == pytest.approx(1.0, rel=0.01)
    assert _state(main) == main_before  # pane 0 untouched by every key
    qtbot.keyClick(pane1, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)  # reset view: pane 1 only
    assert pane1.fitting and pane1.orientation == (1, 0, 0, 1) and not pane1.inverted
    assert _state(main) == main_before
    # back on pane 0, the same keys act there and leave pane 1 alone
    qtbot.mouseClick(main.viewport(), Qt.MouseButton.LeftButton, pos=main.viewport().rect().center())
    assert room.active == 0 and window.presets == room._main_presets  # the menu is pane 0's again
    pane1_before = _state(pane1)
    qtbot.keyClick(main, Qt.Key.Key_Plus)
    assert main.zoom / main.fit_zoom() == pytest.approx(1.25, rel=0.02)
    qtbot.keyClick(main, Qt.Key.Key_R)
    assert main.orientation == (0, -1, 1, 0)
    assert _state(pane1) == pane1_before


def test_link_rules_zoom_pan_window_and_inversion_follow_orientation_does_not(qtbot, window, studies):
    room, main, pane1 = _compare(qtbot, window, studies)
    qtbot.keyClick(pane1, Qt.Key.Key_L)  # link
    assert room.link.enabled
    qtbot.keyClick(pane1, Qt.Key.Key_Plus)
    qtbot.keyClick(pane1, Qt.Key.Key_Plus)
    assert main.zoom / main.fit_zoom() == pytest.approx(pane1.zoom / pane1.fit_zoom(), rel=0.02)
    assert centre_fraction(main) == pytest.approx(centre_fraction(pane1), abs=0.02)
    qtbot.keyClick(pane1, Qt.Key.Key_4, Qt.KeyboardModifier.ControlModifier)  # a W/L preset follows
    assert pane1.window is not None and main.window == pane1.window
    qtbot.keyClick(pane1, Qt.Key.Key_I)  # inversion follows (same grey-level polarity to compare)
    assert pane1.inverted and main.inverted
    qtbot.keyClick(pane1, Qt.Key.Key_R)  # orientation is per pane: each image's own acquisition
    qtbot.keyClick(pane1, Qt.Key.Key_V)
    assert pane1.orientation != (1, 0, 0, 1) and main.orientation == (1, 0, 0, 1)
    qtbot.keyClick(pane1, Qt.Key.Key_F)  # fit follows
    assert pane1.fitting and main.fitting
    qtbot.keyClick(pane1, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)  # reset: inversion follows
    assert not pane1.inverted and not main.inverted and pane1.orientation == (1, 0, 0, 1)
    # unlinked: inversion stays per pane
    qtbot.keyClick(pane1, Qt.Key.Key_L)
    qtbot.keyClick(pane1, Qt.Key.Key_I)
    assert pane1.inverted and not main.inverted


def _cache_study(cache, path: Path) -> None:
    """Put the DICOM file at ``path`` into the PACS study cache as one complete study (P1's API)."""
    import pydicom

    ds = pydicom.dcmread(path)
    with cache.staging(ds.StudyInstanceUID) as stage:
        stage.add(ds.SOPInstanceUID, path.read_bytes())
    path.unlink()  # only the cache holds it now


def test_prior_found_in_the_pacs_cache_when_not_in_the_study_list(qtbot, window, studies, tmp_path):
    from cxr_desktop.pacs import StudyCache

    room = window.reading_room
    cache_root = room.pacs_cache_root()
    assert cache_root == tmp_path / "cache" / "pacs-studies"  # the app's default cache, under CXR_CACHE_DIR
    cache = StudyCache(cache_root)
    elsewhere = tmp_path / "retrieved"
    elsewhere.mkdir()
    cached = {name: make_study(elsewhere / f"{name}.dcm", pid, date, seed=seed) for name, pid, date, seed in (
        ("prior_2022", "PAT-1", "20220704", 11),  # the latest earlier study: the one expected
        ("prior_2019", "PAT-1", "20190101", 12),
        ("later", "PAT-1", "20250101", 13),  # after the current study: never a prior
        ("other", "PAT-9", "20230101", 14),  # another patient
    )}
    for path in cached.values():
        _cache_study(cache, path)
    assert len(cache.studies()) == 4
    open_main(qtbot, window, studies["current"])  # the study list holds only the current study
    assert [e.path for e in window.study_list.entries()] == [str(studies["current"])]
    window.activateWindow()
    window.canvas.setFocus()
    with qtbot.waitSignal(room.prior_searched, timeout=TIMEOUT) as searched:
        with qtbot.waitSignal(room.panes[0].image_shown, timeout=TIMEOUT) as shown:
            qtbot.keyClick(window.canvas, Qt.Key.Key_P, Qt.KeyboardModifier.ShiftModifier)
    prior = searched.args[0]
    assert prior.study_date == "20220704" and prior.patient_id == "PAT-1"
    assert Path(prior.path).parent.parent == cache_root and shown.args[0].path == prior.path
    assert room.layout_name == "1x2" and room.frames[1].text().startswith("2022-07-04")
    assert room.frames[1].text().endswith(" - prior from the PACS cache")  # cached files have hashed names
    # the study list's prior (2021) is older than the cached one (2022): the cached one still wins
    with qtbot.waitSignal(window.study_list.scan_finished, timeout=TIMEOUT):
        window.open_paths([str(studies["prior"])])
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT):
        window.study_list.select_path(str(studies["current"]))
    with qtbot.waitSignal(room.prior_searched, timeout=TIMEOUT) as searched:
        room.open_prior()
    assert searched.args[0].study_date == "20220704"
    assert sorted(p.name for p in cache_root.iterdir()) == sorted(s.key for s in cache.studies())  # unchanged


# ------------------------------------------------------------------ one result per pane


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return untrained_model_file(tmp_path_factory.mktemp("models") / "pane.safetensors",
                                name="Pane", seed=5)


def test_each_pane_has_its_own_result_and_heatmap(qtbot, window, model_file, cxr_dir):
    room = window.reading_room
    with qtbot.waitSignal(window.models.ready, timeout=TIMEOUT):
        window.open_model(str(model_file))
    window.overlay_panel.set_show_below(True)  # random weights may score below threshold: maps on request
    with qtbot.waitSignal(window.prediction_shown, timeout=TIMEOUT) as main_done:
        window.open_paths([str(cxr_dir / "00000001_000.png")])
    room.set_layout("1x2")
    pane = room.panes[0]
    with qtbot.waitSignal(pane.result_shown, timeout=TIMEOUT) as pane_done:
        room.open_in_pane(1, str(cxr_dir / "16747_3_1.jpg"))
    main_out, pane_out = main_done.args[0], pane_done.args[0]
    assert main_out.key.path.endswith("00000001_000.png") and pane_out.key.path.endswith("16747_3_1.jpg")
    assert pane_out.result.heatmap.shape == pane.image.shape != window.current_image.shape
    assert pane.canvas.overlay_shown and window.canvas.overlay_shown
    main_score = f"{main_out.result.prediction.score:.3f}"
    pane_score = f"{pane_out.result.prediction.score:.3f}"
    assert main_score != pane_score
    assert pane_score in room.frames[1].text() and main_score in room.frames[0].text()
    assert room.frames[1].header.toolTip() == room.frames[1].text()  # in full where the header is elided
    # the active pane drives the decision-aid panel
    room.set_active(1)
    assert room.frames[1].active and not room.frames[0].active
    assert f"= {pane_score}:" in window.results.threshold_label.text()
    qtbot.mouseClick(room.frames[0].canvas.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(30, 30))
    assert room.active == 0
    assert f"= {main_score}:" in window.results.threshold_label.text()


def test_show_score_anyway_applies_to_the_active_pane_only(qtbot, window, cxr_dir, dicom_dir):
    room = window.reading_room
    open_main(qtbot, window, dicom_dir / "693_UNCI.dcm")  # a CT slice: out of scope
    room.set_layout("1x2")
    open_pane(qtbot, window, 1, dicom_dir / "693_UNCR.dcm")  # another CT slice
    room.set_active(1)
    assert "OUT OF SCOPE" in window.results.scope_label.text()
    assert not window.results.show_anyway_button.isHidden()
    qtbot.mouseClick(window.results.show_anyway_button, Qt.MouseButton.LeftButton)
    assert room.panes[0].scope.show_anyway and not window.scope.show_anyway  # the main image stays unscored
    room.set_active(0)
    qtbot.mouseClick(window.results.show_anyway_button, Qt.MouseButton.LeftButton)
    assert window.scope.show_anyway


# ------------------------------------------------------------------ docked worklist


def _rows() -> list[ResultRow]:
    caution = Caution(distance=9.0, limit=4.0)
    return [
        ResultRow("a_current.dcm", STATUS_OK, "normal", 0.20, False),
        ResultRow("b_prior.dcm", STATUS_OK, "abnormal", 0.90, True),
        ResultRow("c_older.dcm", STATUS_OK, "abnormal", 0.70, True, caution=caution),
        ResultRow("d_other_patient.dcm", STATUS_OK, "abnormal", 0.55, True),
        ResultRow("zz_broken.dcm", STATUS_ERROR, reason="unreadable", detail="The file is damaged."),
    ]


def test_worklist_dock_next_unread_by_score_and_mark_read(qtbot, window, studies):
    dock = window.reading_room.worklist
    folder = studies["current"].parent
    dock.set_results(folder, _rows())
    dock.show()
    model = dock.model
    assert window.dockWidgetArea(dock) == Qt.DockWidgetArea.BottomDockWidgetArea and not dock.isFloating()
    assert [r.path for r in model.rows()][:4] == ["b_prior.dcm", "c_older.dcm", "d_other_patient.dcm",
                                                  "a_current.dcm"]  # by score; the caution row by its score
    assert model.rows()[-1].status == STATUS_ERROR  # unscored last, still listed
    caution_row = model.index_of("c_older.dcm")
    assert "\u26a0" in model.data(model.index(caution_row, ReadingWorklistModel.COL_CAUTION))
    # patient / study / date columns from the headers (read in the background)
    qtbot.waitUntil(lambda: model.data(model.index(0, ReadingWorklistModel.COL_DATE)) == "2021-01-05",
                    timeout=TIMEOUT)
    assert "PAT-1" in model.data(model.index(0, ReadingWorklistModel.COL_PATIENT))
    assert model.data(model.index(0, ReadingWorklistModel.COL_STUDY)) == "CHEST PA"
    # U = next unread by score: the highest score first, opened in the viewer
    window.activateWindow()
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT) as shown:
        qtbot.keyClick(window.canvas, Qt.Key.Key_U)
    assert shown.args[0].path == str(studies["prior"])
    assert dock.isVisible() and dock.table.isEnabled() and window.canvas.image is not None
    qtbot.keyClick(window.canvas, Qt.Key.Key_M)  # mark as read
    assert model.data(model.index(0, ReadingWorklistModel.COL_READ)) == "read"
    assert "4 unread" in dock.summary.text()
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT) as shown:
        dock.step_unread(+1)
    assert shown.args[0].path == str(studies["older"])
    dock.set_read(dock.current)
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT) as shown:
        dock.step_unread(+1)
    assert shown.args[0].path == str(studies["other"])
    # Shift+U = previous unread: both earlier rows are read, so there is none
    qtbot.keyClick(window.canvas, Qt.Key.Key_U, Qt.KeyboardModifier.ShiftModifier)
    assert dock.current == model.index_of("d_other_patient.dcm")
    assert "No earlier unread" in dock.summary.text()
    dock.set_read(0, False)  # back to unread: previous unread finds it again
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT) as shown:
        assert dock.step_unread(-1)
    assert shown.args[0].path == str(studies["prior"])
    # opening a row by double-click keeps the dock docked and the viewer usable
    idx = model.index(model.index_of("a_current.dcm"), ReadingWorklistModel.COL_FILE)
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT) as shown:
        dock.table.doubleClicked.emit(idx)
    assert shown.args[0].path == str(studies["current"])
    assert dock.isVisible() and not dock.isFloating()
    window.canvas.zoom_by(2.0)  # the viewer still answers
    assert window.canvas.zoom / window.canvas.fit_zoom() == pytest.approx(2.0, rel=0.02)


def test_read_status_survives_reopening_the_dock_on_the_same_run_folder(qtbot, window, studies, tmp_path):
    folder = studies["current"].parent
    root = tmp_path / "results"
    dock = WorklistDock(results_root=root)
    qtbot.addWidget(dock)
    dock.set_results(folder, _rows())
    assert dock.model.unread_count() == 5
    dock.set_read(dock.model.index_of("b_prior.dcm"))
    dock.set_read(dock.model.index_of("zz_broken.dcm"))
    status = read_status_path(folder, root)
    text = status.read_text()
    assert "b_prior" not in text and "PAT-1" not in text and str(folder) not in text  # hashes only
    dock.shutdown(2000)
    # a new dock (a new session) on the same folder: the marks are back; rows of another folder are unread
    again = WorklistDock(results_root=root)
    qtbot.addWidget(again)
    again.set_results(folder, _rows())
    m = again.model
    assert [m.data(m.index(i, ReadingWorklistModel.COL_READ)) for i in range(m.rowCount())] == [
        "read" if m.row_at(i).path in ("b_prior.dcm", "zz_broken.dcm") else "unread" for i in range(m.rowCount())]
    assert "3 unread" in again.summary.text()
    again.set_read(m.index_of("b_prior.dcm"), False)  # unmarking is saved too
    other = tmp_path / "other_run"
    other.mkdir()
    again.set_results(other, _rows())
    assert again.model.unread_count() == 5
    again.set_results(folder, _rows())
    assert again.model.unread_count() == 4
    again.shutdown(2000)
    status.write_text("{ torn")  # a damaged file: rows start unread, nothing crashes
    third = WorklistDock(results_root=root)
    qtbot.addWidget(third)
    third.set_results(folder, _rows())
    assert third.model.unread_count() == 5
    third.shutdown(2000)


# ------------------------------------------------------------------ theme and screen size


def test_dark_theme_by_default_and_switchable(qtbot, window, tmp_path):
    app = QApplication.instance()
    assert current_theme() == "dark" and is_dark(app.palette())
    window.reading_room.actions["theme_light"].trigger()
    assert current_theme() == "light" and not is_dark(app.palette())
    assert window.settings.theme == "light"
    window.reading_room.actions["theme_dark"].trigger()
    assert current_theme() == "dark" and is_dark(app.palette())
    assert window.settings.theme == "dark"


def test_window_never_opens_larger_than_the_screen(qtbot, main_window):
    assert initial_geometry(QRect(0, 0, 1280, 680)).size().width() <= 1280 * 0.92 + 1
    assert initial_geometry(QRect(0, 0, 1280, 680)).size().height() <= 680 * 0.92 + 1
    assert initial_geometry(QRect(0, 0, 3840, 2160)).size().toTuple() == (1400, 900)
    g = initial_geometry(QRect(100, 50, 960, 540))  # a 1920x1080 screen at scale factor 2, offset
    assert QRect(100, 50, 960, 540).contains(g)
    w = main_window(size=None)  # the window's own first size
    avail = w.screen().availableGeometry()
    assert w.width() <= avail.width() and w.height() <= avail.height()
    assert (w.width(), w.height()) != (1400, 900) or avail.width() >= 1400
    # the busiest layout (2x2 with the worklist) still fits a 1920x1080 screen at scale factor 2
    w.reading_room.set_layout("2x2")
    w.reading_room.worklist.show()
    QApplication.processEvents()
    hint = w.minimumSizeHint()
    assert hint.width() <= 960 and hint.height() <= 540, hint


def test_reading_room_keys_are_listed_in_the_shortcuts_help(qtbot):
    from cxr_desktop.gui.shortcuts import ShortcutsDialog

    dialog = ShortcutsDialog()
    qtbot.addWidget(dialog)
    table = dialog.table
    rows = {(table.item(r, 1).text(), table.item(r, 2).text()) for r in range(table.rowCount())}
    for action, keys in (("Open prior beside the current image", "Shift+P"), ("1 x 2 layout (compare)", "Alt+2"),
                         ("Link zoom, pan and window/level", "L"), ("Next unread (by score)", "U"),
                         ("Previous unread (by score)", "Shift+U"), ("Mark as read / unread", "M")):
        assert (action, keys) in rows
