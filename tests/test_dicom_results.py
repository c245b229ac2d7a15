"""DICOM result objects (issue 13): Secondary Capture with overlay and caption, TID 1500 Structured Report.

Real radiographs from ../shared/data, real highdicom objects, validated with dciodvfy (dicom3tools):
any "Error" line fails the test.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cxr_desktop.dicom_results import (
    ImageFinding, ModelInfo, caption_lines, finding_from_row, write_result_objects,
)
from cxr_desktop.scope.learned import Caution

MODEL = ModelInfo(name="demo-cxr", version="7", sha256="0123456789abcdef" * 4, positive_class="opacity",
                  threshold=0.35)


def dciodvfy_errors(path: Path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools); it validates the result objects")
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]


def _content(sr) -> list:
    items = []

    def walk(seq):
        for it in seq:
            items.append(it)
            if "ContentSequence" in it:
                walk(it.ContentSequence)

    walk(sr.ContentSequence)
    return items


def _num(sr, code):
    vals = [float(i.MeasuredValueSequence[0].NumericValue) for i in _content(sr)
            if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == code]
    return vals[0] if vals else None


def _code(sr, code):
    vals = [i.ConceptCodeSequence[0].CodeMeaning for i in _content(sr)
            if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeValue == code]
    return vals[0] if vals else None


def _texts(sr):
    return [str(i.TextValue) for i in _content(sr) if i.ValueType == "TEXT"]


def _image_part(sc, source_rows: int, source_cols: int) -> np.ndarray:
    px = sc.pixel_array
    h = round(px.shape[1] * source_rows / source_cols)
    return px[:h]


@pytest.fixture()
def radiograph(cxr_dir) -> Path:
    return cxr_dir / "siim_pneumothorax_sample.dcm"


def _hot_heat(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    heat = np.zeros((int(ds.Rows), int(ds.Columns)), np.float32)
    heat[ds.Rows // 4: ds.Rows // 2, ds.Columns // 4: ds.Columns // 2] = 1.0
    return heat


def test_above_threshold_sc_has_the_map_and_sr_the_score(radiograph, tmp_path):
    source = pydicom.dcmread(radiograph, stop_before_pixels=True)
    finding = ImageFinding(score=0.8125, above_threshold=True, caution=Caution(distance=12.5, limit=10.0))
    sc_path, sr_path = tmp_path / "r.sc.dcm", tmp_path / "r.sr.dcm"
    write_result_objects(radiograph, finding, MODEL, sc_path, sr_path, heat=_hot_heat(radiograph))
    assert dciodvfy_errors(sc_path) == [] and dciodvfy_errors(sr_path) == []
    sc, sr = pydicom.dcmread(sc_path), pydicom.dcmread(sr_path)

    # same study, new series and instances, pointing at the radiograph
    for ds in (sc, sr):
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID and ds.SOPInstanceUID != source.SOPInstanceUID
    assert sc.SeriesInstanceUID != sr.SeriesInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert "heatmap" in sc.SeriesDescription and "not diagnosis" in sc.SeriesDescription
    assert sc.BurnedInAnnotation == "YES" and sc.PhotometricInterpretation == "RGB"
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == source.SOPInstanceUID

    # the map is drawn (colour where it is high), the rest of the film is untinted
    img = _image_part(sc, int(source.Rows), int(source.Columns)).astype(int)
    spread = img.max(axis=2) - img.min(axis=2)
    h, w = spread.shape
    assert spread[h * 5 // 16: h * 7 // 16, w * 5 // 16: w * 7 // 16].mean() > 40
    assert spread[h * 3 // 4:, w * 3 // 4:].max() == 0
    assert sc.pixel_array[img.shape[0]:].max() > 200  # the caption band holds text

    # the SR: probability, threshold, decision, caution, algorithm, hash
    assert _num(sr, "CXR001") == pytest.approx(0.8125)
    assert _num(sr, "CXR002") == pytest.approx(0.35)
    assert _code(sr, "CXR003") == "Yes" and _code(sr, "CXR004") == "Yes" and _code(sr, "CXR005") == "Yes"
    texts = " ".join(_texts(sr))
    assert "Unusual image - interpret with care" in texts and "Decision aid - not a diagnosis" in texts
    algo = [i for i in _content(sr) if i.ConceptNameCodeSequence[0].CodeValue == "111001"]  # Algorithm Name
    assert algo and algo[0].TextValue == "demo-cxr"
    params = [str(i.TextValue) for i in _content(sr) if i.ConceptNameCodeSequence[0].CodeValue == "111002"]
    assert f"file_sha256={MODEL.sha256}" in params
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"

    # re-export gives the same UIDs (a re-send replaces, never duplicates)
    write_result_objects(radiograph, finding, MODEL, tmp_path / "b.sc.dcm", tmp_path / "b.sr.dcm",
                         heat=_hot_heat(radiograph))
    again = pydicom.dcmread(tmp_path / "b.sr.dcm")
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (sr.SOPInstanceUID, sr.SeriesInstanceUID)


def test_below_threshold_has_no_map(radiograph, tmp_path):
    source = pydicom.dcmread(radiograph, stop_before_pixels=True)
    finding = ImageFinding(score=0.2, above_threshold=False)
    write_result_objects(radiograph, finding, MODEL, tmp_path / "r.sc.dcm", tmp_path / "r.sr.dcm",
                         heat=_hot_heat(radiograph))
    sc, sr = pydicom.dcmread(tmp_path / "r.sc.dcm"), pydicom.dcmread(tmp_path / "r.sr.dcm")
    img = _image_part(sc, int(source.Rows), int(source.Columns)).astype(int)
    assert (img.max(axis=2) - img.min(axis=2)).max() == 0  # grey: no colour anywhere on the film
    assert _code(sr, "CXR003") == "No" and _num(sr, "CXR001") == pytest.approx(0.2)
    assert "No finding above threshold - no heatmap." in caption_lines(finding, MODEL)


def test_out_of_scope_caption_gives_the_reason_and_sr_has_no_score(dicom_dir, tmp_path):
    """A real CT-like refusal: the SEG/CT volume in pydicom's corpus, out of scope, not scored."""
    from cxr_desktop.screening.results import ResultRow

    src = dicom_dir / "liver.dcm"
    row = ResultRow(path="liver.dcm", status="out_of_scope", reason="modality_not_radiograph",
                    detail="liver.dcm: not scored: Not a radiograph (Modality SEG). The model is meant for adult "
                           "frontal chest radiographs; review this image without the decision aid.")
    finding = finding_from_row(row)
    assert not finding.in_scope and not finding.scored and "Not a radiograph" in finding.reason_text
    write_result_objects(src, finding, MODEL, tmp_path / "r.sc.dcm", tmp_path / "r.sr.dcm",
                         heat=np.ones((1, 1), np.float32))  # never drawn out of scope
    assert dciodvfy_errors(tmp_path / "r.sc.dcm") == [] and dciodvfy_errors(tmp_path / "r.sr.dcm") == []
    sc, sr = pydicom.dcmread(tmp_path / "r.sc.dcm"), pydicom.dcmread(tmp_path / "r.sr.dcm")
    px = sc.pixel_array.astype(int)
    caption = caption_lines(finding, MODEL)
    assert caption[1].startswith("Not scored: out of scope - Not a radiograph")
    assert any("Decision aid - not a diagnosis" in c for c in caption)
    assert any(c.startswith("Model: demo-cxr v7") for c in caption)
    # the picture itself is untinted (only the first caption line is amber)
    rows = pydicom.dcmread(src, stop_before_pixels=True).Rows
    assert (px[:rows].max(axis=2) - px[:rows].min(axis=2)).max() == 0
    assert _num(sr, "CXR001") is None and _code(sr, "CXR004") == "No"
    assert any("modality_not_radiograph" in t and "Not a radiograph" in t for t in _texts(sr))
