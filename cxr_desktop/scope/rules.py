"""The individual scope rules: is this an adult frontal chest radiograph the model may score?

Each rule is a small pure function returning a :class:`ScopeReason` (a stable
``code`` for CSV columns and tests, plus a sentence a radiologist understands)
or ``None`` when the rule has no objection. Rules that cannot tell (a PNG has no
Modality, a DICOM file has no ViewPosition) pass: the image rules and the
learned check still apply. Messages name technical facts only (modality, view,
age, sizes), never patient names or IDs.

Metadata rules read the plain dict of :attr:`StudyImage.metadata` /
:attr:`ImageInfo.metadata`; image rules read the decoded :class:`StudyImage`.
:mod:`cxr_desktop.scope.check` combines them under a :class:`ScopeSettings`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from cxr_desktop.imaging.types import StudyImage
from cxr_desktop.preprocess import unit_grey

# --------------------------------------------------------------------------- reason codes

MODALITY = "modality_not_radiograph"
SECONDARY_CAPTURE = "secondary_capture"
MULTI_FRAME = "multi_frame"
VIEW = "view_not_frontal"
BODY_PART = "body_part_not_chest"
AGE = "below_adult_age"
COLOUR = "colour_image"
INVERTED = "inverted_intensity"
ASPECT = "extreme_aspect_ratio"
TOO_SMALL = "image_too_small"
LEARNED = "unlike_training_data"

#: Every rule code, in the order results list them (metadata first, then image, then learned).
RULE_CODES = (MODALITY, SECONDARY_CAPTURE, MULTI_FRAME, VIEW, BODY_PART, AGE,
              COLOUR, INVERTED, ASPECT, TOO_SMALL, LEARNED)

ACCEPTS = "the model accepts adult frontal (PA/AP) chest radiographs only"


@dataclass(frozen=True)
class ScopeReason:
    """Why an image is out of scope: stable ``code`` + a sentence for the reader."""

    code: str
    message: str

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------- metadata rules

#: DICOM modalities of projection radiographs (RG: digitised screen-film radiograph).
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "RG"})
#: "Other" / secondary capture: scanned films, screenshots, exports; allowed only by a setting.
SECONDARY_CAPTURE_MODALITIES = frozenset({"OT", "SC"})
SECONDARY_CAPTURE_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # SC Image Storage and its multi-frame variants

MODALITY_NAMES = {
    "CT": "CT", "MR": "MR", "US": "ultrasound", "NM": "nuclear medicine", "PT": "PET",
    "MG": "mammography", "XA": "angiography", "RF": "fluoroscopy", "PX": "panoramic dental",
    "IO": "intra-oral dental", "DG": "diaphanography", "ES": "endoscopy", "XC": "photograph",
    "SM": "microscopy", "OP": "ophthalmic photograph", "OCT": "optical coherence tomography",
    "SEG": "segmentation", "RTIMAGE": "radiotherapy image", "RTDOSE": "radiotherapy dose",
    "RTSTRUCT": "radiotherapy structure set", "SR": "structured report", "DOC": "document",
    "PR": "presentation state", "KO": "key object selection", "BMD": "bone densitometry",
}


def _text(metadata: Mapping[str, Any], key: str) -> str:
    value = metadata.get(key)
    return "" if value is None else str(value).strip().upper()


def modality_rule(metadata: Mapping[str, Any], *, allow_secondary_capture: bool = False) -> ScopeReason | None:
    """CR/DX (and RG) pass; OT/SC secondary captures pass only if allowed; other modalities fail.

    A DICOM file without Modality whose SOP class is Secondary Capture counts as a
    secondary capture. Non-DICOM files (no modality at all) pass this rule.
    """
    modality = _text(metadata, "modality")
    sop = str(metadata.get("sop_class_uid") or "").strip()
    if modality in RADIOGRAPH_MODALITIES:
        return None
    if modality in SECONDARY_CAPTURE_MODALITIES or (not modality and sop.startswith(SECONDARY_CAPTURE_SOP_PREFIX)):
        if allow_secondary_capture:
            return None
        shown = f"Modality {modality}" if modality else "Secondary Capture SOP class, no Modality"
        return ScopeReason(
            SECONDARY_CAPTURE,
            f"Secondary capture ({shown}): a scanned or exported picture, not an original radiograph. "
            "If it is a digitised chest radiograph, allow secondary captures in the scope settings.",
        )
    if not modality:
        return None
    name = MODALITY_NAMES.get(modality, "non-radiograph")
    return ScopeReason(
        MODALITY,
        f"Not a radiograph (Modality {modality}, {name}): the model accepts chest radiographs "
        "(CR/DX) only.",
    )


def frame_count(metadata: Mapping[str, Any], default: int = 1) -> int:
    """Number of frames the header declares (1 when unknown or unreadable)."""
    try:
        return max(int(metadata.get("number_of_frames") or default), 1)
    except (TypeError, ValueError):
        return max(int(default), 1)


def multi_frame_rule(frames: int) -> ScopeReason | None:
    """More than one frame (cine loop, volume, multi-frame export) fails."""
    if frames <= 1:
        return None
    return ScopeReason(
        MULTI_FRAME,
        f"Multi-frame image ({frames} frames, e.g. a cine loop or a volume): {ACCEPTS}, "
        "one radiograph per image.",
    )


_LATERAL = re.compile(r"\bLAT(ERAL)?\b|^(LL|RL)$|\b(LLAT|RLAT|XTABLE)\b|\bCROSS[- ]?TABLE\b")
_OBLIQUE = re.compile(r"^(LLO|RLO|LAO|RAO|LPO|RPO)$|\bOBL(IQUE)?\b")
_DECUBITUS = re.compile(r"^(LLD|RLD)$|\bDECUB(ITUS)?\b")


def view_rule(metadata: Mapping[str, Any]) -> ScopeReason | None:
    """ViewPosition lateral, oblique or decubitus fails; AP/PA, empty or unrecognised pass."""
    raw = _text(metadata, "view_position")
    view = re.sub(r"[_/]+", " ", raw).strip()
    if not view:
        return None
    if _DECUBITUS.search(view):
        kind = "Decubitus view"
    elif _LATERAL.search(view):
        kind = "Lateral view"
    elif _OBLIQUE.search(view):
        kind = "Oblique view"
    else:
        return None
    return ScopeReason(VIEW, f"{kind} (ViewPosition {raw}): {ACCEPTS}.")


_CHEST_WORDS = frozenset({"CHEST", "THORAX", "THORACIC", "LUNG", "LUNGS", "THX", "TORAX", "TORACE",
                          "THORAKS", "BRUST", "BRUSTKORB", "POITRINE", "TORACICO", "TORACICA",
                          "PULMON", "PULMONES", "CXR"})
#: Clearly not a chest (DICOM CID 4031 terms and common variants). Unlisted values pass.
_NOT_CHEST_WORDS = frozenset({
    "HEAD", "SKULL", "BRAIN", "FACE", "SINUS", "SINUSES", "ORBIT", "ORBITS", "JAW", "MANDIBLE",
    "TMJ", "TEETH", "TOOTH", "DENTAL", "NECK", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "SPINE",
    "COCCYX", "SACRUM", "ABDOMEN", "ABD", "ABDOM", "PELVIS", "HIP", "HIPS", "KNEE", "KNEES", "ANKLE",
    "FOOT", "FEET", "TOE", "TOES", "HEEL", "CALCANEUS", "LEG", "LOWERLEG", "TIBIA", "FIBULA",
    "FEMUR", "THIGH", "HAND", "HANDS", "FINGER", "FINGERS", "THUMB", "WRIST", "FOREARM", "ELBOW",
    "ARM", "UPPERARM", "HUMERUS", "SHOULDER", "CLAVICLE", "SCAPULA", "EXTREMITY", "BREAST",
    "LIVER", "KIDNEY", "KIDNEYS", "PANCREAS", "SPLEEN", "BLADDER", "PROSTATE", "UTERUS", "OVARY",
    "EYE", "EAR", "THYROID",
})


def body_part_rule(metadata: Mapping[str, Any]) -> ScopeReason | None:
    """BodyPartExamined naming a clearly non-chest part fails; chest words, empty or unknown pass."""
    raw = _text(metadata, "body_part")
    if not raw:
        return None
    words = {w for w in re.split(r"[^A-Z]+", raw) if w}
    joined = re.sub(r"[^A-Z]", "", raw)
    if words & _CHEST_WORDS or any(c in joined for c in ("CHEST", "THORAX", "TORAX", "LUNG")):
        return None
    if words & _NOT_CHEST_WORDS or joined in _NOT_CHEST_WORDS:
        return ScopeReason(
            BODY_PART,
            f"Not a chest examination (BodyPartExamined {raw}): {ACCEPTS}.",
        )
    return None


def age_rule(metadata: Mapping[str, Any], *, min_age_years: float = 18.0) -> ScopeReason | None:
    """PatientAge below the adult threshold fails; a missing age passes."""
    age = metadata.get("patient_age_years")
    if age is None:
        return None
    try:
        years = float(age)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(years) or years >= float(min_age_years):
        return None
    if years >= 2 or years <= 0:
        shown = f"{years:.0f} years"
    elif years >= 1 / 12:
        shown = f"{years * 12:.0f} months"
    else:
        shown = f"{years * 365.25:.0f} days"
    return ScopeReason(
        AGE,
        f"Patient age {shown} is below the adult threshold of {float(min_age_years):g} years: the "
        "model was made for adult chest radiographs; children's chests look different.",
    )


# --------------------------------------------------------------------------- geometry rules


def size_rule(rows: int, columns: int, *, min_side: int = 224) -> ScopeReason | None:
    """An image smaller than ``min_side`` pixels on a side fails (too little detail to score)."""
    if min(rows, columns) >= min_side:
        return None
    return ScopeReason(
        TOO_SMALL,
        f"Image too small ({columns} x {rows} pixels; at least {min_side} on each side is needed): "
        "probably a thumbnail or an icon. Open the full-resolution radiograph.",
    )


def aspect_rule(rows: int, columns: int, *, max_aspect: float = 2.0) -> ScopeReason | None:
    """A long side more than ``max_aspect`` times the short side fails (strips, whole-body scans)."""
    short = max(min(rows, columns), 1)
    ratio = max(rows, columns) / short
    if ratio <= max_aspect:
        return None
    return ScopeReason(
        ASPECT,
        f"Unusual shape ({columns} x {rows} pixels, {ratio:.1f}:1; a chest radiograph is at most "
        f"{max_aspect:g}:1): probably a strip, a whole-body scan or a montage, not a chest radiograph.",
    )


# --------------------------------------------------------------------------- image rules

#: 8-bit channel spread at which a pixel counts as coloured (JPEG chroma noise stays below).
COLOUR_SPREAD = 24
#: Fraction of coloured pixels above which an image is a colour picture (small coloured
#: annotations such as a red arrow on a radiograph stay below).
COLOUR_FRACTION = 0.01


def colour_fraction(rgb: np.ndarray, *, spread: int = COLOUR_SPREAD) -> float:
    """Fraction of pixels whose channels differ by more than ``spread`` (8-bit units)."""
    arr = np.asarray(rgb)
    step = max(1, int(max(arr.shape[0], arr.shape[1]) // 512))  # ~512 px is plenty for a fraction
    arr = arr[::step, ::step, :3].astype(np.int16)
    chroma = arr.max(axis=-1) - arr.min(axis=-1)
    return float(np.mean(chroma > spread)) if chroma.size else 0.0


def colour_rule(image: StudyImage, *, max_fraction: float = COLOUR_FRACTION) -> ScopeReason | None:
    """A true colour image fails; grey stored as RGB (no ``rgb`` copy) passes."""
    if image.rgb is not None:
        frac = colour_fraction(image.rgb)
        if frac <= max_fraction:
            return None
        detail = f"{frac:.0%} of pixels are coloured"
    elif image.metadata.get("colour_source") and image.metadata.get("grey_as_rgb") is False:
        detail = "the file stores colour pixels"
    else:
        return None
    return ScopeReason(
        COLOUR,
        f"Colour image ({detail}; photometric {image.photometric}): radiographs are greyscale, so "
        "this is probably a photograph, an ultrasound or a coloured map, not a chest radiograph.",
    )


#: Regions of the model's (stretched, square) view, as (row0, row1, col0, col1) fractions.
LUNG_LEFT = (0.25, 0.62, 0.15, 0.40)
LUNG_RIGHT = (0.25, 0.62, 0.60, 0.85)
MEDIASTINUM = (0.25, 0.70, 0.44, 0.56)
UPPER_ABDOMEN = (0.85, 1.00, 0.15, 0.85)
#: Weight of the histogram skew in the polarity score.
SKEW_WEIGHT = 0.1
POLARITY_SIZE = 256


@dataclass(frozen=True)
class Polarity:
    """Simple statistics of the displayed image that say whether it looks like a positive CXR.

    ``anatomy_contrast``: (mediastinum + upper abdomen)/2 minus the mean of the two
    lung fields, divided by the image's 2-98 % brightness range. Positive on chest
    radiographs (dark lungs, bright mediastinum and diaphragm), negative when inverted.
    ``skew``: skewness of the brightness histogram; chest radiographs are mostly
    bright tissue with a tail of dark lung, so usually negative.
    ``score`` = anatomy_contrast - SKEW_WEIGHT * skew; below 0 looks inverted. Inverting
    the image negates every part, so the rule treats a radiograph and its negative alike.
    """

    anatomy_contrast: float
    skew: float
    score: float


def _region(g: np.ndarray, box: tuple[float, float, float, float]) -> float:
    n_r, n_c = g.shape
    r0, r1, c0, c1 = box
    return float(np.median(g[int(r0 * n_r):int(np.ceil(r1 * n_r)), int(c0 * n_c):int(np.ceil(c1 * n_c))]))


def polarity(unit_square: np.ndarray) -> Polarity:
    """:class:`Polarity` of a [0, 1] grey image as the model sees it (stretched square)."""
    g = np.asarray(unit_square, dtype=np.float64)
    lo, hi = np.percentile(g, [2, 98])
    span = max(float(hi - lo), 1e-3)
    lungs = (_region(g, LUNG_LEFT) + _region(g, LUNG_RIGHT)) / 2.0
    bright = (_region(g, MEDIASTINUM) + _region(g, UPPER_ABDOMEN)) / 2.0
    contrast = (bright - lungs) / span
    sd = float(g.std())
    skew = float(np.mean(((g - g.mean()) / sd) ** 3)) if sd > 1e-6 else 0.0
    skew = float(np.clip(skew, -3.0, 3.0))
    return Polarity(contrast, skew, contrast - SKEW_WEIGHT * skew)


def model_view(image: StudyImage, size: int = POLARITY_SIZE) -> np.ndarray:
    """The image as the model sees it (default window, MONOCHROME1 inverted, stretched square)."""
    return unit_grey(image, size)


def inverted_rule(image: StudyImage, *, unit_square: np.ndarray | None = None,
                  margin: float = 0.0) -> ScopeReason | None:
    """An image whose brightness pattern is that of a negative chest radiograph fails.

    ``unit_square`` may pass a precomputed :func:`model_view`; ``margin`` shifts the
    decision threshold (flag when score < -margin).
    """
    view = model_view(image) if unit_square is None else unit_square
    pol = polarity(view)
    if pol.score >= -margin:
        return None
    hint = ""
    if image.invert_for_display:
        hint = (" The file says MONOCHROME1 (high values shown dark); if its pixels are already "
                "stored dark-lung, the Photometric Interpretation tag is wrong.")
    return ScopeReason(
        INVERTED,
        "Looks inverted (a negative): the lung fields are brighter than the mediastinum and upper "
        f"abdomen (polarity score {pol.score:.2f}, chest radiographs score above 0)." + hint
        + " Re-export the image as a standard positive radiograph.",
    )
