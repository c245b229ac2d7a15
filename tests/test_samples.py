"""Sample studies in the repository (issue 12.7): ``--samples`` works on a fresh clone without
../shared/data, says so (and how to open files) when there are none, and the bundle ships them."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from cxr_desktop.paths import sample_files, sample_studies_dir

REPO = Path(__file__).resolve().parents[1]
REPO_SAMPLES = REPO / "resources" / "samples"


@pytest.fixture
def no_shared_data(tmp_path, monkeypatch):
    """A fresh clone: the shared data folder is empty."""
    empty = tmp_path / "no-shared-data"
    empty.mkdir()
    monkeypatch.setenv("CXR_SHARED_DATA", str(empty))
    monkeypatch.delenv("CXR_RESOURCES_DIR", raising=False)
    return empty


@pytest.fixture
def window(main_window):
    return main_window(size=(1000, 700))


def test_samples_are_small_documented_and_decodable():
    files = sample_files(REPO_SAMPLES)
    assert len(files) >= 3
    assert sum(p.stat().st_size for p in REPO_SAMPLES.iterdir()) <= 5 * 2**20
    readme = (REPO_SAMPLES / "README.md").read_text()
    from cxr_desktop.imaging import load_image

    modalities = set()
    for p in files:
        row = next((ln for ln in readme.splitlines() if ln.startswith(f"| `{p.name}`")), None)
        assert row is not None, f"{p.name} has no row (source, licence) in resources/samples/README.md"
        assert re.search(r"MIT|Apache|without restriction", row), row
        modalities.add(str(load_image(p).metadata.get("modality") or p.suffix))
    assert "CT" in modalities and "CR" in modalities  # a radiograph and a CT for the scope check


def test_samples_resolve_to_the_repository_without_shared_data(no_shared_data, qtbot, window):
    assert sample_studies_dir() == REPO_SAMPLES
    assert window.open_samples() is True
    qtbot.waitUntil(lambda: not window.study_list.scanning, timeout=30_000)
    names = {Path(e.path).name for e in window.study_list.entries()}
    assert names == {p.name for p in sample_files(REPO_SAMPLES)}
    qtbot.waitUntil(lambda: window.current_image is not None, timeout=30_000)


def test_no_samples_the_window_says_so_and_how_to_open_files(no_shared_data, tmp_path, monkeypatch, window):
    monkeypatch.setenv("CXR_RESOURCES_DIR", str(tmp_path / "no-resources"))  # nothing bundled either
    assert window.open_samples() is False
    text = window.canvas.message
    assert "No sample studies were found" in text and "Open files (Ctrl+O)" in text and "drop" in text
    assert window.study_list.entries() == []  # no error entry for a missing folder


def test_samples_flag_reaches_the_window(monkeypatch):
    import cxr_desktop.gui.app as app
    from cxr_desktop.cli.desktop import main

    seen = {}
    monkeypatch.setattr(app, "run", lambda paths, model=None, samples=False: seen.update(
        paths=paths, model=model, samples=samples) or 0)
    assert main(["--samples"]) == 0
    assert seen == {"paths": [], "model": None, "samples": True}


def test_bundle_stages_the_repository_samples(tmp_path, shared_data):
    spec = importlib.util.spec_from_file_location("cxr_packaging_collect_samples_t",
                                                  REPO / "packaging" / "collect_samples.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    summary = mod.stage(tmp_path / "staged", shared_data, samples_dir=mod.REPO_SAMPLES)
    staged = sorted(p.name for p in (tmp_path / "staged" / "samples").iterdir())
    assert staged == sorted(p.name for p in REPO_SAMPLES.iterdir())  # README.md (licences) included
    assert summary["samples"] == [p.name for p in sample_files(REPO_SAMPLES)]
    assert summary["sample_notes"] == ["README.md"] and summary["samples_from"] == "repository"
    assert "samples_dir=ROOT / \"resources\" / \"samples\"" in (REPO / "build.spec").read_text()
