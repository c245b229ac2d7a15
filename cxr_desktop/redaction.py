"""Patient data out of logs, crash reports and messages: redaction by value (no Qt).

Every attribute that DICOM PS3.15 Annex E's Basic Application Level Confidentiality
Profile removes or replaces (names, IDs, birth date, sex, age, institution, accession
number, physicians, dates and times, UIDs, device serial numbers, free-text comments,
..., and every private attribute) identifies a patient or a study. The list comes
from ``dicom-anonymizer`` (Kitware), which carries the profile's table per edition of
the standard. :func:`identifying_values` collects the values of those attributes from
a dataset (sequences included); a :class:`Redactor` remembers them and replaces them
in any text. The GUI registers the values of every study it opens (crash logs),
screening redacts each file's own values out of its row.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from functools import lru_cache
from typing import Any, Iterable

#: The edition of the Annex E table used (a module of ``dicom-anonymizer``).
ANNEX_E_EDITION = "dicomfields_2026c"
#: Placeholder for a redacted DICOM value.
VALUE_PLACEHOLDER = "<dicom-value>"
_MIN_LEN = 2  # shorter values (a sex "M") cannot be found by value without destroying the text
_WORD_BOUND_BELOW = 6  # short values are replaced only as whole words ("70" not inside "1970")
_MAX_DEPTH = 8
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                       "UI", "UR", "UT"})
_NUMBER_VRS = frozenset({"FD", "FL", "SL", "SS", "UL", "US", "SV", "UV"})


@lru_cache(maxsize=1)
def _profile_table() -> tuple[frozenset[int], tuple[tuple[int, int, int, int], ...]]:
    from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table  # = ANNEX_E_EDITION

    exact = {0x00020003}  # Media Storage SOP Instance UID: the file-meta copy of SOP Instance UID
    masked = []
    for entry in table.ALL_TAGS:
        if len(entry) == 2:
            exact.add((int(entry[0]) << 16) | int(entry[1]))
        else:  # repeating groups such as (60xx,4000) Overlay Comments: (group, element, group mask, element mask)
            g, e, gm, em = (int(v) for v in entry)
            masked.append((g, e, gm, em))
    return frozenset(exact), tuple(masked)


def basic_profile_tags() -> frozenset[int]:
    """Tags (as ``0xGGGGEEEE``) of the attributes in Annex E's Basic Profile table (without repeating groups)."""
    return _profile_table()[0]


def in_basic_profile(tag: int) -> bool:
    """True for an attribute of the Basic Profile table (repeating groups included) or a private one."""
    exact, masked = _profile_table()
    if tag in exact or (tag >> 16) % 2 == 1:
        return True
    g, e = tag >> 16, tag & 0xFFFF
    return any((g & gm) == mg and (e & em) == me for mg, me, gm, em in masked)


def identifying_values(ds: Any) -> set[str]:
    """Values of the Basic Profile's attributes (and of private attributes) in a pydicom dataset.

    Walks the file meta and nested sequences; inside a listed sequence every value counts.
    Person names also give their components (family, given, ...), multi-valued
    attributes each value and the joined text.
    """
    out: set[str] = set()
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _collect(meta, out, 0, False)
    _collect(ds, out, 0, False)
    return out


def _collect(ds: Any, out: set[str], depth: int, all_values: bool) -> None:
    if depth > _MAX_DEPTH:
        return
    try:
        elements = list(ds)
    except Exception:
        return
    for elem in elements:
        try:
            tag = int(elem.tag)
            listed = all_values or in_basic_profile(tag)
            vr = str(elem.VR)
            if vr == "SQ":
                for item in elem.value or ():
                    _collect(item, out, depth + 1, listed)
                continue
            if listed and (tag & 0xFFFF) != 0x0000 and tag not in (0x7FE00010,):
                _add_value(elem.value, vr, out)
        except Exception:
            continue


def _add_value(value: Any, vr: str, out: set[str]) -> None:
    if value is None:
        return
    if isinstance(value, (bytes, bytearray)):
        if vr in _TEXT_VRS or vr in ("UN", "OB"):
            if len(value) > 4096:
                return
            text = bytes(value).decode("latin-1", errors="ignore")
            printable = "".join(ch for ch in text if ch.isprintable() or ch == "\\")
            if len(printable) >= max(4, int(0.9 * len(text.strip("\0 ")))):
                for part in printable.split("\\"):
                    _add_text(part, vr, out)
        return
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        parts = [str(v) for v in value]
        for part in parts:
            _add_text(part, vr, out)
        _add_text("\\".join(parts), vr, out)
        return
    if vr in _NUMBER_VRS and isinstance(value, (int, float)):
        _add_text(str(value), vr, out)
        return
    _add_text(str(value), vr, out)


def _add_text(text: str, vr: str, out: set[str]) -> None:
    text = text.strip().strip("\0").strip()
    if len(text) < _MIN_LEN:
        return
    out.add(text)
    if vr == "PN":
        for group in text.split("="):
            for comp in group.split("^"):
                comp = comp.strip()
                if len(comp) >= _MIN_LEN:
                    out.add(comp)
            plain = " ".join(c.strip() for c in group.split("^") if c.strip())
            if len(plain) >= _MIN_LEN:
                out.add(plain)


class Redactor:
    """Remembers sensitive strings and blanks them out of any text (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None
        self._replacements: dict[str, str] = {}

    def register(self, value: object, placeholder: str) -> None:
        text = str(value or "").strip()
        if len(text) >= _MIN_LEN:
            with self._lock:
                if self._values.get(text) != placeholder:
                    self._values[text] = placeholder
                    self._pattern = None

    def register_values(self, values: Iterable[object], placeholder: str = VALUE_PLACEHOLDER) -> None:
        for v in values:
            if str(v or "").strip() not in self._values:
                self.register(v, placeholder)

    def register_patient_id(self, value: object) -> None:
        self.register(value, "<patient-id>")

    def register_path(self, path: object) -> None:
        self.register(path, "<opened-path>")

    def register_dataset(self, ds: Any) -> None:
        """Every Basic Profile value of a pydicom dataset (see :func:`identifying_values`)."""
        self.register_values(identifying_values(ds))

    def _compiled(self) -> tuple[re.Pattern[str] | None, dict[str, str]]:
        with self._lock:
            if self._pattern is None and self._values:
                items = sorted(self._values, key=len, reverse=True)  # longest first: no partial leftovers
                alts = [(rf"(?<!\w){re.escape(v)}(?!\w)" if len(v) < _WORD_BOUND_BELOW else re.escape(v))
                        for v in items]
                self._pattern = re.compile("|".join(alts))
                self._replacements = dict(self._values)
            return self._pattern, self._replacements

    def redact(self, text: str) -> str:
        pattern, repl = self._compiled()
        if pattern is not None:
            text = pattern.sub(lambda m: repl.get(m.group(0), VALUE_PLACEHOLDER), text)
        # DICOM-style person names (FAMILY^GIVEN) never belong in a log
        return re.sub(r"\b[\w'-]+\^[\w'^ -]*", "<person-name>", text)


#: The app's redactor: the GUI registers what it opens; crash logs and logged errors go through it.
REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's message and traceback text with :data:`REDACTOR`."""

    def __init__(self, redactor: Redactor | None = None):
        super().__init__()
        self.redactor = redactor or REDACTOR

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg = self.redactor.redact(record.getMessage())
            record.args = None
            if record.exc_info:
                import traceback

                record.exc_text = self.redactor.redact("".join(traceback.format_exception(*record.exc_info)))
                record.exc_info = None
            if record.stack_info:
                record.stack_info = self.redactor.redact(record.stack_info)
        except Exception:
            record.msg, record.args = "(log message withheld: it could not be checked for patient data)", None
        return True


def read_identifying_values(path: str | os.PathLike[str]) -> set[str]:
    """Basic Profile values of a DICOM file's header (empty for other files or unreadable headers).

    Reads the header only, through the imaging package's bounded reader; never opens
    anything but a regular file.
    """
    from cxr_desktop.imaging.loader import _read_head, sniff_format

    try:
        head = _read_head(path)  # regular files only (non-blocking open, fstat)
    except OSError:
        return set()
    # The loader's own test (also a DICOM file without preamble), or a DICOM name.
    if not (sniff_format(head) == "dicom" or str(path).lower().endswith((".dcm", ".dicom", ".dic"))):
        return set()
    try:
        from cxr_desktop.imaging.dicom_io import quiet, read_dicom

        with quiet():
            df = read_dicom(path, header_only=True, max_bytes=64 * 1024 * 1024)
        return identifying_values(df.ds)
    except BaseException as exc:  # damaged headers: nothing to collect (never a crash)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return set()


def register_file(path: str | os.PathLike[str], redactor: Redactor | None = None) -> None:
    """Register the Basic Profile values of a DICOM file with ``redactor`` (default :data:`REDACTOR`)."""
    (redactor or REDACTOR).register_values(read_identifying_values(path))


def redact_file_values(path: str | os.PathLike[str], text: str) -> str:
    """``text`` with the Basic Profile values of ``path``'s own header (if DICOM) replaced."""
    if not text:
        return text
    values = read_identifying_values(path)
    if not values:
        return text
    r = Redactor()
    r.register_values(values)
    return r.redact(text)
