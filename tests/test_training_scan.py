"""Folder scan: classes, unreadable files with reasons, duplicates, patient groups (hashed)."""

from __future__ import annotations

import shutil

import pydicom
import pytest

from cxr_desktop.training.scan import ScanError, scan_folder


@pytest.fixture()
def messy(tmp_path, cxr_dir):
    root = tmp_path / "data"
    normal, tb = root / "normal", root / "tb"
    (normal / "sub" / "deeper").mkdir(parents=True)
    tb.mkdir()
    shutil.copy(cxr_dir / "00000001_000.png", normal / "p001_a.png")
    shutil.copy(cxr_dir / "tbx11k_health_h0001.png", normal / "p001_b.png")  # same patient by pattern
    shutil.copy(cxr_dir / "00027426_000.png", normal / "sub" / "deeper" / "p002_a.png")
    shutil.copy(cxr_dir / "00000001_000.png", normal / "sub" / "copy.png")  # duplicate within the class
    shutil.copy(cxr_dir / "00027426_000.png", tb / "p009_z.png")  # the same file in another class: conflict
    shutil.copy(cxr_dir / "tbx11k_tb_tb0005.png", tb / "p003_a.png")
    shutil.copy(cxr_dir / "tbx11k_tb_tb0007.png", tb / "p004_a.png")
    shutil.copy(cxr_dir / "siim_pneumothorax_sample.dcm", tb / "study1.dcm")
    shutil.copy(cxr_dir / "fake_monochrome1.dcm", tb / "study2.dcm")
    data = (cxr_dir / "tbx11k_tb_tb0005.png").read_bytes()
    (normal / "broken.png").write_bytes(data[: len(data) // 3])  # truncated
    (normal / "mystery.bin").write_bytes(b"\x00\x01 not an image at all" * 10)
    (normal / "labels.csv").write_text("file,label\n")
    (root / "README.txt").write_text("hello")
    return root


def test_scan_lists_classes_problems_duplicates_and_groups(messy, cxr_dir):
    r = scan_folder(messy, patient_regex=r"^(p\d+)_", workers=2)
    assert r.classes == ["normal", "tb"]
    rels = {it.rel for it in r.items}
    # the conflicting pair is left out entirely; of the within-class pair one copy stays
    assert "normal/sub/deeper/p002_a.png" not in rels and "tb/p009_z.png" not in rels
    assert "normal/p001_a.png" in rels and "normal/sub/copy.png" not in rels  # the first copy (walk order) stays
    assert r.counts() == {"normal": 2, "tb": 4}
    conflict = [d for d in r.duplicates if d.conflicting]
    same = [d for d in r.duplicates if not d.conflicting]
    assert len(conflict) == 1 and conflict[0].classes == ["normal", "tb"] and conflict[0].kept is None
    assert len(same) == 1 and same[0].kept == "normal/p001_a.png"
    reasons = {p.rel: p.reason for p in r.problems}
    assert reasons == {"normal/broken.png": "truncated", "normal/mystery.bin": "not_an_image"}
    assert "normal/labels.csv" in r.ignored and "README.txt" in r.ignored

    by_rel = {it.rel: it for it in r.items}
    assert by_rel["normal/p001_b.png"].group == by_rel["normal/p001_a.png"].group  # same patient by pattern
    assert by_rel["normal/p001_a.png"].group_source == "pattern"
    assert by_rel["tb/study1.dcm"].group_source == "dicom"
    assert by_rel["tb/study1.dcm"].group == by_rel["tb/study2.dcm"].group  # same DICOM PatientID
    assert by_rel["tb/p003_a.png"].group != by_rel["tb/p004_a.png"].group
    assert r.group_sources()["dicom"] == 2

    # the patient id is used for grouping but never shown
    pid = str(pydicom.dcmread(cxr_dir / "siim_pneumothorax_sample.dcm", stop_before_pixels=True).PatientID)
    assert pid
    shown = "\n".join(r.summary_lines()) + repr(r.summary()) + " ".join(it.group for it in r.items)
    assert pid not in shown
    assert all(it.group.startswith("g-") and len(it.group) == 14 for it in r.items)


def test_scan_without_pattern_uses_one_group_per_file(messy):
    r = scan_folder(messy, workers=1)
    groups = [it.group for it in r.items if it.group_source == "file"]
    assert len(groups) == len(set(groups)) == 4


def test_header_only_scan_misses_truncation_that_decode_finds(messy):
    fast = scan_folder(messy, decode=False, workers=1)
    assert "normal/broken.png" not in {p.rel for p in fast.problems}


def test_test_folder_must_use_training_classes(messy, tmp_path, cxr_dir):
    other = tmp_path / "test"
    (other / "normal").mkdir(parents=True)
    (other / "extra").mkdir()
    shutil.copy(cxr_dir / "00000001_000.png", other / "normal" / "x.png")
    shutil.copy(cxr_dir / "00000001_000.png", other / "extra" / "y.png")
    r = scan_folder(other, classes=["normal", "tb"], workers=1)
    assert r.classes == ["normal", "tb"] and r.counts() == {"normal": 1, "tb": 0}
    assert any("extra" in w for w in r.warnings) and any("tb" in w for w in r.warnings)


def test_unusable_folders_say_why(tmp_path):
    with pytest.raises(ScanError, match="does not exist"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "only").mkdir()
    with pytest.raises(ScanError, match="at least two class subfolders"):
        scan_folder(tmp_path)
    with pytest.raises(ScanError, match="not a valid regular expression"):
        scan_folder(tmp_path, patient_regex="(")
