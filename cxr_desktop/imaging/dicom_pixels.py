"""DICOM pixel stages, one small function each (after pydicom's ``pixels/processing.py``).

Order (PS3.3 C.7.6.3, C.11): stored values -> padding mask -> Modality LUT / rescale
-> (display, elsewhere) VOI LUT or window -> MONOCHROME1 inversion. Colour images
go stored values -> palette / YCbCr conversion -> RGB. pydicom's helpers are used
where they fit (apply_modality_lut for a Modality LUT Sequence, apply_color_lut,
convert_color_space); the rest reads attributes defensively because real files
(and damaged ones) hold missing, multi-valued or malformed values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, convert_color_space

from cxr_desktop.imaging.display import row_bands
from cxr_desktop.imaging.types import VoiLut, Window

GREY_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
COLOUR_PHOTOMETRICS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


class PixelStageError(ValueError):
    """A pixel stage met attribute values it cannot use.

    ``what`` says precisely which attribute (name and tag) is invalid and how, as a clause
    for "The DICOM file is damaged: <what>" (never the value itself).
    """

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


# --------------------------------------------------------------------------- attribute access


def get_value(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """An attribute's value, or ``default`` when absent, empty or unparsable."""
    try:
        value = ds.get(keyword, default)
    except Exception:  # malformed value (e.g. 3 bytes in a US element)
        return default
    return default if value is None or value == "" else value


def values_list(value: Any) -> list[Any]:
    """Single or multi-valued attribute value -> list."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def as_float(value: Any) -> float | None:
    """A finite float, or None."""
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def as_int(value: Any, default: int | None = None) -> int | None:
    """An int (first value of a multi-valued attribute), or ``default``."""
    vals = values_list(value)
    try:
        return int(vals[0])
    except (TypeError, ValueError, IndexError, OverflowError):
        return default


def photometric(ds: Dataset) -> str:
    """Photometric Interpretation, upper-case and stripped ('' when absent)."""
    return str(get_value(ds, "PhotometricInterpretation", "")).strip().upper()


def number_of_frames(ds: Dataset) -> int:
    """Number of Frames (absent, 0 or malformed -> 1, as pydicom does)."""
    n = as_int(get_value(ds, "NumberOfFrames", 1), 1)
    return n if n and n > 0 else 1


def _functional_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The first item of ``sequence`` in the per-frame (preferred) or shared functional groups."""
    groups: list[Dataset] = []
    per_frame = get_value(ds, "PerFrameFunctionalGroupsSequence")
    if per_frame is not None and 0 <= frame < len(per_frame):
        groups.append(per_frame[frame])
    shared = get_value(ds, "SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        seq = get_value(group, sequence)
        if seq:
            return seq[0]
    return None


# --------------------------------------------------------------------------- stages


def padding_mask(stored: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """True where Pixel Padding Value (..Range Limit) marks padding; on *stored* values."""
    if stored.ndim != 2:
        return None
    pad = as_int(get_value(ds, "PixelPaddingValue"))
    if pad is None:
        return None
    limit = as_int(get_value(ds, "PixelPaddingRangeLimit"), pad)
    lo, hi = min(pad, limit), max(pad, limit)
    mask = (stored >= lo) & (stored <= hi)
    return mask if mask.any() else None


def rescale(ds: Dataset, frame: int = 0) -> tuple[float, float] | None:
    """(slope, intercept) from the frame's Pixel Value Transformation or the top level.

    Raises :class:`PixelStageError` when the values are present but not numbers.
    """
    source = _functional_item(ds, frame, "PixelValueTransformationSequence")
    for src in (source, ds):
        if src is None or "RescaleSlope" not in src or "RescaleIntercept" not in src:
            continue
        where = " in the Pixel Value Transformation Sequence" if src is source else ""
        slope = as_float(get_value(src, "RescaleSlope"))
        intercept = as_float(get_value(src, "RescaleIntercept"))
        if slope is None:
            raise PixelStageError(f"its Rescale Slope (0028,1053){where} is not a finite number, so "
                                  "pixel values cannot be converted to modality units")
        if slope == 0.0:
            raise PixelStageError(f"its Rescale Slope (0028,1053){where} is 0, which would make every "
                                  "pixel the same value")
        if intercept is None:
            raise PixelStageError(f"its Rescale Intercept (0028,1052){where} is not a finite number, so "
                                  "pixel values cannot be converted to modality units")
        return slope, intercept
    return None


def modality_values(stored: np.ndarray, ds: Dataset, frame: int = 0) -> np.ndarray:
    """Stored values -> modality units (float32): Modality LUT Sequence or rescale."""
    if get_value(ds, "ModalityLUTSequence"):
        try:
            out = apply_modality_lut(stored, ds)
        except Exception as exc:
            raise PixelStageError("its Modality LUT Sequence (0028,3000) cannot be applied (its LUT "
                                  "Descriptor and LUT Data are missing, malformed or disagree)") from exc
        return np.asarray(out, dtype=np.float32)
    params = rescale(ds, frame)
    if params is None or params == (1.0, 0.0):
        return stored.astype(np.float32)
    slope, intercept = params
    out = np.empty(stored.shape, dtype=np.float32)
    for band in row_bands(stored.shape):  # float64 arithmetic on one band at a time
        out[band] = stored[band].astype(np.float64) * slope + intercept
    return out


def windows(ds: Dataset, frame: int = 0) -> list[Window]:
    """Every valid Window Center/Width pair with its explanation and VOI LUT Function.

    Per-frame / shared functional groups (enhanced multi-frame) take precedence over the
    top level. Pairs whose width is not allowed for the function are skipped.
    """
    source = _functional_item(ds, frame, "FrameVOILUTSequence")
    if source is None or "WindowCenter" not in source:
        source = ds
    centers = [as_float(v) for v in values_list(get_value(source, "WindowCenter"))]
    widths = [as_float(v) for v in values_list(get_value(source, "WindowWidth"))]
    notes = [str(v) for v in values_list(get_value(source, "WindowCenterWidthExplanation"))]
    function = str(get_value(source, "VOILUTFunction", get_value(ds, "VOILUTFunction", "LINEAR"))).strip().upper()
    if function not in VOI_FUNCTIONS:
        function = "LINEAR"
    out: list[Window] = []
    for i, (c, w) in enumerate(zip(centers, widths)):
        if c is None or w is None or w <= 0 or (function == "LINEAR" and w < 1):
            continue
        note = notes[i] if i < len(notes) else ""
        out.append(Window(center=c, width=w, function=function, source="dicom", explanation=note))
    return out


def _little_endian(ds: Dataset) -> bool:
    try:
        tsyntax = ds.file_meta.TransferSyntaxUID
        return bool(tsyntax.is_little_endian)
    except Exception:
        enc = getattr(ds, "original_encoding", (None, True))
        return enc[1] is not False


def voi_lut(ds: Dataset) -> VoiLut | None:
    """The first VOI LUT Sequence item as a :class:`VoiLut` (None when absent or unusable).

    Own parsing rather than pydicom's ``apply_voi``: that indexes through an array of the
    LUT's *output* type, which wraps for 8-bit LUTs with more than 256 entries.
    """
    seq = get_value(ds, "VOILUTSequence")
    if not seq:
        return None
    item = seq[0]
    desc = [as_int(v) for v in values_list(get_value(item, "LUTDescriptor"))]
    if len(desc) != 3 or None in desc or "LUTData" not in item:
        return None
    entries = desc[0] or 65536
    first = desc[1]
    if as_int(get_value(ds, "PixelRepresentation"), 0) == 1 and first >= 32768:
        first -= 65536  # SS first-mapped value stored as US
    try:
        elem = item["LUTData"]
        if isinstance(elem.value, (bytes, bytearray)):
            raw = bytes(elem.value)
            if len(raw) == entries:  # 8-bit entries
                table = np.frombuffer(raw, dtype=np.uint8)
            else:
                table = np.frombuffer(raw[: 2 * entries], dtype="<u2" if _little_endian(ds) else ">u2")
        else:
            table = np.asarray(values_list(elem.value), dtype=np.int64)
    except Exception:
        return None
    if table.size == 0:
        return None
    table = table[:entries].astype(np.float64)
    bits = int(desc[2]) if desc[2] and 1 <= desc[2] <= 16 else 16
    top = float(table.max())
    if top > 2**bits - 1:  # descriptor understates the output depth
        bits = max(1, int(math.ceil(math.log2(top + 1))))
    explanation = str(get_value(item, "LUTExplanation", ""))
    return VoiLut(first_mapped=int(first), table=table, bits=bits, explanation=explanation)


_PALETTE_DATA = ("RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
                 "BluePaletteColorLookupTableData", "AlphaPaletteColorLookupTableData")


def _palette_little_endian(ds: Dataset) -> Dataset:
    """``ds`` with 16-bit palette LUT data byte-swapped to little endian where needed.

    pydicom's ``apply_color_lut`` reads (non-segmented) LUT data in the machine's byte
    order, which swaps every entry of a big-endian file.
    """
    if _little_endian(ds) or "RedPaletteColorLookupTableData" not in ds:
        return ds
    fixed = Dataset()
    for elem in ds:
        if elem.keyword.endswith("PaletteColorLookupTableDescriptor") or elem.keyword in ("PixelPresentation",):
            fixed.add(elem)
    for keyword in _PALETTE_DATA:
        raw = get_value(ds, keyword)
        if isinstance(raw, (bytes, bytearray)):
            desc = values_list(get_value(ds, "RedPaletteColorLookupTableDescriptor"))
            entries = (as_int(desc[0]) or 65536) if desc else 0
            if len(raw) == 2 * entries:
                raw = np.frombuffer(raw, dtype=">u2").astype("<u2").tobytes()
            setattr(fixed, keyword, raw)
    return fixed


def palette_rgb(stored: np.ndarray, ds: Dataset) -> tuple[np.ndarray, float]:
    """PALETTE COLOR stored values -> (RGB array, maximum value of its type)."""
    try:
        rgb = apply_color_lut(stored, _palette_little_endian(ds))
    except Exception as exc:
        raise PixelStageError(palette_problem(ds)) from exc
    rgb = rgb[..., :3]
    return rgb, float(np.iinfo(rgb.dtype).max) if rgb.dtype.kind in "ui" else 1.0


_PALETTE_TAGS = (("Red", "1101", "1201", "1221"), ("Green", "1102", "1202", "1222"),
                 ("Blue", "1103", "1203", "1223"))


def palette_problem(ds: Dataset) -> str:
    """Which palette attribute makes the lookup impossible (for the refusal message)."""
    for colour, desc_tag, data_tag, seg_tag in _PALETTE_TAGS:
        desc = [as_int(v) for v in values_list(get_value(ds, f"{colour}PaletteColorLookupTableDescriptor"))]
        name = f"{colour} Palette Color Lookup Table"
        if len(desc) != 3 or None in desc:
            return f"its {name} Descriptor (0028,{desc_tag}) is missing or does not hold 3 numbers"
        entries = desc[0] or 65536
        if desc[2] not in (8, 16):
            return f"its {name} Descriptor (0028,{desc_tag}) gives {desc[2]} bits per entry (8 or 16 allowed)"
        if f"Segmented{colour}PaletteColorLookupTableData" in ds:
            continue
        raw = get_value(ds, f"{colour}PaletteColorLookupTableData")
        if raw is None:
            return (f"its {name} Data (0028,{data_tag}) is missing (and there is no segmented "
                    f"table (0028,{seg_tag}))")
        have = len(raw) if isinstance(raw, (bytes, bytearray)) else len(values_list(raw))
        per_entry = 1 if desc[2] == 8 and have == entries else 2
        if isinstance(raw, (bytes, bytearray)) and have // per_entry != entries:
            return (f"its {name} Data (0028,{data_tag}) holds {have // per_entry:,} entries but its "
                    f"Descriptor (0028,{desc_tag}) declares {entries:,}")
    return ("its Palette Color Lookup Tables (0028,1101-1103 / 0028,1201-1203) cannot be applied to "
            "the stored pixel values")


def to_rgb(arr: np.ndarray, decoded_photometric: str) -> np.ndarray:
    """Decoded colour samples -> RGB (pydicom already converts YBR_FULL(_422); J2K the ICT/RCT)."""
    pi = decoded_photometric.strip().upper()
    if pi in ("YBR_FULL", "YBR_FULL_422"):
        return convert_color_space(arr, pi, "RGB")
    if pi in ("RGB", "YBR_ICT", "YBR_RCT"):
        return arr
    raise PixelStageError("its Photometric Interpretation (0028,0004) does not match the decoded "
                          "colour samples")


def colour_max(ds: Dataset, arr: np.ndarray) -> float:
    """Largest value a colour sample can hold (from Bits Stored, else the array type)."""
    bits = as_int(get_value(ds, "BitsStored"))
    if bits and 1 <= bits <= 16:
        return float(2**bits - 1)
    return float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" else 255.0


def finite_mask(values: np.ndarray) -> np.ndarray | None:
    """True where float pixel data is NaN/inf (shown black, left out of auto windows)."""
    if values.dtype.kind != "f":
        return None
    bad = ~np.isfinite(values)
    return bad if bad.any() else None
