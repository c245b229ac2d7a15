"""Who and when an image belongs to (patient, study, date), for finding priors and the worklist.

Read from the DICOM header only (no pixel data), never raising: a PNG/JPEG or a
damaged header simply has no facts. These values are patient data: they may be
shown on screen but never logged, put in messages, crash output or CSV.
:func:`search_prior` runs in a worker: it reads the headers of the study list's
files (where the scan has no facts) and of the local PACS study cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

_TAGS = ("PatientID", "PatientName", "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber")


@dataclass(frozen=True)
class StudyFacts:
    """Header facts of one file (empty strings where the header has none)."""

    path: str
    patient_id: str = ""
    patient_name: str = ""
    study_date: str = ""  # DICOM DA, YYYYMMDD
    study_time: str = ""
    study_description: str = ""

    @property
    def date_text(self) -> str:
        """The study date as YYYY-MM-DD (as stored when it is not a valid DA)."""
        d = self.study_date
        return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


def read_facts(path: str | Path) -> StudyFacts:
    """The patient/study facts of ``path`` (all empty for non-DICOM or unreadable files)."""
    try:
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=list(_TAGS), force=False)
    except Exception:  # not DICOM, damaged, unreadable: no facts (the viewer says why elsewhere)
        return StudyFacts(str(path))

    def text(tag: str) -> str:
        value = ds.get(tag)
        return "" if value is None else str(value).strip()

    return StudyFacts(str(path), text("PatientID"), text("PatientName").replace("^", " ").strip(),
                      text("StudyDate"), text("StudyTime"), text("StudyDescription"))


def facts_from_metadata(path: str | Path, metadata: dict[str, Any]) -> StudyFacts | None:
    """Facts from a scanned header's metadata (no file read); None when it lacks patient or date."""
    pid, date = metadata.get("patient_id"), metadata.get("study_date")
    if not pid or not date:
        return None
    return StudyFacts(str(path), str(pid), str(metadata.get("patient_name") or ""), str(date))


def find_prior(current: StudyFacts, candidates: Iterable[StudyFacts]) -> StudyFacts | None:
    """The most recent study of the same patient dated before ``current`` (None if there is none).

    Same Patient ID and an earlier Study Date; among several, the latest of them (the
    comparison a reader wants first).
    """
    if not current.patient_id or not current.study_date:
        return None
    earlier = [c for c in candidates
               if c.patient_id == current.patient_id and c.study_date and c.study_date < current.study_date
               and c.path != current.path]
    if not earlier:
        return None
    return max(earlier, key=lambda c: (c.study_date, c.study_time, c.path))


def cached_study_files(root: str | Path | None) -> list[list[Path]]:
    """Instance files of each complete study in a PACS study cache folder (read only; [] when absent).

    The layout is :mod:`cxr_desktop.pacs.cache`'s (one folder per study, complete when it
    holds the marker file). The cache object itself is not built here: constructing it
    creates the folder and clears stale staging folders, and a lookup must change nothing.
    """
    from cxr_desktop.pacs.cache import MARKER

    if root is None:
        return []
    try:
        folders = sorted(d for d in Path(root).iterdir() if not d.name.startswith(".") and (d / MARKER).is_file())
    except OSError:
        return []
    out = []
    for d in folders:
        try:
            files = sorted(d.glob("*.dcm"))
        except OSError:
            continue
        if files:
            out.append(files)
    return out


def search_prior(path: str, metadata: dict[str, Any], listed: Sequence[tuple[str, dict[str, Any]]],
                 cache_root: str | Path | None) -> StudyFacts | None:
    """Worker: the prior of ``path`` among the study list's files and the PACS cache (None if none).

    ``listed`` is the study list as (path, scanned metadata); headers are read only where the
    scan has no patient/date. In the cache one header per study decides (its instances share
    patient and study); the prior opens at that study's first instance.
    """
    current = facts_from_metadata(path, metadata) or read_facts(path)
    if not current.patient_id or not current.study_date:
        return None
    candidates = [facts_from_metadata(p, m) or read_facts(p) for p, m in listed if p != path]
    for files in cached_study_files(cache_root):
        facts = read_facts(files[0])
        if facts.patient_id == current.patient_id:
            candidates.append(facts)
    return find_prior(current, candidates)
