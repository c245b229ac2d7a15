"""Completeness checks of compressed image data: never score pixels a file did not contain.

Decoders are forgiving on purpose: libjpeg fills the rows after a premature end with
flat grey, OpenJPEG decodes what a cut codestream still holds, Pillow's PNG reader
zero-fills rows a short (but well-terminated) zlib stream lacks. Each check here looks
at the coded data itself and returns None when it is complete, or a :class:`Incomplete`
saying what is missing (the caller turns it into ``ImageError(Reason.TRUNCATED)``).

- JPEG (8-bit, any process libjpeg-turbo decodes): a strict decode at 1/8 scale with
  simplejpeg, which raises on libjpeg's "premature end" / "corrupt data" warnings (the
  entropy-coded data is read in full, the inverse DCT mostly skipped).
- JPEG in a DICOM frame above or below 8 bits (12-bit extended DCT, 2-16-bit lossless):
  a probe with libjpeg-turbo 3 (imagecodecs), see :func:`check_jpeg_probe`.
- JPEG-LS: a strict decode with CharLS (pyjpegls), which refuses a cut or corrupt scan.
- JPEG (any precision, also JPEG-LS): the codestream must end with an EOI marker.
- JPEG 2000: every tile-part (SOT) must fit in the data and the codestream end with EOC.
- PNG: the IDAT zlib stream must inflate to at least the size the IHDR declares.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cxr_desktop.errors import ImageError, Reason

#: libjpeg warnings that leave every pixel intact (padding before a marker, header trivia).
BENIGN_JPEG_WARNINGS = ("extraneous bytes before marker", "unknown jfif revision", "thumbnail image size")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_INFLATE_STEP = 1 << 20


@dataclass(frozen=True)
class Incomplete:
    """What is missing. ``short``: the coded data really ends before the image does."""

    detail: str
    short: bool = True


# --------------------------------------------------------------------------- JPEG


#: SOF markers of DCT processes (baseline, extended, progressive; Huffman or arithmetic).
DCT_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC9, 0xCA})
#: SOF markers of the (non-hierarchical) lossless process.
LOSSLESS_SOF = frozenset({0xC3, 0xCB})
#: Sequential processes (extended DCT, lossless; Huffman or arithmetic): every scan is coded once,
#: so data missing from the last scan is all :func:`check_jpeg_probe` has to find.
SEQUENTIAL_SOF = frozenset({0xC1, 0xC3, 0xC9, 0xCB})
#: Inserted between the entropy-coded data and EOI by :func:`check_jpeg_probe`: fixed pseudo-random
#: bytes, none 0xFF (so no marker), the first bit 1 (unlike the zeros a decoder fills in).
JPEG_PROBE = bytes.fromhex(
    "bf8e721121d2e7e46848e2357e5ceb045b87237e2fcb3576e867e4396e96785073e00896582b287e36eb1e7b4a154161"
    "ba93367a7e605d5da9292f2a1b375e6e")


def _frame_header_at(data: bytes, *, jpeg_ls: bool, need: int) -> int | None:
    """Offset of the first frame header (SOF marker; SOF55 too when ``jpeg_ls``) with ``need`` bytes after
    its marker start readable; None when a scan, a non-marker byte or the end comes first."""
    i = 2
    n = len(data)
    while i + need < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or (jpeg_ls and marker == 0xF7):
            return i
        if marker == 0xDA:
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def jpeg_frame_type(data: bytes) -> tuple[int, int] | None:
    """(SOF marker, sample precision) of the first frame header (None when not found)."""
    i = _frame_header_at(data, jpeg_ls=True, need=4)
    return None if i is None else (data[i + 1], data[i + 4])


def ends_with_eoi(data: bytes) -> bool:
    """True when the codestream ends with EOI (JPEG) / EOC (JPEG 2000), both FF D9; a DICOM
    frame may add one pad byte (0x00 or 0xFF) to reach an even length."""
    tail = bytes(data[-3:])
    return tail[-2:] == b"\xff\xd9" or (tail[-1:] in (b"\x00", b"\xff") and tail[:2] == b"\xff\xd9")


def check_jpeg(data: bytes, *, require_eoi: bool = False) -> Incomplete | None:
    """Refuse a JPEG codestream whose entropy-coded data ends early or is corrupt.

    ``require_eoi``: the codestream must end with EOI (a DICOM frame; a JPEG *file* may
    carry trailing bytes after it, so there only the decoder's verdict counts).
    """
    has_eoi = ends_with_eoi(data)
    if require_eoi and not has_eoi:
        return Incomplete("the JPEG data has no end-of-image marker: it ends before the image does")
    frame_type = jpeg_frame_type(data)
    if frame_type is not None and frame_type[1] != 8 and frame_type[0] in SEQUENTIAL_SOF and require_eoi:
        return check_jpeg_probe(data)  # (a JPEG *file* above 8 bits is refused by Pillow anyway)
    if frame_type is None or frame_type[1] != 8 or frame_type[0] not in DCT_SOF | LOSSLESS_SOF:
        return None  # progressive 12-bit, hierarchical and JPEG-LS: only the end marker is checked here
    # DCT scaling (1/8) skips most of the inverse DCT; libjpeg-turbo must not scale lossless data.
    scaled = {"min_height": 1, "min_width": 1} if frame_type[0] in DCT_SOF else {}
    import simplejpeg

    try:
        header = simplejpeg.decode_jpeg_header(data)
    except Exception:  # noqa: BLE001 - a layout simplejpeg does not read: the decoder decides
        return None
    colourspace = "CMYK" if str(header[2]).upper() in ("CMYK", "YCCK") else "GRAY"
    try:
        simplejpeg.decode_jpeg(data, colorspace=colourspace, strict=True, **scaled)
    except ValueError as exc:
        text = str(exc).lower()
        if any(b in text for b in BENIGN_JPEG_WARNINGS):
            return None
        if "premature end of jpeg file" in text and not has_eoi:
            return Incomplete("the JPEG data stops without its end-of-image marker: the file was cut off")
        if "premature end" in text or "too few scanlines" in text:
            return Incomplete("the JPEG image data ends before the whole image is coded (the decoder "
                              "would fill the rest with flat grey)")
        if "corrupt jpeg data" in text or "bogus" in text or "huffman" in text:
            return Incomplete("the JPEG image data is corrupt (the decoder would have to invent part of "
                              "the image)", short=False)
        return None  # not a completeness warning (e.g. an unsupported feature): the decoder decides
    except Exception:  # noqa: BLE001 - same: leave it to the real decoder
        return None
    return None


def check_jpeg_probe(data: bytes) -> Incomplete | None:
    """Refuse a sequential JPEG codestream (any precision) whose last scan ends before the image.

    libjpeg-turbo 3 decodes 2-16-bit lossless and 12-bit DCT data but, like every decoder
    installed, only *warns* when the entropy-coded data runs out, fills the rest with zero
    bits and goes on; no Python binding of it reports that warning above 8 bits. So the frame
    is decoded twice: as it is, and with :data:`JPEG_PROBE` between its coded data and the
    EOI where a decoder stops (:func:`image_end`).

    - Complete scan: the decoder never uses a bit past its own data, so both decodes are equal
      (never a false refusal; the probe bytes are skipped like any bytes before a marker).
    - Cut scan: where the first decode reads zeros, the second reads the probe's bits, which
      start with a 1, so the code that spans the end differs. Lossless at 9-16 bits without
      point transform, two different valid codes (or extra bits) give two different
      differences and so two different samples. Otherwise (8 bits or less, a point transform,
      a DCT coefficient, an invalid code, which libjpeg reads as 0) every sample decoded from
      the 512 pseudo-random probe bits would have to equal the zero-filled one. Any decode
      error of the probed frame alone is a refusal too.

    None where libjpeg-turbo cannot decode the frame as it is: the real decoder decides.
    Multi-scan frames: only the last scan is probed (a cut exactly between two scans is not seen).
    """
    end = image_end(data)
    if end is None:
        return None
    body = bytes(data[:end]).rstrip(b"\xff")  # fill bytes: an FF must not precede the probe
    try:  # the extension module itself: imagecodecs loads it lazily, which a bundler would not see
        from imagecodecs._jpeg8 import jpeg8_decode
    except ImportError:  # then only the end marker is checked (imagecodecs is a dependency)
        return None
    options = {1: "GRAY", 3: "RGB", 4: "CMYK"}.get(_frame_components(data))
    kwargs = {"colorspace": options, "outcolorspace": options} if options else {}
    try:
        as_is = jpeg8_decode(bytes(data), **kwargs)
    except Exception:  # noqa: BLE001 - a layout libjpeg-turbo does not read: the decoder decides
        return None
    try:
        probed = jpeg8_decode(body + JPEG_PROBE + b"\xff\xd9", **kwargs)
    except Exception:  # noqa: BLE001 - the probe's bytes were read as image data
        probed = None
    if probed is not None and probed.shape == as_is.shape and np.array_equal(probed, as_is):
        return None
    return Incomplete("the JPEG image data ends before the whole image is coded (the decoder "
                      "would fill the rest with made-up values)")


#: A marker in entropy-coded data: FF not followed by a stuffed 00, an RSTn or another fill FF.
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def image_end(data: bytes) -> int | None:
    """Offset of the EOI marker that ends the image for a decoder: the first one after the
    scans (a frame cut and closed with FF D9, then followed by the rest of its fragments, ends
    there); None when the marker structure cannot be followed."""
    i = 2
    n = len(data)
    in_scan = False
    while i + 1 < n:
        if in_scan:
            found = _MARKER.search(data, i)
            if found is None:
                return None
            i = found.start()
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF or marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9:
            return i if in_scan else None
        if i + 4 > n:
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
        in_scan = in_scan or marker == 0xDA
    return None


def _frame_components(data: bytes) -> int:
    """Number of components (Nf) in the first frame header, 0 when not found."""
    i = _frame_header_at(data, jpeg_ls=False, need=9)
    return 0 if i is None else data[i + 9]


def check_jpegls(data: bytes) -> Incomplete | None:
    """Refuse a JPEG-LS codestream a strict decoder (CharLS) cannot decode in full.

    pylibjpeg-libjpeg decodes a cut JPEG-LS frame without a word; CharLS reports "invalid
    JPEG-LS stream". An unsupported feature (not a data problem) leaves it to the decoder.
    """
    if not ends_with_eoi(data):
        return Incomplete("the JPEG-LS data has no end-of-image marker: it ends before the image does")
    try:
        from jpeg_ls import decode_buffer
    except ImportError:  # optional: then only the end marker is checked
        return None
    try:
        decode_buffer(bytes(data))
    except Exception as exc:  # noqa: BLE001 - CharLS raises RuntimeError/ValueError with its text
        text = str(exc).lower()
        if "not supported" in text or "unsupported" in text:
            return None
        return Incomplete("the JPEG-LS image data ends early or is corrupt: a strict decoder (CharLS) "
                          "cannot decode the whole image", short=False)
    return None


# --------------------------------------------------------------------------- JPEG 2000


def check_j2k(data: bytes) -> Incomplete | None:
    """Refuse a JPEG 2000 codestream whose tile-parts run past its end or that lacks EOC."""
    n = len(data)
    if data[:2] != b"\xff\x4f":
        return None
    i = 2
    while i + 4 <= n:  # main header: marker segments up to the first SOT
        if data[i] != 0xFF:
            return None
        if data[i + 1] == 0x90:
            break
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    else:
        return Incomplete("the JPEG 2000 data ends inside its header")
    while i + 12 <= n and data[i:i + 2] == b"\xff\x90":
        psot = int.from_bytes(data[i + 6:i + 10], "big")
        if psot == 0:  # the last tile-part runs to EOC
            return None if ends_with_eoi(data) else Incomplete(
                "the JPEG 2000 data has no end-of-codestream marker: the file ends before the image does")
        if psot < 14 or i + psot > n:
            return Incomplete("a JPEG 2000 tile-part declares more data than the codestream holds: the "
                              "image data ends early")
        i += psot
    rest = bytes(data[i:i + 2])
    if rest != b"\xff\xd9":
        if i >= n - 1:
            return Incomplete("the JPEG 2000 data has no end-of-codestream marker: the file ends before "
                              "the image does")
        return Incomplete("the JPEG 2000 data after the last tile-part is not its end marker", short=False)
    return None


# --------------------------------------------------------------------------- PNG


def png_raw_size(width: int, height: int, bit_depth: int, colour_type: int, interlace: int) -> int | None:
    """Bytes the inflated IDAT stream must hold (filter bytes included); None if IHDR is invalid."""
    channels = _PNG_CHANNELS.get(colour_type)
    if channels is None or bit_depth not in (1, 2, 4, 8, 16) or width <= 0 or height <= 0:
        return None
    bits = channels * bit_depth

    def scanlines(w: int, h: int) -> int:
        return 0 if w <= 0 or h <= 0 else h * (1 + (w * bits + 7) // 8)

    if not interlace:
        return scanlines(width, height)
    return sum(scanlines(-(-(width - x0) // dx), -(-(height - y0) // dy)) for x0, y0, dx, dy in _ADAM7)


def check_png(f: BinaryIO, file_size: int, *, inflate: bool = True) -> Incomplete | None:
    """Every chunk must fit in the file, and the IDAT stream inflate (output discarded, bounded
    buffers) to at least the size the IHDR declares (``inflate=False``: chunk lengths only, for
    a decoder that refuses short data itself)."""
    f.seek(0)
    if f.read(8) != _PNG_SIGNATURE:
        return None
    head = f.read(25)
    if len(head) < 25 or head[4:8] != b"IHDR":
        return None
    width, height, depth, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", head[8:21])
    need = png_raw_size(width, height, depth, colour, interlace)
    if need is None:
        return None
    inflater = zlib.decompressobj()
    got = 0
    pos = 8 + 25
    try:
        while pos + 8 <= file_size:
            f.seek(pos)
            length, kind = struct.unpack(">I4s", f.read(8))
            if pos + 12 + length > file_size:  # also keeps Pillow from a read of that size
                return Incomplete(f"a PNG chunk declares {length:,} bytes but the file ends "
                                  f"{max(file_size - pos - 8, 0):,} bytes after its start")
            if kind == b"IEND":
                break
            if kind == b"IDAT" and inflate:
                left = length
                while left > 0 and got < need and not inflater.eof:
                    chunk = f.read(min(left, _INFLATE_STEP))
                    if not chunk:
                        break
                    left -= len(chunk)
                    got += len(inflater.decompress(chunk, _INFLATE_STEP))
                    while inflater.unconsumed_tail and got < need:
                        got += len(inflater.decompress(inflater.unconsumed_tail, _INFLATE_STEP))
            pos += 12 + length  # length, type, data, CRC
    except zlib.error:
        return None  # corrupt, not short: Pillow's decode reports it
    if inflate and got < need:
        rows = height if need == 0 else int(height * got / need)
        return Incomplete(f"the PNG image data ends early: it holds about {rows} of the {height} rows "
                          "the header declares")
    return None


def incomplete_error(problem: Incomplete, path: str | Path, what: str) -> ImageError:
    """``ImageError(TRUNCATED)`` naming what is missing (``what``: "The JPEG file", ...)."""
    advice = ("The copy or export was probably interrupted; copy or export the file again."
              if problem.short else "Export the image again from the source system.")
    return ImageError(Reason.TRUNCATED, f"{what} cannot be shown: {problem.detail}, so it was not "
                      f"decoded (no part of an image is ever made up). {advice}", path)
