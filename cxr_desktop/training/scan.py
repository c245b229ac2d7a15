"""Folder scan: one subfolder per class, files nested at any depth, PNG/JPEG/TIFF/DICOM mixed.

The scan finds the classes, every readable image, files that cannot be used
(with the reason from :class:`~cxr_desktop.errors.ImageError`), exact duplicates
by content hash (dropped; duplicates across classes are label conflicts and all
copies are left out) and the patient group of each image:

1. DICOM PatientID (read with :func:`~cxr_desktop.imaging.probe`),
2. else the first group (or the whole match) of a user-set file-name pattern,
3. else the file is its own group.

Patient IDs are used only to group; they are stored, shown and logged as short
salted hashes, never in clear. Source folders are only read.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator, Sequence

from cxr_desktop.errors import ImageError, Reason
from cxr_desktop.imaging import load_image, probe

IGNORED_SUFFIXES = {
    ".txt", ".csv", ".json", ".md", ".xml", ".html", ".htm", ".pdf", ".ini", ".log", ".xlsx", ".xls",
    ".doc", ".docx", ".yaml", ".yml", ".py", ".sh", ".zip", ".db",
}
IMBALANCE_RATIO = 3.0  # warn when the largest class has this many times the smallest
NON_RADIOGRAPH_MODALITIES = {"CT", "MR", "US", "NM", "PT", "OT", "SEG", "XA", "RF", "MG"}
_GROUP_SALT = "cxr-review-patient-group:"


class ScanError(ValueError):
    """The folder cannot be used for training at all (the message says why and what to do)."""


class ScanCancelled(Exception):
    """The scan was stopped by the user between two files."""


@dataclass
class ScanItem:
    """One usable image: where it is, its class and its (hashed) patient group."""

    path: str
    rel: str  # path relative to the scanned folder, shown to the user
    label: int
    cls: str
    sha256: str
    group: str  # hashed group id ("g-" + 12 hex); never the patient id itself
    group_source: str  # "dicom" | "pattern" | "file"
    format: str
    rows: int
    columns: int
    frames: int = 1


@dataclass
class ScanProblem:
    """A file that was skipped, with a stable reason code and a sentence for the user."""

    rel: str
    reason: str
    message: str


@dataclass
class DuplicateSet:
    """Files with identical content. ``conflicting``: they sit in different classes."""

    sha256: str
    rels: list[str]
    classes: list[str]
    conflicting: bool
    kept: str | None  # the copy used for training (None when conflicting: all left out)


@dataclass
class ScanProgress:
    """Progress of a folder scan (one step per file)."""

    done: int
    total: int
    rel: str
    folder: str


@dataclass
class ScanResult:
    """Everything the scan found; ``items`` are the images training may use."""

    root: str
    classes: list[str]
    items: list[ScanItem]
    problems: list[ScanProblem] = field(default_factory=list)
    duplicates: list[DuplicateSet] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # non-image files (csv, txt ...) and files outside class folders
    warnings: list[str] = field(default_factory=list)
    patient_regex: str | None = None

    def counts(self) -> dict[str, int]:
        c = Counter(it.cls for it in self.items)
        return {cls: int(c.get(cls, 0)) for cls in self.classes}

    @property
    def n_groups(self) -> int:
        return len({it.group for it in self.items})

    def group_sources(self) -> dict[str, int]:
        """How many images were grouped by DICOM PatientID, by the file-name pattern, or per file."""
        c = Counter(it.group_source for it in self.items)
        return {k: int(c.get(k, 0)) for k in ("dicom", "pattern", "file")}

    def summary(self) -> dict[str, object]:
        """A JSON-able summary without paths of individual files (for cards and logs)."""
        return {
            "classes": list(self.classes),
            "images": self.counts(),
            "patient_groups": self.n_groups,
            "grouped_by": self.group_sources(),
            "skipped_unreadable": len(self.problems),
            "duplicate_sets": len(self.duplicates),
            "conflicting_duplicate_sets": sum(d.conflicting for d in self.duplicates),
            "ignored_files": len(self.ignored),
        }

    def summary_lines(self) -> list[str]:
        """Human-readable lines (counts only, no patient data)."""
        lines = [f"{len(self.items)} usable images in {len(self.classes)} classes, "
                 f"{self.n_groups} patient groups"]
        lines += [f"  {cls}: {n}" for cls, n in self.counts().items()]
        src = self.group_sources()
        lines.append(f"  grouped by DICOM PatientID: {src['dicom']}, by file-name pattern: {src['pattern']}, "
                     f"one group per file: {src['file']}")
        if self.problems:
            lines.append(f"{len(self.problems)} files skipped (cannot be read):")
            lines += [f"  {p.rel}: {p.message} [{p.reason}]" for p in self.problems]
        for d in self.duplicates:
            what = ("same image in different classes (label conflict) - all copies left out"
                    if d.conflicting else f"identical files - using {d.kept}")
            lines.append(f"duplicate: {', '.join(d.rels)}: {what}")
        lines += [f"warning: {w}" for w in self.warnings]
        return lines


def hash_group(kind: str, raw: str) -> str:
    """Short salted hash of a grouping key, safe to show and log."""
    digest = hashlib.sha256((_GROUP_SALT + kind + ":" + raw).encode("utf-8", "surrogatepass")).hexdigest()
    return "g-" + digest[:12]


def list_class_folders(root: str | os.PathLike[str]) -> list[str]:
    """Names of the (non-hidden) subfolders of ``root``, sorted: the candidate classes."""
    p = Path(root)
    return sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))


def _walk_files(folder: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return out


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class _Inspected:
    path: Path
    cls: str
    sha256: str | None = None
    format: str = ""
    rows: int = 0
    columns: int = 0
    frames: int = 1
    patient_id: str | None = None
    modality: str | None = None
    problem: ScanProblem | None = None


def _inspect(path: Path, cls: str, rel: str, decode: bool) -> _Inspected:
    """Hash, probe and (optionally) decode one file; never raises."""
    out = _Inspected(path=path, cls=cls)
    try:
        out.sha256 = _file_sha256(path)
        info = probe(path)
        out.format, out.rows, out.columns, out.frames = info.format, info.rows, info.columns, info.frames
        pid = info.metadata.get("patient_id")
        out.patient_id = str(pid).strip() if pid not in (None, "") else None
        out.modality = info.metadata.get("modality")
        if decode:
            load_image(path)
    except ImageError as exc:
        out.problem = ScanProblem(rel, exc.reason.value, exc.message)
    except OSError as exc:
        out.problem = ScanProblem(rel, Reason.UNREADABLE.value,
                                  f"The file cannot be read ({exc.strerror or type(exc).__name__}).")
    return out


def iter_scan(root: str | os.PathLike[str], *, classes: Sequence[str] | None = None,
              patient_regex: str | None = None, decode: bool = True, workers: int = 2,
              cancelled: Callable[[], bool] | None = None) -> Generator[ScanProgress, None, ScanResult]:
    """Scan ``root`` (one subfolder per class); yields :class:`ScanProgress`, returns :class:`ScanResult`.

    ``classes`` fixes the class list (a separate test folder must use the training
    classes). ``decode=True`` decodes every image once so truncated files are found
    now, not during training. Raises :class:`ScanError` when the folder is unusable.
    """
    base = Path(root)
    if not base.is_dir():
        raise ScanError(f"The folder {base.name or str(base)!r} does not exist or is not a folder. Choose the "
                        "folder that holds one subfolder per class (for example normal/ and abnormal/).")
    pattern = None
    if patient_regex:
        try:
            pattern = re.compile(patient_regex)
        except re.error as exc:
            raise ScanError(f"The patient file-name pattern is not a valid regular expression ({exc}).") from None
    found = list_class_folders(base)
    warnings: list[str] = []
    ignored: list[str] = []
    if classes is None:
        class_names = found
    else:
        class_names = list(classes)
        lower = {c.lower(): c for c in found}
        missing = [c for c in class_names if c not in found and c.lower() not in lower]
        extra = [c for c in found if c not in class_names and c.lower() not in {k.lower() for k in class_names}]
        if missing:
            warnings.append(f"no folder for class(es) {', '.join(missing)} in {base.name}")
        if extra:
            warnings.append(f"folder(s) {', '.join(extra)} are not training classes and were ignored")
            ignored += [f"{e}/" for e in extra]
    folder_of = {}
    for c in class_names:
        if (base / c).is_dir():
            folder_of[c] = base / c
        else:
            match = [f for f in found if f.lower() == c.lower()]
            if match:
                folder_of[c] = base / match[0]
    ignored += sorted(f.name for f in base.iterdir() if f.is_file() and not f.name.startswith("."))
    todo: list[tuple[Path, str, str]] = []
    for c, folder in folder_of.items():
        for f in _walk_files(folder):
            rel = f.relative_to(base).as_posix()
            if f.suffix.lower() in IGNORED_SUFFIXES:
                ignored.append(rel)
            else:
                todo.append((f, c, rel))
    if classes is None and len(class_names) < 2:
        raise ScanError(f"{base.name or str(base)} needs at least two class subfolders (for example normal/ and "
                        f"abnormal/), each holding that class's images; found {len(class_names)}.")
    total = len(todo)
    inspected: list[_Inspected] = []
    with ThreadPoolExecutor(max_workers=max(1, int(workers)), thread_name_prefix="cxr-scan") as pool:
        futures = [pool.submit(_inspect, f, c, rel, decode) for f, c, rel in todo]
        try:
            for i, ((_, _, rel), fut) in enumerate(zip(todo, futures)):
                if cancelled is not None and cancelled():
                    raise ScanCancelled()
                inspected.append(fut.result())
                yield ScanProgress(i + 1, total, rel, base.name)
        finally:
            for fut in futures:
                fut.cancel()
    result = _assemble(base, class_names, todo, inspected, pattern, patient_regex, warnings, ignored)
    return result


def _assemble(base: Path, class_names: list[str], todo: list[tuple[Path, str, str]], inspected: list[_Inspected],
              pattern: re.Pattern[str] | None, patient_regex: str | None, warnings: list[str],
              ignored: list[str]) -> ScanResult:
    problems = [r.problem for r in inspected if r.problem is not None]
    ok = [(r, rel) for r, (_, _, rel) in zip(inspected, todo) if r.problem is None]
    by_hash: dict[str, list[tuple[_Inspected, str]]] = defaultdict(list)
    for r, rel in ok:
        by_hash[r.sha256 or ""].append((r, rel))
    duplicates: list[DuplicateSet] = []
    drop: set[str] = set()
    for sha, copies in by_hash.items():
        if len(copies) < 2:
            continue
        rels = [rel for _, rel in copies]
        cls_set = sorted({r.cls for r, _ in copies})
        conflicting = len(cls_set) > 1
        kept = None if conflicting else rels[0]
        drop.update(rels if conflicting else rels[1:])
        duplicates.append(DuplicateSet(sha, rels, cls_set, conflicting, kept))
    items: list[ScanItem] = []
    unmatched = 0
    modalities: Counter[str] = Counter()
    for r, rel in ok:
        if rel in drop:
            continue
        if r.patient_id:
            group, source = hash_group("dicom", r.patient_id), "dicom"
        else:
            m = pattern.search(r.path.name) if pattern is not None else None
            if m is not None:
                key = m.group(1) if m.groups() and m.group(1) is not None else m.group(0)
                group, source = hash_group("pattern", key), "pattern"
            else:
                unmatched += pattern is not None
                group, source = hash_group("file", rel), "file"
        if r.modality and str(r.modality).upper() in NON_RADIOGRAPH_MODALITIES:
            modalities[str(r.modality).upper()] += 1
        items.append(ScanItem(path=str(r.path), rel=rel, label=class_names.index(r.cls), cls=r.cls,
                              sha256=r.sha256 or "", group=group, group_source=source, format=r.format,
                              rows=r.rows, columns=r.columns, frames=r.frames))
    counts = Counter(it.cls for it in items)
    for c in class_names:
        if counts.get(c, 0) == 0:
            warnings.append(f"class {c!r} has no usable images")
    present = [counts[c] for c in class_names if counts.get(c, 0) > 0]
    if len(present) >= 2 and max(present) >= IMBALANCE_RATIO * min(present):
        big = max(class_names, key=lambda c: counts.get(c, 0))
        small = min((c for c in class_names if counts.get(c, 0) > 0), key=lambda c: counts[c])
        warnings.append(f"class imbalance: {big!r} has {counts[big]} images, {small!r} only {counts[small]}; "
                        "class weighting (the default) compensates, but more images of the small class help most")
    if pattern is not None and unmatched:
        warnings.append(f"{unmatched} files did not match the patient pattern and are their own group")
    if items:
        groups = Counter(it.group for it in items)
        largest = max(groups.values())
        if len(items) >= 10 and largest > 0.2 * len(items):
            warnings.append(f"one patient group holds {largest} of {len(items)} images; if the DICOM PatientID "
                            "is blank or the same for everyone (anonymised data), set a file-name pattern")
    if modalities:
        what = ", ".join(f"{n} {m}" for m, n in sorted(modalities.items()))
        warnings.append(f"some DICOM files are not radiographs ({what}); check the class folders")
    multi = sum(1 for it in items if it.frames > 1)
    if multi:
        warnings.append(f"{multi} multi-frame files: only the first frame is used")
    return ScanResult(root=str(base), classes=class_names, items=items, problems=problems,
                      duplicates=duplicates, ignored=ignored, warnings=warnings, patient_regex=patient_regex)


def scan_folder(root: str | os.PathLike[str], **kwargs: object) -> ScanResult:
    """:func:`iter_scan` run to the end (for scripts and tests)."""
    gen = iter_scan(root, **kwargs)  # type: ignore[arg-type]
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value

