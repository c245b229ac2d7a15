"""Entry points: sniff the format from magic bytes, then load / probe the file.

The extension is never trusted (files from PACS exports often have none, or a wrong
one). Every failure leaves :func:`load_image` and :func:`probe` as :class:`ImageError`.
"""

from __future__ import annotations

import operator
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from cxr_desktop.errors import ImageError, Reason
from cxr_desktop.imaging import dicom_io, dicom_metadata
from cxr_desktop.imaging.dicom_io import load_dicom, probe_dicom, read_dicom_tags as _read_tags
from cxr_desktop.imaging.raster import declared_size_check, load_raster, probe_raster
from cxr_desktop.imaging.types import ImageInfo, StudyImage

#: Largest image (per frame) decoded by default: 12000 x 12000 pixels.
DEFAULT_MAX_PIXELS = 12000 * 12000
#: Largest declared pixel data (all frames, all samples) read by default.
DEFAULT_MAX_BYTES = 2 * 1024**3

#: Parsed DICOM files kept for ``reuse_parsed=True`` (the viewer): most files / bytes held.
PARSED_CACHE_FILES = 4
PARSED_CACHE_BYTES = 256 * 1024**2

SUPPORTED_FORMATS = ("png", "jpeg", "tiff", "dicom")
_HEAD_BYTES = 512
_EXPLICIT_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO",
                 b"LT", b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ",
                 b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV"}
_OTHER_FORMATS = {  # recognised, but not read: say what the file is and how to convert it
    "bmp": "a BMP image", "gif": "a GIF image", "webp": "a WebP image", "jp2": "a JPEG 2000 image",
    "jxl": "a JPEG XL image", "heif": "a HEIF/HEIC photo", "pdf": "a PDF document",
    "zip": "a ZIP archive", "nifti": "a NIfTI volume",
}

T = TypeVar("T")


def sniff_format(head: bytes) -> str | None:
    """Format from the first bytes of a file: 'png', 'jpeg', 'tiff', 'dicom', another known
    format name (see ``_OTHER_FORMATS``), or None."""
    if len(head) >= 132 and head[128:132] == b"DICM":  # before TIFF: DICOM/TIFF dual files
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if _looks_like_bare_dicom(head):
        return "dicom"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")):
        return "jp2"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
        return "jxl"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "heif"
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    return None


def _looks_like_bare_dicom(head: bytes) -> bool:
    """A DICOM stream without preamble: starts with a (0002,xxxx) or (0008,xxxx) element."""
    if len(head) < 8:
        return False
    for order in ("little", "big"):
        group = int.from_bytes(head[0:2], order)
        elem = int.from_bytes(head[2:4], order)
        if group not in (0x0002, 0x0008):
            continue
        if head[4:6] in _EXPLICIT_VRS:
            return True
        length = int.from_bytes(head[4:8], "little")
        if order == "little" and elem < 0x0200 and length < 256:  # implicit VR little endian
            return True
    return False


def _read_head(path: str | Path) -> bytes:
    """The first bytes of a *regular* file; opened non-blocking so a FIFO cannot stall us."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(path)  # not a regular file: never read from it
        return os.read(fd, _HEAD_BYTES)
    finally:
        os.close(fd)


_SPECIAL_FILES = (  # (test, what it is, why it is not opened)
    (stat.S_ISFIFO, "a named pipe (FIFO)", "reading from it could wait forever"),
    (stat.S_ISCHR, "a character device", "reading from it may never end"),
    (stat.S_ISBLK, "a block device (a whole disk or partition)", "it is not an image file"),
    (stat.S_ISSOCK, "a socket", "it is not a file"),
)


def _unreadable(exc: OSError, path: str | Path) -> ImageError:
    """The ImageError for an OS error met while opening or reading ``path``: what went wrong, what to do."""
    if isinstance(exc, FileNotFoundError):
        return ImageError(Reason.UNREADABLE, "The file does not exist (it may have been moved or "
                          "deleted). Check the location and open it again.", path)
    if isinstance(exc, PermissionError):
        return ImageError(Reason.UNREADABLE, "The file cannot be opened: permission denied. Ask your "
                          "administrator for read access or copy the file to your own folder.", path)
    return ImageError(Reason.UNREADABLE, f"The file cannot be read from disk ({type(exc).__name__}). "
                      "Check the drive or network share and try again.", path)


def require_regular_file(path: str | Path) -> None:
    """Refuse anything but a regular file (after following symbolic links), saying what it is.

    Only regular files have a size that bounds every read; a FIFO or ``/dev/zero`` would
    stall or exhaust memory.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise _unreadable(exc, path) from None
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise ImageError(Reason.NOT_AN_IMAGE, "This is a folder, not an image file. Choose an image "
                         "file, or open the folder as a study.", path)
    via = " (reached through a symbolic link)" if os.path.islink(path) else ""
    for test, what, why in _SPECIAL_FILES:
        if test(mode):
            break
    else:
        what, why = "a special file", "it is not a regular file"
    raise ImageError(Reason.NOT_AN_IMAGE, f"This is {what}{via}, not a regular image file, so it was not "
                     f"opened ({why}). Choose an image file saved on disk.", path)


def is_image_file(path: str | Path) -> bool:
    """Cheap magic-byte test for folder walks (PNG, JPEG, TIFF, DICOM); never raises."""
    try:
        if not os.path.isfile(path):
            return False
        return sniff_format(_read_head(path)) in SUPPORTED_FORMATS
    except Exception:
        return False


def _format_of(path: str | Path) -> str:
    """The supported format of ``path``, or ImageError saying why it is not readable."""
    p = Path(path)
    require_regular_file(p)
    try:
        head = _read_head(p)
    except IsADirectoryError:  # replaced by a special file since require_regular_file
        raise ImageError(Reason.NOT_AN_IMAGE, "This is not a regular image file, so it was not opened. "
                         "Choose an image file saved on disk.", path) from None
    except OSError as exc:
        raise _unreadable(exc, path) from None
    if not head:
        raise ImageError(Reason.NOT_AN_IMAGE, "The file is empty (0 bytes). Copy or export the image "
                         "again.", path)
    fmt = sniff_format(head)
    if fmt in SUPPORTED_FORMATS:
        return fmt  # type: ignore[return-value]
    if fmt in _OTHER_FORMATS:
        raise ImageError(Reason.UNSUPPORTED_PIXEL_FORMAT, f"This file is {_OTHER_FORMATS[fmt]}; CXR Review "
                         "reads PNG, JPEG, TIFF and DICOM. Convert it to PNG (or export DICOM) and open "
                         "it again.", path)
    raise ImageError(Reason.NOT_AN_IMAGE, "This file is not an image CXR Review can read (it is not PNG, "
                     "JPEG, TIFF or DICOM). Choose a chest X-ray image file.", path)


def _guarded(path: str | Path, action: Callable[[], T]) -> T:
    """Run ``action``; anything but ImageError becomes ImageError (class name only, no text)."""
    try:
        return action()
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(Reason.TOO_LARGE, "There is not enough memory to open this image. Close other "
                         "images or programs and try again.", path) from None
    except RecursionError:
        raise ImageError(Reason.UNREADABLE, "The file's structure is damaged (nested too deeply) and "
                         "cannot be read. Export the image again from the source system.", path) from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - also panics of compiled decoders (not Exception)
        raise ImageError(Reason.UNREADABLE, f"The file could not be read ({type(exc).__name__}); it may "
                         "be damaged. Export the image again from the source system.", path) from None


# --------------------------------------------------------------------------- parsed-file cache


def file_version(path: str | Path) -> tuple[str, int, int, int]:
    """(path, mtime in ns, size, inode): changes when the file is replaced or rewritten."""
    st = os.stat(path)
    return (str(path), st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass
class _Parsed:
    """One parsed DICOM file (pixel data included) and what was derived from it."""

    df: dicom_io.DicomFile
    nbytes: int
    lock: threading.Lock = field(default_factory=threading.Lock)  # pydicom datasets are not thread-safe
    derived: dict[str, Any] = field(default_factory=dict)  # e.g. the tag panel's rows


class _ParsedCache:
    """Bounded LRU of parsed DICOM files keyed by :func:`file_version`, so that showing the
    frames of one multi-frame file parses it once (not once per frame). Thread-safe."""

    def __init__(self, files: int = PARSED_CACHE_FILES, max_bytes: int = PARSED_CACHE_BYTES):
        self.files = files
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[Any, ...], _Parsed] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str | Path, max_bytes: int) -> _Parsed:
        """The parsed file (read now when not held); ImageError as :func:`load_image` raises it."""
        try:
            key = (*file_version(path), max_bytes)
        except OSError:
            _format_of(path)  # raises the precise reason (moved, no permission, ...)
            raise
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        if _format_of(path) != "dicom":
            raise ImageError(Reason.NOT_AN_IMAGE, "This file is not DICOM, so it has no DICOM tags.", path)
        with dicom_io.quiet():
            df = dicom_io.read_dicom(path, header_only=False, max_bytes=max_bytes)
        length = df.pixel_length if df.pixel_length not in (None, dicom_io.UNDEFINED_LENGTH) else 0
        entry = _Parsed(df, max(int(key[2]), int(length or 0)))
        if entry.nbytes <= self.max_bytes:
            with self._lock:
                self._items[key] = entry
                while len(self._items) > self.files or sum(e.nbytes for e in self._items.values()) > self.max_bytes:
                    self._items.popitem(last=False)
        return entry

    def fits(self, path: str | Path) -> bool:
        """Whether ``path`` is small enough to be kept (a larger file is read the usual way)."""
        try:
            return os.stat(path).st_size <= self.max_bytes
        except OSError:
            return True  # get() raises the precise reason

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


PARSED = _ParsedCache()


def dicom_dataset(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """The pydicom Dataset of a DICOM file for reading (from the parsed-file cache; a file too
    large for it is parsed up to its pixel data only)."""
    def run() -> Any:
        if PARSED.fits(path):
            return PARSED.get(path, max_bytes).df.ds
        if _format_of(path) != "dicom":
            raise ImageError(Reason.NOT_AN_IMAGE, "This file is not DICOM.", path)
        with dicom_io.quiet():
            return dicom_io.read_dicom(path, header_only=True, max_bytes=max_bytes).ds

    return _guarded(path, run)


def load_image(path: str | Path, *, frame: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_bytes: int = DEFAULT_MAX_BYTES, min_side: int = 0,
               reuse_parsed: bool = False) -> StudyImage:
    """Read one frame of a PNG / JPEG / TIFF / DICOM file as a :class:`StudyImage`.

    ``pixels`` are grey float32 in modality units; see :class:`StudyImage`. Sizes are
    checked from the header before decoding (``max_pixels`` per frame, ``max_bytes`` of
    declared pixel data). Raises :class:`ImageError` and nothing else.

    ``min_side`` > 0 allows a reduced-resolution decode where the codec offers one cheaply
    (JPEG, greyscale JPEG 2000 and JPEG Baseline DICOM), keeping both sides >= ``min_side``;
    ``source_shape`` then holds the stored size. For model input only (screening, training):
    see :mod:`cxr_desktop.imaging.reduced`.

    ``reuse_parsed``: a DICOM file is parsed once and kept in a small bounded cache
    (:data:`PARSED`, keyed by path, mtime and size), so the viewer decodes the next frame
    without reading the file again. Batch work (screening, training) leaves it off.
    """
    def run() -> StudyImage:
        fmt = _format_of(path)
        try:
            index = operator.index(frame)  # int or numpy integer; not 1.0, not True
        except TypeError:
            index = None
        if index is None or isinstance(frame, bool):
            raise ImageError(Reason.FRAME_OUT_OF_RANGE, "The frame number must be a whole number "
                             "(0 for the first frame).", path)
        if fmt == "dicom":
            if reuse_parsed and PARSED.fits(path):
                entry = PARSED.get(path, max_bytes)
                with entry.lock:
                    return load_dicom(path, frame=index, max_pixels=max_pixels, max_bytes=max_bytes,
                                      min_side=min_side, parsed=entry.df)
            return load_dicom(path, frame=index, max_pixels=max_pixels, max_bytes=max_bytes, min_side=min_side)
        return load_raster(path, fmt, frame=index, max_pixels=max_pixels, max_bytes=max_bytes,
                           min_side=min_side)

    return _guarded(path, run)


def probe(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS,
          max_bytes: int = DEFAULT_MAX_BYTES) -> ImageInfo:
    """Header-only facts (format, size, frames, grouping metadata); decodes no pixels.

    Raises :class:`ImageError` like :func:`load_image` for what a header can show
    (not an image, truncated header, no pixel data, missing decoder, too large).
    """
    def run() -> ImageInfo:
        fmt = _format_of(path)
        if fmt == "dicom":
            return probe_dicom(path, max_pixels=max_pixels, max_bytes=max_bytes)
        info = probe_raster(path, fmt)
        declared_size_check(info.rows, info.columns, info.frames if fmt == "tiff" else 1, 1, 1,
                            max_pixels, max_bytes, path)
        return info

    return _guarded(path, run)


def read_dicom_tags(path: str | Path, *, reuse_parsed: bool = False) -> list[tuple[str, str, str, str]]:
    """(tag "(gggg,eeee)", name, VR, short value) for the viewer's tag panel; no pixel data.

    ``reuse_parsed``: rows come from the parsed-file cache (computed once per file version).
    Raises :class:`ImageError` (NOT_AN_IMAGE for non-DICOM files).
    """
    def run() -> list[tuple[str, str, str, str]]:
        if reuse_parsed and PARSED.fits(path):
            entry = PARSED.get(path, DEFAULT_MAX_BYTES)
            with entry.lock:
                if "tags" not in entry.derived:
                    entry.derived["tags"] = tuple(dicom_metadata.tag_rows(entry.df.ds))
                return list(entry.derived["tags"])
        if _format_of(path) != "dicom":
            raise ImageError(Reason.NOT_AN_IMAGE, "This file is not DICOM, so it has no DICOM tags.", path)
        return _read_tags(path)

    return _guarded(path, run)


def read_frame_tags(path: str | Path, frame: int) -> list[tuple[str, str, str, str]]:
    """Rows of frame ``frame``'s Per-frame Functional Groups item (empty without one), from
    the parsed-file cache. Raises :class:`ImageError` like :func:`read_dicom_tags`."""
    def run() -> list[tuple[str, str, str, str]]:
        if not PARSED.fits(path):
            return dicom_metadata.frame_tag_rows(dicom_dataset(path), int(frame))
        entry = PARSED.get(path, DEFAULT_MAX_BYTES)
        with entry.lock:
            return dicom_metadata.frame_tag_rows(entry.df.ds, int(frame))

    return _guarded(path, run)
