"""Screen a folder: the generator that the command line and the app both drive.

``screen_folder`` walks the folder, decodes and preprocesses in DataLoader
worker processes (overlapping with inference on the device), scores each batch
with the engine's ``run_batch`` (prediction and Grad-CAM in one backbone pass),
journals every finished row (flush + fsync per batch, as soon as it is scored)
and yields typed progress events. At the end (or on cancel) it writes the CSV
(and JSON) atomically, sorted by score. A decoder that crashes a worker process
costs one ``error`` row for the file that did it, never the run; so does a file
whose decoding takes longer than the per-file time limit (the worker is replaced).

Interrupted runs must make progress even when killed every few seconds: the
first batches are small (1, 2, 4, ... up to the batch size), so the first rows
are durable a moment after the model is ready, not after a whole batch.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from torch.utils.data import DataLoader, Subset

from cxr_desktop.errors import CxrError, Reason
from cxr_desktop.inference.protocol import Engine
from cxr_desktop.scope import LearnedScopeCheck, ScopeSettings
from cxr_desktop.screening.dataset import (
    DecodeClock, DecodedBatch, ImageLoader, ScopeCheck, ScreeningDataset, collate_decoded, default_loader,
    model_input_loader, out_of_scope_detail, worker_init,
)
from cxr_desktop.screening.heatmaps import write_heatmap_files
from cxr_desktop.screening.results import (
    STATUS_ERROR, STATUS_OK, STATUS_OUT_OF_SCOPE, Journal, JournalHeader, ResultRow, is_legacy_learned_refusal,
    iter_unique, journal_path_for, read_journal, read_results_csv, sorted_rows, summarise, write_csv, write_json,
)
from cxr_desktop.screening.scope import learned_after_model, make_scope_check, reason_parts
from cxr_desktop.screening.walk import iter_image_files

log = logging.getLogger(__name__)

MAX_DEFAULT_WORKERS = 4
#: Default per-file decode time limit (seconds) in the worker processes.
DEFAULT_DECODE_TIME_LIMIT_S = 60.0


class ResumeMismatch(CxrError):
    """``--resume`` found results written by another model (or not by this app)."""


# --------------------------------------------------------------------------- options and events


def default_workers(device_kind: str = "cpu") -> int:
    """Decode worker processes.

    On CUDA the CPU only decodes: min(cores, 4). On the CPU, inference already
    uses every core, so extra decoders only take turns with it: half the cores
    (1 on a 2-core machine, where bench_screening measured 1 worker faster than 2).
    """
    cores = os.cpu_count() or 1
    if device_kind == "cuda":
        return max(1, min(cores, MAX_DEFAULT_WORKERS))
    return max(1, min(cores // 2, MAX_DEFAULT_WORKERS))


def default_mp_context() -> str:
    """'forkserver' on Linux (workers never inherit the app's threads: Qt, ONNX Runtime), else 'spawn'."""
    import multiprocessing as mp
    import sys

    if sys.platform.startswith("linux") and "forkserver" in mp.get_all_start_methods():
        return "forkserver"
    return "spawn"


_PRELOAD = ["cxr_desktop.screening.dataset", "cxr_desktop.imaging"]


def prepare_workers(method: str | None = None) -> None:
    """Start the fork server in the background (it imports torch and the decoders once).

    Call early (e.g. before loading the model) so the first batch does not wait
    for it; harmless to call more than once, and a no-op for other start methods.
    """
    import multiprocessing as mp

    method = method or default_mp_context()
    if method != "forkserver":
        return
    mp.get_context("forkserver").set_forkserver_preload(_PRELOAD)
    from multiprocessing import forkserver

    threading.Thread(target=forkserver.ensure_running, name="cxr-forkserver-start", daemon=True).start()


@dataclass
class ScreenOptions:
    """How to run. ``workers=0`` decodes in this process (no overlap; for debugging).

    Input safety: ``scope`` (None: every rule of :mod:`cxr_desktop.scope` under
    ``scope_settings``) runs before the model; ``after_model`` (None: the model file's
    learned check, when it stores feature statistics) runs on the pooled features and
    only cautions: the row stays ``ok``, scored, with its ``caution``. An out-of-scope
    row (a rule objects) has no score unless ``show_anyway``: then it is scored but
    keeps status ``out_of_scope`` and its reasons.
    """

    batch_size: int = 16
    workers: int | None = None  # None: default_workers(engine's device)
    heatmaps_dir: Path | None = None
    json_path: Path | None = None
    resume: bool = False
    prefetch_factor: int = 2
    mp_context: str | None = None  # None: default_mp_context()
    scope_settings: ScopeSettings | None = None  # None: ScopeSettings() defaults
    scope: ScopeCheck | None = None  # before the model, in the decode workers (picklable); None: the rules
    after_model: Callable[[np.ndarray], Any] | None = None  # pooled (2048,) -> Caution/reason; None: learned check
    show_anyway: bool = False  # score out-of-scope images too (rows stay out_of_scope, with the reason)
    loader: ImageLoader | None = None  # None: model_input_loader(the model's input size)
    heatmap_threads: int | None = None  # None: max(1, workers)
    #: Per-file decode limit in worker processes (None or 0: none; never applies with workers=0).
    decode_time_limit_s: float | None = DEFAULT_DECODE_TIME_LIMIT_S
    ramp_batches: bool = True  # first batches 1, 2, 4, ...: the first rows are durable sooner
    #: With ``resume``: more journals of the same output (written with another number of processes) whose
    #: rows count as done too (see :mod:`cxr_desktop.screening.distributed`).
    resume_journals: tuple[Path, ...] = ()
    #: One process's share of a distributed run: screen only these files into that journal and leave the
    #: CSV/JSON and the journal to the caller, which merges every process's rows (None: the whole folder).
    part: "Part | None" = None


@dataclass(frozen=True)
class Part:
    """The files one process screens (relative paths, in order) and the journal it alone writes."""

    relpaths: tuple[str, ...]
    journal: Path


@dataclass
class WalkProgress:
    """Still looking for files."""

    found: int


@dataclass
class ScreenStarted:
    total: int  # input files found
    already_done: int  # rows kept from an earlier run (resume)
    to_do: int
    workers: int
    batch_size: int
    device: str
    model: str


@dataclass
class RowsDone:
    """A batch finished: its rows are in the journal."""

    rows: list[ResultRow]
    done: int  # rows so far, including resumed ones
    total: int
    elapsed_s: float
    rate: float  # files per second in this run
    eta_s: float | None


@dataclass
class ScreenNote:
    """Something the user should know (a worker crash recovered, an engine fallback)."""

    message: str


@dataclass
class ScreenFinished:
    out_csv: Path
    json_path: Path | None
    summary: dict[str, Any]
    elapsed_s: float
    rate: float
    cancelled: bool
    rows_written: int
    heatmaps_failed: int = 0
    rows: list[ResultRow] = field(default_factory=list)  # the rows written, in CSV order (a part: its own)


ScreenEvent = WalkProgress | ScreenStarted | RowsDone | ScreenNote | ScreenFinished


# --------------------------------------------------------------------------- the run


@dataclass
class _Scored:
    """One scored batch: rows in batch order, CAMs (k, h, w) for ``ok_positions`` (or None)."""

    rows: list[ResultRow]
    ok_positions: list[int]
    cams: np.ndarray | None


@dataclass
class _Pending:
    rows: list[ResultRow]
    jobs: list[tuple[int, Future]] = field(default_factory=list)  # (row position, heatmap job)

    def ready(self) -> bool:
        return all(f.done() for _, f in self.jobs)


class _WorkerCrashed(Exception):
    pass


def screen_folder(folder: str | os.PathLike[str], engine: Engine, out_csv: str | os.PathLike[str], *,
                  options: ScreenOptions | None = None,
                  cancel: threading.Event | None = None) -> Iterator[ScreenEvent]:
    """Screen every image under ``folder`` with ``engine``; yields progress, ends with :class:`ScreenFinished`.

    Stop early by setting ``cancel`` (checked between batches; the CSV of the
    finished rows is still written) or by closing the generator (finished rows
    stay in the journal for ``resume``). Raises :class:`ResumeMismatch` before any
    work when resuming results of another model, ``OSError`` when the output
    cannot be written.
    """
    opts = options or ScreenOptions()
    folder = Path(folder)
    out_csv = Path(out_csv)
    card = engine.card
    part = opts.part
    journal_path = part.journal if part is not None else journal_path_for(out_csv)
    header = JournalHeader.from_card(card, engine.model_sha256)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder.name or folder} is not a folder")

    device_kind = engine.device_info.kind
    workers = default_workers(device_kind) if opts.workers is None else max(0, int(opts.workers))
    if workers:
        prepare_workers(opts.mp_context)  # overlaps with the folder walk
    prior = _prior_rows(out_csv, journal_path, header, opts.resume_journals) if opts.resume else []
    exclude = [out_csv, journal_path, *opts.resume_journals] + [p for p in (opts.json_path, opts.heatmaps_dir) if p]
    relpaths: list[str] = list(part.relpaths) if part is not None else []
    for rel in (iter_image_files(folder, exclude=exclude) if part is None else ()):
        relpaths.append(rel)
        if len(relpaths) % 500 == 0:
            yield WalkProgress(len(relpaths))
    all_paths = set(relpaths)
    done_paths = {r.path for r in prior} & all_paths
    todo = [p for p in relpaths if p not in done_paths]
    batch_size = max(1, int(opts.batch_size))

    journal = Journal(journal_path, header, resume=opts.resume)
    heat_pool = (ThreadPoolExecutor(max_workers=opts.heatmap_threads or max(1, workers),
                                    thread_name_prefix="cxr-heatmaps") if opts.heatmaps_dir else None)
    pending: collections.deque[_Pending] = collections.deque()
    heat_failed = 0
    batches: Iterator[_Scored | str] | None = None

    def flush(max_pending: int) -> None:
        """Journal finished batches in order; a batch waits until its heatmap files are written."""
        nonlocal heat_failed
        while pending and (len(pending) > max_pending or pending[0].ready()):
            item = pending.popleft()
            for pos, fut in item.jobs:
                err = fut.exception()
                if err is not None:
                    heat_failed += 1
                    item.rows[pos].detail = (f"Heatmap files could not be written ({err.__class__.__name__}); "
                                             "check free space and permissions of the heatmap folder.")
            journal.append(item.rows)

    try:
        if prior:
            in_journal = {r.path for r in read_journal(journal_path)[1]}
            journal.append([r for r in prior if r.path not in in_journal and r.path in all_paths])
        yield ScreenStarted(total=len(relpaths), already_done=len(done_paths), to_do=len(todo), workers=workers,
                            batch_size=batch_size, device=engine.device_label,
                            model=card.display_name)
        for note in list(engine.notes):
            yield ScreenNote(str(note))
        settings = opts.scope_settings or ScopeSettings()
        scope = opts.scope if opts.scope is not None else make_scope_check(settings)
        after_model = opts.after_model
        learned_status = "Learned check: custom hook supplied by the caller."
        if after_model is None:
            learned = LearnedScopeCheck.from_model(engine.extra_tensors, card)
            after_model = learned_after_model(learned, settings)
            learned_status = learned.status
            if learned.enabled and after_model is None:
                learned_status = "Learned check off: switched off in the scope settings."
        yield ScreenNote(learned_status)
        t0 = time.perf_counter()
        done, new = len(done_paths), 0
        cancelled = False
        loader = opts.loader if opts.loader is not None else model_input_loader(card.input_size)
        dataset = ScreeningDataset(folder, todo, card.preprocessing, loader=loader, scope=scope,
                                   show_anyway=opts.show_anyway, time_limit_s=opts.decode_time_limit_s)
        want_cam = opts.heatmaps_dir is not None
        batches = _scored_batches(dataset, engine, workers, batch_size, opts, want_cam, after_model)
        for scored in batches:
            if isinstance(scored, str):
                yield ScreenNote(scored)
                continue
            jobs = _submit_heatmaps(heat_pool, folder, opts, scored) if heat_pool is not None else []
            pending.append(_Pending(scored.rows, jobs))
            flush(max_pending=1)
            done += len(scored.rows)
            new += len(scored.rows)
            elapsed = time.perf_counter() - t0
            rate = new / elapsed if elapsed > 0 else 0.0
            yield RowsDone(rows=scored.rows, done=done, total=len(relpaths), elapsed_s=elapsed, rate=rate,
                           eta_s=(len(relpaths) - done) / rate if rate > 0 else None)
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
        flush(max_pending=0)
        elapsed = time.perf_counter() - t0
        journal.close()
        rows = sorted_rows(r for r in iter_unique(read_journal(journal_path)[1]) if r.path in all_paths)
        rate = new / elapsed if elapsed > 0 else 0.0
        summary = summarise(rows)
        summary.update(elapsed_s=round(elapsed, 3), files_per_s=round(rate, 3), cancelled=cancelled,
                       input_check={"learned_check": learned_status, "settings": settings.to_dict(),
                                    "show_anyway": bool(opts.show_anyway)})
        if part is None:  # a part's rows are merged and written by the caller
            write_csv(out_csv, rows, card.classes)
            if opts.json_path:
                write_json(opts.json_path, rows, header, summary)
            if not cancelled and len(rows) == len(all_paths):
                journal_path.unlink(missing_ok=True)  # the CSV now holds every row
        yield ScreenFinished(out_csv=out_csv, json_path=opts.json_path, summary=summary, elapsed_s=elapsed,
                             rate=rate, cancelled=cancelled, rows_written=len(rows), heatmaps_failed=heat_failed,
                             rows=rows)
    finally:
        # Closed early (GeneratorExit) or failed: stop the workers, keep every row whose heatmaps are complete.
        if batches is not None:
            batches.close()  # type: ignore[attr-defined]
        if heat_pool is not None:
            heat_pool.shutdown(wait=True, cancel_futures=True)
        try:
            while pending and pending[0].ready() and not any(f.cancelled() for _, f in pending[0].jobs):
                flush(max_pending=len(pending) - 1)
        except Exception:  # best effort on the way out; the journal stays consistent
            log.warning("could not journal the last batch")
        journal.close()


def _prior_rows(out_csv: Path, journal_path: Path, header: JournalHeader,
                others: Sequence[Path] = ()) -> list[ResultRow]:
    """Rows of an earlier run of the same model: the finished CSV, then the journals (the own one last: it wins)."""
    rows: list[ResultRow] = []
    if out_csv.exists():
        try:
            classes, csv_rows = read_results_csv(out_csv)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise ResumeMismatch(f"{out_csv.name} cannot be resumed: {exc}. Choose another output file, or "
                                 "start over without resume.") from None
        if classes != header.classes or any(r.model != header.model for r in csv_rows):
            raise ResumeMismatch(f"{out_csv.name} holds results of another model; use the same model, "
                                 "or start over without resume.")
        rows.extend(csv_rows)
    for path in [*others, journal_path]:
        if not path.exists():
            continue
        jheader, jrows = read_journal(path)
        if jheader is not None:
            if jheader.model_sha256 != header.model_sha256 or jheader.classes != header.classes:
                raise ResumeMismatch(f"{path.name} was written by model {jheader.model!r}; use the "
                                     "same model, or start over without resume.")
            rows.extend(jrows)
    return [r for r in iter_unique(rows) if not is_legacy_learned_refusal(r)]  # screened again: scored now


def ramp_batches(n: int, batch_size: int) -> list[list[int]]:
    """Positions 0..n-1 in batches of 1, 2, 4, ... then ``batch_size`` (the first rows come back soonest)."""
    out, i, size = [], 0, 1
    batch_size = max(1, int(batch_size))
    while i < n:
        k = min(size, batch_size, n - i)
        out.append(list(range(i, i + k)))
        i += k
        size *= 2
    return out


def _make_loader(dataset: Any, workers: int, batch_size: int, opts: ScreenOptions, pin: bool) -> DataLoader:
    kwargs: dict[str, Any] = {}
    if workers > 0:
        import multiprocessing as mp

        method = opts.mp_context or default_mp_context()
        ctx = mp.get_context(method)
        if method == "forkserver":
            # Import torch and the decoders once in the fork server: workers start in milliseconds.
            ctx.set_forkserver_preload(_PRELOAD)
        kwargs.update(multiprocessing_context=ctx, prefetch_factor=max(1, opts.prefetch_factor),
                      worker_init_fn=functools.partial(worker_init, parent_pid=os.getpid()),
                      persistent_workers=False)  # one pass over the folder
    if opts.ramp_batches and batch_size > 1:
        return DataLoader(dataset, batch_sampler=ramp_batches(len(dataset), batch_size), num_workers=workers,
                          collate_fn=collate_decoded, pin_memory=pin, **kwargs)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_decoded, pin_memory=pin, drop_last=False, **kwargs)


def _iterate(loader: DataLoader) -> Iterator[DecodedBatch]:
    """Batches in order; a dead worker process becomes :class:`_WorkerCrashed`."""
    it = iter(loader)
    try:
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except RuntimeError as exc:
                text = str(exc)
                if "DataLoader worker" in text and ("exited unexpectedly" in text or "killed by signal" in text):
                    raise _WorkerCrashed(text) from None
                raise
            except (ConnectionError, EOFError) as exc:
                # A batch sent just before its worker died: its shared-memory tensor can no longer be fetched.
                raise _WorkerCrashed(exc.__class__.__name__) from None
            yield batch
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def _scored_batches(dataset: ScreeningDataset, engine: Engine, workers: int, batch_size: int,
                    opts: ScreenOptions, want_cam: bool,
                    after_model: Callable[[np.ndarray], Any] | None = None) -> Iterator[_Scored | str]:
    """Scored batches in order (and notes as ``str``), recovering from crashed decode workers.

    After a crash, the files that may have been in flight are decoded by one
    worker, one at a time; a file that kills that worker twice gets an ``error``
    row and screening goes on (a single chance failure costs nothing). A worker
    stopped by the decode time limit names its file (:class:`DecodeClock`): that
    file gets an ``error`` row at once and the others go on as before.
    """
    pin = engine.device_info.kind == "cuda"
    queue = list(range(len(dataset)))
    isolate = 0  # > 0: the next `isolate` items are decoded one by one by a single worker
    suspect = False  # queue[0] crashed a single worker once
    while queue:
        if suspect:
            seg, w, bs = queue[:1], 1, 1
        elif isolate > 0:
            seg, w, bs = queue[:isolate], 1, 1
        else:
            seg, w, bs = queue, workers, batch_size
        consumed = 0
        clock = _clock_for(dataset, w, opts)
        try:
            for batch in _iterate(_make_loader(Subset(dataset, seg), w, bs, opts, pin)):
                consumed += len(batch.items)
                yield _score(batch, dataset, engine, want_cam, after_model, opts.show_anyway)
        except _WorkerCrashed:
            queue = queue[consumed:]
            late = [i for i in (clock.overdue() if clock is not None else []) if i in queue]
            if late:  # the time limit stopped a worker: its file is known, the others are innocent
                for i in late:
                    yield _Scored([_timeout_row(dataset, i, engine, clock.limit_s)], [], None)  # type: ignore[union-attr]
                    yield (f"Decoding {Path(dataset.relpaths[i]).name} took longer than "
                           f"{_seconds(clock.limit_s)} s; it is listed as an error and screening goes on.")  # type: ignore[union-attr]
                queue = [i for i in queue if i not in late]
                if isolate > 0:
                    isolate = max(0, isolate - consumed - len(late))
                suspect = False
                continue
            log.warning("a decode worker process stopped unexpectedly")
            if isolate > 0:
                isolate = max(0, isolate - consumed)
            if suspect:
                bad, queue = queue[0], queue[1:]
                suspect, isolate = False, max(0, isolate - 1)
                name = Path(dataset.relpaths[bad]).name
                yield _Scored([_crash_row(dataset, bad, engine)], [], None)
                yield (f"The image decoder stopped unexpectedly on {name}; it is listed as an error "
                       "and screening goes on.")
            elif isolate > 0:
                suspect = True
            else:
                isolate = w * max(1, opts.prefetch_factor) * bs + bs  # everything that was in flight
            continue
        finally:
            if clock is not None:
                clock.close()
                dataset.clock_path = None
        queue = queue[len(seg):]
        if suspect:
            suspect, isolate = False, max(0, isolate - 1)  # decoded fine alone: not the culprit
        else:
            isolate = 0


def _clock_for(dataset: ScreeningDataset, workers: int, opts: ScreenOptions) -> DecodeClock | None:
    """A fresh decode clock for the next DataLoader's workers (None: no limit, or decoding in-process)."""
    limit = opts.decode_time_limit_s
    if workers <= 0 or not limit or limit <= 0:
        return None
    import tempfile

    clock = DecodeClock(float(limit), workers, tempfile.gettempdir())
    dataset.clock_path = clock.path
    return clock


def _seconds(value: float) -> str:
    return f"{value:g}"


def _timeout_row(dataset: ScreeningDataset, index: int, engine: Engine, limit_s: float) -> ResultRow:
    rel = dataset.relpaths[index]
    return ResultRow(path=rel, status=STATUS_ERROR, reason=Reason.UNREADABLE.value,
                     detail=f"{Path(rel).name}: decoding took longer than {_seconds(limit_s)} s, so it was "
                            "stopped (the file may be damaged or far larger than it looks); open it in another "
                            "viewer, or screen it alone with a longer --decode-time-limit.",
                     model=engine.card.display_name)


def _crash_row(dataset: ScreeningDataset, index: int, engine: Engine) -> ResultRow:
    rel = dataset.relpaths[index]
    return ResultRow(path=rel, status=STATUS_ERROR, reason=Reason.UNREADABLE.value,
                     detail=f"{Path(rel).name}: the image decoder stopped unexpectedly on this file (it may be "
                            "damaged or use a variant this app cannot read); open it in another viewer.",
                     model=engine.card.display_name)


def _score(batch: DecodedBatch, dataset: ScreeningDataset, engine: Engine, want_cam: bool,
           after_model: Callable[[np.ndarray], Any] | None = None, show_anyway: bool = False) -> _Scored:
    """Rows for a decoded batch; the good inputs go through the model in one ``run_batch`` call.

    ``after_model`` (the learned input check) sees each image's pooled features; a
    :class:`~cxr_desktop.scope.Caution` it returns is kept on the row, which stays scored
    (never hidden). Any other answer (a caller's own check) makes the row ``out_of_scope``.
    An out-of-scope row's score is withheld unless ``show_anyway`` (then it is filled in
    and the row stays ``out_of_scope``).
    """
    from cxr_desktop.inference.engine import Prediction
    from cxr_desktop.scope import Caution

    card = engine.card
    rows = [ResultRow(path=dataset.relpaths[it.index],
                      status=STATUS_OUT_OF_SCOPE if it.out_of_scope else it.status, reason=it.reason,
                      detail=it.detail, model=card.display_name) for it in batch.items]
    cams = None
    if batch.inputs is not None:
        k = len(batch.ok_positions)
        x = batch.inputs.numpy()  # pinned host memory on CUDA; the engine moves it
        out = engine.run_batch(x, cam=want_cam, cam_classes=[card.positive_index] * k if want_cam else None)
        cams = out.cams
        device = engine.device_label
        for j, pos in enumerate(batch.ok_positions):
            p = Prediction.from_probs(out.probabilities[j], card, device)
            r = rows[pos]
            why = after_model(out.pooled[j]) if after_model is not None else None
            if isinstance(why, Caution):
                r.caution, why = why, None
            if why:
                codes, message = reason_parts(why)
                before = batch.items[pos].scope_message  # flagged before the model too (show anyway)
                if before:
                    codes = ";".join(c for c in (r.reason, codes) if c)
                    message = " | ".join(m.rstrip(".") for m in (before, message) if m)
                r.detail = out_of_scope_detail(Path(r.path).name, message, scored=show_anyway)
                r.status, r.reason = STATUS_OUT_OF_SCOPE, codes
            if r.status == STATUS_OK or show_anyway:
                r.label, r.score, r.above_threshold, r.probabilities = (p.label, p.score, p.above_threshold,
                                                                        p.probabilities)
        batch.inputs = None
    keep = [j for j, pos in enumerate(batch.ok_positions) if rows[pos].score is not None]
    if cams is not None and len(keep) != len(batch.ok_positions):  # no heatmap for a withheld score
        cams = cams[keep]
    ok_positions = [batch.ok_positions[j] for j in keep]
    return _Scored(rows, ok_positions, cams)


def _submit_heatmaps(pool: ThreadPoolExecutor, folder: Path, opts: ScreenOptions,
                     scored: _Scored) -> list[tuple[int, Future]]:
    if scored.cams is None:
        return []
    return [(pos, pool.submit(_write_heatmap, folder, scored.rows[pos].path, opts.heatmaps_dir,
                              np.array(scored.cams[j]), opts.loader or default_loader,
                              bool(scored.rows[pos].above_threshold), scored.rows[pos].score))
            for j, pos in enumerate(scored.ok_positions)]


def _write_heatmap(folder: Path, relpath: str, out_dir: Path, cam: np.ndarray, loader: ImageLoader,
                   above_threshold: bool = True, score: float | None = None) -> None:
    """Re-decode the image in full (only small maps travel between steps, so memory stays flat); write both PNGs."""
    from cxr_desktop.imaging.display import to_uint8
    from cxr_desktop.inference.cam import to_image_geometry

    image = loader(str(folder / relpath))
    heat = to_image_geometry(cam, image.rows, image.columns)
    write_heatmap_files(out_dir, relpath, heat, to_uint8(image), above_threshold=above_threshold, score=score)
