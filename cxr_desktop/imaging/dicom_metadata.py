"""What a DICOM dataset says about itself: the viewer's metadata, transfer syntax names,
and the tag panel's rows.

Split from :mod:`cxr_desktop.imaging.dicom_io` (which reads files and decodes pixels):
everything here works on a dataset already parsed, reads no pixel data and raises
nothing a damaged value could cause (an unreadable value is shown as such). The
metadata dict carries identifying fields (patient name and ID) for display and grouping
only; they never go into messages or logs.
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

from pydicom.dataset import Dataset
from pydicom.uid import UID

from cxr_desktop.imaging import dicom_pixels as px

#: The pixel data elements (by tag): where the reader stops, and what the tag panel leaves out.
PIXEL_TAGS = {0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData", 0x7FE00010: "PixelData"}
TagRow = tuple[str, str, str, str]  # (tag, name, VR, short value)


@contextmanager
def quiet() -> Iterator[None]:
    """Silence pydicom/Pillow warnings (non-conformant but readable files are common)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --------------------------------------------------------------------------- transfer syntax names


# Newer transfer syntaxes pydicom 3.0 has no name for (DICOM PS3.6 Table A-1).
_EXTRA_NAMES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
}


def syntax_name(uid: UID) -> str:
    """'JPEG Baseline (Process 1) (1.2.840.10008.1.2.4.50)' for messages."""
    name = _EXTRA_NAMES.get(str(uid)) or (uid.name if uid.is_valid else "")
    return f"{name} ({uid})" if name and name != str(uid) else f"transfer syntax {uid}"


# --------------------------------------------------------------------------- metadata


def _text(ds: Dataset, keyword: str) -> str | None:
    value = px.get_value(ds, keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def parse_age(value: Any) -> float | None:
    """Patient's Age ('045Y', '006M', '010W', '003D'; bare digits as years) -> years."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY]?)\s*", str(value).upper())
    if not m:
        return None
    n = float(m.group(1))
    return {"D": n / 365.25, "W": n * 7 / 365.25, "M": n / 12.0}.get(m.group(2), n)


def _uid_name(value: Any) -> str | None:
    if value is None:
        return None
    uid = UID(str(value).strip())
    try:
        return uid.name if uid.is_valid else str(uid)
    except Exception:
        return str(uid)


def _pair(ds: Dataset, keyword: str) -> tuple[float, float] | None:
    values = [px.as_float(v) for v in px.values_list(px.get_value(ds, keyword))]
    return (values[0], values[1]) if len(values) == 2 and None not in values else None


def dicom_metadata(ds: Dataset, tsyntax: UID | None) -> dict[str, Any]:
    """Plain-Python metadata for the viewer (patient_id only for grouping, never for messages)."""
    study = _text(ds, "StudyInstanceUID")
    series = _text(ds, "SeriesInstanceUID")
    sop_class = px.get_value(ds, "SOPClassUID")
    rescale_slope = px.as_float(px.get_value(ds, "RescaleSlope"))
    rescale_intercept = px.as_float(px.get_value(ds, "RescaleIntercept"))
    spacing = [px.as_float(v) for v in px.values_list(px.get_value(ds, "PixelSpacing"))]
    return {
        "source_format": "dicom",
        "modality": _text(ds, "Modality"),
        "view_position": _text(ds, "ViewPosition"),
        "body_part": _text(ds, "BodyPartExamined"),
        "patient_age_years": parse_age(px.get_value(ds, "PatientAge")),
        "patient_sex": _text(ds, "PatientSex"),
        "patient_id": _text(ds, "PatientID"),
        "manufacturer": _text(ds, "Manufacturer"),
        "transfer_syntax": (_EXTRA_NAMES.get(str(tsyntax)) or tsyntax.name) if tsyntax else None,
        "transfer_syntax_uid": str(tsyntax) if tsyntax else None,
        "sop_class": _uid_name(sop_class),
        "sop_class_uid": str(sop_class) if sop_class is not None else None,
        "sop_instance_uid": _text(ds, "SOPInstanceUID"),
        "study_instance_uid": study,
        "series_instance_uid": series,
        "study_uid": study,
        "series_uid": series,
        "series_description": _text(ds, "SeriesDescription"),
        "series_number": px.as_int(px.get_value(ds, "SeriesNumber")),
        "instance_number": px.as_int(px.get_value(ds, "InstanceNumber")),
        "rows": px.as_int(px.get_value(ds, "Rows")),
        "columns": px.as_int(px.get_value(ds, "Columns")),
        "number_of_frames": px.number_of_frames(ds),
        "photometric": px.photometric(ds) or None,
        "samples_per_pixel": px.as_int(px.get_value(ds, "SamplesPerPixel", 1), 1),
        "bits_allocated": px.as_int(px.get_value(ds, "BitsAllocated")),
        "bits_stored": px.as_int(px.get_value(ds, "BitsStored")),
        "pixel_representation": px.as_int(px.get_value(ds, "PixelRepresentation")),
        "rescale_slope": rescale_slope,
        "rescale_intercept": rescale_intercept,
        "pixel_spacing": tuple(spacing) if len(spacing) == 2 and None not in spacing else None,
        # measurements (cxr_desktop.measure) and the viewer's four-corner overlay; the name is for display only
        "imager_pixel_spacing": _pair(ds, "ImagerPixelSpacing"),
        "laterality": _text(ds, "ImageLaterality") or _text(ds, "Laterality"),
        "study_date": _text(ds, "StudyDate"),
        "patient_name": (_text(ds, "PatientName") or "").replace("^", " ").strip() or None,
        "presentation_lut_shape": _text(ds, "PresentationLUTShape"),
        "colour_source": None,
        "grey_as_rgb": None,
    }


# --------------------------------------------------------------------------- tags


_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
_MAX_TAG_ROWS = 5000


def _short_value(elem: Any) -> str:
    """A short, one-line rendering of an element's value for the tag panel."""
    try:
        vr = str(elem.VR)
        value = elem.value
        if vr == "SQ":
            return f"<{len(value)} item(s)>"
        if vr in _BINARY_VRS or isinstance(value, (bytes, bytearray)):
            raw = bytes(value or b"")
            return raw.hex(" ") if len(raw) <= 16 else f"<binary data, {len(raw)} bytes>"
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            text = "\\".join(str(v) for v in value)
        else:
            text = "" if value is None else str(value)
    except Exception:
        return "<unreadable value>"
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:117] + "..."


def _walk(ds: Dataset, depth: int, rows: list[TagRow]) -> None:
    for elem in ds:
        if len(rows) >= _MAX_TAG_ROWS:
            return
        try:
            tag = int(elem.tag)
            if tag in PIXEL_TAGS and depth == 0:
                continue
            name = elem.name if elem.name else (elem.keyword or "")
            prefix = "> " * depth
            rows.append((f"({tag >> 16:04X},{tag & 0xFFFF:04X})", prefix + name, str(elem.VR),
                         _short_value(elem)))
            if str(elem.VR) == "SQ" and depth < 4:
                for item in elem.value:
                    _walk(item, depth + 1, rows)
        except Exception:
            continue


def tag_rows(ds: Dataset) -> list[TagRow]:
    """The tag panel's rows of a parsed dataset (file meta first; the pixel data left out)."""
    rows: list[TagRow] = []
    with quiet():
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            _walk(meta, 0, rows)
        _walk(ds, 0, rows)
    return rows


def frame_tag_rows(ds: Dataset, frame: int) -> list[TagRow]:
    """Rows of one frame's Per-frame Functional Groups item (empty when the file has none)."""
    rows: list[TagRow] = []
    with quiet():
        try:
            items = ds.get("PerFrameFunctionalGroupsSequence")
            item = items[frame] if items is not None and 0 <= frame < len(items) else None
        except Exception:  # a damaged sequence: the panel shows the file's rows only
            item = None
        if item is not None:
            _walk(item, 1, rows)
    return rows
