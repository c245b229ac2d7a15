"""Cine of multi-frame DICOM: one parse per file, frames decoded once and cached (bounded), tags per frame.

Counts come from wrappers around the real functions (they still run): no mocks. No model is
loaded. No timing assertions (the rates are in bench/bench_cine.py).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections import Counter
from pathlib import Path

import pydicom
import pytest

from cxr_desktop.gui import workers
from cxr_desktop.imaging import dicom_io
from cxr_desktop.imaging.loader import PARSED, load_image
from window_helpers import open_and_wait

TIMEOUT = 30_000
_COUNTED = threading.local()  # .viewer: calls made on this thread are counted by ``spies``


@pytest.fixture
def window(main_window):
    return main_window()


@pytest.fixture
def spies(monkeypatch):
    """Count calls of the real header reader and frame decoder made by the viewer's loader
    (inside ``workers.load_for_view``; the study list's thumbnail decode is not counted)."""
    reads: Counter = Counter()
    decodes: Counter = Counter()
    loads: Counter = Counter()
    local = _COUNTED
    real_read, real_decode, real_view = dicom_io.read_dicom, dicom_io.decode_frame, workers.load_for_view

    def read(path, *, header_only, max_bytes):
        if getattr(local, "viewer", False):
            reads[(str(path), header_only)] += 1
        return real_read(path, header_only=header_only, max_bytes=max_bytes)

    def decode(df, hdr, frame, path):
        if getattr(local, "viewer", False):
            decodes[(str(path), frame)] += 1
        return real_decode(df, hdr, frame, path)

    def view(path, frame=0, scope_settings=None):
        local.viewer = True
        try:
            loads[(str(path), frame)] += 1
            return real_view(path, frame, scope_settings)
        finally:
            local.viewer = False

    monkeypatch.setattr(dicom_io, "read_dicom", read)
    monkeypatch.setattr(dicom_io, "decode_frame", decode)
    monkeypatch.setattr(workers, "load_for_view", view)
    return reads, decodes, loads


def copy_of(dicom_dir: Path, name: str, tmp_path: Path) -> Path:
    """A fresh copy: nothing cached from other tests (caches are keyed by path and mtime)."""
    dst = tmp_path / name
    shutil.copy(dicom_dir / name, dst)
    return dst


def test_cine_parses_the_file_once_and_a_second_loop_decodes_nothing(qtbot, window, dicom_dir, tmp_path, spies):
    reads, decodes, loads = spies
    path = copy_of(dicom_dir, "emri_small.dcm", tmp_path)
    open_and_wait(qtbot, window, path)
    seen: list[int] = []
    window.image_displayed.connect(lambda im: seen.append(im.frame_index))
    window.reading.set_cine_fps(30)
    assert window.reading.start_cine()
    qtbot.waitUntil(lambda: len(seen) >= 10, timeout=TIMEOUT)  # one whole loop: 1..9, 0
    first_loop = sum(decodes.values())
    loads_after_first = window.loader.decodes
    qtbot.waitUntil(lambda: len(seen) >= 21, timeout=TIMEOUT)  # a second whole loop
    window.reading.stop_cine()
    qtbot.waitUntil(lambda: not window.loader.busy, timeout=TIMEOUT)

    steps = {(b - a) % 10 for a, b in zip(seen, seen[1:])}
    assert steps == {1}, seen  # every frame, in order
    assert {f for (p, f) in decodes if p == str(path)} == set(range(10))
    assert all(n == 1 for n in decodes.values()), decodes  # each frame decoded once
    assert all(n == 1 for n in loads.values()) and len(loads) == 10, loads
    assert first_loop == 10
    assert sum(decodes.values()) == first_loop and window.loader.decodes == loads_after_first  # loop 2: cache
    full_parses = reads[(str(path), False)]
    assert full_parses == 1, reads  # the viewer parsed the file once for all frames, tags and redaction
    assert reads[(str(path), True)] == 0, reads  # and read no header on its own
    assert window.reading.cine_label.isHidden()  # the rate label goes with the cine


def test_cine_shows_the_rate_and_prefetches_ahead(qtbot, window, dicom_dir, tmp_path):
    path = copy_of(dicom_dir, "emri_small.dcm", tmp_path)
    open_and_wait(qtbot, window, path)
    window.reading.set_cine_fps(20)
    assert window.reading.start_cine()
    assert window.reading.cine_label.text().startswith("Cine 20/s")
    qtbot.waitUntil(lambda: all(window.loader.is_cached(str(path), f) for f in range(10)), timeout=TIMEOUT)
    window.reading.stop_cine()
    assert not window.loader._prefetch  # nothing left to decode once stopped


def test_tags_panel_shows_the_current_frames_values_without_rebuilding(qtbot, window, dicom_dir, tmp_path):
    path = copy_of(dicom_dir, "liver.dcm", tmp_path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    positions = ["\\".join(str(v) for v in item.PlanePositionSequence[0].ImagePositionPatient)
                 for item in ds.PerFrameFunctionalGroupsSequence]
    assert len(set(positions)) == 3  # the frames differ
    window.side_tabs.setCurrentWidget(window.tags)
    open_and_wait(qtbot, window, path)
    tags = window.tags

    def frame_rows() -> list[tuple[str, ...]]:
        rows = tags.visible_rows()
        return rows[:rows.index(next(r for r in rows if r[0] == "(0002,0000)" or r[0].startswith("(0002,")))]

    assert frame_rows()[0][0] == "Frame 1 of 3: per-frame functional groups"
    assert any(r[1].endswith("Image Position (Patient)") and r[3] == positions[0] for r in frame_rows())
    rebuilds = tags.rebuilds
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT):
        window.go_to_frame(2)
    assert frame_rows()[0][0] == "Frame 3 of 3: per-frame functional groups"
    shown = [r[3] for r in frame_rows() if r[1].endswith("Image Position (Patient)")]
    assert shown == [positions[2]]
    assert tags.rebuilds == rebuilds  # the file's rows were kept, only the frame rows changed
    # hidden panel: updated when shown again
    window.side_tabs.setCurrentIndex(0 if window.side_tabs.currentIndex() != 0 else 1)
    assert not tags.isVisible()
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT):
        window.go_to_frame(1)
    window.side_tabs.setCurrentWidget(window.tags)
    assert [r[3] for r in frame_rows() if r[1].endswith("Image Position (Patient)")] == [positions[1]]
    assert frame_rows()[0][0] == "Frame 2 of 3: per-frame functional groups"


def test_frame_cache_keeps_to_its_memory_cap(qtbot, window, dicom_dir, tmp_path):
    path = copy_of(dicom_dir, "emri_small.dcm", tmp_path)
    open_and_wait(qtbot, window, path)
    loader = window.loader
    one = loader._cache[(str(path), 0)].nbytes
    loader.cache_limit = 3 * one + one // 2  # room for three frames
    seen: list[int] = []
    window.image_displayed.connect(lambda im: seen.append(im.frame_index))
    window.reading.set_cine_fps(30)
    assert window.reading.start_cine()
    peak = 0
    while len(seen) < 12:
        qtbot.wait(5)
        peak = max(peak, loader.cache_bytes)
        assert loader.cache_bytes <= loader.cache_limit
    window.reading.stop_cine()
    qtbot.waitUntil(lambda: not loader.busy, timeout=TIMEOUT)
    assert sum(s.nbytes for s in loader._cache.values()) == loader.cache_bytes <= loader.cache_limit
    assert len(loader._cache) <= 3 and peak > 2 * one  # bounded, and still used
    assert {(b - a) % 10 for a, b in zip(seen, seen[1:])} == {1}  # frames in order even when evicted


def test_parsed_file_cache_reads_once_per_file_version(tmp_path, dicom_dir, spies):
    reads, _decodes, _loads = spies
    _COUNTED.viewer = True  # count this thread's calls too
    path = copy_of(dicom_dir, "emri_small.dcm", tmp_path)
    fresh = [load_image(path, frame=f) for f in range(3)]
    cached = [load_image(path, frame=f, reuse_parsed=True) for f in range(3)]
    assert reads[(str(path), False)] == 3 + 1  # uncached: a parse per frame; cached: one for all
    for a, b in zip(fresh, cached):
        assert (a.pixels == b.pixels).all() and a.window == b.window and a.frame_index == b.frame_index
    path.write_bytes(path.read_bytes())  # rewritten (new mtime): parsed again
    os.utime(path, ns=(1, 1))
    load_image(path, frame=1, reuse_parsed=True)
    _COUNTED.viewer = False
    assert reads[(str(path), False)] == 5
    assert len(PARSED._items) <= PARSED.files


def test_the_rate_label_says_when_frames_come_slower_than_set(qtbot, window, dicom_dir, tmp_path):
    path = copy_of(dicom_dir, "emri_small.dcm", tmp_path)
    open_and_wait(qtbot, window, path)
    reading = window.reading
    reading.set_cine_fps(30)
    assert reading.start_cine()
    reading.stop_cine()
    reading._cine_shown.extend([0.0, 0.1, 0.2, 0.3, 0.4])  # frames that reached the screen at 10/s
    assert reading.achieved_fps == pytest.approx(10.0)
    reading._show_rate()
    assert reading.cine_label.text() == "Cine 30/s set: 10.0/s achieved (frames decode slower)"
    reading._cine_shown.clear()
    reading._cine_shown.extend([i / 30 for i in range(10)])
    reading._show_rate()
    assert reading.cine_label.text() == "Cine 30/s"
