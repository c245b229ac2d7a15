"""Reduced-resolution decoding: model-sized pixels for a fraction of the decode time.

JPEG (DCT scaling) and JPEG 2000 (wavelet resolution levels) can be decoded at
1/2, 1/4, 1/8 ... of their stored size much faster than in full: a 2000 x 2000
JPEG 2000 radiograph decodes about 8x faster at 1/4 size. Screening and training
need only the model's input size, so their loader asks for a short side of at least
``min_side`` (see :func:`cxr_desktop.preprocess.decode_min_side`); the viewer always
decodes in full. Pixel values keep their meaning (same units, same bit depth); only
the sampling changes, and the reduction is a proper low-pass one (the codec's own
DCT / wavelet synthesis), not decimation.

Every function here returns None when the fast path does not apply; the caller then
decodes in full, so this module can only make decoding faster, never fail it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from cxr_desktop.imaging.types import StudyImage

#: JPEG DCT scaling offers 1/1, 1/2, 1/4 and 1/8.
JPEG_MAX_LEVELS = 3
#: Pillow modes of 8-bit JPEGs (their window is the full 0..255 scale, independent of the data).
JPEG_8BIT_MODES = ("L", "RGB", "CMYK", "YCbCr")
#: DICOM transfer syntaxes with a reduced-resolution path: JPEG Baseline and JPEG 2000 (incl. HTJ2K).
REDUCIBLE_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",
})


def may_reduce(image: "StudyImage", min_side: int) -> bool:
    """Whether ``load_image(image.path, min_side=...)`` could decode this (full) image smaller."""
    if min(image.shape) < 2 * min_side or image.source_shape is not None:
        return False
    if image.source_format == "jpeg":
        return image.frame_index == 0
    if image.source_format == "dicom":  # the conditions of dicom_io.reduced_frame
        meta = image.metadata
        own_window = image.voi_lut is not None or any(w.source == "dicom" for w in image.windows)
        return (str(meta.get("transfer_syntax_uid") or "") in REDUCIBLE_SYNTAXES and image.rgb is None
                and not meta.get("colour_source") and int(meta.get("pixel_representation") or 0) == 0
                and own_window)
    return False


@dataclass(frozen=True)
class J2kHeader:
    """What the SIZ and COD markers of a JPEG 2000 codestream say."""

    rows: int
    columns: int
    components: int
    precision: int
    signed: bool
    levels: int  # wavelet decomposition levels (COD), the most a decode can be reduced by
    zero_origin: bool  # image and tile offsets are 0 (then reduced size = ceil(size / 2**r))


def reduction_levels(rows: int, columns: int, min_side: int, max_levels: int) -> int:
    """Largest r <= max_levels with both sides of ceil(size / 2**r) still >= min_side."""
    r = 0
    while r < max_levels and min(_ceil_div(rows, 1 << (r + 1)), _ceil_div(columns, 1 << (r + 1))) >= min_side:
        r += 1
    return r


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


def j2k_header(data: bytes) -> J2kHeader | None:
    """Parse SIZ and COD of a raw JPEG 2000 codestream (None if not one, or damaged)."""
    if data[:4] != b"\xff\x4f\xff\x51" or len(data) < 42:
        return None
    i = 4
    lsiz = int.from_bytes(data[i:i + 2], "big")
    b = lambda k: int.from_bytes(data[i + 4 + 4 * k:i + 8 + 4 * k], "big")  # noqa: E731
    x1, y1, x0, y0, _xt, _yt, xt0, yt0 = (b(k) for k in range(8))
    comps = int.from_bytes(data[i + 36:i + 38], "big")
    if comps < 1 or len(data) < i + 38 + 3 * comps or x1 <= x0 or y1 <= y0:
        return None
    ssiz = data[i + 38]
    sub = all(data[i + 39 + 3 * c] == 1 and data[i + 40 + 3 * c] == 1 for c in range(comps))
    precision, signed = (ssiz & 0x7F) + 1, bool(ssiz & 0x80)
    if any(data[i + 38 + 3 * c] != ssiz for c in range(comps)) or not sub:
        return None  # mixed precisions or subsampled components: not for this fast path
    j = 2 + 2 + lsiz  # after SOC and SIZ: the main header's other markers, up to the first tile (SOT)
    levels = None
    while j + 4 <= len(data):
        if data[j] != 0xFF:
            return None
        marker = data[j + 1]
        if marker in (0x90, 0x93, 0xD9):  # SOT, SOD, EOC
            break
        seg = int.from_bytes(data[j + 2:j + 4], "big")
        if marker == 0x52 and j + 9 < len(data):  # COD: Scod, SGcod (4 bytes), then SPcod levels
            levels = data[j + 9]
        elif marker == 0x53:  # COC: a component with its own levels; stay safe
            return None
        if seg < 2:
            return None
        j += 2 + seg
    if levels is None:
        return None
    return J2kHeader(rows=y1 - y0, columns=x1 - x0, components=comps, precision=precision, signed=signed,
                     levels=int(levels), zero_origin=(x0 == y0 == xt0 == yt0 == 0))


def jpeg2000_reduced(data: bytes, *, min_side: int, levels: int | None = None) -> np.ndarray | None:
    """Decode a greyscale, unsigned JPEG 2000 codestream at a reduced resolution.

    Returns the stored values (uint8 / uint16) at ``ceil(size / 2**r)``, with r the
    most levels keeping both sides >= ``min_side`` (or ``levels`` when given, for
    tests), or None when the fast path does not apply (colour, signed, > 16 bits,
    no reduction possible, any decoder problem).
    """
    hdr = j2k_header(data)
    if hdr is None or hdr.components != 1 or hdr.signed or hdr.precision > 16 or not hdr.zero_origin:
        return None
    r = reduction_levels(hdr.rows, hdr.columns, min_side, hdr.levels) if levels is None else levels
    if r < 0 or r > hdr.levels or (r == 0 and levels is None):
        return None
    shape = (_ceil_div(hdr.rows, 1 << r), _ceil_div(hdr.columns, 1 << r))
    try:
        arr = _pillow_j2k(data, r, shape)
    except Exception:  # noqa: BLE001 - the full decoder will report a real problem
        return None
    if arr is None or arr.shape != shape:
        return None
    container = 8 if arr.dtype == np.uint8 else 16
    if hdr.precision < container:  # Pillow scales samples up to the full 8 / 16 bits
        arr = arr >> np.array(container - hdr.precision, dtype=arr.dtype)
    return arr


def _pillow_j2k(data: bytes, r: int, shape: tuple[int, int]) -> np.ndarray | None:
    """Pillow's OpenJPEG decoder at resolution level ``r``.

    Pillow's own ``reduce`` setting rounds the reduced size (size / 2**r), while OpenJPEG
    produces ceil(size / 2**r), so odd sizes fail there; the tile is set to OpenJPEG's size.
    """
    from PIL import Image, ImageFile

    im = Image.open(io.BytesIO(data), formats=["JPEG2000"])
    if im.mode not in ("L", "I;16") or len(im.tile) != 1:
        return None
    if r:
        tile = im.tile[0]
        args = tuple(tile.args) if tile.args is not None else ()
        if len(args) != 5:
            return None
        im._reduce = r
        im._size = (shape[1], shape[0])
        im.tile = [ImageFile._Tile(tile.codec_name, (0, 0, shape[1], shape[0]), tile.offset,
                                   (args[0], r, im.layers, args[3], args[4]))]
        ImageFile.ImageFile.load(im)
    else:
        im.load()
    arr = np.asarray(im)
    return arr.astype(np.uint16, copy=False) if im.mode == "I;16" else arr


def jpeg_reduced(data: bytes, *, min_side: int) -> np.ndarray | None:
    """Decode a greyscale 8-bit JPEG (e.g. a DICOM JPEG Baseline frame) with DCT scaling."""
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data), formats=["JPEG"])
        if im.mode != "L" or not draft_jpeg(im, min_side):
            return None
        im.load()
        arr = np.asarray(im)
    except Exception:  # noqa: BLE001 - the full decoder will report a real problem
        return None
    rows, cols = arr.shape[:2]
    if arr.ndim != 2 or min(rows, cols) < min_side:
        return None
    return arr


def draft_jpeg(im: "Image.Image", min_side: int) -> bool:
    """Ask Pillow's JPEG loader for DCT scaling keeping both sides >= ``min_side``; True if reduced.

    Call before ``im.load()``. No effect on other formats.
    """
    if getattr(im, "format", None) != "JPEG" or im.mode not in JPEG_8BIT_MODES or min_side <= 0:
        return False
    w, h = im.size
    scale = 1 << reduction_levels(h, w, min_side, JPEG_MAX_LEVELS)
    if scale == 1:
        return False
    # Pillow picks the largest DCT scale <= min(w // size_w, h // size_h); result ceil(size / scale).
    result = im.draft(im.mode, (max(1, w // scale), max(1, h // scale)))
    return result is not None and im.size != (w, h)
