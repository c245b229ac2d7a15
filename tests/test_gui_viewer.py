"""The review window without a model: opening real files, the canvas, bad files, tags, export.

No model is loaded here (``MainWindow.start`` is not called), so these tests
never import torch and stay fast.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QImage, QMouseEvent
from PySide6.QtWidgets import QApplication

from cxr_desktop.gui.main_window import MainWindow
from cxr_desktop.imaging import load_image, to_uint8
from cxr_desktop.imaging.types import Window
from window_helpers import open_and_wait

TIMEOUT = 30_000


def qimage_to_array(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format.Format_RGB888)
    w, h = img.width(), img.height()
    arr = np.frombuffer(img.constBits(), dtype=np.uint8, count=img.bytesPerLine() * h)
    return arr.reshape(h, img.bytesPerLine())[:, : 3 * w].reshape(h, w, 3).copy()


@pytest.fixture
def window(main_window):
    return main_window()


def rendered(qtbot, window: MainWindow) -> np.ndarray:
    qtbot.wait(30)  # let the coalesced render and the repaint happen
    QApplication.processEvents()
    return qimage_to_array(window.canvas.render_viewport())


# ------------------------------------------------------------------ opening each kind of file


def test_png_opens_with_pipeline_values(qtbot, window, cxr_dir):
    path = cxr_dir / "00000001_000.png"
    image = open_and_wait(qtbot, window, path)
    assert image.shape == (512, 512)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.shape == (512, 512)
    np.testing.assert_array_equal(image.pixels, raw.astype(np.float32))  # modality values = file values
    shown = window.canvas.display_array()
    np.testing.assert_array_equal(shown, to_uint8(load_image(path)))
    assert np.abs(shown.astype(int) - raw.astype(int)).max() <= 1
    view = rendered(qtbot, window)
    assert view.mean() > 20, "the image should be drawn in the viewport"
    entry = window.study_list.current_entry()
    assert entry is not None and entry.path == str(path)


def test_rgb_jpeg_opens(qtbot, window, cxr_dir):
    path = cxr_dir / "16747_3_1.jpg"
    image = open_and_wait(qtbot, window, path)
    assert image.shape == (885, 1036)  # rows x columns (the file is 1036 wide)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr.shape[:2] == image.shape
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    assert float(np.abs(grey - image.pixels).mean()) < 2.0  # decoders may differ by a grey level
    shown = window.canvas.display_array()
    assert shown.shape[:2] == image.shape
    np.testing.assert_array_equal(shown, to_uint8(load_image(path)) if image.rgb is None
                                  else window.canvas._mapper.colour(image.window, False))


def test_dicom_monochrome2_and_monochrome1(qtbot, window, cxr_dir):
    mono2 = open_and_wait(qtbot, window, cxr_dir / "siim_pneumothorax_sample.dcm")
    assert mono2.shape == (1024, 1024) and not mono2.invert_for_display
    shown2 = window.canvas.display_array().copy()
    np.testing.assert_array_equal(shown2, to_uint8(load_image(cxr_dir / "siim_pneumothorax_sample.dcm")))
    assert window.tags.tree.topLevelItemCount() > 10  # DICOM tags listed

    mono1 = open_and_wait(qtbot, window, cxr_dir / "fake_monochrome1.dcm")
    assert mono1.shape == (1024, 1024) and mono1.invert_for_display
    shown1 = window.canvas.display_array()
    np.testing.assert_array_equal(shown1, to_uint8(load_image(cxr_dir / "fake_monochrome1.dcm")))
    # MONOCHROME1: high stored values are shown dark
    plain = to_uint8(mono1, invert=False)
    np.testing.assert_array_equal(shown1, 255 - plain)
    # the user's invert toggle flips it back
    window.canvas.toggle_invert()
    np.testing.assert_array_equal(window.canvas.display_array(), plain)


def test_folder_lists_every_file_and_next_previous(qtbot, window, cxr_dir):
    first = open_and_wait(qtbot, window, cxr_dir)
    qtbot.waitUntil(lambda: not window.study_list.scanning, timeout=60_000)
    entries = window.study_list.entries()
    names = {e.name for e in entries}
    assert {"00000001_000.png", "16747_3_1.jpg", "siim_pneumothorax_sample.dcm", "fake_monochrome1.dcm"} <= names
    assert sum(1 for e in entries if e.name.endswith(".jpg") and "figure1" in e.path) >= 50
    assert first.path == entries[0].path  # the first file is shown while the rest are found
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT) as blocker:
        assert window.study_list.step(+1)
    assert blocker.args[0].path == entries[1].path
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT) as blocker:
        window.actions["prev_image"].trigger()
    assert blocker.args[0].path == entries[0].path


def test_dicom_grouped_by_patient_study_series(qtbot, window, cxr_dir):
    open_and_wait(qtbot, window, cxr_dir / "siim_pneumothorax_sample.dcm")
    tree = window.study_list.tree
    top = tree.topLevelItem(0)
    assert top.text(0).startswith("Patient ")
    study = top.child(0)
    assert study.text(0).startswith("Study ")
    series = study.child(0)
    assert series.text(0).startswith("Series")
    assert series.child(0).text(0).startswith("siim_pneumothorax_sample.dcm")


# ------------------------------------------------------------------ bad files


def test_bad_files_are_listed_with_reasons_and_the_good_one_opens(qtbot, window, cxr_dir, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a_notes.dcm").write_text("This is a referral letter, not an image.\n" * 20)
    data = (cxr_dir / "00000001_000.png").read_bytes()
    (folder / "b_cut.png").write_bytes(data[: len(data) // 3])
    shutil.copy(cxr_dir / "00027426_000.png", folder / "c_good.png")
    (folder / "readme.txt").write_text("not listed: no image extension, no image bytes")

    image = open_and_wait(qtbot, window, folder)
    assert Path(image.path).name == "c_good.png"
    qtbot.waitUntil(lambda: not window.study_list.scanning, timeout=TIMEOUT)
    by_name = {e.name: e for e in window.study_list.entries()}
    assert set(by_name) == {"a_notes.dcm", "b_cut.png", "c_good.png"}
    assert by_name["a_notes.dcm"].reason == "not_an_image"
    assert by_name["b_cut.png"].reason == "truncated"
    assert by_name["c_good.png"].ok
    for name in ("a_notes.dcm", "b_cut.png"):
        item = window.study_list._items[by_name[name].path]
        assert by_name[name].reason in item.text(0)
        assert item.toolTip(0) == by_name[name].message and name in item.toolTip(0)
    # choosing a bad file shows its reason instead of an image; the app keeps going
    window.study_list.select_path(by_name["b_cut.png"].path)
    assert window.canvas.image is None and "truncated" in window.canvas.message
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT):
        window.study_list.select_path(by_name["c_good.png"].path)


def test_file_that_fails_only_when_decoded_is_marked(qtbot, window, dicom_dir):
    path = dicom_dir / "liver_rle.dcm"  # header is fine, no decoder can read the pixels
    with qtbot.waitSignal(window.load_failed, timeout=TIMEOUT) as blocker:
        window.open_paths([str(path)])
    study = blocker.args[0]
    assert study.error is not None
    entry = window.study_list.entries()[0]
    assert not entry.ok and entry.reason == study.error.reason.value
    assert window.canvas.message == study.error.user_message()
    assert "Traceback" not in window.canvas.message


# ------------------------------------------------------------------ canvas


def test_window_level_and_invert_change_rendered_pixels(qtbot, window, cxr_dir):
    open_and_wait(qtbot, window, cxr_dir / "00000001_000.png")
    base_arr = window.canvas.display_array().copy()
    base_view = rendered(qtbot, window)

    window.canvas.set_window(Window(center=100.0, width=60.0, function="LINEAR_EXACT", source="manual"))
    arr = window.canvas.display_array()
    expect = np.rint(np.clip((window.canvas.image.pixels - 100.0) / 60.0 + 0.5, 0, 1) * 255).astype(np.uint8)
    assert np.abs(arr.astype(int) - expect.astype(int)).max() <= 1
    narrow_view = rendered(qtbot, window)
    assert np.abs(narrow_view.astype(int) - base_view.astype(int)).mean() > 5

    window.canvas.reset_window()
    np.testing.assert_array_equal(window.canvas.display_array(), base_arr)
    window.actions["invert"].trigger()
    np.testing.assert_array_equal(window.canvas.display_array(), 255 - base_arr)
    inv_view = rendered(qtbot, window)
    assert np.abs(inv_view.astype(int) - base_view.astype(int)).mean() > 30
    assert window.actions["invert"].isChecked()


def test_right_drag_sets_window_and_level(qtbot, window, cxr_dir):
    open_and_wait(qtbot, window, cxr_dir / "00000001_000.png")
    start = window.canvas.effective_window()
    vp = window.canvas.viewport()
    p0 = QPointF(300, 300)
    p1 = QPointF(400, 250)  # right = wider, up = lower level
    QApplication.sendEvent(vp, QMouseEvent(QEvent.Type.MouseButtonPress, p0, vp.mapToGlobal(p0),
                                           Qt.MouseButton.RightButton, Qt.MouseButton.RightButton,
                                           Qt.KeyboardModifier.NoModifier))
    QApplication.sendEvent(vp, QMouseEvent(QEvent.Type.MouseMove, p1, vp.mapToGlobal(p1),
                                           Qt.MouseButton.NoButton, Qt.MouseButton.RightButton,
                                           Qt.KeyboardModifier.NoModifier))
    QApplication.sendEvent(vp, QMouseEvent(QEvent.Type.MouseButtonRelease, p1, vp.mapToGlobal(p1),
                                           Qt.MouseButton.RightButton, Qt.MouseButton.NoButton,
                                           Qt.KeyboardModifier.NoModifier))
    w = window.canvas.window
    assert w is not None and w.source == "manual"
    assert w.width > start.width and w.center < start.center
    assert "W " in window.window_label.text()


def test_presets_menu_for_radiograph_and_ct(qtbot, window, cxr_dir, dicom_dir):
    open_and_wait(qtbot, window, cxr_dir / "00000001_000.png")
    names = [p.name for p in window.presets]
    assert names[0].startswith("Default") and "Full range" in names
    assert not any("CT" in n for n in names)  # Hounsfield presets make no sense on a radiograph
    before = window.canvas.display_array().copy()
    idx = names.index("Lung fields (dark range)")
    window.apply_preset(idx)
    assert window.canvas.window == window.presets[idx].window
    assert not np.array_equal(window.canvas.display_array(), before)

    open_and_wait(qtbot, window, dicom_dir / "693_UNCI.dcm")
    names = [p.name for p in window.presets]
    assert any(n.startswith("Lung (CT") for n in names)
    assert window.presets_menu.actions()[0].text() == names[0]


def test_rotation_flip_keep_overlay_aligned_and_zoom_keeps_point_under_cursor(qtbot, window, cxr_dir):
    image = open_and_wait(qtbot, window, cxr_dir / "16747_3_1.jpg")
    canvas = window.canvas
    heat = np.zeros(image.shape, np.float32)
    heat[:100, :200] = 1.0  # a hot top-left corner
    from cxr_desktop.gui.overlay import HeatmapLayer

    layer = HeatmapLayer(heat, "abnormal")
    canvas.set_overlay(layer.image("Jet"), image.shape)
    for op in (canvas.rotate_clockwise, canvas.flip_horizontal, canvas.rotate_counterclockwise, canvas.flip_vertical):
        op()
        a = canvas._image_item.sceneBoundingRect()
        b = canvas._overlay_item.sceneBoundingRect()
        assert abs(a.left() - b.left()) < 1e-6 and abs(a.width() - b.width()) < 1e-6
        assert abs(a.top() - b.top()) < 1e-6 and abs(a.height() - b.height()) < 1e-6
        # the image pixel at a scene point is the same through both layers
        pt = a.center() + QPointF(a.width() / 5, -a.height() / 7)
        pi = canvas._image_item.mapFromScene(pt)
        po = canvas._overlay_item.mapToItem(canvas._image_item, canvas._overlay_item.mapFromScene(pt))
        assert abs(pi.x() - po.x()) < 1e-3 and abs(pi.y() - po.y()) < 1e-3
    canvas.rotate_clockwise()
    canvas.rotate_clockwise()
    canvas.flip_horizontal()
    canvas.flip_vertical()  # rot 180 + both flips = identity
    assert canvas.orientation == (1, 0, 0, 1)

    canvas.fit()
    r = canvas._image_item.sceneBoundingRect()
    anchor = canvas.mapFromScene(r.center() + QPointF(r.width() / 4, r.height() / 5))
    before = canvas.image_point(anchor)
    canvas.zoom_by(3.0, anchor)
    after = canvas.image_point(anchor)
    assert canvas.zoom > 0.1
    assert abs(before.x() - after.x()) < 2.0 / canvas.zoom + 0.5
    assert abs(before.y() - after.y()) < 2.0 / canvas.zoom + 0.5
    canvas.actual_size()
    assert abs(canvas.zoom - 1.0) < 1e-9


def test_pixel_readout_is_in_modality_units(qtbot, window, dicom_dir):
    image = open_and_wait(qtbot, window, dicom_dir / "693_UNCI.dcm")  # CT: rescaled to HU
    canvas = window.canvas
    pos = canvas.viewport().rect().center()
    r = canvas.readout_at(pos)
    assert r is not None
    assert r.value == pytest.approx(float(image.pixels[r.row, r.column]))
    assert r.units == "HU"
    assert image.pixels.min() < -500  # HU, not stored values
    assert "HU" in r.text()


def test_multiframe_navigation(qtbot, window, dicom_dir):
    image = open_and_wait(qtbot, window, dicom_dir / "emri_small.dcm")
    assert image.frame_count == 10 and image.frame_index == 0
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT) as blocker:
        window.actions["next_frame"].trigger()
    second = blocker.args[0]
    assert second.frame_index == 1 and not np.array_equal(second.pixels, image.pixels)
    assert window.frame_label.text() == "Frame 2/10"
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT) as blocker:
        window.actions["last_frame"].trigger()
    assert blocker.args[0].frame_index == 9
    # an MR is shown but not scored
    assert "OUT OF SCOPE" in window.results.scope_label.text()


def test_tags_panel_search(qtbot, window, cxr_dir):
    open_and_wait(qtbot, window, cxr_dir / "siim_pneumothorax_sample.dcm")
    total = window.tags.tree.topLevelItemCount()
    window.tags.search.setText("modality")
    rows = window.tags.visible_rows()
    assert 0 < len(rows) < total
    assert all(any("modality" in c.lower() for c in row) for row in rows)
    assert any(r[0] == "(0008,0060)" for r in rows)
    window.tags.search.setText("")
    assert len(window.tags.visible_rows()) == total


def test_export_view_png_is_written_atomically(qtbot, window, cxr_dir, tmp_path):
    open_and_wait(qtbot, window, cxr_dir / "siim_pneumothorax_sample.dcm")
    out_dir = tmp_path / "export"
    out_dir.mkdir()
    out = window.export_view(str(out_dir / "view.png"), mode="view")
    assert out is not None and out.exists()
    img = QImage(str(out))
    vp = window.canvas.viewport()
    assert img.width() == vp.width() and img.height() > vp.height()  # no overlay: no legend column
    # by default the whole image at its native resolution (1024 x 1024), caption below
    native = QImage(str(window.export_view(str(out_dir / "native.png"))))
    assert native.width() == 1024 and native.height() > 1024
    assert sorted(p.name for p in out_dir.iterdir()) == ["native.png", "view.png"]  # no temp files left
    # an unwritable place gives a message, not a crash
    assert window.export_view(str(tmp_path / "missing" / "view.png")) is None
    assert window.last_message is not None and window.last_message[0] == "Export failed"


def test_recent_files_are_remembered(qtbot, window, cxr_dir):
    open_and_wait(qtbot, window, cxr_dir / "00000001_000.png")
    recent = window.settings.recent_files
    assert recent and Path(recent[0]).name == "00000001_000.png"
    assert [a.text() for a in window.recent_menu.actions()] == recent


def test_shortcuts_dialog_lists_every_bound_key(qtbot, window):
    from cxr_desktop.gui.shortcuts import SHORTCUTS, key_sequences

    window.show_shortcuts()
    dialog = window._dialogs[-1]
    texts = {dialog.table.item(r, 1).text() for r in range(dialog.table.rowCount())}
    for sc in SHORTCUTS:
        if sc.keys:
            assert sc.text.replace("&", "").rstrip(".") in texts
    # every shortcut is bound on the window
    for sc in SHORTCUTS:
        assert [k.toString() for k in window.actions[sc.id].shortcuts()] == [k.toString() for k in key_sequences(sc)]


def test_tools_menu_opens_screening_and_its_studies(qtbot, window, cxr_dir):
    window.actions["screen_folder"].trigger()
    from cxr_desktop.gui.screening_panel import ScreeningDialog

    dialog = window._dialogs[-1]
    assert isinstance(dialog, ScreeningDialog) and dialog.isVisible()
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT) as blocker:
        dialog.open_study_requested.emit(str(cxr_dir / "00027426_000.png"))
    assert Path(blocker.args[0].path).name == "00027426_000.png"
    dialog.close()


def test_keys_drive_the_viewer(qtbot, window, cxr_dir):
    open_and_wait(qtbot, window, cxr_dir / "00000001_000.png")
    window.activateWindow()
    window.canvas.setFocus()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
    before = window.canvas.display_array().copy()
    qtbot.keyClick(window.canvas, Qt.Key.Key_I)
    np.testing.assert_array_equal(window.canvas.display_array(), 255 - before)
    qtbot.keyClick(window.canvas, Qt.Key.Key_R)
    assert window.canvas.orientation == (0, -1, 1, 0)
    qtbot.keyClick(window.canvas, Qt.Key.Key_1)
    assert abs(window.canvas.zoom - 1.0) < 1e-9
    opacity = window.overlay_panel.opacity
    qtbot.keyClick(window.canvas, Qt.Key.Key_Period)
    assert window.overlay_panel.opacity == min(100, opacity + 10)
    qtbot.keyClick(window.canvas, Qt.Key.Key_O)
    assert not window.overlay_panel.overlay_visible
