"""Finding the studies in a folder, recursively and in a stable order.

Rule: a file with an image extension (PNG, JPEG, TIFF, DICOM, and other image
formats the app cannot read, such as BMP or JPEG 2000 files) is always an input,
so a damaged ``.png`` or a ``.bmp`` gets an ``error`` row saying what to do
instead of vanishing; any other file is an input when its first bytes say it is an image (DICOM files
often have no extension). Hidden files and folders (name starts with '.') and
the run's own outputs are skipped. Folder symlinks are not followed (no loops);
file symlinks are. Only regular files are sniffed: a named pipe, device or socket
(or a broken link) with an image extension is listed, without being opened, so that
its row can say what it is; without an image extension it is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

IMAGE_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff", ".dcm", ".dicom", ".dic",
    ".bmp", ".gif", ".webp", ".jp2", ".j2k", ".jpx", ".jxl", ".heic", ".heif",
})


def _default_sniffer() -> Callable[[str], bool]:
    from cxr_desktop.imaging import is_image_file

    return is_image_file


def _lazy_sniffer() -> Callable[[str], bool]:
    """The imaging package's sniffer, imported on first use (pydicom costs ~0.5 s at start-up, and a
    folder of ``.png`` / ``.dcm`` files never needs it: the walk then finds the first rows sooner)."""
    loaded: list[Callable[[str], bool]] = []

    def sniff(path: str) -> bool:
        if not loaded:
            loaded.append(_default_sniffer())
        return loaded[0](path)

    return sniff


def iter_image_files(root: str | os.PathLike[str], *, exclude: Iterable[str | os.PathLike[str]] = (),
                     sniff: Callable[[str], bool] | None = None) -> Iterator[str]:
    """Relative POSIX paths of the inputs under ``root``, sorted per folder (depth first).

    ``exclude`` lists files or folders (e.g. the output CSV, its journal, the
    heatmap folder) that are never inputs even when they lie under ``root``.
    """
    root = Path(root)
    sniff = sniff or _lazy_sniffer()
    excluded = {os.path.normcase(os.path.abspath(p)) for p in exclude}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=None):
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".")
            and os.path.normcase(os.path.abspath(os.path.join(dirpath, d))) not in excluded
        )
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            if os.path.normcase(os.path.abspath(full)) in excluded:
                continue
            if not _is_candidate(full, name, sniff):
                continue
            yield Path(os.path.relpath(full, root)).as_posix()


def _is_candidate(full: str, name: str, sniff: Callable[[str], bool]) -> bool:
    try:
        if not os.path.isfile(full):  # named pipes, devices, sockets, broken symlinks: never opened here
            return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS  # listed: an error row says why
    except OSError:
        return False
    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        return True
    try:
        return bool(sniff(full))
    except OSError:
        return False


def list_image_files(root: str | os.PathLike[str], *, exclude: Iterable[str | os.PathLike[str]] = (),
                     sniff: Callable[[str], bool] | None = None) -> list[str]:
    """:func:`iter_image_files` as a list (a list of paths is small even for 100,000 files)."""
    return list(iter_image_files(root, exclude=exclude, sniff=sniff))
