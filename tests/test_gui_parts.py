"""Viewer building blocks: presets, colourising, crash logs, settings, start-up without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from cxr_desktop.gui import crash
from cxr_desktop.gui.overlay import COLORMAPS, HeatmapLayer, colormap_lut, heatmap_to_uint8
from cxr_desktop.gui.settings import MAX_RECENT, AppSettings
from cxr_desktop.gui.shortcuts import SHORTCUTS
from cxr_desktop.viewing.study_scan import group_path, scan_paths
from cxr_desktop.viewing.window_presets import presets_for, relative_window
from cxr_desktop.imaging import load_image, to_unit
from cxr_desktop.imaging.types import StudyImage, Window

REPO = Path(__file__).resolve().parents[1]


def _ramp_image(invert: bool = False, modality: str = "DX") -> StudyImage:
    px = np.tile(np.arange(1000, dtype=np.float32), (10, 1))
    return StudyImage(pixels=px, window=Window(500.0, 1000.0), photometric="MONOCHROME2",
                      invert_for_display=invert, metadata={"modality": modality})


# ------------------------------------------------------------------ presets


def test_relative_presets_follow_display_brightness():
    im = _ramp_image()
    lung = relative_window(im, 0.5, 60.0)
    bright = relative_window(im, 40.0, 99.5)
    assert lung.center - lung.width / 2 == pytest.approx(5, abs=2)
    assert lung.center + lung.width / 2 == pytest.approx(600, abs=2)
    assert bright.center > lung.center
    # MONOCHROME1: the same preset picks the other end of the values (dark on screen = high values)
    inv = _ramp_image(invert=True)
    lung_inv = relative_window(inv, 0.5, 60.0)
    assert lung_inv.center - lung_inv.width / 2 == pytest.approx(400, abs=2)
    # what the lung preset shows as black/white is the darkest 60 % in both cases
    for image, w in ((im, lung), (inv, lung_inv)):
        unit = to_unit(image, w)
        assert float((unit < 1.0).mean()) == pytest.approx(0.6, abs=0.02)


def test_ct_presets_only_for_ct(cxr_dir, dicom_dir):
    cxr = presets_for(load_image(cxr_dir / "siim_pneumothorax_sample.dcm"))
    assert not any(p.kind == "ct" for p in cxr)
    assert {p.kind for p in cxr} == {"file", "full", "relative"}
    ct = presets_for(load_image(dicom_dir / "693_UNCI.dcm"))
    lung = next(p for p in ct if p.name.startswith("Lung (CT"))
    assert (lung.window.center, lung.window.width) == (-600.0, 1500.0)
    assert any(p.kind == "file" and p.name != "Default (from file)" for p in ct)  # the file's own windows


# ------------------------------------------------------------------ overlay


def test_colormaps_are_distinct_tables():
    tables = {name: colormap_lut(name) for name in COLORMAPS}
    assert all(t.shape == (256, 3) and t.dtype == np.uint8 for t in tables.values())
    names = list(tables)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(tables[a].astype(int) - tables[b].astype(int)).mean() > 10
    # perceptually uniform maps rise monotonically in lightness; jet does not
    def lightness(t):
        return 0.2126 * t[:, 0] + 0.7152 * t[:, 1] + 0.0722 * t[:, 2]
    assert np.all(np.diff(lightness(tables["Viridis (perceptually uniform)"].astype(float))) > -1.0)
    assert np.any(np.diff(lightness(tables["Jet"].astype(float))) < -1.0)
    with pytest.raises(ValueError):
        colormap_lut("rainbow-unicorn")


def test_heatmap_layer_downsizes_and_caches_colourings():
    heat = np.linspace(0, 1, 3000 * 2000, dtype=np.float32).reshape(3000, 2000)
    u8 = heatmap_to_uint8(heat)
    assert max(u8.shape) == 1024 and u8.shape[0] / u8.shape[1] == pytest.approx(1.5, abs=0.01)
    assert u8[0, 0] == 0 and u8[-1, -1] == 255
    layer = HeatmapLayer(heat, "abnormal")
    a = layer.image("Jet")
    assert layer.image("Jet") is a and layer.colourings == 1
    layer.image("Turbo")
    assert layer.colourings == 2 and layer.shape == (3000, 2000)


# ------------------------------------------------------------------ crash handling


def test_crash_log_has_no_patient_data(tmp_path):
    crash.REDACTOR.register_patient_id("PID-99127")
    crash.REDACTOR.register_path("/hospital/share/SMITH_JOHN")
    try:
        raise ValueError("failed on /hospital/share/SMITH_JOHN/img.dcm for PID-99127 (DOE^JANE)")
    except ValueError as exc:
        path = crash.write_crash_log(type(exc), exc, exc.__traceback__, folder=tmp_path)
    text = path.read_text()
    assert "Traceback" in text and "ValueError" in text  # useful for support
    for secret in ("PID-99127", "SMITH_JOHN", "DOE^JANE", "JANE"):
        assert secret not in text
    assert "<patient-id>" in text and "<opened-path>" in text
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # atomic: no temp file left


def test_excepthook_shows_friendly_dialog_not_a_traceback(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path))
    shown = []
    monkeypatch.setattr(crash.QMessageBox, "exec", lambda self: shown.append(self.text()) or 0)
    old_hook, old_thread_hook = sys.excepthook, crash.threading.excepthook
    try:
        crash.install_excepthook()
        try:
            raise RuntimeError("boom in a slot")
        except RuntimeError as exc:
            log = crash.handle_exception(type(exc), exc, exc.__traceback__)
        qtbot.waitUntil(lambda: bool(shown), timeout=5000)
    finally:
        sys.excepthook, crash.threading.excepthook = old_hook, old_thread_hook
    assert log is not None and log.parent == tmp_path / "crash-logs" and log.exists()
    message = shown[0]
    assert "Traceback" not in message and "RuntimeError" not in message and "boom" not in message
    assert "carry on" in message and str(log) in message


# ------------------------------------------------------------------ settings, shortcuts, scanning


def test_settings_recent_lists(tmp_path):
    s = AppSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    for i in range(MAX_RECENT + 3):
        s.add_recent_file(f"/data/{i}.png")
    s.add_recent_file("/data/5.png")
    again = AppSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert again.recent_files[0] == "/data/5.png" and len(again.recent_files) == MAX_RECENT
    assert again.recent_files.count("/data/5.png") == 1
    s.add_recent_model("/m/a.safetensors")
    s.last_model = "/m/a.safetensors"
    s.forget_model("/m/a.safetensors")
    assert s.recent_models == [] and s.last_model is None
    s.overlay_opacity = 250
    assert s.overlay_opacity == 100


def test_no_two_actions_share_a_key():
    seen: dict[str, str] = {}
    for sc in SHORTCUTS:
        for key in sc.keys:
            assert key not in seen, f"{key} is bound to both {seen[key]} and {sc.id}"
            seen[key] = sc.id


def test_scan_lists_explicit_bad_files_and_groups(tmp_path, cxr_dir):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"")
    entries = list(scan_paths([cxr_dir / "siim_pneumothorax_sample.dcm", bad, tmp_path / "missing.dcm"]))
    assert [e.ok for e in entries] == [True, False, False]
    assert entries[1].reason == "not_an_image" and "empty" in entries[1].message
    assert entries[2].reason == "unreadable"
    levels = group_path(entries[0]).levels
    assert [lbl.split()[0] for _, lbl in levels] == ["Patient", "Study", "Series"]
    assert group_path(entries[1]).levels[0][1] == f"{tmp_path.name}/"


# ------------------------------------------------------------------ start-up


def test_window_appears_before_torch_is_imported(tmp_path, cxr_dir):
    """The real app in a subprocess: the first window is painted with torch not yet imported."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CXR_REPORT_STARTUP="1", CXR_EXIT_AFTER="window_shown",
               CXR_SETTINGS_FILE=str(tmp_path / "s.ini"), CXR_CACHE_DIR=str(tmp_path / "c"),
               CXR_DATA_DIR=str(tmp_path / "d"), CXR_RESOURCES_DIR=str(tmp_path / "r"))
    proc = subprocess.run([sys.executable, "-m", "cxr_desktop.cli.desktop", str(cxr_dir / "00000001_000.png")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    events = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            ev = json.loads(line)
            events[ev["event"]] = ev
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "window_shown" in events
    assert events["window_shown"]["torch_loaded"] is False
    assert events["window_shown"]["pydicom_loaded"] is False  # the image pipeline loads in a worker
    assert "Traceback" not in proc.stderr


def test_qt_binding_keeps_reference_counts(qapp):
    """Guards the PySide6 pin: 6.12.0 on CPython 3.11 drops a reference to None on every void
    call and to True on every emit, which aborts a long session ('none_dealloc')."""
    from PySide6.QtCore import QObject, Signal
    from PySide6.QtWidgets import QLabel

    class Emitter(QObject):
        sig = Signal(object)

    label, emitter = QLabel(), Emitter()
    none0, true0 = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(500):
        label.setText("x")
        qapp.processEvents()
        emitter.sig.emit(1)
    assert sys.getrefcount(None) - none0 > -100
    assert sys.getrefcount(True) - true0 > -100
