"""Reading and validating DICOM files, and decoding one frame.

Everything pydicom raises is mapped here to :class:`ImageError` with a stable reason.
Messages name technical facts only (sizes, transfer syntax, attribute names), never
values that could identify the patient, and never pydicom's exception text. What a
parsed dataset says about itself (metadata, transfer syntax names, the tag panel's rows)
is in :mod:`cxr_desktop.imaging.dicom_metadata`.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from cxr_desktop.errors import ImageError, Reason
from cxr_desktop.imaging import dicom_pixels as px
from cxr_desktop.imaging.dicom_metadata import (
    PIXEL_TAGS,
    TagRow,
    dicom_metadata,
    quiet,
    syntax_name,
    tag_rows,
)
from cxr_desktop.imaging.raster import (
    auto_window,
    declared_size_check,
    frame_error,
    full_scale_window,
    split_colour,
)
from cxr_desktop.imaging.integrity import check_j2k, check_jpeg, check_jpegls, incomplete_error
from cxr_desktop.imaging.reduced import REDUCIBLE_SYNTAXES, jpeg2000_reduced, jpeg_reduced
from cxr_desktop.imaging.types import ImageInfo, StudyImage

UNDEFINED_LENGTH = 0xFFFFFFFF
DEFLATED = "1.2.840.10008.1.2.1.99"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

# Which package decodes which transfer syntax (shown when the decoder is missing).
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",  # JPEG Extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",  # HTJ2K
    RLE_LOSSLESS: "pylibjpeg-rle",
}
_JPEG_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                  "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
_JPEG_LS_SYNTAXES = {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
_J2K_SYNTAXES = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
                 "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
JPEG_BASELINE_8BIT = "1.2.840.10008.1.2.4.50"
_UID_RE = re.compile(r"^[0-9.]{1,64}$")


# --------------------------------------------------------------------------- reading


class _GuardedFile:
    """File wrapper for pydicom: never over-allocates for bogus lengths, notices a cut-off tag."""

    def __init__(self, f: Any, size: int, name: str):
        self._f = f
        self.size = size
        self.name = name
        self.partial_header = False

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            return self._f.read()
        want = n
        data = self._f.read(min(n, max(self.size - self._f.tell(), 0)))
        if want in (4, 8) and 0 < len(data) < want:
            self.partial_header = True
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:  # the owner closes the real file
        pass


@dataclass
class DicomFile:
    """A parsed dataset plus what the reader saw about its pixel element."""

    ds: Dataset
    pixel_keyword: str | None  # the pixel element the file declares (even if cut off)
    pixel_length: int | None
    truncated: str | None  # what is missing (the file holds less than it declares), or None


def _truncated_error(path: str | Path, detail: str | None = None) -> ImageError:
    """The file holds less than it declares (``detail`` says what); only then "ends early"."""
    where = f" ({detail})" if detail else ""
    return ImageError(
        Reason.TRUNCATED,
        f"The DICOM file ends early{where}: the image data is incomplete and cannot be shown. The "
        "copy or export was probably interrupted (or a length in the file is damaged); copy or "
        "export the file again.",
        path,
    )


def _damaged(path: str | Path, detail: str) -> ImageError:
    return ImageError(
        Reason.UNREADABLE,
        f"The DICOM file is damaged: {detail}. Export the image again from the source system (PACS).",
        path,
    )


def read_dicom(path: str | Path, *, header_only: bool, max_bytes: int) -> DicomFile:
    """Parse a DICOM file (with or without preamble / file meta), up to or including pixels."""
    path = str(path)
    seen: dict[str, Any] = {}

    def stop_when(tag: Any, vr: Any, length: int) -> bool:
        if "keyword" in seen:
            # Nothing after the pixel data matters for the image (padding, signatures, or
            # trailing bytes that are no element at all): stop, as if the file ended here.
            seen["after"] = True
            return True
        if int(tag) in PIXEL_TAGS:
            # position in the file; meaningless once pydicom reads from an inflated buffer
            seen.update(keyword=PIXEL_TAGS[int(tag)], length=length,
                        offset=None if deflated else guard.tell())
            if not header_only and not deflated and length != UNDEFINED_LENGTH:
                guard.size = min(size, guard.tell() + length)  # trailing bytes are never parsed
            return header_only
        return False

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        guard = _GuardedFile(f, size, path)
        deflated = _check_deflate(guard, path, max_bytes)
        try:
            ds = pydicom.filereader.read_partial(guard, stop_when=stop_when, force=True)  # type: ignore[arg-type]
        except zlib.error:
            raise _damaged(path, "its deflated (zlib-compressed) content is corrupt") from None
        except MemoryError:
            raise ImageError(Reason.TOO_LARGE, "There is not enough memory to read this file. Close "
                             "other images or programs and try again.", path) from None
        except Exception as exc:
            raise _damaged(path, f"its header cannot be parsed ({type(exc).__name__})") from None

    keyword = seen.get("keyword")
    length = seen.get("length")
    truncated = None
    offset = seen.get("offset")
    if offset is not None and length is not None and length != UNDEFINED_LENGTH and offset + length > size:
        truncated = (f"its pixel data declares {length:,} bytes but only {max(size - offset, 0):,} "
                     "follow in the file")
    if truncated is None and keyword is not None and not header_only and keyword not in ds:
        truncated = "its compressed pixel data has no end delimiter: the file ends inside the image data"
    truncated = truncated or _short_values(ds)
    if truncated is None and keyword is None and guard.partial_header:
        truncated = "the file ends inside the header of an element"
    return DicomFile(ds=ds, pixel_keyword=keyword, pixel_length=length, truncated=truncated)


def _short_values(ds: Dataset) -> str | None:
    """Which top-level element holds fewer bytes than its declared length (None if none)."""
    try:
        for tag, elem in ds._dict.items():  # raw elements: value is bytes as read
            length = getattr(elem, "length", None)
            value = getattr(elem, "value", None)
            if (isinstance(value, (bytes, bytearray)) and length is not None
                    and length != UNDEFINED_LENGTH and len(value) < length):
                t = int(tag)
                return (f"element ({t >> 16:04X},{t & 0xFFFF:04X}) declares {length:,} bytes but the "
                        f"file ends after {len(value):,}")
    except Exception:
        return None
    return None


def _check_deflate(guard: _GuardedFile, path: str, max_bytes: int) -> bool:
    """Refuse a Deflated Explicit VR file that would inflate beyond ``max_bytes`` (zip bomb).

    Returns whether the file is deflated.
    """
    start = guard.tell()
    is_deflated = False
    try:
        from pydicom.filereader import _read_file_meta_info, read_preamble

        read_preamble(guard, True)  # type: ignore[arg-type]
        meta = _read_file_meta_info(guard)  # type: ignore[arg-type]
        is_deflated = str(meta.get("TransferSyntaxUID", "")) == DEFLATED
        if is_deflated:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            total = 0
            while chunk := guard.read(1 << 20):
                total += len(inflater.decompress(chunk, 1 << 24))
                while inflater.unconsumed_tail and total <= max_bytes:
                    total += len(inflater.decompress(inflater.unconsumed_tail, 1 << 24))
                if total > max_bytes:
                    raise ImageError(
                        Reason.TOO_LARGE,
                        f"The compressed (deflated) DICOM file would expand to more than "
                        f"{max_bytes / 2**30:.1f} GiB, so it was not read (protects the computer's "
                        "memory). Ask for an uncompressed export.",
                        path,
                    )
    except ImageError:
        raise
    except Exception:
        pass  # pydicom reports the problem when it parses the file properly
    finally:
        guard.seek(start)
    return is_deflated


# --------------------------------------------------------------------------- header checks


@dataclass
class Header:
    """Validated image attributes of a DICOM dataset."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    photometric: str
    transfer_syntax: UID


def transfer_syntax(df: DicomFile, path: str | Path) -> UID:
    """The transfer syntax, inferred from the encoding when the file meta lacks it."""
    ds = df.ds
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        ds.file_meta = meta
    uid = str(meta.get("TransferSyntaxUID", "") or "").strip()
    if uid:
        if not _UID_RE.match(uid):
            raise _damaged(path, "its Transfer Syntax UID is not a valid UID")
        return UID(uid)
    if df.pixel_length == UNDEFINED_LENGTH:
        raise ImageError(
            Reason.UNSUPPORTED_TRANSFER_SYNTAX,
            "The image data is compressed but the file does not say how (no Transfer Syntax UID "
            "in its file meta information). Ask for the file to be exported again as standard DICOM "
            "(Part 10) with file meta information.",
            path,
        )
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit is not False:
        inferred = pydicom.uid.ImplicitVRLittleEndian
    elif little is False:
        inferred = pydicom.uid.ExplicitVRBigEndian
    else:
        inferred = pydicom.uid.ExplicitVRLittleEndian
    meta.TransferSyntaxUID = inferred
    return UID(inferred)


def check_header(df: DicomFile, path: str | Path, *, max_pixels: int, max_bytes: int,
                 need_pixels: bool = True) -> Header:
    """Validate what decoding needs; refuse bombs, unknown layouts and missing decoders."""
    ds = df.ds
    if df.pixel_keyword is None:
        if df.truncated:
            raise _truncated_error(path, df.truncated)
        if need_pixels:
            raise ImageError(
                Reason.NO_PIXEL_DATA,
                "This DICOM file contains no image (no Pixel Data element): it may be a report, "
                "a structured document, a presentation state or an incomplete export. Open the image "
                "files of the series instead.",
                path,
            )
    if df.truncated:
        raise _truncated_error(path, df.truncated)
    rows = px.as_int(px.get_value(ds, "Rows"))
    cols = px.as_int(px.get_value(ds, "Columns"))
    if not rows or not cols or rows < 0 or cols < 0:
        raise _damaged(path, "its header lacks a valid image size (Rows / Columns)")
    frames = px.number_of_frames(ds)
    samples = px.as_int(px.get_value(ds, "SamplesPerPixel", 1), 1) or 1
    bits = px.as_int(px.get_value(ds, "BitsAllocated"))
    pi = px.photometric(ds)
    if bits is None or not 1 <= bits <= 64:
        raise _damaged(path, "its header lacks a valid Bits Allocated value")
    if bits not in (1, 8, 16, 32, 64):
        raise ImageError(Reason.UNSUPPORTED_PIXEL_FORMAT,
                         f"The image uses {bits} bits per pixel, which this app cannot display. "
                         "Ask for an export with 8 or 16 bits per pixel.", path)
    if pi in px.GREY_PHOTOMETRICS or pi == "PALETTE COLOR":
        ok = samples == 1
    else:
        ok = pi in px.COLOUR_PHOTOMETRICS and samples == 3
    if not ok:
        raise ImageError(
            Reason.UNSUPPORTED_PIXEL_FORMAT,
            "The image's colour encoding (Photometric Interpretation / Samples per Pixel) is not "
            "one this app supports (greyscale, RGB, YBR or palette colour). Ask for a greyscale or "
            "RGB export.",
            path,
        )
    declared_size_check(rows, cols, frames, samples, bits / 8.0, max_pixels, max_bytes, path)
    uid = transfer_syntax(df, path)
    _check_decoder(uid, path)
    return Header(rows, cols, frames, samples, bits, pi, uid)


def _check_decoder(uid: UID, path: str | Path) -> None:
    """Refuse a transfer syntax no installed decoder reads, naming the package that would."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(uid)
    except Exception:
        decoder = None
    if decoder is not None and decoder.is_available:
        return
    pkg = _DECODER_PACKAGES.get(str(uid))
    if pkg:
        advice = f"Install the decoder package {pkg} (pip install {pkg}) and restart the app"
    else:
        advice = "No decoder for it is available in this app"
    raise ImageError(
        Reason.UNSUPPORTED_TRANSFER_SYNTAX,
        f"The image is compressed with {syntax_name(uid)}, which the installed decoders cannot "
        f"read. {advice}, or ask for the image to be exported uncompressed (Explicit VR Little "
        "Endian).",
        path,
    )


# --------------------------------------------------------------------------- decoding


def _codestream_size(data: bytes, uid: str) -> tuple[int, int] | None:
    """(rows, columns) declared inside a JPEG / JPEG-LS / JPEG 2000 frame, if found."""
    try:
        if uid in _JPEG_SYNTAXES and data[:2] == b"\xff\xd8":
            i = 2
            while i + 9 < len(data):
                if data[i] != 0xFF:
                    return None
                marker = data[i + 1]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                    i += 1 if marker == 0xFF else 2
                    continue
                seg_len = int.from_bytes(data[i + 2:i + 4], "big")
                if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7:
                    return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
                if marker == 0xDA or seg_len < 2:
                    return None
                i += 2 + seg_len
            return None
        if uid in _J2K_SYNTAXES:
            i = data.find(b"\xff\x4f\xff\x51", 0, 4096)
            if i < 0 or len(data) < i + 24:
                return None
            x, y, x0, y0 = (int.from_bytes(data[i + 8 + 4 * k:i + 12 + 4 * k], "big") for k in range(4))
            return y - y0, x - x0
    except Exception:
        return None
    return None


def _check_codestream(ds: Dataset, hdr: Header, frame: int, path: str | Path) -> None:
    """The frame's own header must agree with Rows/Columns (guards the decoder's allocation),
    and its coded data must be complete (:mod:`.integrity`: decoders patch up cut frames)."""
    uid = str(hdr.transfer_syntax)
    if uid not in _JPEG_SYNTAXES and uid not in _J2K_SYNTAXES:
        return
    from pydicom.encaps import get_frame

    try:
        data = bytes(get_frame(ds.PixelData, frame, number_of_frames=hdr.frames))
    except Exception:
        raise _damaged(path, "its compressed image data is not divided into frames the way the file "
                             "declares (encapsulated items, Basic Offset Table or Number of Frames)") from None
    size = _codestream_size(data[:65536], uid)
    if size is not None and size[0] != 0 and size != (hdr.rows, hdr.columns):  # 0: height in DNL
        raise _damaged(path, "the compressed image inside it has a different size from the one its "
                             "header declares")
    if uid in _JPEG_LS_SYNTAXES:
        problem = check_jpegls(data)
    elif uid in _JPEG_SYNTAXES:
        problem = check_jpeg(data, require_eoi=True)
    else:
        problem = check_j2k(data)
    if problem is not None:
        where = "The DICOM file's compressed image" + (f" (frame {frame})" if hdr.frames > 1 else "")
        raise incomplete_error(problem, path, where)


def decode_frame(df: DicomFile, hdr: Header, frame: int, path: str | Path) -> tuple[np.ndarray, str]:
    """Decode one frame with pydicom's decoders -> (array, photometric of that array)."""
    from pydicom.pixels import get_decoder

    ds = df.ds
    if hdr.transfer_syntax.is_encapsulated:
        _check_codestream(ds, hdr, frame, path)
    decoder = get_decoder(hdr.transfer_syntax)
    try:
        try:
            arr, props = decoder.as_array(ds, index=frame)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception:
            raise
        except BaseException:  # a plugin panicked (pyo3 PanicException): try each plugin alone
            arr, props = _decode_plugin_by_plugin(decoder, ds, frame)
    except MemoryError:
        raise ImageError(Reason.TOO_LARGE, "There is not enough memory to decode this image. Close "
                         "other images or programs and try again.", path) from None
    except Exception as exc:
        raise _decode_failure(exc, hdr, path, ds) from None
    decoded_pi = str(props.get("photometric_interpretation", hdr.photometric))
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr, decoded_pi


def reduced_frame(df: DicomFile, hdr: Header, frame: int, min_side: int, path: str | Path) -> np.ndarray | None:
    """One greyscale, unsigned JPEG 2000 / JPEG Baseline frame at a reduced resolution, or None.

    Only for files that carry their own window or VOI LUT: without one the default
    window is the data range (min..max), and a smaller decode, being low-pass filtered,
    has a narrower range, so the model would see another contrast.
    """
    uid = str(hdr.transfer_syntax)
    if (hdr.samples != 1 or hdr.photometric not in px.GREY_PHOTOMETRICS or uid not in REDUCIBLE_SYNTAXES
            or px.as_int(px.get_value(df.ds, "PixelRepresentation", 0), 0) != 0):
        return None
    if not px.windows(df.ds, frame) and px.voi_lut(df.ds) is None:
        return None  # the default window would be the data range, which a smaller decode does not keep
    from pydicom.encaps import get_frame

    _check_codestream(df.ds, hdr, frame, path)
    try:
        data = bytes(get_frame(df.ds.PixelData, frame, number_of_frames=hdr.frames))
    except Exception:  # noqa: BLE001 - the full decode reports it
        return None
    if uid == JPEG_BASELINE_8BIT:
        arr = jpeg_reduced(data, min_side=min_side)
    else:
        arr = jpeg2000_reduced(data, min_side=min_side)
    if arr is None or arr.ndim != 2 or arr.shape[0] > hdr.rows or arr.shape[1] > hdr.columns:
        return None
    if hdr.bits_allocated == 16 and arr.dtype == np.uint8:
        arr = arr.astype(np.uint16)
    return arr


def _decode_plugin_by_plugin(decoder: Any, ds: Dataset, frame: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode with one plugin at a time, treating a plugin's panic as its failure."""
    failures = []
    for plugin in decoder.available_plugins:
        try:
            return decoder.as_array(ds, index=frame, decoding_plugin=plugin)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - includes panics from compiled decoders
            failures.append(f"{plugin}: {type(exc).__name__}")
    raise RuntimeError("Unable to decode as exceptions were raised by all available plugins: "
                       + ", ".join(failures))


def _data_shorter_than_declared(ds: Dataset, hdr: Header) -> bool:
    """True when the pixel data really holds fewer bytes than its header declares.

    Native data: fewer bytes than rows x columns x samples x bits x frames. Encapsulated
    data has no declared size; a decoder's "not enough data" is the codestream's own claim.
    """
    if hdr.transfer_syntax.is_encapsulated:
        return True
    try:
        keyword = next(k for k in PIXEL_TAGS.values() if k in ds)
        have = len(ds[keyword].value)
    except Exception:
        return False
    need = hdr.rows * hdr.columns * hdr.samples * hdr.frames * hdr.bits_allocated
    return have * 8 < need


def _decode_failure(exc: Exception, hdr: Header, path: str | Path, ds: Dataset) -> ImageError:
    """Classify a decoder exception (its text is inspected, never shown)."""
    text = str(exc)
    low = text.lower()
    if isinstance(exc, RuntimeError) and "all available plugins" in low:
        if str(hdr.transfer_syntax) == RLE_LOSSLESS and hdr.bits_allocated == 1:
            return ImageError(
                Reason.UNSUPPORTED_TRANSFER_SYNTAX,
                f"The image is compressed with {syntax_name(hdr.transfer_syntax)} using 1 bit per "
                "pixel (a bit-packed mask such as a segmentation), which none of the installed "
                "decoders (pylibjpeg-rle, pydicom) can read. Ask for the file to be exported "
                "uncompressed (Explicit VR Little Endian), e.g. with dcmtk's dcmdrle.",
                path,
            )
        return _damaged(path, f"its {syntax_name(hdr.transfer_syntax)} image data could not be "
                              "decoded")
    if any(s in low for s in ("less than expected", "insufficient", "not enough", "end of file",
                              "truncated", "fewer")) and _data_shorter_than_declared(ds, hdr):
        return _truncated_error(path, "the decoder found less image data than the header declares")
    if isinstance(exc, NotImplementedError):
        return ImageError(Reason.UNSUPPORTED_PIXEL_FORMAT,
                          "The image uses a pixel layout the installed decoders do not support. "
                          "Ask for an uncompressed 8- or 16-bit export.", path)
    return _damaged(path, f"its image data could not be decoded ({type(exc).__name__})")


# --------------------------------------------------------------------------- public entry points


def probe_dicom(path: str | Path, *, max_pixels: int, max_bytes: int) -> ImageInfo:
    """Header-only facts of a DICOM file (pixel data is neither read nor decoded)."""
    with quiet():
        df = read_dicom(path, header_only=True, max_bytes=max_bytes)
        hdr = check_header(df, path, max_pixels=max_pixels, max_bytes=max_bytes)
        meta = dicom_metadata(df.ds, hdr.transfer_syntax)
    return ImageInfo(path=str(path), format="dicom", rows=hdr.rows, columns=hdr.columns,
                     frames=hdr.frames, metadata=meta)


def load_dicom(path: str | Path, *, frame: int, max_pixels: int, max_bytes: int,
               min_side: int = 0, parsed: DicomFile | None = None) -> StudyImage:
    """Decode one frame of a DICOM file into a :class:`StudyImage` in modality units.

    ``min_side`` > 0: a greyscale JPEG 2000 or JPEG Baseline frame may be decoded at a
    reduced resolution (see :mod:`.reduced`); anything else is decoded in full.
    ``parsed``: the file as :func:`read_dicom` already read it (``header_only=False``), so
    the frames of one file need one parse (see ``loader.load_image(reuse_parsed=True)``).
    """
    with quiet():
        df = parsed or read_dicom(path, header_only=False, max_bytes=max_bytes)
        hdr = check_header(df, path, max_pixels=max_pixels, max_bytes=max_bytes)
        if not 0 <= frame < hdr.frames:
            raise frame_error(frame, hdr.frames, path)
        arr = reduced_frame(df, hdr, frame, min_side, path) if min_side > 0 else None
        if arr is not None:
            decoded_pi = hdr.photometric
        else:
            arr, decoded_pi = decode_frame(df, hdr, frame, path)
        reduced = arr.shape[:2] != (hdr.rows, hdr.columns)
        try:
            return _study_image(df.ds, hdr, arr, decoded_pi, frame, path, reduced=reduced)
        except px.PixelStageError as exc:
            raise _damaged(path, exc.what) from None


def _study_image(ds: Dataset, hdr: Header, arr: np.ndarray, decoded_pi: str, frame: int,
                 path: str | Path, *, reduced: bool = False) -> StudyImage:
    """Run the pixel stages on one decoded frame (``reduced``: smaller than stored, on purpose)."""
    meta = dicom_metadata(ds, hdr.transfer_syntax)
    if not reduced and arr.shape[:2] != (hdr.rows, hdr.columns):
        raise _damaged(path, "the decoded image does not have the size its header declares")
    bits_stored = px.as_int(px.get_value(ds, "BitsStored"), hdr.bits_allocated) or hdr.bits_allocated
    colour = hdr.photometric == "PALETTE COLOR" or arr.ndim == 3
    rgb = None
    grey_as_rgb = False
    mask = None
    voi = None
    if colour:
        if hdr.photometric == "PALETTE COLOR":
            colours, top = px.palette_rgb(arr, ds)
        else:
            colours, top = px.to_rgb(arr, decoded_pi), px.colour_max(ds, arr)
        pixels, rgb, grey_as_rgb = split_colour(colours, top)
        bits = max(1, int(round(math.log2(top + 1))))
        window = full_scale_window(bits) if (bits == 8 or rgb is not None) else auto_window(pixels)
        found = [window]
    else:
        mask = px.padding_mask(arr, ds)
        pixels = px.modality_values(arr, ds, frame)
        bad = px.finite_mask(pixels)
        if bad is not None:
            pixels = np.where(bad, np.float32(0), pixels)
            mask = bad if mask is None else (mask | bad)
        found = px.windows(ds, frame)
        voi = px.voi_lut(ds)
        window = found[0] if found else auto_window(pixels, mask)
        if not found:
            found = [window]
    meta.update(colour_source=colour, grey_as_rgb=grey_as_rgb)
    return StudyImage(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32),
        window=window,
        photometric=hdr.photometric,
        frame_count=hdr.frames,
        frame_index=frame,
        windows=found,
        voi_lut=voi,
        invert_for_display=hdr.photometric == "MONOCHROME1",
        padding_mask=mask,
        rgb=rgb,
        source_format="dicom",
        bits_stored=int(bits_stored),
        metadata=meta,
        path=str(path),
        source_shape=(hdr.rows, hdr.columns) if reduced else None,
    )


def read_dicom_tags(path: str | Path) -> list[TagRow]:
    """(tag, name, VR, short value) of every header element, file meta first; no pixel data."""
    with quiet():
        return tag_rows(read_dicom(path, header_only=True, max_bytes=2**31).ds)
