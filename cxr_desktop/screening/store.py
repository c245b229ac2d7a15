"""Where the app keeps screening results, per (folder, model), so a reopened folder offers them.

Layout: ``<root>/<key>/results.csv`` (+ ``results.csv.journal`` while a run is
unfinished), where ``key`` is a hash of the folder's absolute path and the model
file's SHA-256; ``root`` defaults to ``data_dir()/screening``. Nothing in the
layout names the folder, so no patient name in a folder path is copied around.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cxr_desktop.screening.results import (
    ResultRow, iter_unique, journal_path_for, read_journal, read_results_csv, sorted_rows,
)

RESULTS_NAME = "results.csv"
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def default_root() -> Path:
    from cxr_desktop.paths import data_dir

    return data_dir() / "screening"


def model_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a model file, cached by (path, size, mtime) (hashing 100 MB takes a moment)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as fh:  # hashlib and file reads release the GIL: the GUI keeps running
            for chunk in iter(lambda: fh.read(8 * 1024 * 1024), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def store_dir(folder: str | os.PathLike[str], model_sha: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The results folder for this (folder, model) pair (not created)."""
    ident = f"{os.path.normcase(os.path.abspath(folder))}\n{model_sha}".encode("utf-8")
    return Path(root or default_root()) / hashlib.sha256(ident).hexdigest()[:24]


@dataclass(frozen=True)
class PreviousResults:
    """What an earlier run left: ``complete`` when it finished (no journal left)."""

    out_csv: Path
    rows: int
    complete: bool


def find_previous(folder: str | os.PathLike[str], model_sha: str,
                  root: str | os.PathLike[str] | None = None) -> PreviousResults | None:
    """Earlier results for this folder and model, or None."""
    d = store_dir(folder, model_sha, root)
    out_csv = d / RESULTS_NAME
    journal = journal_path_for(out_csv)
    if not out_csv.exists() and not journal.exists():
        return None
    try:
        rows = load_rows(out_csv)
    except (OSError, ValueError):
        return None
    if not rows:
        return None
    return PreviousResults(out_csv=out_csv, rows=len(rows), complete=not journal.exists())


def load_rows(out_csv: str | os.PathLike[str]) -> list[ResultRow]:
    """Rows of a results CSV and its journal (the journal wins), sorted by score."""
    out_csv = Path(out_csv)
    rows: list[ResultRow] = []
    if out_csv.exists():
        rows.extend(read_results_csv(out_csv)[1])
    journal = journal_path_for(out_csv)
    if journal.exists():
        rows.extend(read_journal(journal)[1])
    return sorted_rows(iter_unique(rows))
