"""Measurements, the four-corner overlay and frame navigation in the review window (issue 14).

No model is loaded (``MainWindow.start`` is not called): torch is never imported here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QImage, QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication

from cxr_desktop.measure import IMAGER_CAVEAT, Measurement, MeasurementStore, path_key
from dicom_builders import new_dataset
from window_helpers import open_and_wait

TIMEOUT = 30_000
NAME, PID = "Corner^Testpatient", "PID-4711"


@pytest.fixture
def window(main_window):
    return main_window()


def make_cr(path: Path, pixels: np.ndarray, **attrs) -> Path:
    """A small uncompressed CR with patient data (to check it stays out of exports and JSON)."""
    ds = new_dataset("1.2.840.10008.5.1.4.1.1.1")  # CR Image Storage
    ds.PatientName, ds.PatientID, ds.StudyDate = NAME, PID, "20240102"
    ds.Modality, ds.ViewPosition, ds.ImageLaterality = "CR", "PA", "L"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SeriesNumber, ds.InstanceNumber = 3, 7
    ds.set_pixel_data(pixels, "MONOCHROME2", 16)
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)
    return path


def mouse(canvas, kind: QEvent.Type, pos: QPointF, button=Qt.MouseButton.LeftButton) -> None:
    vp = canvas.viewport()
    held = button if kind != QEvent.Type.MouseButtonRelease else Qt.MouseButton.NoButton
    QApplication.sendEvent(vp, QMouseEvent(kind, pos, vp.mapToGlobal(pos), button, held,
                                           Qt.KeyboardModifier.NoModifier))


def drag(canvas, a: QPointF, b: QPointF, button=Qt.MouseButton.LeftButton) -> None:
    mouse(canvas, QEvent.Type.MouseButtonPress, a, button)
    mid = (a + b) / 2
    mouse(canvas, QEvent.Type.MouseMove, mid, Qt.MouseButton.NoButton)
    mouse(canvas, QEvent.Type.MouseMove, b, Qt.MouseButton.NoButton)
    mouse(canvas, QEvent.Type.MouseButtonRelease, b, button)


def vp_of(canvas, x: float, y: float) -> QPointF:
    return canvas.viewport_point(QPointF(x, y))


def to_array(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format.Format_RGB888)
    w, h = img.width(), img.height()
    arr = np.frombuffer(img.constBits(), dtype=np.uint8, count=img.bytesPerLine() * h)
    return arr.reshape(h, img.bytesPerLine())[:, : 3 * w].reshape(h, w, 3).copy()


# ------------------------------------------------------------------ measurements


def test_distance_in_mm_with_pixel_spacing_and_in_pixels_for_png(qtbot, window, cxr_dir):
    open_and_wait(qtbot, window, cxr_dir / "siim_pneumothorax_sample.dcm")  # Pixel Spacing 0.168 mm
    canvas = window.canvas
    window.actions["tool_distance"].trigger()
    a, b = vp_of(canvas, 200, 300), vp_of(canvas, 700, 300)
    drag(canvas, a, b)  # press-drag-release with the distance tool
    [m] = canvas.measure.items
    pa, pb = canvas.image_point(a.toPoint()), canvas.image_point(b.toPoint())
    expected = abs(pb.x() - pa.x()) * 0.168
    assert m.kind == "distance" and abs(expected - 84.0) < 2  # 500 image px at 0.168 mm
    assert canvas.measure.value(m) == f"{expected:.1f} mm"
    assert canvas.measure.descriptions() == [f"Distance: {expected:.1f} mm"]  # no caveat: Pixel Spacing
    assert canvas.measure.calibration.source == "pixel_spacing"

    open_and_wait(qtbot, window, cxr_dir / "00000001_000.png")
    assert canvas.measure.items == []  # measurements belong to their image
    window.actions["tool_distance"].trigger()
    drag(canvas, vp_of(canvas, 100, 100), vp_of(canvas, 400, 500))
    [m] = canvas.measure.items
    assert canvas.measure.value(m).endswith(" px")
    assert float(canvas.measure.value(m).split()[0]) == pytest.approx(500, abs=3)
    assert "Lengths in pixels" in canvas.corner_text()["bottom_right"][0]


def test_imager_pixel_spacing_only_shows_the_caveat(qtbot, window, tmp_path):
    path = make_cr(tmp_path / "imager.dcm", np.full((200, 300), 1000, np.uint16), ImagerPixelSpacing=[0.2, 0.1])
    image = open_and_wait(qtbot, window, path)
    assert image.metadata["pixel_spacing"] is None and image.metadata["imager_pixel_spacing"] == (0.2, 0.1)
    layer = window.canvas.measure
    layer.add(Measurement("distance", [(10, 20), (110, 20)]))  # 100 columns x 0.1 mm
    assert layer.value(layer.items[0]) == "10.0 mm"
    [line] = layer.descriptions()
    assert line.startswith("Distance: 10.0 mm") and IMAGER_CAVEAT in line
    assert "measured at the detector, not at the patient; magnification not corrected" in IMAGER_CAVEAT.lower()
    window.reading.set_corners_visible(True)
    assert "at the detector" in window.canvas.corner_text()["bottom_right"][0]
    # the caveat is drawn on screen as a footnote
    plain = to_array(window.canvas.render_viewport())
    layer.delete(layer.items[0].id)
    assert not np.array_equal(plain, to_array(window.canvas.render_viewport()))


def test_roi_mean_sd_in_modality_units(qtbot, window, tmp_path):
    px = np.full((100, 100), 100, np.uint16)
    px[20:60, 20:60] = 300
    px[20:40, 20:60] = 500  # the box: half 500, half 300 stored -> mean 400, SD 100 stored
    path = make_cr(tmp_path / "roi.dcm", px, RescaleSlope=2, RescaleIntercept=-1000, PixelSpacing=[0.5, 0.5])
    image = open_and_wait(qtbot, window, path)
    assert image.pixels[30, 30] == pytest.approx(0.0)  # 500 * 2 - 1000: modality units
    canvas = window.canvas
    window.actions["tool_rectangle"].trigger()
    canvas.fit()
    drag(canvas, vp_of(canvas, 20.2, 20.2), vp_of(canvas, 59.8, 59.8))
    [m] = canvas.measure.items
    assert m.kind == "rectangle"
    text = canvas.measure.value(m)  # 1600 px: mean 2*400-1000 = -200, SD 2*100 = 200 (rescaled, not stored)
    assert text == "mean -200, SD 200 (n 1600, 400.0 mm²)", text
    canvas.measure.add(Measurement("ellipse", [(20, 40), (60, 60)]))  # lower half: all 300 stored
    assert canvas.measure.value(canvas.measure.items[-1]).startswith("mean -400, SD 0 (n ")


def test_roi_on_ct_is_in_hounsfield_units(qtbot, window, dicom_dir):
    image = open_and_wait(qtbot, window, dicom_dir / "693_UNCI.dcm")
    layer = window.canvas.measure
    m = layer.add(Measurement("ellipse", [(200, 220), (300, 300)]))
    yy, xx = np.mgrid[0:512, 0:512] + 0.5
    inside = ((xx - 250) / 50) ** 2 + ((yy - 260) / 40) ** 2 <= 1
    values = image.pixels[inside].astype(np.float64)
    assert layer.value(m).startswith(f"mean {values.mean():.4g} HU, SD {values.std():.4g} HU (n {inside.sum()}")


def test_edit_by_dragging_a_handle_and_delete_by_key_and_menu(qtbot, window, cxr_dir):
    open_and_wait(qtbot, window, cxr_dir / "siim_pneumothorax_sample.dcm")
    canvas = window.canvas
    layer = canvas.measure
    m = layer.add(Measurement("distance", [(100, 100), (300, 100)]))
    window.actions["tool_pan"].trigger()
    drag(canvas, vp_of(canvas, 300, 100), vp_of(canvas, 300, 400))  # the end handle, pan mode
    assert layer.items[0].points[0] == (100, 100)
    end = layer.items[0].points[1]
    assert abs(end[0] - 300) < 3 and abs(end[1] - 400) < 3
    body_before = list(layer.items[0].points)
    drag(canvas, vp_of(canvas, 150, 100 + 300 * 50 / 200), vp_of(canvas, 250, 100 + 300 * 50 / 200 + 100))
    moved = layer.items[0].points  # dragging the line moves it whole
    assert moved[0][0] - body_before[0][0] == pytest.approx(moved[1][0] - body_before[1][0], abs=1e-6)
    assert moved[0][0] - body_before[0][0] > 50
    assert layer.selected == m.id
    window.activateWindow()
    canvas.setFocus()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
    qtbot.keyClick(canvas, Qt.Key.Key_Delete)
    assert layer.items == []
    # right-click on a measurement offers Delete
    t = layer.add(Measurement("text", [(500, 500)], "check apex"))
    menu = layer.context_menu(t.id)
    names = [a.text() for a in menu.actions()]
    assert names == ["Delete measurement", "Edit text..."]
    menu.actions()[0].trigger()
    assert layer.items == []


def test_kept_per_image_for_the_session_and_saved_as_json(qtbot, window, cxr_dir, tmp_path):
    siim, png = cxr_dir / "siim_pneumothorax_sample.dcm", cxr_dir / "00000001_000.png"
    source_bytes = siim.read_bytes()
    open_and_wait(qtbot, window, siim)
    window.canvas.measure.add(Measurement("angle", [(100, 100), (200, 200), (300, 100)]))
    window.canvas.measure.add(Measurement("arrow", [(400, 400), (500, 500)], "here"))
    open_and_wait(qtbot, window, png)
    assert window.canvas.measure.items == []
    open_and_wait(qtbot, window, siim)
    assert [m.kind for m in window.canvas.measure.items] == ["angle", "arrow"]
    assert window.canvas.measure.value(window.canvas.measure.items[0]) == "90.0 deg"
    jp = tmp_path / "data" / "measurements" / f"{path_key(siim)}.json"
    text = jp.read_text()
    patient = pydicom.dcmread(siim, stop_before_pixels=True)
    assert str(patient.PatientID) not in text and "siim" not in text and str(cxr_dir) not in text
    data = json.loads(text)
    assert [m["kind"] for m in data["frames"]["0"]["measurements"]] == ["angle", "arrow"]
    assert MeasurementStore(tmp_path / "data" / "measurements").get(siim, 0)[1].text == "here"  # next session
    assert siim.read_bytes() == source_bytes  # the source file is never written


def test_export_includes_measurements(qtbot, window, cxr_dir, tmp_path):
    open_and_wait(qtbot, window, cxr_dir / "siim_pneumothorax_sample.dcm")
    plain = QImage(str(window.export_view(str(tmp_path / "plain.png"))))
    window.canvas.measure.add(Measurement("distance", [(100, 512), (900, 512)]))
    marked = QImage(str(window.export_view(str(tmp_path / "marked.png"))))
    a, b = to_array(plain), to_array(marked)
    assert a.shape[1] == b.shape[1] == 1024
    line = b[505:520, 300:700].astype(int)  # the yellow line across the middle of the image
    assert ((line[..., 0] > 200) & (line[..., 1] > 150) & (line[..., 2] < 100)).sum() > 300
    assert np.array_equal(a[:400, :], b[:400, :])  # nothing else changed above it
    assert window.canvas.measure.descriptions()[0] == "Distance: 134.4 mm"
    window.canvas.rotate_clockwise()  # the export is rotated: the line turns with the image
    turned = to_array(QImage(str(window.export_view(str(tmp_path / "turned.png")))))
    column = turned[300:700, 505:520].astype(int)
    assert ((column[..., 0] > 200) & (column[..., 1] > 150) & (column[..., 2] < 100)).sum() > 300
    window.canvas.rotate_counterclockwise()
    # the view export shows them as on screen
    vh = window.canvas.viewport().height()
    with_m = to_array(QImage(str(window.export_view(str(tmp_path / "view.png"), mode="view"))))[:vh]
    window.canvas.measure.delete(window.canvas.measure.items[0].id)
    without_m = to_array(QImage(str(window.export_view(str(tmp_path / "v0.png"), mode="view"))))[:vh]
    assert (np.abs(with_m.astype(int) - without_m.astype(int)).sum(axis=2) > 60).sum() > 200


# ------------------------------------------------------------------ four corners


def test_four_corner_overlay_toggles_and_exports_carry_no_patient_data(qtbot, window, tmp_path):
    px = (np.arange(256 * 256, dtype=np.uint16).reshape(256, 256) % 4000)
    path = make_cr(tmp_path / "corner.dcm", px, PixelSpacing=[0.2, 0.2])
    open_and_wait(qtbot, window, path)
    canvas = window.canvas
    window.activateWindow()
    canvas.setFocus()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
    assert not canvas.corners_visible
    off = to_array(canvas.render_viewport(patient_data=True))
    qtbot.keyClick(canvas, Qt.Key.Key_I, Qt.KeyboardModifier.ShiftModifier)
    assert canvas.corners_visible and window.actions["toggle_corners"].isChecked()
    lines = canvas.corner_text()
    assert lines["top_left"] == ["Corner Testpatient", f"ID {PID}", "Study 2024-01-02"]
    assert lines["top_right"] == ["CR", "Se 3", "Im 7", "L PA"]
    assert lines["bottom_left"][0].startswith("W ") and lines["bottom_left"][1].startswith("Zoom ")
    assert canvas.corner_text(patient_data=False)["top_left"] == []
    with_patient = to_array(canvas.render_viewport(patient_data=True))
    without = to_array(canvas.render_viewport(patient_data=False))
    assert not np.array_equal(with_patient, off)  # the corners are drawn
    h, w = with_patient.shape[:2]
    assert not np.array_equal(with_patient[:80, : w // 2], without[:80, : w // 2])  # patient lines
    assert np.array_equal(with_patient[:, w // 2:], without[:, w // 2:])  # the rest is the same
    # an export by default: the view without patient lines, and a caption without them
    out = to_array(QImage(str(window.export_view(str(tmp_path / "view.png"), mode="view"))))
    np.testing.assert_array_equal(out[:h], without)
    assert NAME.split("^")[0] not in window.canvas.measure.descriptions()
    # ticked: the patient lines are there
    window.actions["export_patient_data"].trigger()
    assert window.reading.patient_data_in_exports
    out2 = to_array(QImage(str(window.export_view(str(tmp_path / "view2.png"), mode="view"))))
    np.testing.assert_array_equal(out2[:h], with_patient)
    qtbot.keyClick(canvas, Qt.Key.Key_I, Qt.KeyboardModifier.ShiftModifier)
    assert not canvas.corners_visible


def test_export_caption_names_the_patient_only_when_ticked(window):
    from cxr_desktop.gui.export_view import caption_with

    assert caption_with("P(x) = 0.4", measurements=["Distance: 3.0 mm"]) == (
        "P(x) = 0.4\nMeasurements: Distance: 3.0 mm")
    assert caption_with("c", patient=["Doe Jane", "ID 1"]).startswith("Doe Jane | ID 1\n")
    flagged = caption_with("", measurements=[f"Distance: 3.0 mm - {IMAGER_CAVEAT}", "Angle: 9.0 deg",
                                             f"Ellipse ROI: mean 1 - {IMAGER_CAVEAT}"])
    assert flagged == f"Measurements: Distance: 3.0 mm*; Angle: 9.0 deg; Ellipse ROI: mean 1*\n* {IMAGER_CAVEAT}"


# ------------------------------------------------------------------ frames


def test_six_fast_page_down_presses_advance_six_frames(qtbot, window, dicom_dir):
    open_and_wait(qtbot, window, dicom_dir / "emri_small.dcm")
    canvas = window.canvas
    window.activateWindow()
    canvas.setFocus()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
    for _ in range(6):
        qtbot.keyClick(canvas, Qt.Key.Key_PageDown)
        qtbot.wait(5)
    qtbot.waitUntil(lambda: window.current_image.frame_index == 6 and not window.loader.busy, timeout=TIMEOUT)
    qtbot.wait(100)
    assert window.current_image.frame_index == 6 and window.frame_label.text() == "Frame 7/10"
    for _ in range(3):
        qtbot.keyClick(canvas, Qt.Key.Key_PageUp)
        qtbot.wait(12)
    qtbot.waitUntil(lambda: window.current_image.frame_index == 3 and not window.loader.busy, timeout=TIMEOUT)


def test_cine_plays_frames_in_order(qtbot, window, dicom_dir):
    open_and_wait(qtbot, window, dicom_dir / "emri_small.dcm")
    seen: list[int] = []
    window.image_displayed.connect(lambda im: seen.append(im.frame_index))
    window.reading.set_cine_fps(20)
    assert window.reading.start_cine()
    qtbot.waitUntil(lambda: len(seen) >= 12, timeout=TIMEOUT)
    window.reading.stop_cine()
    assert not window.actions["cine"].isChecked()
    steps = [(b - a) % 10 for a, b in zip(seen, seen[1:])]
    assert seen[0] == 1 and set(steps) == {1}, seen  # every frame, in order, wrapping after the last
    assert 0 in seen[9:]  # wrapped to the first frame
    qtbot.waitUntil(lambda: not window.loader.busy, timeout=TIMEOUT)  # a frame asked for before the stop
    n = len(seen)
    qtbot.wait(250)
    assert len(seen) == n  # stopped


def wheel(canvas, dy: int, mods=Qt.KeyboardModifier.NoModifier) -> None:
    vp = canvas.viewport()
    pos = QPointF(vp.width() / 2, vp.height() / 2)
    ev = QWheelEvent(pos, vp.mapToGlobal(pos), QPoint(0, 0), QPoint(0, dy), Qt.MouseButton.NoButton, mods,
                     Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(vp, ev)


def test_wheel_with_a_modifier_or_the_setting_scrolls_frames(qtbot, window, dicom_dir):
    open_and_wait(qtbot, window, dicom_dir / "emri_small.dcm")
    canvas = window.canvas
    zoom = canvas.zoom
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT) as blocker:
        wheel(canvas, -120, Qt.KeyboardModifier.ShiftModifier)  # one notch down: next frame
    assert blocker.args[0].frame_index == 1 and canvas.zoom == pytest.approx(zoom)
    wheel(canvas, 120)  # no modifier: zoom
    assert canvas.zoom > zoom and window.wanted_frame() == 1
    window.actions["wheel_frames"].trigger()
    assert canvas.wheel_scrolls_frames and window.settings.q.value("viewer/wheel_scrolls_frames") in (True, "true")
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT) as blocker:
        wheel(canvas, -240)  # two notches: two frames
    assert blocker.args[0].frame_index == 3


def test_angle_by_three_clicks_escape_cancels_and_tools_reach_every_pane(qtbot, window, cxr_dir):
    open_and_wait(qtbot, window, cxr_dir / "00000001_000.png")
    canvas = window.canvas
    window.actions["tool_angle"].trigger()
    for x, y in ((100, 100), (200, 200), (300, 100)):  # arm, vertex, arm: three clicks
        p = vp_of(canvas, x, y)
        mouse(canvas, QEvent.Type.MouseButtonPress, p)
        mouse(canvas, QEvent.Type.MouseButtonRelease, p)
    [m] = canvas.measure.items
    assert m.kind == "angle" and canvas.measure.value(m) == pytest.approx("90.0 deg")
    p = vp_of(canvas, 400, 400)
    mouse(canvas, QEvent.Type.MouseButtonPress, p)  # a new one begins...
    mouse(canvas, QEvent.Type.MouseButtonRelease, p)
    window.activateWindow()
    canvas.setFocus()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
    qtbot.keyClick(canvas, Qt.Key.Key_Escape)  # ...and Esc drops it and returns to pan
    assert len(canvas.measure.items) == 1 and canvas.measure.tool is None
    assert window.actions["tool_pan"].isChecked()
    panes = [c for c in window.reading.canvases() if c is not canvas]
    assert panes, "the comparison panes' canvases are found"
    window.actions["tool_distance"].trigger()
    assert all(c.measure.tool == "distance" for c in window.reading.canvases())
    window.reading.set_corners_visible(True)
    assert all(c.corners_visible for c in window.reading.canvases())
