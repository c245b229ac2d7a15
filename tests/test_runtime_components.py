"""Each library a feature loads only when needed is used once; a missing one is named, with what it serves."""

from __future__ import annotations

import sys

from cxr_desktop.runtime_components import COMPONENTS, check_components


def test_every_component_works_in_this_installation():
    ok, found = check_components()
    assert ok, found
    assert list(found) == [c.name for c in COMPONENTS]
    assert not any(v.startswith(("FAILED", "UNAVAILABLE")) for k, v in found.items() if k != "keyring"), found
    assert "dicomfields_2026c" in found["dicom-anonymizer"] and found["imagecodecs (libjpeg-turbo)"].startswith("libjpeg")


def test_a_missing_safeguard_library_fails_and_says_what_it_protects(monkeypatch):
    monkeypatch.setitem(sys.modules, "jpeg_ls", None)  # as in a bundle that did not trace the lazy import
    ok, found = check_components()
    assert not ok
    text = found["pyjpegls (CharLS)"]
    assert text.startswith(("FAILED: ImportError", "FAILED: ModuleNotFoundError")) and "cut JPEG-LS" in text and "Reinstall" in text
    assert not found["simplejpeg"].startswith("FAILED")  # the others are still checked


def test_without_a_keyring_the_check_still_passes(monkeypatch):
    monkeypatch.setitem(sys.modules, "keyring", None)
    ok, found = check_components()
    assert ok and found["keyring"].startswith("UNAVAILABLE") and "session only" in found["keyring"]
