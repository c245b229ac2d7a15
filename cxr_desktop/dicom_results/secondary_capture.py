"""The Secondary Capture result image: the radiograph, the heatmap where it is drawn, a burned-in caption.

The picture follows the viewer's and the screening overlays' rules
(:mod:`cxr_desktop.heatmap_rules`, :func:`cxr_desktop.screening.heatmaps.overlay_bgr`):
the map (evidence for the finding class) only when P(finding) reaches the
threshold, transparent where low; below it, the plain image; out of scope, the
plain image and no map at all. The caption sits in a band under the image (it
never covers the radiograph): finding class, probability, threshold, model
name/version, the caution or the out-of-scope reason, and
"Decision aid - not a diagnosis". It holds no patient data.

The object (highdicom ``SCImage.from_ref_dataset``) goes into a new series of the
source's study: same Study Instance UID, new Series / SOP Instance UIDs derived
from the source image and the model's hash (re-exporting the same result gives
the same UIDs, so a re-send replaces instead of duplicating), a Source Image
Sequence pointing at the radiograph, and a Series Description saying what it is.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxr_desktop.dicom_results.finding import DECISION_AID_SHORT, ImageFinding, ModelInfo, ascii_text
from cxr_desktop.heatmap_rules import NO_HEATMAP_TEXT, score_sentence

SC_SERIES_NUMBER = 9901
SC_SERIES_DESCRIPTION = "CXR Review AI heatmap - decision aid, not diagnosis"  # LO: at most 64 characters
MANUFACTURER = "CXR Review"
MAX_SIDE = 2048  # the picture is for reading on a workstation; larger sources are shrunk to this long side


def caption_lines(finding: ImageFinding, model: ModelInfo) -> list[str]:
    """The burned-in caption, top to bottom (ASCII; no patient data)."""
    lines = [f"CXR Review AI result - {DECISION_AID_SHORT}"]
    if not finding.in_scope:
        lines.append("Not scored: out of scope - " + (finding.reason_text or finding.reason_codes or "see report"))
    if finding.scored:
        score = float(finding.score)  # type: ignore[arg-type]
        lines.append(score_sentence(model.positive_class, score, model.threshold))
        if not finding.in_scope:
            lines.append("Scored on request although out of scope: the score is not reliable; no heatmap.")
        elif finding.above_threshold:
            lines.append(f"Heatmap: {model.cam_method} evidence for '{model.positive_class}', scale relative "
                         "per image.")
        else:
            lines.append(NO_HEATMAP_TEXT + ".")
    else:
        lines.append("No heatmap: the image was not scored.")
    if finding.caution is not None:
        lines.append(finding.caution.message)
    sha = f", file sha256 {model.sha256[:16]}..." if model.sha256 else ""
    lines.append(f"Model: {model.display_name}{sha}")
    return [ascii_text(line) for line in lines]


def _wrap(text: str, width: int, font: int, scale: float, thick: int) -> list[str]:
    """Greedy word wrap by rendered width."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if current and cv2.getTextSize(trial, font, scale, thick)[0][0] > width:
            lines.append(current)
            current = word
        else:
            current = trial
    lines.append(current)
    return lines


def _fit(picture: np.ndarray) -> np.ndarray:
    h, w = picture.shape[:2]
    scale = min(1.0, MAX_SIDE / float(max(h, w)))
    if scale >= 1.0:
        return picture
    return cv2.resize(picture, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def compose_picture(display: np.ndarray, heat: np.ndarray | None, finding: ImageFinding,
                    model: ModelInfo) -> np.ndarray:
    """RGB uint8: the image (with the map where it is drawn) above a caption band.

    ``display``: grey uint8 as the viewer shows it; ``heat``: [0, 1] map in the same
    geometry (used only when the image is in scope and at or above the threshold).
    """
    from cxr_desktop.screening.heatmaps import overlay_bgr

    if heat is not None and finding.in_scope and finding.scored and bool(finding.above_threshold):
        if heat.shape != display.shape[:2]:
            raise ValueError(f"heatmap {heat.shape} and image {display.shape[:2]} differ in geometry")
        bgr = overlay_bgr(display, heat)
    else:
        bgr = cv2.cvtColor(display, cv2.COLOR_GRAY2BGR)
    bgr = _fit(bgr)
    h, w = bgr.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.45, w / 1400.0)
    thick = max(1, round(scale * 1.6))
    (cw, ch), base = cv2.getTextSize("M", font, scale, thick)
    wrapped: list[str] = []
    for line in caption_lines(finding, model):
        wrapped.extend(_wrap(line, w - cw, font, scale, thick))
    line_h = ch + base + max(4, ch // 2)
    band = line_h * len(wrapped) + line_h // 2
    out = np.zeros((h + band, w, 3), np.uint8)
    out[:h] = bgr
    y = h + line_h - base
    for i, line in enumerate(wrapped):
        (tw, _), _ = cv2.getTextSize(line, font, scale, thick)
        if tw > w - cw:  # a long unbreakable word: shrink this line to fit
            s = scale * (w - cw) / float(tw)
            cv2.putText(out, line, (cw // 2, y), font, s, (255, 255, 255), max(1, round(s * 1.6)), cv2.LINE_AA)
        else:
            colour = (80, 220, 255) if i == 0 else (255, 255, 255)  # first line (decision aid) in amber
            cv2.putText(out, line, (cw // 2, y), font, scale, colour, thick, cv2.LINE_AA)
        y += line_h
    return np.ascontiguousarray(out[..., ::-1])  # BGR -> RGB


def result_uid(source: Dataset, model: ModelInfo, what: str) -> str:
    """A UID derived from the source image, the model's hash and the object kind (stable across re-exports)."""
    return generate_uid(entropy_srcs=[str(source.SOPInstanceUID), model.sha256 or model.display_name, what])


def series_uid(source: Dataset, model: ModelInfo, what: str) -> str:
    """One result series per study, model and kind ("sc" / "sr")."""
    return generate_uid(entropy_srcs=[str(source.StudyInstanceUID), model.sha256 or model.display_name,
                                      what, "series"])


def make_secondary_capture(source: Dataset, picture_rgb: np.ndarray, model: ModelInfo) -> Dataset:
    """The SC image (RGB, 8 bits) in a new series of ``source``'s study; Source Image Sequence -> ``source``."""
    import highdicom as hd

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # highdicom's person-name style hints (not ours to fix)
        sc = _sc_image(hd, source, picture_rgb, model)
    # highdicom wants an orientation letter pair; the picture keeps the source's (Type 2C: empty if unknown)
    orientation = source.get("PatientOrientation")
    sc.PatientOrientation = list(orientation) if orientation else ""
    sc.Laterality = source.get("Laterality", "") or ""  # General Series, Type 2C: the source's, or empty
    _finish_common(sc, model)
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = (f"Radiograph with {model.cam_method} heatmap and caption by {model.display_name}; "
                                f"{DECISION_AID_SHORT}")[:1024]
    src_item = Dataset()
    src_item.ReferencedSOPClassUID = source.SOPClassUID
    src_item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [src_item]
    return sc


def _sc_image(hd: Any, source: Dataset, picture_rgb: np.ndarray, model: ModelInfo) -> Dataset:
    return hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.ascontiguousarray(picture_rgb),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_uid(source, model, "sc"),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=result_uid(source, model, "sc"),
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=SC_SERIES_DESCRIPTION,
        patient_orientation=("L", "F"),  # placeholder, replaced by the caller
    )


def _finish_common(ds: Dataset, model: ModelInfo) -> None:
    from cxr_desktop import __version__

    ds.SoftwareVersions = [f"CXR Review {__version__}", f"{model.name} {model.version}"[:64]]
    ds.ManufacturerModelName = "CXR Review decision aid"
