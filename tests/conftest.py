"""Shared fixtures: the real data in ../shared/data, skipped with a clear message where absent."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CXR_SHARED_DATA", REPO.parent / "shared" / "data"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (set CXR_SHARED_DATA or place ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def cxr_dir() -> Path:
    return _need(SHARED_DATA / "cxr")


@pytest.fixture(scope="session")
def dicom_dir() -> Path:
    return _need(SHARED_DATA / "dicom")


@pytest.fixture
def app_settings(tmp_path):
    """Factory of the app's settings on ``tmp_path/settings.ini`` (the file ``main_window``'s windows use), for a
    test that sets something (e.g. the last model) before a window starts."""
    from PySide6.QtCore import QSettings

    from cxr_desktop.gui.settings import AppSettings

    def make() -> AppSettings:
        return AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))

    return make


@pytest.fixture
def main_window(qtbot, tmp_path, monkeypatch, app_settings):
    """Factory of main windows with cache, data and settings under ``tmp_path``; each is shut down after the
    test. ``settings`` (default: a fresh ``app_settings()``), ``size`` (None: the window's own first size) and
    ``show`` (False: constructed only, e.g. to drive ``start`` by hand). Qt is imported only when a test asks."""
    from cxr_desktop.gui.main_window import MainWindow

    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    windows: list[MainWindow] = []

    def make(engine_options: dict | None = None, size: tuple[int, int] | None = (1100, 800), *,
             settings=None, show: bool = True) -> MainWindow:
        w = MainWindow(settings if settings is not None else app_settings(), engine_options=engine_options)
        qtbot.addWidget(w)
        windows.append(w)
        if size is not None:
            w.resize(*size)
        if show:
            w.show()
            qtbot.waitExposed(w)
        return w

    yield make
    for w in windows:
        w.shutdown()


class Heartbeat:
    """A timer beating on the GUI thread; long gaps between beats are times the thread was blocked.
    Use as ``with heartbeat: ...`` around the work, then read ``count`` and ``gaps_ms``."""

    def __init__(self, interval_ms: int = 20):
        from PySide6.QtCore import QTimer

        self.beats: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.beats.append(time.perf_counter()))

    def __enter__(self) -> Heartbeat:
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.stop()

    @property
    def count(self) -> int:
        return len(self.beats)

    @property
    def gaps_ms(self):
        """Milliseconds between successive beats (a numpy array)."""
        import numpy as np

        return np.diff(self.beats) * 1000.0


@pytest.fixture
def heartbeat(qtbot):
    """A :class:`Heartbeat` (20 ms) for "the GUI stays responsive" checks; stopped after the test."""
    beat = Heartbeat()
    yield beat
    beat.timer.stop()


@pytest.fixture
def training_isolation(tmp_path, monkeypatch):
    """A private cache folder, and torch's thread count restored (training configs here ask for 1 thread)."""
    import torch

    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(kib)``: a new folder on a real filesystem of that size (tmpfs), to fill up: disk-full paths
    without mocks. Mounting needs root, as CI runs; elsewhere the test is skipped saying so."""
    import subprocess

    mounted: list[Path] = []

    def make(kib: int) -> Path:
        folder = tmp_path / f"disk-{kib}k-{len(mounted)}"
        folder.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k,mode=0755", "tmpfs", str(folder)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"a small tmpfs could not be mounted ({r.stderr.strip() or r.returncode}): run as root, as CI does")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, request):
    """One real Orthanc for the test module, knowing the module's ``OUR_AE``; skipped where not installed."""
    from orthanc_fixture import orthanc_for_module

    yield from orthanc_for_module(tmp_path_factory, request.module.OUR_AE, request.module.__name__)


@pytest.fixture()
def pacs(orthanc):
    """The module's Orthanc, emptied before the test."""
    orthanc.clear()
    return orthanc
