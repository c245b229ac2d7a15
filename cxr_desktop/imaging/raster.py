"""PNG / JPEG / TIFF files -> :class:`StudyImage` (and header-only :class:`ImageInfo`).

Pillow reads the header first (size, mode) so a decompression bomb is refused
before any pixel is decoded. Pillow (LOAD_TRUNCATED_IMAGES off) reports a file
that ends mid-stream, but not a JPEG closed early with an end marker or a PNG whose
zlib stream is short yet well terminated (it fills grey / zeros): those are
refused first by :mod:`.integrity`. Pixel stages work in row bands, so a load's
memory stays a small multiple of the decoded pixels (bench/bench_load_memory.py).
"""

from __future__ import annotations

import os
import struct
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from cxr_desktop.errors import ImageError, Reason
from cxr_desktop.imaging.display import full_range_window, row_bands
from cxr_desktop.imaging.integrity import check_jpeg, check_png, incomplete_error
from cxr_desktop.imaging.reduced import draft_jpeg
from cxr_desktop.imaging.types import ImageInfo, StudyImage, Window

#: Standard (ITU-R BT.601) luma weights for colour -> grey.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: A colour image whose channels never differ by more than this (8-bit units) is grey.
GREY_TOLERANCE = 2

FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF"}
_PIL_FORMATS = {"png": ["PNG"], "jpeg": ["JPEG", "MPO"], "tiff": ["TIFF"]}
_EXIF_ORIENTATION = 0x0112


# --------------------------------------------------------------------------- shared helpers


def full_scale_window(bits: int) -> Window:
    """The window covering 0 .. 2**bits - 1 exactly, so that to_unit == value / (2**bits - 1)."""
    top = float(2 ** int(bits) - 1)
    return Window(center=top / 2.0, width=top, function="LINEAR_EXACT", source="full")


def auto_window(pixels: np.ndarray, mask: np.ndarray | None = None) -> Window:
    """min..max of the non-padding pixels, marked as an automatic window."""
    w = full_range_window(pixels, mask)
    return Window(center=w.center, width=w.width, function=w.function, source="auto",
                  explanation="data range")


def split_colour(rgb: np.ndarray, max_value: float) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Colour (rows, cols, 3) -> (grey luma float32, uint8 RGB or None, grey_as_rgb).

    Grey stored as colour (channels equal within :data:`GREY_TOLERANCE` in 8-bit
    units) becomes plain grey with no RGB copy, so it is treated exactly like a
    grey file; real colour keeps an 8-bit RGB copy for display.
    """
    arr = np.asarray(rgb)[..., :3]
    scale = 255.0 / float(max_value) if max_value > 0 else 1.0
    luma = np.empty(arr.shape[:2], dtype=np.float32)
    spread = 0.0
    # Row bands: temporaries stay a few MiB whatever the image size (no full-size float copies).
    for band in row_bands(arr.shape):
        part = arr[band]
        spread = max(spread, _channel_spread([part[..., i] for i in range(3)]))
        out = luma[band]
        np.multiply(part[..., 0], np.float32(LUMA_WEIGHTS[0]), out=out, dtype=np.float32)
        out += part[..., 1].astype(np.float32) * np.float32(LUMA_WEIGHTS[1])
        out += part[..., 2].astype(np.float32) * np.float32(LUMA_WEIGHTS[2])
    if spread * scale <= GREY_TOLERANCE:
        return luma, None, True
    if arr.dtype == np.uint8:
        return luma, np.ascontiguousarray(arr), False
    rgb8 = np.empty(arr.shape, dtype=np.uint8)
    for band in row_bands(arr.shape):
        work = arr[band].astype(np.float32) * np.float32(scale)
        rgb8[band] = np.clip(np.rint(work, out=work), 0, 255, out=work)
    return luma, rgb8, False


def _channel_spread(planes: list[np.ndarray]) -> float:
    """Largest difference between any two colour channels of any pixel (one band of rows)."""
    if planes[0].size == 0:
        return 0.0
    if planes[0].dtype in (np.uint8, np.uint16):
        planes = [np.ascontiguousarray(p) for p in planes]
        diff = lambda a, b: float(cv2.absdiff(a, b).max())  # noqa: E731 - fast path, 8/16-bit
    else:
        work = np.int64 if planes[0].dtype.kind in "iu" else np.float64  # on one band only
        diff = lambda a, b: float(np.abs(a.astype(work) - b).max())  # noqa: E731
    return max(diff(planes[0], planes[1]), diff(planes[1], planes[2]), diff(planes[0], planes[2]))


def declared_size_check(rows: int, columns: int, frames: int, samples: int, bytes_per_sample: float,
                        max_pixels: int, max_bytes: int, path: str | Path) -> None:
    """Refuse an image whose *declared* size is over the limits (decompression-bomb guard)."""
    pixels = int(rows) * int(columns)
    total = pixels * max(int(frames), 1) * max(int(samples), 1) * float(bytes_per_sample)
    if pixels > max_pixels:
        raise ImageError(
            Reason.TOO_LARGE,
            f"The image declares {rows} x {columns} = {pixels:,} pixels "
            f"({_megapixels(pixels, max_pixels)} megapixels), more than the limit of {max_pixels:,} "
            f"pixels ({_megapixels(max_pixels, pixels)} megapixels) per image, so it was not decoded "
            "(protects the computer's memory). Ask for a downsampled export of the image.",
            path,
        )
    if total > max_bytes:
        raise ImageError(
            Reason.TOO_LARGE,
            f"The file declares {_gib(total, max_bytes)} GiB ({int(total):,} bytes) of pixel data, more "
            f"than the limit of {_gib(max_bytes, total)} GiB ({int(max_bytes):,} bytes), so it was not "
            "decoded (protects the computer's memory). Ask for an export with fewer frames or a smaller "
            "image size.",
            path,
        )


def _decimals_apart(value: float, other: float, scale: float) -> str:
    """``value / scale`` with just enough decimals (up to 6) to differ from ``other / scale``."""
    for digits in range(0, 7):
        if round(value / scale, digits) != round(other / scale, digits):
            break
    return f"{value / scale:.{digits}f}"


def _megapixels(value: int, other: int) -> str:
    return _decimals_apart(value, other, 1e6)


def _gib(value: float, other: float) -> str:
    return _decimals_apart(max(value, 0.0), max(other, 0.0), float(2**30))


# --------------------------------------------------------------------------- Pillow access


def _open(path: str | Path, fmt: str) -> Image.Image:
    """Open with Pillow (header only) and map its failures to ImageError."""
    name = FORMAT_NAMES[fmt]
    try:
        im = Image.open(path, formats=_PIL_FORMATS[fmt])
    except Image.DecompressionBombError:
        raise ImageError(
            Reason.TOO_LARGE,
            f"The {name} file declares an image too large to decode safely (decompression-bomb "
            "guard). Ask for a downsampled export of the image.",
            path,
        ) from None
    except (UnidentifiedImageError, SyntaxError, ValueError, EOFError, OSError, IndexError,
            TypeError, KeyError, struct.error) as exc:
        raise _decode_error(path, fmt, exc) from None
    return im


def _looks_cut_off(path: str | Path, fmt: str) -> bool:
    """True when the file lacks its format's end marker (PNG IEND, JPEG EOI)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(size - 64, 0))
            tail = f.read()
    except OSError:
        return False
    if fmt == "png":
        return b"IEND" not in tail
    if fmt == "jpeg":
        return b"\xff\xd9" not in tail.rstrip(b"\x00")[-4:]
    return False


def _decode_error(path: str | Path, fmt: str, exc: BaseException) -> ImageError:
    """Map a Pillow failure to TRUNCATED or UNREADABLE (never embeds the exception text)."""
    name = FORMAT_NAMES[fmt]
    text = str(exc).lower()
    if isinstance(exc, EOFError) or "truncated" in text:  # the decoder ran out of data
        evidence = "the decoder ran out of image data before the image was complete"
    elif _looks_cut_off(path, fmt):
        marker = "IEND chunk" if fmt == "png" else "end-of-image marker"
        evidence = f"it stops without the {marker} every {name} file ends with"
    else:
        evidence = None
    if evidence:
        return ImageError(
            Reason.TRUNCATED,
            f"The {name} file ends early ({evidence}): the image data is incomplete and cannot be "
            "shown. The copy or export was probably interrupted; copy or export the file again.",
            path,
        )
    return ImageError(
        Reason.UNREADABLE,
        f"The {name} file is damaged and cannot be decoded ({type(exc).__name__}). "
        "Export the image again from the source system.",
        path,
    )


def _oriented_size(im: Image.Image) -> tuple[int, int]:
    """(rows, columns) after applying the EXIF orientation (phone photos of films)."""
    w, h = im.size
    if im.format not in ("JPEG", "MPO", "TIFF"):  # PNG's getexif() decodes the whole image
        return h, w
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block must not stop the image
        orientation = 1
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _frames(im: Image.Image) -> int:
    try:
        return max(int(getattr(im, "n_frames", 1)), 1)
    except Exception:
        return 1


def _png_bit_depth(path: str | Path) -> int:
    """Bit depth from the PNG IHDR (Pillow reduces 16-bit colour to 8 bits)."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
        return int(head[24]) if len(head) >= 25 and head[12:16] == b"IHDR" else 8
    except OSError:
        return 8


# --------------------------------------------------------------------------- public


def probe_raster(path: str | Path, fmt: str) -> ImageInfo:
    """Header-only information about a PNG/JPEG/TIFF file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _open(path, fmt) as im:
            rows, cols = _oriented_size(im)
            frames = _frames(im)
            meta = raster_metadata(im, fmt, rows, cols, frames)
    return ImageInfo(path=str(path), format=fmt, rows=rows, columns=cols, frames=frames, metadata=meta)


def raster_metadata(im: Image.Image, fmt: str, rows: int, cols: int, frames: int) -> dict[str, Any]:
    """Technical metadata of a raster image (same keys as DICOM metadata where they apply)."""
    return {
        "source_format": fmt,
        "format": im.format,
        "mode": im.mode,
        "rows": rows,
        "columns": cols,
        "number_of_frames": frames,
        "samples_per_pixel": len(im.getbands()),
        "modality": None,
        "view_position": None,
        "body_part": None,
        "patient_age_years": None,
        "patient_sex": None,
        "patient_id": None,
        "study_uid": None,
        "series_uid": None,
        "series_description": None,
    }


@contextmanager
def strict_pillow() -> Iterator[None]:
    """Pillow with LOAD_TRUNCATED_IMAGES off (a cut file is an error, never half an image)."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def require_complete(path: str | Path, fmt: str, frame: int, *, inflate: bool = True) -> None:
    """Refuse a PNG / JPEG whose coded data ends early or that the decoder would patch up.

    Reads are bounded by the file's size (regular files only reach here). ``inflate=False``:
    PNG chunk lengths only (OpenCV's libpng refuses short image data itself).
    """
    problem = None
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if fmt == "png":
            problem = check_png(f, size, inflate=inflate)
        elif fmt == "jpeg" and frame == 0:
            problem = check_jpeg(f.read(size))
    if problem is not None:
        raise incomplete_error(problem, path, f"The {FORMAT_NAMES[fmt]} file")


def load_raster(path: str | Path, fmt: str, *, frame: int, max_pixels: int, max_bytes: int,
                min_side: int = 0) -> StudyImage:
    """Decode one frame of a PNG/JPEG/TIFF file into a :class:`StudyImage`.

    ``min_side`` > 0: a JPEG may be decoded with DCT scaling (see :mod:`.reduced`).
    Size limits are checked from the header, then the coded data's completeness
    (:mod:`.integrity`), then Pillow decodes.
    """
    with warnings.catch_warnings(), strict_pillow():
        warnings.simplefilter("ignore")  # EXIF/ICC noise, DecompressionBombWarning (own limit below)
        with _open(path, fmt) as im:
            rows, cols = _oriented_size(im)
            frames = _frames(im)
            bands = len(im.getbands())
            png16_colour = fmt == "png" and im.mode in ("RGB", "RGBA") and _png_bit_depth(path) == 16
            declared_size_check(rows, cols, frames if fmt == "tiff" else 1, bands,
                                2 if png16_colour else _bytes_per_sample(im.mode), max_pixels, max_bytes, path)
            if not 0 <= frame < frames:
                raise frame_error(frame, frames, path)
            meta = raster_metadata(im, fmt, rows, cols, frames)
            require_complete(path, fmt, frame, inflate=not png16_colour)
            reduced = False
            try:
                if png16_colour:  # OpenCV keeps 16 bits (Pillow would decode to 8, for nothing)
                    arr, bits = _png16_colour(path), 16
                else:
                    if frame:
                        im.seek(frame)
                    elif min_side > 0:
                        reduced = draft_jpeg(im, min_side)
                    im.load()
                    arr, bits = _pixels_from_pil(im, path, fmt)
                    im.close()  # frees Pillow's copy of the pixels before the float32 stage
            except ImageError:
                raise
            except MemoryError:
                raise ImageError(Reason.TOO_LARGE, "There is not enough memory to decode this image. "
                                 "Close other images or programs and try again.", path) from None
            except Exception as exc:
                raise _decode_error(path, fmt, exc) from None
    image = _to_study_image(arr, bits, fmt, frame, frames, meta, path)
    if reduced:
        image.source_shape = (rows, cols)
    return image


def _bytes_per_sample(mode: str) -> int:
    return 4 if mode in ("I", "F") else 2 if mode.startswith("I;16") else 1


def frame_error(frame: int, frames: int, path: str | Path) -> ImageError:
    return ImageError(
        Reason.FRAME_OUT_OF_RANGE,
        f"Frame {frame} was requested but this image has {frames} frame(s), numbered 0 to "
        f"{frames - 1}. Choose a frame in that range.",
        path,
    )


def _pixels_from_pil(im: Image.Image, path: str | Path, fmt: str) -> tuple[np.ndarray, int]:
    """Decoded pixels as (array, bits per sample); colour arrays are (rows, cols, 3) RGB."""
    if im.format in ("JPEG", "MPO", "TIFF"):
        im = ImageOps.exif_transpose(im) or im
    mode = im.mode
    if mode == "1":
        im, mode = im.convert("L"), "L"
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im, mode = im.convert("RGB"), "RGB"
    if mode == "LA":
        a = np.asarray(im)
        return _over_black(a[..., :1], a[..., 1], 255.0)[..., 0], 8
    if mode == "L":
        return np.asarray(im), 8
    if mode == "RGB":
        return np.asarray(im), 8
    if mode == "RGBA":
        a = np.asarray(im)
        return _over_black(a[..., :3], a[..., 3], 255.0), 8
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16), 16
    if mode in ("I", "F"):
        return np.asarray(im), 32
    raise ImageError(
        Reason.UNSUPPORTED_PIXEL_FORMAT,
        f"The {FORMAT_NAMES[fmt]} image uses a pixel layout this app does not read. "
        "Save it as 8- or 16-bit greyscale (or RGB) PNG and open it again.",
        path,
    )


def _over_black(colour: np.ndarray, alpha: np.ndarray, top: float, *, in_place: bool = False) -> np.ndarray:
    """Composite onto black where alpha < max (padding is black everywhere in the app).

    ``in_place``: write into ``colour`` (a buffer the caller owns) instead of a new array.
    """
    if alpha.size == 0 or alpha.min() >= top:
        return colour
    out = colour if in_place else np.empty(colour.shape, dtype=colour.dtype)
    for band in row_bands(colour.shape):  # float32 temporaries of one band only
        a = alpha[band].astype(np.float32)[..., None] / np.float32(top)
        work = colour[band].astype(np.float32) * a
        out[band] = np.rint(work, out=work)
    return out


def _png16_colour(path: str | Path) -> np.ndarray:
    """16-bit colour PNG at full precision (Pillow would reduce it to 8 bits)."""
    data = np.fromfile(str(path), dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 3 or arr.dtype != np.uint16:
        require_complete(path, "png", 0)  # say "ends early" where that is why
        raise ValueError("16-bit colour PNG could not be decoded")
    colour = arr[..., :3]
    if arr.shape[2] == 4:
        colour = _over_black(colour, arr[..., 3], 65535.0, in_place=True)
    return colour[..., ::-1]  # BGR -> RGB, a view: no second full-size copy


def _to_study_image(arr: np.ndarray, bits: int, fmt: str, frame: int, frames: int,
                    meta: dict[str, Any], path: str | Path) -> StudyImage:
    """Pixels + window rules for raster files (8-bit: full 0..255 scale; wider: data range)."""
    colour = arr.ndim == 3
    rgb = None
    grey_as_rgb = False
    if colour:
        pixels, rgb, grey_as_rgb = split_colour(arr, 2.0 ** bits - 1)
    else:
        pixels = arr.astype(np.float32)
    mask = None
    if arr.dtype.kind == "f" and not all(np.isfinite(pixels[b]).all() for b in row_bands(pixels.shape)):
        mask = ~np.isfinite(pixels)  # float TIFFs may hold NaN/inf: show them black
        pixels[mask] = 0.0
    if bits == 8 or rgb is not None:
        window = full_scale_window(bits)
    else:
        window = auto_window(pixels, mask)
    photometric = "RGB" if colour else "MONOCHROME2"
    meta.update({
        "photometric": photometric,
        "bits_allocated": bits,
        "bits_stored": bits,
        "colour_source": colour,
        "grey_as_rgb": grey_as_rgb,
        "samples_per_pixel": 3 if colour else 1,
        "transfer_syntax": None,
        "transfer_syntax_uid": None,
    })
    return StudyImage(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32),
        window=window,
        photometric=photometric,
        frame_count=frames,
        frame_index=frame,
        windows=[window],
        invert_for_display=False,
        padding_mask=mask,
        rgb=rgb,
        source_format=fmt,
        bits_stored=bits,
        metadata=meta,
        path=str(path),
    )
