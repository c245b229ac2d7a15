"""Who and when an image belongs to (patient, study, date), for finding priors and the worklist.

Read from the DICOM header only (no pixel data), never raising: a PNG/JPEG or a
damaged header simply has no facts. These values are patient data: they may be
shown on screen but never logged, put in messages, crash output or CSV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

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
