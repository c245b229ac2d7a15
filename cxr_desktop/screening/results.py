"""Screening result rows: the journal (crash-safe progress) and the CSV/JSON outputs.

A run appends complete rows to a JSON-lines *journal* and fsyncs after every
batch, so ``kill -9`` loses at most the batch in flight; a torn last line is
ignored (and cut off before appending again). The final CSV/JSON are written
atomically (temp file + fsync + ``os.replace``) from the journal, sorted by
score (highest first, unscored rows last), so a reader never sees a torn file.

A scored row may carry a :class:`~cxr_desktop.scope.Caution` (the learned check:
"unusual image - interpret with care", feature distance and limit). It keeps status
``ok`` and its score, and ranks by that score like every scored row, never below
them; the CSV has ``caution``, ``feature_distance`` and ``feature_limit`` columns.
Rows journalled by an earlier version, whose learned check refused the image
(status ``out_of_scope`` for that reason only, no score), are not resumed as they
are: :func:`is_legacy_learned_refusal` marks them for screening again.

CSV text cells are safe against spreadsheet formula injection: a cell that
starts with ``= + - @`` tab or CR (or an apostrophe, to keep the escaping
reversible) gets a leading apostrophe. Numeric cells are written as numbers.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from cxr_desktop.atomic import write_bytes_atomic
from cxr_desktop import DECISION_AID_NOTICE

if TYPE_CHECKING:
    from cxr_desktop.model.card import ModelCard
from cxr_desktop.scope.learned import Caution
from cxr_desktop.scope.rules import LEARNED

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_OUT_OF_SCOPE = "out_of_scope"
STATUSES = (STATUS_OK, STATUS_ERROR, STATUS_OUT_OF_SCOPE)

JOURNAL_FORMAT = "cxr-screening-journal"
JOURNAL_VERSION = 1
JSON_FORMAT = "cxr-screening-results"
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class ResultRow:
    """One input file's outcome. ``path`` is relative to the screened folder, with '/'."""

    path: str
    status: str
    label: str | None = None
    score: float | None = None
    above_threshold: bool | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    reason: str = ""  # error: a Reason code; out_of_scope: why
    detail: str = ""  # the full sentence for the user: what is wrong, what to do
    model: str = ""
    caution: Caution | None = None  # scored, but unlike the training images: shown with the caution mark

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["caution"] = None if self.caution is None else self.caution.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ResultRow":
        score = data.get("score")
        above = data.get("above_threshold")
        return cls(
            path=str(data["path"]),
            status=str(data["status"]),
            label=data.get("label"),
            score=None if score is None else float(score),
            above_threshold=None if above is None else bool(above),
            probabilities={str(k): float(v) for k, v in (data.get("probabilities") or {}).items()},
            reason=str(data.get("reason") or ""),
            detail=str(data.get("detail") or ""),
            model=str(data.get("model") or ""),
            caution=Caution.from_dict(data.get("caution")),  # absent in journals of earlier versions
        )


@dataclass(frozen=True)
class JournalHeader:
    """First line of a journal: which model wrote the rows (resume checks it)."""

    model: str
    model_sha256: str
    classes: list[str]
    positive_class: str
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION, **asdict(self)}

    @classmethod
    def from_card(cls, card: "ModelCard", model_sha256: str) -> "JournalHeader":
        """The header for rows scored by the model with this card and file hash."""
        return cls(model=card.display_name, model_sha256=model_sha256, classes=list(card.classes),
                   positive_class=card.classes[card.positive_index], threshold=float(card.decision_threshold))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JournalHeader":
        if data.get("format") != JOURNAL_FORMAT:
            raise ValueError("not a screening journal")
        return cls(model=str(data["model"]), model_sha256=str(data["model_sha256"]),
                   classes=[str(c) for c in data["classes"]], positive_class=str(data["positive_class"]),
                   threshold=float(data["threshold"]))


# --------------------------------------------------------------------------- ordering


def sort_key(row: ResultRow) -> tuple[int, float, str]:
    """Scored rows by score descending, then out-of-scope, then errors; path breaks ties.

    A cautioned row is a scored row: it ranks by its score among them, never below them.
    """
    if row.status == STATUS_OK and row.score is not None:
        return (0, -row.score, row.path)
    return (1 if row.status == STATUS_OUT_OF_SCOPE else 2, 0.0, row.path)


def sorted_rows(rows: Iterable[ResultRow]) -> list[ResultRow]:
    return sorted(rows, key=sort_key)


# --------------------------------------------------------------------------- CSV cells


def safe_cell(text: str) -> str:
    """Neutralise spreadsheet formulas: prefix an apostrophe to risky text cells."""
    if text and (text[0] in FORMULA_TRIGGERS or text[0] == "'"):
        return "'" + text
    return text


def unsafe_cell(text: str) -> str:
    """Inverse of :func:`safe_cell` (reading our own CSV back)."""
    return text[1:] if text.startswith("'") else text


FIXED_COLUMNS = ["path", "status", "label", "score", "above_threshold"]
CAUTION_COLUMNS = ["caution", "feature_distance", "feature_limit"]
TRAILING_COLUMNS = ["reason", "detail", "model"]


def csv_columns(classes: Sequence[str]) -> list[str]:
    return FIXED_COLUMNS + CAUTION_COLUMNS + [f"p_{c}" for c in classes] + TRAILING_COLUMNS


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def row_to_csv(row: ResultRow, classes: Sequence[str]) -> list[str]:
    """Cells for one row: text cells escaped, numbers plain."""
    above = "" if row.above_threshold is None else ("true" if row.above_threshold else "false")
    c = row.caution
    caution = ["", "", ""] if c is None else [safe_cell(c.short), _num(c.distance), _num(c.limit)]
    return ([safe_cell(row.path), safe_cell(row.status), safe_cell(row.label or ""), _num(row.score), above]
            + caution
            + [_num(row.probabilities.get(c)) for c in classes]
            + [safe_cell(row.reason), safe_cell(row.detail), safe_cell(row.model)])


def csv_text(rows: Iterable[ResultRow], classes: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([safe_cell(c) for c in csv_columns(classes)])
    for row in rows:
        w.writerow(row_to_csv(row, classes))
    return buf.getvalue()


def read_results_csv(path: str | os.PathLike[str]) -> tuple[list[str], list[ResultRow]]:
    """Read a CSV this module wrote: (classes, rows). Raises ``ValueError`` if it is not one."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [unsafe_cell(h) for h in next(reader, [])]
        if header[:5] != FIXED_COLUMNS or header[-3:] != TRAILING_COLUMNS:
            raise ValueError(f"{Path(path).name} is not a screening results file")
        has_caution = header[5:8] == CAUTION_COLUMNS  # absent in files of earlier versions
        middle = header[8:-3] if has_caution else header[5:-3]
        if not all(h.startswith("p_") for h in middle):
            raise ValueError(f"{Path(path).name} is not a screening results file")
        classes = [h[2:] for h in middle]
        rows = []
        for cells in reader:
            if len(cells) != len(header):
                raise ValueError(f"{Path(path).name}: a row has {len(cells)} cells, expected {len(header)}")
            c = dict(zip(header, cells))
            probs = {k: float(c["p_" + k]) for k in classes if c["p_" + k] != ""}
            rows.append(ResultRow(
                path=unsafe_cell(c["path"]), status=unsafe_cell(c["status"]),
                label=unsafe_cell(c["label"]) or None,
                score=float(c["score"]) if c["score"] else None,
                above_threshold=None if c["above_threshold"] == "" else c["above_threshold"] == "true",
                probabilities=probs, reason=unsafe_cell(c["reason"]), detail=unsafe_cell(c["detail"]),
                model=unsafe_cell(c["model"]),
                caution=_caution_cells(c) if has_caution else None,
            ))
    return classes, rows


def _caution_cells(c: dict[str, str]) -> Caution | None:
    if not unsafe_cell(c["caution"]):
        return None
    try:
        return Caution(distance=float(c["feature_distance"]), limit=float(c["feature_limit"]))
    except ValueError:
        raise ValueError("a row has a caution without a valid feature distance and limit") from None


def is_legacy_learned_refusal(row: ResultRow) -> bool:
    """A row an earlier version refused only for its learned check: to be screened again.

    The learned check now cautions instead of refusing, so resuming such a row as it
    is would keep a possible finding unscored at the bottom of the worklist.
    """
    return row.status == STATUS_OUT_OF_SCOPE and row.reason != "" and set(row.reason.split(";")) == {LEARNED}


# --------------------------------------------------------------------------- atomic files


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` atomically, creating the folder (see :func:`cxr_desktop.atomic.write_bytes_atomic`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)


def write_csv(path: str | os.PathLike[str], rows: Iterable[ResultRow], classes: Sequence[str]) -> None:
    """Atomic CSV (UTF-8 with BOM so spreadsheets read non-ASCII names) in the order given."""
    atomic_write_bytes(path, ("\ufeff" + csv_text(rows, classes)).encode("utf-8"))


def results_document(rows: Sequence[ResultRow], header: JournalHeader,
                     summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON export: notice, model, summary and rows."""
    return {
        "format": JSON_FORMAT,
        "version": 1,
        "notice": DECISION_AID_NOTICE,
        "model": {"name": header.model, "sha256": header.model_sha256, "classes": header.classes,
                  "positive_class": header.positive_class, "threshold": header.threshold},
        "summary": summary if summary is not None else summarise(rows),
        "rows": [r.to_dict() for r in rows],
    }


def write_json(path: str | os.PathLike[str], rows: Sequence[ResultRow], header: JournalHeader,
               summary: dict[str, Any] | None = None) -> None:
    data = json.dumps(results_document(rows, header, summary), indent=1, ensure_ascii=False)
    atomic_write_bytes(path, data.encode("utf-8"))


def summarise(rows: Iterable[ResultRow]) -> dict[str, Any]:
    """Counts per status and per predicted label, how many are above the threshold, how many cautioned."""
    status: dict[str, int] = {}
    labels: dict[str, int] = {}
    above = 0
    cautioned = 0
    n = 0
    for r in rows:
        n += 1
        status[r.status] = status.get(r.status, 0) + 1
        if r.status == STATUS_OK and r.label is not None:
            labels[r.label] = labels.get(r.label, 0) + 1
            above += bool(r.above_threshold)
        cautioned += r.caution is not None
    return {"files": n, "status": status, "labels": labels, "above_threshold": above, "cautioned": cautioned}


# --------------------------------------------------------------------------- journal


class Journal:
    """Append-only JSON-lines record of finished rows; fsynced per :meth:`append`."""

    def __init__(self, path: str | os.PathLike[str], header: JournalHeader, *, resume: bool):
        """Open for appending. ``resume`` keeps valid rows (a torn tail is cut off); else starts over."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.path.exists():
            _, _, valid_bytes = _scan_journal(self.path)
            self._fh = open(self.path, "r+b")
            self._fh.truncate(valid_bytes)
            self._fh.seek(valid_bytes)
            if valid_bytes == 0:
                self._write_line(header.to_dict())
        else:
            self._fh = open(self.path, "wb")
            self._write_line(header.to_dict())
        self._sync()

    def _write_line(self, obj: dict[str, Any]) -> None:
        self._fh.write(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")

    def _sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def append(self, rows: Sequence[ResultRow]) -> None:
        """Write complete rows, then flush and fsync (one line per row)."""
        if not rows:
            return
        self._fh.write(b"".join(json.dumps(r.to_dict(), ensure_ascii=False).encode("utf-8") + b"\n"
                                for r in rows))
        self._sync()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scan_journal(path: Path) -> tuple[JournalHeader | None, list[ResultRow], int]:
    """Parse a journal: (header, rows, bytes of complete valid lines). Stops at the first bad line."""
    header: JournalHeader | None = None
    rows: list[ResultRow] = []
    valid = 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break  # torn last line: the process died mid-write
            try:
                obj = json.loads(line)
                if header is None:
                    header = JournalHeader.from_dict(obj)
                else:
                    rows.append(ResultRow.from_dict(obj))
            except (ValueError, KeyError, TypeError):
                break
            valid += len(line)
    return header, rows, valid


def read_journal(path: str | os.PathLike[str]) -> tuple[JournalHeader | None, list[ResultRow]]:
    """Header and complete rows of a journal (a torn or corrupt tail is ignored)."""
    header, rows, _ = _scan_journal(Path(path))
    return header, rows


def iter_unique(rows: Iterable[ResultRow]) -> Iterator[ResultRow]:
    """Last row per path wins (a resumed run may re-journal a file)."""
    latest: dict[str, ResultRow] = {}
    for r in rows:
        latest[r.path] = r
    yield from latest.values()


def journal_path_for(out_csv: str | os.PathLike[str]) -> Path:
    """``results.csv`` -> ``results.csv.journal``."""
    p = Path(out_csv)
    return p.with_name(p.name + ".journal")
