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
