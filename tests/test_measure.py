"""Measurement geometry, calibration, ROI statistics and the JSON store (no Qt)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cxr_desktop.measure import (
    IMAGER_CAVEAT, Calibration, Measurement, MeasurementStore, angle_deg, calibration_for, describe, distance,
    path_key, roi_mask, roi_stats, value_text,
)


def test_calibration_prefers_pixel_spacing_and_flags_imager_spacing():
    both = calibration_for({"pixel_spacing": (0.2, 0.1), "imager_pixel_spacing": (0.3, 0.3)})
    assert (both.row_mm, both.col_mm, both.source, both.caveat) == (0.2, 0.1, "pixel_spacing", "")
    imager = calibration_for({"imager_pixel_spacing": (0.143, 0.143)})
    assert imager.source == "imager_pixel_spacing" and imager.caveat == IMAGER_CAVEAT
    assert "not at the patient" in imager.caveat and "magnification not corrected" in imager.caveat
    assert not calibration_for({}).calibrated and calibration_for({}).unit == "px"
    assert not calibration_for({"pixel_spacing": (0.0, 0.0)}).calibrated  # 0\0 is no calibration
    # a frame decoded at half size has pixels twice as large
    half = calibration_for({"pixel_spacing": (0.2, 0.1)}, shape=(50, 100), full_shape=(100, 200))
    assert half.row_mm == pytest.approx(0.4) and half.col_mm == pytest.approx(0.2)


def test_distance_with_anisotropic_spacing_and_in_pixels():
    cal = Calibration(row_mm=0.5, col_mm=0.25, source="pixel_spacing")
    assert distance((0, 0), (40, 0), cal) == pytest.approx(10.0)  # 40 columns x 0.25 mm
    assert distance((0, 0), (0, 40), cal) == pytest.approx(20.0)  # 40 rows x 0.5 mm
    assert distance((0, 0), (30, 40)) == pytest.approx(50.0)  # pixels
    assert distance((0, 0), (40, 20), cal) == pytest.approx(math.hypot(10, 10))


def test_angle_corrects_for_non_square_pixels():
    assert angle_deg((10, 0), (0, 0), (0, 10)) == pytest.approx(90.0)
    assert angle_deg((10, 0), (0, 0), (10, 10)) == pytest.approx(45.0)
    # 10 columns x 0.5 mm and 10 rows x 1 mm: atan(10/5) in the patient, not 45
    cal = Calibration(row_mm=1.0, col_mm=0.5, source="pixel_spacing")
    assert angle_deg((10, 0), (0, 0), (10, 10), cal) == pytest.approx(math.degrees(math.atan2(10, 5)))
    assert angle_deg((0, 0), (0, 0), (1, 1)) == 0.0


def test_roi_mean_sd_on_a_known_image():
    img = np.zeros((100, 100), np.float32)
    img[20:40, 10:50] = 100.0  # a 20 x 40 block at 100
    img[20:30, 10:50] = 300.0  # whose top half is 300: mean 200, SD 100
    s = roi_stats(img, "rectangle", (10, 20), (50, 40))
    assert s.count == 800 and s.mean == pytest.approx(200.0) and s.sd == pytest.approx(100.0)
    assert (s.minimum, s.maximum) == (100.0, 300.0)
    cal = Calibration(0.5, 0.5, "pixel_spacing")
    assert roi_stats(img, "rectangle", (50, 40), (10, 20), cal).area == pytest.approx(800 * 0.25)  # any corner order
    # ellipse of radius 20 around (50, 50): pi r^2 pixels, within a pixel's rounding
    e = roi_mask((100, 100), "ellipse", (30, 30), (70, 70))
    assert abs(int(e.sum()) - math.pi * 400) < 30
    assert not e[30, 30] and e[50, 50]
    ramp = np.tile(np.arange(100, dtype=np.float32), (100, 1))
    es = roi_stats(ramp, "ellipse", (30, 30), (70, 70))
    assert es.mean == pytest.approx(49.5, abs=0.01)  # symmetric about the centre column
    # padding pixels are left out
    pad = np.zeros((100, 100), bool)
    pad[20:30, :] = True
    assert roi_stats(img, "rectangle", (10, 20), (50, 40), exclude=pad).mean == pytest.approx(100.0)
    assert roi_stats(img, "rectangle", (200, 200), (300, 300)).count == 0  # outside: no pixels, no crash


def test_value_text_and_description():
    cal = Calibration(0.2, 0.2, "imager_pixel_spacing")
    d = Measurement("distance", [(0, 0), (100, 0)])
    assert value_text(d, cal) == "20.0 mm"
    assert IMAGER_CAVEAT in describe(d, cal)
    assert describe(d) == "Distance: 100.0 px"
    img = np.full((10, 10), 7.0, np.float32)
    r = Measurement("rectangle", [(0, 0), (10, 10)])
    assert value_text(r, Calibration(), img, "HU").startswith("mean 7 HU, SD 0 HU (n 100")
    assert describe(Measurement("text", [(1, 1)], "nodule?")) == "Text: nodule?"
    with pytest.raises(ValueError):
        Measurement("scribble", [(0, 0)])


def test_store_keeps_frames_apart_and_saves_json_without_patient_data(tmp_path):
    src = tmp_path / "Doe_Jane_12345.dcm"
    src.write_bytes(b"not read")
    store = MeasurementStore(tmp_path / "m")
    a = Measurement("distance", [(1, 2), (3, 4)])
    b = Measurement("text", [(5, 5)], "see prior")
    assert store.put(src, 0, [a, Measurement("angle", [(0, 0)])], shape=(100, 200))  # incomplete: dropped
    assert store.put(src, 3, [b], shape=(100, 200))
    jp = store.json_path(src)
    assert jp.parent == tmp_path / "m" and jp.name == f"{path_key(src)}.json"
    text = jp.read_text()
    assert "Doe" not in text and "12345" not in text and str(tmp_path) not in text
    data = json.loads(text)
    assert set(data["frames"]) == {"0", "3"}
    # a new session reads them back, per frame
    again = MeasurementStore(tmp_path / "m")
    assert [m.to_dict() for m in again.get(src, 0)] == [a.to_dict()]
    assert [m.text for m in again.get(src, 3)] == ["see prior"]
    assert again.get(src, 1) == []
    # saved at 100 x 200, shown at 50 x 100: scaled with the image
    assert again.get(src, 0, shape=(50, 100))[0].points == [(0.5, 1.0), (1.5, 2.0)]
    # deleting the last one removes the file; the source file is never touched
    again.put(src, 0, [])
    again.put(src, 3, [])
    assert not jp.exists() and src.read_bytes() == b"not read"


def test_store_survives_a_damaged_json_and_an_unwritable_folder(tmp_path):
    src = tmp_path / "a.png"
    store = MeasurementStore(tmp_path / "m")
    jp = store.json_path(src)
    jp.parent.mkdir()
    jp.write_text("{ not json")
    assert store.get(src, 0) == []
    blocked = tmp_path / "file"
    blocked.write_text("x")
    bad = MeasurementStore(blocked / "sub")
    assert not bad.put(src, 0, [Measurement("distance", [(0, 0), (1, 1)])])
    assert "could not be saved" in bad.last_error
    assert len(bad.get(src, 0)) == 1  # kept for the session anyway
