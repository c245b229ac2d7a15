"""Folder scan: one subfolder per class, files nested at any depth, PNG/JPEG/TIFF/DICOM mixed.

The scan finds the classes, every readable image, files that cannot be used
(with the reason from :class:`~cxr_desktop.errors.ImageError`), exact duplicates
by content hash (dropped; duplicates across classes are label conflicts and all
copies are left out) and the patient of each image, one key per patient whatever
the file type:

1. DICOM PatientID (read with :func:`~cxr_desktop.imaging.probe`),
2. else the first group (or the whole match) of a user-set file-name pattern,
3. else the file is its own patient.

DICOM IDs and file-name keys share one key space (:func:`patient_key`), so the
PNG ``P0001_pa.png`` and a DICOM file whose PatientID is ``P0001`` are one
patient. When a DICOM file's name gives another patient than its PatientID
(a conflict), the PatientID names the file's patient, the conflict is counted
and reported, and both keys are joined into one group, so neither reading can
put one person in training and test. Where images sit in subfolders of the class
folders, the number of patients is compared with the number of subfolders (the
usual one-folder-per-patient layout) and a difference is reported.

Patient IDs are used only to group; they are stored, shown and logged as short
salted hashes or counts, never in clear. Source folders are only read.
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
from cxr_desktop.training.relay import drain

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
    photometric: str | None = None  # DICOM Photometric Interpretation (None for other files)
    aliases: tuple[str, ...] = ()  # hashed keys of every patient reading of this file (PatientID, file name)

    def patient_hashes(self) -> set[str]:
        """Its group and every hashed patient key it carries (to find a patient in two folders)."""
        return {self.group, *self.aliases}

    @property
    def input_kind(self) -> str:
        """What kind of input the file is, for metrics per input type: PNG, JPEG, TIFF, DICOM, DICOM MONOCHROME1."""
        return input_kind(self.format, self.photometric)


def input_kind(fmt: str, photometric: str | None = None) -> str:
    """"PNG" / "JPEG" / "TIFF" / "DICOM" / "DICOM MONOCHROME1" (inverted grey scale) from a probed format."""
    f = (fmt or "").lower()
    if f == "dicom":
        return "DICOM MONOCHROME1" if (photometric or "").strip().upper() == "MONOCHROME1" else "DICOM"
    return {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF"}.get(f, f.upper() or "unknown")


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
    patient_conflicts: int = 0  # DICOM files whose name pattern gives another patient than their PatientID
    folder_patients: int | None = None  # patients the subfolder layout suggests (None: images not in subfolders)

    def counts(self) -> dict[str, int]:
        c = Counter(it.cls for it in self.items)
        return {cls: int(c.get(cls, 0)) for cls in self.classes}

    @property
    def n_groups(self) -> int:
        return len({it.group for it in self.items})

    @property
    def n_patients(self) -> int:
        """Patients (one key per patient, whatever the file type); the same number as :attr:`n_groups`."""
        return self.n_groups

    def patients_by_class(self) -> dict[str, int]:
        """Patients with at least one image of each class (a patient may count in two classes)."""
        per: dict[str, set[str]] = defaultdict(set)
        for it in self.items:
            per[it.cls].add(it.group)
        return {cls: len(per.get(cls, ())) for cls in self.classes}

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
            "patients_by_class": self.patients_by_class(),
            "grouped_by": self.group_sources(),
            "patient_conflicts": self.patient_conflicts,
            "folder_patients": self.folder_patients,
            "skipped_unreadable": len(self.problems),
            "duplicate_sets": len(self.duplicates),
            "conflicting_duplicate_sets": sum(d.conflicting for d in self.duplicates),
            "ignored_files": len(self.ignored),
        }

    def summary_lines(self) -> list[str]:
        """Human-readable lines (counts only, no patient data: file names lose the pattern's patient part)."""
        def hide(rel: str) -> str:
            return redact_patient(rel, self.patient_regex)

        lines = [f"{len(self.items)} usable images of {self.n_patients} patients in {len(self.classes)} classes"]
        pats = self.patients_by_class()
        lines += [f"  {cls}: {n} images, {pats.get(cls, 0)} patients" for cls, n in self.counts().items()]
        src = self.group_sources()
        lines.append(f"  patient from DICOM PatientID: {src['dicom']} images, from the file-name pattern: "
                     f"{src['pattern']}, one patient per file: {src['file']}")
        if self.folder_patients is not None:
            lines.append(f"  the subfolders suggest {self.folder_patients} patients (one per subfolder)")
        if self.problems:
            lines.append(f"{len(self.problems)} files skipped (cannot be read):")
            lines += [f"  {hide(p.rel)}: {p.message} [{p.reason}]" for p in self.problems]
        for d in self.duplicates:
            what = ("same image in different classes (label conflict) - all copies left out"
                    if d.conflicting else f"identical files - using {hide(d.kept or '')}")
            lines.append(f"duplicate: {', '.join(hide(r) for r in d.rels)}: {what}")
        lines += [f"warning: {w}" for w in self.warnings]
        return lines


def hash_group(kind: str, raw: str) -> str:
    """Short salted hash of a grouping key, safe to show and log."""
    digest = hashlib.sha256((_GROUP_SALT + kind + ":" + raw).encode("utf-8", "surrogatepass")).hexdigest()
    return "g-" + digest[:12]


def patient_key(raw: str) -> str:
    """The one key space for patients: a DICOM PatientID and a file-name pattern's match give the same key.

    Surrounding blanks (DICOM pads values) are dropped and case is ignored, so
    ``"P0001 "`` from a DICOM header and ``p0001`` from a file name are one patient.
    """
    return " ".join(str(raw).split()).casefold()


def patient_group(raw: str) -> str:
    """Hashed group of a patient id, the same for DICOM PatientID and file-name keys."""
    return hash_group("patient", patient_key(raw))


def redact_patient(rel: str, patient_regex: str | None) -> str:
    """``rel`` with the file name's patient part (what the pattern matches) replaced by ``[patient]``.

    For captions in reports: a file named for its patient must not put the patient id there.
    """
    if not patient_regex:
        return rel
    try:
        m = re.search(patient_regex, rel.rsplit("/", 1)[-1])
    except re.error:
        return rel
    if m is None:
        return rel
    head, _, name = rel.rpartition("/")
    a, b = m.span(1) if m.groups() and m.group(1) is not None else m.span(0)
    name = name[:a] + "[patient]" + name[b:]
    return f"{head}/{name}" if head else name


def shared_patients(a: ScanResult, b: ScanResult) -> int:
    """How many patients of ``b`` also have images in ``a`` (e.g. the test folder's in the training folder)."""
    in_a = set().union(*(it.patient_hashes() for it in a.items)) if a.items else set()
    return sum(1 for hashes in _groups_hashes(b.items).values() if hashes & in_a)


def _groups_hashes(items: Sequence[ScanItem]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for it in items:
        out[it.group] |= it.patient_hashes()
    return out


def folder_patient_count(rels: Sequence[str]) -> int | None:
    """Patients a one-subfolder-per-patient layout would give for these ``class/sub/.../file`` paths.

    The first subfolder inside the class folder counts as the patient folder (the same
    name under two classes is one patient). None when fewer than 80 % of the images
    sit in a subfolder: then the layout suggests nothing.
    """
    subs = [r.split("/")[1] for r in rels if r.count("/") >= 2]
    if not rels or len(subs) < 0.8 * len(rels):
        return None
    return len(set(subs))


def _folder_check(items: Sequence[ScanItem]) -> tuple[int | None, list[str]]:
    """Compare patients with the subfolder layout; (patients the folders suggest, warnings)."""
    suggested = folder_patient_count([it.rel for it in items])
    if suggested is None:
        return None, []
    found = len({it.group for it in items})
    if found == suggested:
        return suggested, []
    per_folder: dict[str, set[str]] = defaultdict(set)
    for it in items:
        if it.rel.count("/") >= 2:
            per_folder[it.rel.split("/")[1]].add(it.group)
    mixed = sum(1 for g in per_folder.values() if len(g) > 1)
    if found > suggested:
        return suggested, [
            f"the subfolders suggest {suggested} patients (one per subfolder) but the scan found {found}: "
            f"{mixed} subfolders hold images of more than one patient. If each subfolder is one patient, its "
            "images could land in both training and test; check the DICOM Patient IDs or set a file-name pattern "
            "that names the patient"]
    return suggested, [
        f"the subfolders suggest {suggested} patients (one per subfolder) but the scan found {found}: some "
        "patients have images in several subfolders (fine when the subfolders are studies or dates; otherwise "
        "check the DICOM Patient IDs and the file-name pattern)"]


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
    photometric: str | None = None
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
        out.photometric = info.metadata.get("photometric")
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
    usable = [(r, rel) for r, rel in ok if rel not in drop]
    keys, sources, conflicts, unmatched = _patient_keys(usable, pattern)
    groups = _join_conflicts(keys, conflicts)
    alias_of: dict[str, set[str]] = defaultdict(set)
    for a, b in conflicts:
        alias_of[a].add(b)
    items: list[ScanItem] = []
    modalities: Counter[str] = Counter()
    for (r, rel), key, source in zip(usable, keys, sources):
        if r.modality and str(r.modality).upper() in NON_RADIOGRAPH_MODALITIES:
            modalities[str(r.modality).upper()] += 1
        items.append(ScanItem(path=str(r.path), rel=rel, label=class_names.index(r.cls), cls=r.cls,
                              sha256=r.sha256 or "", group=groups[key], group_source=source, format=r.format,
                              rows=r.rows, columns=r.columns, frames=r.frames, photometric=r.photometric,
                              aliases=tuple(sorted({_key_hash(k) for k in {key, *alias_of.get(key, ())}}))))
    if conflicts:
        warnings.append(f"{len(conflicts)} DICOM files have a Patient ID that differs from the patient their file "
                        "name gives (pattern); the DICOM Patient ID was used and both are kept in one split. "
                        "Check the file-name pattern")
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
    folder_patients, folder_warnings = _folder_check(items)
    warnings += folder_warnings
    return ScanResult(root=str(base), classes=class_names, items=items, problems=problems,
                      duplicates=duplicates, ignored=ignored, warnings=warnings, patient_regex=patient_regex,
                      patient_conflicts=len(conflicts), folder_patients=folder_patients)


def _patient_keys(kept: Sequence[tuple[_Inspected, str]], pattern: re.Pattern[str] | None
                  ) -> tuple[list[str], list[str], list[tuple[str, str]], int]:
    """Per file: its key ("patient:<key>" or "file:<rel>"), where it came from, the conflicts, unmatched count."""
    keys: list[str] = []
    sources: list[str] = []
    conflicts: list[tuple[str, str]] = []  # (key from PatientID, key from the file name)
    unmatched = 0
    for r, rel in kept:
        m = pattern.search(r.path.name) if pattern is not None else None
        from_name = None
        if m is not None:
            raw = m.group(1) if m.groups() and m.group(1) is not None else m.group(0)
            from_name = patient_key(raw) or None
        if r.patient_id and patient_key(r.patient_id):
            key, source = "patient:" + patient_key(r.patient_id), "dicom"
            if from_name is not None and from_name != patient_key(r.patient_id):
                conflicts.append((key, "patient:" + from_name))
        elif from_name is not None:
            key, source = "patient:" + from_name, "pattern"
        else:
            unmatched += pattern is not None
            key, source = "file:" + rel, "file"
        keys.append(key)
        sources.append(source)
    return keys, sources, conflicts, unmatched


def _key_hash(key: str) -> str:
    kind, _, raw = key.partition(":")
    return hash_group(kind, raw)


def _join_conflicts(keys: Sequence[str], conflicts: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Hashed group of every key; keys joined by a conflict share one group (union-find)."""
    parent = {k: k for k in keys}
    for a, b in conflicts:
        parent.setdefault(b, b)

    def root(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in conflicts:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # deterministic representative
    return {k: _key_hash(root(k)) for k in parent}


def scan_folder(root: str | os.PathLike[str], **kwargs: object) -> ScanResult:
    """:func:`iter_scan` run to the end (for scripts and tests)."""
    return drain(iter_scan(root, **kwargs))  # type: ignore[arg-type]

