"""Find the images behind the paths the user opened, and make their thumbnails (no Qt).

Both jobs are generators yielding typed items, so the study list's worker can
show each file as soon as it is found and stop between files when the user
opens something else. A file that cannot be read is yielded too, with the image
pipeline's reason and message, so it can be listed (one bad file never stops
the others).

Folder walks list files whose first bytes say they are images, plus files whose
extension claims an image format (so a damaged ``.dcm`` or ``.png`` shows up
with its reason instead of silently vanishing). Files opened explicitly are
always listed. A DICOMDIR (the index of a DICOM disc or export folder) is read with
pydicom's FileSet and stands for the image files it lists; it is never listed as an
unreadable image itself (only when the index is damaged, with that reason).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from cxr_desktop.errors import ImageError, Reason
if TYPE_CHECKING:  # the imaging package loads in the scan worker, not at window start-up
    from cxr_desktop.imaging.types import ImageInfo

IMAGE_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ".ima", ".png", ".jpg", ".jpeg", ".jpe", ".tif", ".tiff"})
THUMB_SIDE = 96


@dataclass
class StudyEntry:
    """One file in the study list: its header facts, or why it cannot be read."""

    path: str
    info: ImageInfo | None = None
    reason: str | None = None  # a Reason value when the file cannot be read
    message: str | None = None  # the pipeline's sentence for the user (no patient data)
    root: str | None = None  # the folder the user opened (for grouping), or None

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def frames(self) -> int:
        return int(self.info.frames) if self.info is not None else 1

    @property
    def metadata(self) -> dict[str, Any]:
        return self.info.metadata if self.info is not None else {}

    def mark_failed(self, error: ImageError) -> None:
        self.reason = error.reason.value
        self.message = error.user_message()


@dataclass
class Thumbnail:
    """A small display rendering of a file's first frame, or the error that prevented it."""

    path: str
    pixels: np.ndarray | None  # uint8, grey (h, w) or RGB (h, w, 3)
    error: ImageError | None = None


@dataclass
class GroupPath:
    """Where an entry sits in the study tree: a list of (key, label) from the top."""

    levels: list[tuple[str, str]] = field(default_factory=list)


def _walk_folder(folder: Path) -> list[Path]:
    from cxr_desktop.imaging import is_image_file

    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            if p.suffix.lower() in IMAGE_SUFFIXES or is_image_file(p):
                found.append(p)
    return found


MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # the SOP class of a DICOMDIR (PS3.10 media index)


def is_dicomdir(path: Path) -> bool:
    """True for a DICOM media index (DICOMDIR): it names image files, it holds no image itself."""
    if path.suffix.lower() in IMAGE_SUFFIXES - {".dcm", ".dicom", ".dic"} or not path.is_file():
        return False
    if path.name.upper() != "DICOMDIR" and path.suffix:
        return False  # only the standard name or an extension-less file is worth opening to check
    try:
        from pydicom.filereader import read_file_meta_info

        meta = read_file_meta_info(path)
    except Exception:  # not DICOM, damaged, unreadable: the normal pipeline says why
        return False
    return str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY


def dicomdir_files(path: Path) -> list[Path]:
    """The files a DICOMDIR lists (patient / study / series order), read with pydicom's FileSet.

    Raises :class:`ImageError` when the index itself cannot be read. Files it names that are
    missing are still returned: the study list shows each with its own reason.
    """
    try:
        import pydicom
        from pydicom.fileset import FileSet

        fs = FileSet(pydicom.dcmread(path))
        return [Path(inst.path) for inst in fs]
    except Exception as exc:
        raise ImageError(Reason.UNREADABLE, "This DICOMDIR (the index of a DICOM disc or folder) could not be "
                         f"read ({type(exc).__name__}). Open the folder that holds it instead.", path) from None


def _expand_file(p: Path, root: Path | None) -> Iterator[tuple[Path, Path | None]]:
    """A file as itself, or a DICOMDIR as the image files it lists (the index is not an image)."""
    if is_dicomdir(p):
        try:
            files = dicomdir_files(p)
        except ImageError:
            yield p, root  # listed with the reason
            return
        for f in files:
            yield f, root or p.parent
        return
    yield p, root


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> Iterator[tuple[Path, Path | None]]:
    """(file, root folder or None) for every file named or found under a named folder.

    A DICOMDIR stands for the files it lists (each listed once, also when the folder walk finds it).
    """
    seen: set[str] = set()
    for raw in paths:
        p = Path(raw).expanduser()
        found = ((f, p) for f in _walk_folder(p)) if p.is_dir() else iter([(p, None)])
        for f0, root0 in found:
            for f, root in _expand_file(f0, root0):
                key = str(f.resolve()) if f.exists() else str(f)
                if key not in seen:
                    seen.add(key)
                    yield f, root


def recent_entry(paths: Iterable[str | os.PathLike[str]]) -> str | None:
    """The one "Open recent" entry for one opening (launch, Open files, drop): None if nothing exists.

    One path: itself. Several: the folder they share, as Horos and Weasis remember the
    imported study/folder rather than its files (reopening brings the whole set back in
    one menu line); when they share no folder but the file system root or the home folder,
    the first one. Paths that do not exist are never remembered.
    """
    found = [Path(p).expanduser().resolve() for p in paths if str(p) and Path(p).expanduser().exists()]
    if not found:
        return None
    if len(found) == 1:
        return str(found[0])
    folders = [f if f.is_dir() else f.parent for f in found]
    common = Path(os.path.commonpath([str(f) for f in folders]))
    if common == Path(common.anchor) or common == Path.home().resolve():
        return str(found[0])
    return str(common)


def scan_paths(paths: Iterable[str | os.PathLike[str]]) -> Iterator[StudyEntry]:
    """Yield a :class:`StudyEntry` per file (header only: fast), in a stable order."""
    from cxr_desktop.imaging import probe

    for f, root in expand_paths(paths):
        entry = StudyEntry(path=str(f), root=str(root) if root is not None else None)
        try:
            if is_dicomdir(f):  # its index could not be read (expand_paths kept it): say so, in words
                dicomdir_files(f)
            entry.info = probe(f)
        except ImageError as exc:
            entry.mark_failed(exc)
        except Exception as exc:  # the pipeline promises ImageError only; never let one file stop a scan
            entry.mark_failed(ImageError(Reason.UNREADABLE, f"The file could not be read ({type(exc).__name__}).", f))
        yield entry


def make_thumbnail(path: str, side: int = THUMB_SIDE) -> Thumbnail:
    """Decode the first frame and shrink it to ``side`` pixels on the long edge."""
    import cv2

    from cxr_desktop.imaging import load_image, to_uint8

    try:
        image = load_image(path)
    except ImageError as exc:
        return Thumbnail(path, None, exc)
    arr = image.rgb if image.rgb is not None else to_uint8(image)
    h, w = arr.shape[:2]
    scale = side / float(max(h, w))
    if scale < 1.0:
        arr = cv2.resize(arr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return Thumbnail(path, np.ascontiguousarray(arr[..., :3] if arr.ndim == 3 else arr))


def thumbnails(paths: Iterable[str]) -> Iterator[Thumbnail]:
    """Yield a thumbnail (or the decoding error) per path."""
    for p in paths:
        try:
            yield make_thumbnail(p)
        except Exception as exc:  # unexpected: report as unreadable, keep going
            yield Thumbnail(p, None, ImageError(Reason.UNREADABLE,
                                                f"The file could not be decoded ({type(exc).__name__}).", p))


def _short_uid(uid: str | None) -> str:
    if not uid:
        return "unknown"
    return uid if len(uid) <= 16 else "..." + uid[-12:]


def group_path(entry: StudyEntry) -> GroupPath:
    """Tree position: DICOM by patient / study / series, other files by folder.

    The patient label carries the Patient ID: shown on screen only (the study
    list never logs or exports it).
    """
    md = entry.metadata
    if entry.info is not None and entry.info.format == "dicom":
        pid = md.get("patient_id") or "(no patient ID)"
        study = md.get("study_uid")
        series = md.get("series_uid")
        desc = md.get("series_description") or ""
        number = md.get("series_number")
        modality = md.get("modality") or ""
        series_label = " ".join(x for x in (f"Series {number}" if number is not None else "Series",
                                            desc, f"({modality})" if modality else "") if x)
        return GroupPath([
            (f"patient:{pid}", f"Patient {pid}"),
            (f"study:{pid}:{study}", f"Study {_short_uid(study)}"),
            (f"series:{pid}:{study}:{series}", series_label),
        ])
    folder = Path(entry.path).parent
    return GroupPath([(f"folder:{folder}", f"{folder.name or str(folder)}/")])
