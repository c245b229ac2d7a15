"""What a study search asks for and what it returns, for both DIMSE (C-FIND) and DICOMweb (QIDO-RS).

:class:`StudyRow` holds patient data (name, ID, accession number) for the result
table; those fields are left out of its ``repr`` so that a row that ends up in a
log line or a traceback shows only the study's date, description and size.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

DEFAULT_MODALITIES = ("CR", "DX")


@dataclass(frozen=True)
class StudyQuery:
    """Study-level search. Empty strings match everything; ``*`` and ``?`` are wildcards (name, ID).

    ``date_from`` / ``date_to``: inclusive study date range (either may be None).
    ``modalities``: studies holding any of them (default CR and DX); empty = every modality.
    """

    patient_id: str = field(default="", repr=False)
    patient_name: str = field(default="", repr=False)
    accession_number: str = field(default="", repr=False)
    date_from: _dt.date | None = None
    date_to: _dt.date | None = None
    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    study_uid: str = field(default="", repr=False)

    def date_range(self) -> str:
        """DICOM range matching: ``YYYYMMDD-YYYYMMDD``, ``YYYYMMDD-``, ``-YYYYMMDD`` or ''."""
        if self.date_from is None and self.date_to is None:
            return ""
        lo = self.date_from.strftime("%Y%m%d") if self.date_from else ""
        hi = self.date_to.strftime("%Y%m%d") if self.date_to else ""
        return lo if lo and lo == hi else f"{lo}-{hi}"


@dataclass(frozen=True)
class StudyRow:
    """One study found on a server (the columns of the GUI's result table)."""

    study_uid: str = field(repr=False)
    patient_name: str = field(default="", repr=False)
    patient_id: str = field(default="", repr=False)
    accession_number: str = field(default="", repr=False)
    study_date: _dt.date | None = None
    description: str = ""
    modalities: tuple[str, ...] = ()
    images: int | None = None  # NumberOfStudyRelatedInstances, where the server reports it


def parse_da(value: object) -> _dt.date | None:
    """A DICOM DA value (``YYYYMMDD``) -> date; None when empty or malformed."""
    text = str(value or "").strip()
    try:
        return _dt.datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
    except ValueError:
        return None


def split_multi(value: object) -> tuple[str, ...]:
    """A multi-valued element (pydicom MultiValue, list or backslash-joined string) -> tuple of strings."""
    if value is None or value == "":
        return ()
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return tuple(str(v) for v in value if str(v))
    return tuple(v for v in str(value).split("\\") if v)


def to_int(value: object) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None
