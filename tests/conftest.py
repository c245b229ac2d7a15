"""Shared fixtures: the real data in ../shared/data, skipped with a clear message where absent."""

from __future__ import annotations

import os
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
def main_window(qtbot, tmp_path, monkeypatch):
    """Factory of shown main windows with cache, data and settings under ``tmp_path``; each is shut down
    after the test. Qt is imported only when a test asks for it."""
    from PySide6.QtCore import QSettings

    from cxr_desktop.gui.main_window import MainWindow
    from cxr_desktop.gui.settings import AppSettings

    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    windows: list[MainWindow] = []

    def make(engine_options: dict | None = None, size: tuple[int, int] = (1100, 800)) -> MainWindow:
        settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
        w = MainWindow(settings, engine_options=engine_options)
        qtbot.addWidget(w)
        w.resize(*size)
        w.show()
        qtbot.waitExposed(w)
        windows.append(w)
        return w

    yield make
    for w in windows:
        w.shutdown()


@pytest.fixture
def training_isolation(tmp_path, monkeypatch):
    """A private cache folder, and torch's thread count restored (training configs here ask for 1 thread)."""
    import torch

    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
