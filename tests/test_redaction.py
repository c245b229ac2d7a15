"""Patient data never reaches a crash log, a logged error or a screening row: PS3.15 Annex E values, by value."""

from __future__ import annotations

import datetime
import logging
import sys

import numpy as np
import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from cxr_desktop.crash_log import crash_report
from cxr_desktop.redaction import (
    REDACTOR, RedactingFilter, Redactor, basic_profile_tags, identifying_values, redact_file_values,
)

# Attributes the image needs to decode; they are not in the profile, but make sure of it.
_PIXEL_MODULE = {"Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                 "SamplesPerPixel", "PhotometricInterpretation", "PixelData"}


def _sentinel(vr: str, i: int) -> str | None:
    """A value unique to attribute ``i`` that is valid for its VR (None: VR not textual)."""
    day = datetime.date(1901, 1, 1) + datetime.timedelta(days=i)
    return {
        "PN": f"SNTFAM{i:04d}^SNTGIV{i:04d}",
        "DA": day.strftime("%Y%m%d"),
        "TM": f"0{i % 10}{i % 60:02d}{i % 60:02d}.{700000 + i:06d}",
        "DT": day.strftime("%Y%m%d") + f"1234{i % 60:02d}.{800000 + i:06d}",
        "UI": f"1.2.826.0.1.3680043.10.999.{i}",
        "AS": f"{100 + i % 800:03d}W",
        "CS": f"SNTCS{i:05d}",
        "DS": f"{i}.{i:04d}",
        "IS": f"9{i:06d}",
        "AE": f"SNTAE{i:05d}",
        "SH": f"SNTSH{i:05d}",
        "LO": f"SNT-LO-{i:05d}",
        "ST": f"SNT-ST-{i:05d} free text",
        "LT": f"SNT-LT-{i:05d} free text",
        "UT": f"SNT-UT-{i:05d} free text",
        "UC": f"SNT-UC-{i:05d}",
        "UR": f"http://snt{i:05d}.invalid/",
    }.get(vr)


def sentinel_dicom(path) -> list[str]:
    """A readable 64x64 CR image with a sentinel in every textual Basic Profile attribute; returns them."""
    ds = Dataset()
    sentinels: list[str] = []
    for i, tag in enumerate(sorted(basic_profile_tags())):
        if tag >> 16 in (0x0000, 0x0002):  # command set and file meta: not in a stored dataset
            continue
        if tag > 0x7FE00010:  # after the pixel data (digital signatures, padding): the app never reads it
            continue
        try:
            vr, kw = dictionary_VR(tag), keyword_for_tag(tag)
        except KeyError:  # newer than this pydicom's dictionary
            continue
        assert kw not in _PIXEL_MODULE
        value = _sentinel(vr, i)
        if value is not None:
            ds.add_new(tag, vr, value)
            sentinels.append(value)
        elif vr == "SQ":  # a sequence the profile removes: every value inside it identifies
            item = Dataset()
            item.CodeMeaning = f"SNT-SEQ-{i:05d}"
            ds.add_new(tag, vr, [item])
            sentinels.append(item.CodeMeaning)
    ds.add_new(0x00091010, "LO", "SNT-PRIVATE-VALUE")  # private attributes are removed by the profile too
    ds.add_new(0x00090010, "LO", "SNT PRIVATE CREATOR")
    sentinels += ["SNT-PRIVATE-VALUE"]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.Modality = "CR"
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ramp = (np.add.outer(np.arange(64), np.arange(64)) * 30).astype(np.uint16)
    ds.PixelData = ramp.tobytes()
    ds.save_as(path, enforce_file_format=True)
    names = {"PatientName", "PatientBirthDate", "InstitutionName", "AccessionNumber", "PatientID",
             "ReferringPhysicianName", "StudyInstanceUID", "DeviceSerialNumber", "PatientAge", "StudyDate"}
    assert names <= {keyword_for_tag(t) for t in ds.keys()}, "the profile must cover the obvious attributes"
    return sentinels


def test_identifying_values_cover_every_basic_profile_attribute(tmp_path):
    import pydicom

    path = tmp_path / "s.dcm"
    sentinels = sentinel_dicom(path)
    assert len(sentinels) > 400
    values = identifying_values(pydicom.dcmread(path))
    missing = [s for s in sentinels if s not in values]
    assert not missing, missing[:10]
    pn = next(s for s in sentinels if "^" in s)
    assert pn.split("^")[0] in values and pn.split("^")[1] in values  # a family name alone is caught too
    assert "MONOCHROME2" not in values and "CR" not in values  # not identifying: not collected


def test_crash_log_of_an_open_study_has_none_of_its_annex_e_values(tmp_path, qapp):
    from cxr_desktop.gui import crash
    from cxr_desktop.gui.workers import load_for_view

    path = tmp_path / "study.dcm"
    sentinels = sentinel_dicom(path)
    study = load_for_view(str(path))  # the viewer opens the study (this registers its values)
    assert study.image is not None, study.error
    pn = next(s for s in sentinels if "^" in s)

    def fail_with_everything(values):
        birth_date = values  # noqa: F841 - locals are not in the report, but the message is
        raise ValueError("failed on " + " | ".join(values) + f" family name alone: {pn.split('^')[0]}")

    try:
        fail_with_everything(sentinels)
    except ValueError as exc:
        log = crash.write_crash_log(type(exc), exc, exc.__traceback__, folder=tmp_path / "logs")
    text = log.read_text(encoding="utf-8")
    leaked = [s for s in sentinels if s in text]
    assert not leaked, leaked[:10]
    assert "SNTFAM" not in text and "SNTGIV" not in text
    assert "ValueError: failed on <dicom-value>" in text  # still a useful report
    assert "fail_with_everything" in text


def test_logged_errors_are_redacted(tmp_path):
    import io

    r = Redactor()
    r.register_values(["SMITH^JANE", "19450312", "ACC-778899", "St Elsewhere Hospital"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(r))
    logger = logging.getLogger("test-redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise RuntimeError("born 19450312 at St Elsewhere Hospital, accession ACC-778899")
        except RuntimeError:
            logger.exception("loading %s failed", "SMITH^JANE")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "RuntimeError" in text
    for s in ("SMITH", "JANE", "19450312", "ACC-778899", "St Elsewhere"):
        assert s not in text


def test_short_values_are_replaced_as_whole_words_only():
    r = Redactor()
    r.register_values(["70", "045Y", "1.2.3.4.5.6.7"])
    out = r.redact("weight 70 kg, line 1970, age 045Y, uid 1.2.3.4.5.6.7.8")
    assert out == "weight <dicom-value> kg, line 1970, age <dicom-value>, uid <dicom-value>.8"


def test_screening_detail_is_redacted_with_the_file_values(tmp_path):
    path = tmp_path / "s.dcm"
    sentinels = sentinel_dicom(path)
    text = "s.dcm: invalid value " + sentinels[0] + " and " + sentinels[-1]
    assert redact_file_values(path, text) == "s.dcm: invalid value <dicom-value> and <dicom-value>"
    assert redact_file_values(tmp_path / "missing.dcm", "unchanged") == "unchanged"


@pytest.fixture
def qapp():
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    yield app
    REDACTOR.__init__()  # forget this test's values
