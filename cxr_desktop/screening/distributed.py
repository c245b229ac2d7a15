"""Screening one folder with several processes (``torchrun``): shards, per-process journals, one merged CSV.

Rank 0 walks the folder and sends every process the same file list. The files not yet done
(``--resume``: rows in the CSV or in any journal of this output) are split into strided shards
(:meth:`~cxr_desktop.distributed.Session.shard`), so every process gets about the same work.
Each process screens its shard with :func:`~cxr_desktop.screening.runner.screen_folder` into its own
journal, ``results.csv.rank<R>-of-<N>.journal`` (``R`` as torchrun's ``RANK``). Then the rows are
gathered and rank 0 writes the one CSV (and JSON) atomically, ranked by the same rule as a
1-process run (:func:`~cxr_desktop.screening.results.sorted_rows`), so the file is the same.
The journals are removed only after the CSV holds every row.

Resume with another number of processes re-shards safely: the rows of every journal of the
output (any process count, and the 1-process ``results.csv.journal``) count as done; each row is
contributed to the merge by exactly one process (the lowest rank that has it), so none is lost or
doubled. A fresh run (no ``--resume``) first removes the journals of other process counts, so a
later resume cannot bring back rows of a run the user chose to start over.

A process that dies makes the others' next collective fail after at most the session timeout
(``CXR_DIST_TIMEOUT_S``) with :class:`~cxr_desktop.distributed.DistributedError`; every journal stays.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from cxr_desktop.distributed import SINGLE, Session
from cxr_desktop.inference.protocol import Engine
from cxr_desktop.screening.results import (
    JournalHeader, ResultRow, iter_unique, journal_path_for, sorted_rows, summarise, write_csv, write_json,
)
from cxr_desktop.screening import runner  # runner.screen_folder, looked up at each call
from cxr_desktop.screening.runner import (
    Part, ResumeMismatch, ScreenEvent, ScreenFinished, ScreenNote, ScreenOptions, ScreenStarted,
    WalkProgress, _prior_rows,
)
from cxr_desktop.screening.walk import iter_image_files

_SHARD_JOURNAL = re.compile(r"\.rank(\d+)-of-(\d+)\.journal$")


# --------------------------------------------------------------------------- names and merging (no collectives)


def shard_journal_path(out_csv: str | Path, session: Session = SINGLE) -> Path:
    """This process's journal: ``results.csv.rank1-of-2.journal``; one process: ``results.csv.journal``."""
    out_csv = Path(out_csv)
    if not session.active:
        return journal_path_for(out_csv)
    return out_csv.with_name(f"{out_csv.name}.rank{session.rank}-of-{session.world_size}.journal")


def journals_of(out_csv: str | Path) -> list[Path]:
    """Every journal of this output on this disk (1-process first, then by process count and rank)."""
    out_csv = Path(out_csv)
    found: list[tuple[int, int, Path]] = []
    if out_csv.parent.is_dir():
        for p in out_csv.parent.iterdir():
            m = _SHARD_JOURNAL.search(p.name)
            if m and p.name[:m.start()] == out_csv.name and p.is_file():
                found.append((int(m.group(2)), int(m.group(1)), p))
    plain = journal_path_for(out_csv)
    return ([plain] if plain.is_file() else []) + [p for _, _, p in sorted(found)]


def is_current(journal: Path, out_csv: str | Path, session: Session) -> bool:
    """True for a journal that a process of this job writes (this process count)."""
    if not session.active:
        return journal == journal_path_for(out_csv)
    m = _SHARD_JOURNAL.search(journal.name)
    return bool(m) and int(m.group(2)) == session.world_size


def stale_journals(out_csv: str | Path, session: Session) -> list[Path]:
    """Journals of this output written with another number of processes."""
    return [p for p in journals_of(out_csv) if not is_current(p, out_csv, session)]


def owners(done_sets: Sequence[Iterable[str]]) -> dict[str, int]:
    """Path -> the lowest rank that has a row for it (that process alone contributes the row)."""
    owner: dict[str, int] = {}
    for rank, paths in enumerate(done_sets):
        for p in paths:
            owner.setdefault(p, rank)
    return owner


def merge_parts(parts: Sequence[Sequence[ResultRow]], relpaths: Sequence[str] | None = None) -> list[ResultRow]:
    """The rows of every process as one worklist: one row per file (of ``relpaths``), ranked as a 1-process run.

    The ranking (:func:`~cxr_desktop.screening.results.sorted_rows`) is a total order (the path breaks
    ties), so the result does not depend on which process screened which file.
    """
    wanted = None if relpaths is None else set(relpaths)
    rows = (r for part in parts for r in part if wanted is None or r.path in wanted)
    return sorted_rows(iter_unique(rows))


def remove_journals(paths: Iterable[Path]) -> None:
    """Remove journals (another process may have removed one already)."""
    for p in paths:
        p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the run


def screen_folder_sharded(folder: str | Path, engine: Engine, out_csv: str | Path, session: Session, *,
                          options: ScreenOptions | None = None,
                          cancel: threading.Event | None = None) -> Iterator[ScreenEvent]:
    """Screen ``folder`` as one process of ``session``; every process must call this with the same arguments.

    Yields the events of this process's shard (rank 0 gets a :class:`ScreenStarted` for the whole folder);
    ends, on every process, with the :class:`ScreenFinished` of the merged result, which only rank 0 writes.
    With one process it is :func:`screen_folder` plus the journals of other process counts on ``--resume``.
    Raises :class:`ResumeMismatch` on every process when any finds results of another model, and
    :class:`~cxr_desktop.distributed.DistributedError` when another process stops answering.
    """
    opts = options or ScreenOptions()
    folder, out_csv = Path(folder), Path(out_csv)
    if not session.active:
        yield from _single(folder, engine, out_csv, opts, cancel)
        return
    t0 = time.perf_counter()
    own = shard_journal_path(out_csv, session)
    header = JournalHeader.from_card(engine.card, engine.model_sha256)
    if not opts.resume:
        remove_journals(stale_journals(out_csv, session))  # never another process's current journal
    prior: list[ResultRow] = []
    problem = None
    if opts.resume:
        try:
            prior = _prior_rows(out_csv, own, header, [p for p in journals_of(out_csv) if p != own])
        except ResumeMismatch as exc:
            problem = str(exc)
    problems = [p for p in session.all_gather(problem, "checking the earlier results") if p]
    if problems:
        raise ResumeMismatch(problems[0])

    relpaths: list[str] = []
    if session.is_main:
        exclude = [out_csv, *journals_of(out_csv)] + [p for p in (opts.json_path, opts.heatmaps_dir) if p]
        for rel in iter_image_files(folder, exclude=exclude):
            relpaths.append(rel)
            if len(relpaths) % 500 == 0:
                yield WalkProgress(len(relpaths))
    relpaths = session.broadcast(relpaths, "sharing the list of files")
    in_folder = set(relpaths)
    mine_done = sorted({r.path for r in prior} & in_folder)
    owner = owners(session.all_gather(mine_done, "agreeing which files are done"))
    kept = [r for r in prior if owner.get(r.path) == session.rank]
    todo = [p for p in relpaths if p not in owner]
    part = Part(relpaths=tuple(session.shard(todo)), journal=own)

    own_fin: ScreenFinished | None = None
    for ev in runner.screen_folder(folder, engine, out_csv, options=replace(opts, part=part, resume_journals=()),
                            cancel=cancel):
        if isinstance(ev, ScreenFinished):
            own_fin = ev
        elif isinstance(ev, ScreenStarted):  # the whole job's counts; this process's workers and device
            yield replace(ev, total=len(relpaths), already_done=len(owner), to_do=len(todo))
            yield ScreenNote(f"{session.world_size} processes ({session.backend}) share the files; the progress "
                             f"shown is process {session.rank + 1}'s share ({ev.to_do} files)")
        else:
            yield ev
    assert own_fin is not None  # screen_folder always ends with ScreenFinished
    mine = (kept + own_fin.rows, own_fin.cancelled, own_fin.heatmaps_failed, len(own_fin.rows))
    gathered = session.all_gather(mine, "collecting the results of every process (waiting for the slowest)")
    rows = merge_parts([g[0] for g in gathered], relpaths)
    cancelled = any(g[1] for g in gathered)
    elapsed = time.perf_counter() - t0
    new = sum(g[3] for g in gathered)
    rate = new / elapsed if elapsed > 0 else 0.0
    summary = summarise(rows)
    summary.update(elapsed_s=round(elapsed, 3), files_per_s=round(rate, 3), cancelled=cancelled,
                   input_check=own_fin.summary.get("input_check"),  # the same settings and model on every process
                   processes=session.world_size)
    written: str | None = None
    if session.is_main:
        try:
            write_csv(out_csv, rows, engine.card.classes)
            if opts.json_path:
                write_json(opts.json_path, rows, header, summary)
        except Exception as exc:  # the others wait for this answer (journals kept): send it before stopping
            session.broadcast(type(exc).__name__, "writing the results")
            raise
    written = session.broadcast(written, "writing the results")
    if written is None and not cancelled and len(rows) == len(relpaths):
        remove_journals([own, *stale_journals(out_csv, session)])  # the CSV now holds every row
    yield ScreenFinished(out_csv=out_csv, json_path=opts.json_path, summary=summary, elapsed_s=elapsed, rate=rate,
                         cancelled=cancelled, rows_written=len(rows),
                         heatmaps_failed=sum(g[2] for g in gathered), rows=rows)


def _single(folder: Path, engine: Engine, out_csv: Path, opts: ScreenOptions,
            cancel: threading.Event | None) -> Iterator[ScreenEvent]:
    """One process: :func:`screen_folder`, resuming from the journals of a run with more processes too."""
    stale = stale_journals(out_csv, SINGLE)
    if not opts.resume:
        remove_journals(stale)
        stale = []
    fin: ScreenFinished | None = None
    for ev in runner.screen_folder(folder, engine, out_csv, options=replace(opts, resume_journals=tuple(stale)),
                            cancel=cancel):
        if isinstance(ev, ScreenFinished):
            fin = ev
        yield ev
    if fin is not None and not fin.cancelled and not journal_path_for(out_csv).exists():
        remove_journals(stale)  # complete: the CSV holds their rows

