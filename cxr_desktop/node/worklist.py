"""Screen one received study with ``cxr-screen``'s runner and keep the node-wide worklist.

Each study is screened by :func:`cxr_desktop.screening.runner.screen_folder` (same
engine, scope gate, decode workers, time limit and journal as ``cxr-screen``) into
``studies/<study>/results.csv``, always with ``resume``: an instance scored once is
never scored again, after a restart or when more instances of the study arrive
later. Its rows are then appended to the node's worklist journal
(``worklist.csv.journal``, the same JSON-lines :class:`~cxr_desktop.screening.results.Journal`,
fsynced) and ``worklist.csv`` is rewritten atomically from it, sorted by score. Row
paths are relative to the node folder (``received/<study>/<instance>.dcm``): hashed,
never a patient name, ID or UID.

``screened.jsonl`` records, per row the model newly produced in this node (one line,
fsynced per batch): when, which study, which file, what status. It is the evidence
that nothing is scored twice, and what the throughput figures are computed from.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from cxr_desktop.errors import Reason
from cxr_desktop.inference.protocol import Engine
from cxr_desktop.node.storage import ReceivedStore
from cxr_desktop.screening.results import (
    STATUS_ERROR, Journal, JournalHeader, ResultRow, journal_path_for, read_journal, sorted_rows, write_csv,
)
from cxr_desktop.screening.runner import (
    ResumeMismatch, RowsDone, ScreenFinished, ScreenNote, ScreenOptions, screen_folder,
)
from cxr_desktop.screening.store import load_rows

log = logging.getLogger(__name__)

WORKLIST_NAME = "worklist.csv"
SCREENED_LOG = "screened.jsonl"
STUDIES = "studies"


@dataclass
class StudyOutcome:
    """What screening one study did: rows new to the worklist, and whether it was stopped early."""

    study: str
    new_rows: list[ResultRow]
    scored_now: int  # rows the model produced in this pass (the rest were already in the study's results)
    cancelled: bool
    elapsed_s: float
    notes: list[str] = field(default_factory=list)


def header_for(engine: Engine) -> JournalHeader:
    """The journal header ``screen_folder`` writes for ``engine`` (resume checks it)."""
    return JournalHeader.from_card(engine.card, engine.model_sha256)


class NodeWorklist:
    """The node's worklist (journal + CSV) and the per-study screening passes. Thread-safe appends."""

    def __init__(self, root: str | os.PathLike[str], engine: Engine, store: ReceivedStore,
                 options: ScreenOptions | None = None):
        """Open (or create) the worklist; ``ResumeMismatch`` when it holds another model's results."""
        self.root = Path(root)
        self.engine, self.store = engine, store
        self.options = replace(options or ScreenOptions(), resume=True, json_path=None)
        self.csv_path = self.root / WORKLIST_NAME
        self.header = header_for(engine)
        journal = journal_path_for(self.csv_path)
        rows: list[ResultRow] = []
        if journal.exists():
            old, rows = read_journal(journal)
            if old is not None and (old.model_sha256 != self.header.model_sha256 or old.classes != self.header.classes):
                raise ResumeMismatch(f"{self.root.name or self.root} holds the worklist of model {old.model!r}; "
                                     "start the node with that model, or give another --out folder.")
        self._rows: dict[str, ResultRow] = {r.path: r for r in rows}
        self._journal = Journal(journal, self.header, resume=True)
        self._lock = threading.Lock()
        self._events = open(self.root / SCREENED_LOG, "ab")
        self._seen_notes: set[str] = set()

    # ----------------------------------------------------------------- state

    def rows(self) -> list[ResultRow]:
        with self._lock:
            return sorted_rows(self._rows.values())

    def has(self, relpath: str) -> bool:
        with self._lock:
            return relpath in self._rows

    def unscreened_studies(self) -> list[str]:
        """Studies with received images that have no worklist row yet (re-queued at start)."""
        with self._lock:
            done = set(self._rows)
        return [s for s in self.store.studies() if any(p not in done for p in self.store.instances(s))]

    # ----------------------------------------------------------------- screening

    def screen_study(self, study: str, *, cancel: threading.Event | None = None,
                     note: Callable[[str], None] | None = None) -> StudyOutcome:
        """Screen the study's images not screened yet; append every row new to the worklist.

        Raises what the runner raises (``ResumeMismatch``, ``OSError`` when results
        cannot be written); rows already journalled stay.
        """
        t0 = time.perf_counter()
        folder = self.store.study_dir(study)
        out_csv = self.root / STUDIES / study / "results.csv"
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        prefix = folder.relative_to(self.root).as_posix() + "/"
        scored_now, cancelled, notes = 0, False, []
        for ev in screen_folder(folder, self.engine, out_csv, options=self.options, cancel=cancel):
            if isinstance(ev, RowsDone):
                scored_now += len(ev.rows)
                self._log_scored(study, prefix, ev.rows)
            elif isinstance(ev, ScreenNote):
                if ev.message not in self._seen_notes:  # the learned-check status: once per run, not per study
                    self._seen_notes.add(ev.message)
                    notes.append(ev.message)
                    if note is not None:
                        note(ev.message)
            elif isinstance(ev, ScreenFinished):
                cancelled = ev.cancelled
        rows = [replace(r, path=prefix + r.path) for r in load_rows(out_csv)]
        new = self.append(rows)
        return StudyOutcome(study, new, scored_now, cancelled, time.perf_counter() - t0, notes)

    def append(self, rows: list[ResultRow]) -> list[ResultRow]:
        """Journal the rows whose path is not in the worklist yet, rewrite the CSV; returns those rows."""
        with self._lock:
            new = [r for r in rows if r.path not in self._rows]
            if not new:
                return []
            self._journal.append(new)
            for r in new:
                self._rows[r.path] = r
            write_csv(self.csv_path, sorted_rows(self._rows.values()), self.header.classes)
        return new

    def add_unreadable(self, relpath: str, why: str) -> ResultRow | None:
        """An error row for a received object that could not be filed under a study."""
        row = ResultRow(path=relpath, status=STATUS_ERROR, reason=Reason.UNREADABLE.value,
                        detail=f"{Path(relpath).name}: a received object could not be screened: {why}. It is kept "
                               "in the node's 'unreadable' folder; check the sending system and send the image again.",
                        model=self.header.model)
        new = self.append([row])
        return new[0] if new else None

    def _log_scored(self, study: str, prefix: str, rows: list[ResultRow]) -> None:
        now = time.time()
        lines = b"".join(json.dumps({"time": round(now, 3), "study": study, "path": prefix + r.path,
                                     "status": r.status}).encode() + b"\n" for r in rows)
        with self._lock:
            self._events.write(lines)
            self._events.flush()
            os.fsync(self._events.fileno())

    def close(self) -> None:
        with self._lock:
            self._journal.close()
            if not self._events.closed:
                self._events.close()
