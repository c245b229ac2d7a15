"""``cxr-screen``: screen a folder of studies and write a ranked worklist.

    cxr-screen FOLDER --out results.csv [--model FILE] [--heatmaps DIR]
               [--device auto|cpu|cuda] [--batch-size N] [--workers N] [--resume] [--json]
               [--decode-time-limit SECONDS]
               [--allow-secondary-capture] [--min-age N] [--disable-rule CODE ...] [--show-anyway]

One CSV row per input file (sorted by score, highest first); ``--json`` also
writes ``results.json`` beside it. Images that are not adult frontal chest
radiographs get status ``out_of_scope``, the rule codes in ``reason`` and the
sentences in ``detail``, and no score unless ``--show-anyway``. Progress and a
summary go to stderr; library warnings and decoder chatter do not. Every row is
journalled (fsync) as soon as it is scored, so an interrupted run loses at most
the batch in flight; ``--resume`` continues it. Exit codes: see :data:`EXIT_CODES_HELP`.

Several processes (``torchrun --nproc-per-node N -m cxr_desktop.cli.screen FOLDER --out results.csv``)
share the files: each screens its shard into its own journal, on its own GPU (``cuda:LOCAL_RANK``, NCCL)
or on the CPU (Gloo), and process 0 writes the one CSV, the same as a 1-process run (see
:mod:`cxr_desktop.screening.distributed`). Only process 0 prints progress and the summary; the others
print only errors. ``--resume`` works with any number of processes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, TextIO

from cxr_desktop import DECISION_AID_NOTICE
from cxr_desktop.cli.arguments import error_line, whole_number
from cxr_desktop.distributed import SINGLE, DistributedError, Session
from cxr_desktop.durations import clock

if TYPE_CHECKING:
    from cxr_desktop.scope import ScopeSettings
    from cxr_desktop.screening.runner import ScreenFinished

EXIT_OK = 0
EXIT_STOPPED = 1  # an unexpected failure (a crash report without patient data is saved)
EXIT_USAGE = 2  # argparse's code for usage errors
EXIT_MODEL = 3
EXIT_IO = 74  # sysexits.h EX_IOERR: the results cannot be written (read-only, disk full, permissions)
EXIT_PEER_LOST = 75  # sysexits.h EX_TEMPFAIL: another process of a torchrun job stopped; --resume continues
EXIT_INTERRUPTED = 130  # 128 + SIGINT (Ctrl-C)
EXIT_TERMINATED = 143  # 128 + SIGTERM

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}    done (files that could not be read are rows with status error, not failures)
  {EXIT_STOPPED}    unexpected failure (a crash report without patient data is saved); rerun with --resume
  {EXIT_USAGE}    usage error: bad arguments, folder or output name, no model, --resume of another model's results
  {EXIT_MODEL}    the model file cannot be loaded
  {EXIT_IO}   the results cannot be written (read-only folder, disk full, permissions); rows already
       journalled are kept (the message says how many) and --resume continues after the cause is fixed
  {EXIT_PEER_LOST}   (torchrun) another process of the job stopped answering; every journal is kept and
       the same command with --resume continues
  {EXIT_INTERRUPTED}  stopped by Ctrl-C (SIGINT); finished rows are kept, --resume continues
  {EXIT_TERMINATED}  stopped by SIGTERM; finished rows are kept, --resume continues"""


class _Stopped(BaseException):
    """Raised in the main thread by the SIGTERM / SIGINT handler (like KeyboardInterrupt)."""

    def __init__(self, signame: str, code: int):
        super().__init__(signame)
        self.signame, self.code = signame, code


_positive_int = whole_number(1)
_non_negative_int = whole_number(0)


def _parser() -> argparse.ArgumentParser:
    from cxr_desktop.screening.runner import default_workers

    ap = argparse.ArgumentParser(
        prog="cxr-screen",
        description="Screen every chest X-ray under FOLDER with the decision-aid model and write a worklist "
                    "ranked by score. " + DECISION_AID_NOTICE,
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("folder", type=Path, help="folder to screen (searched recursively: PNG, JPEG, TIFF, DICOM)")
    ap.add_argument("--out", type=Path, required=True, help="CSV file to write (one row per input file)")
    ap.add_argument("--model", type=Path, help="model file (.safetensors); default: the bundled model")
    ap.add_argument("--heatmaps", type=Path, metavar="DIR",
                    help="also write, per image, the Grad-CAM heatmap for the positive class (16-bit grey PNG, "
                         "same size as the image) and an overlay PNG under DIR, mirroring the folder")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model runs")
    ap.add_argument("--batch-size", type=_positive_int, default=16, help="images per model call (default 16)")
    ap.add_argument("--workers", type=_non_negative_int, default=None,
                    help=f"decode worker processes (default here: {default_workers('cpu')} on the CPU, "
                         f"{default_workers('cuda')} with a GPU; 0 = decode in this process)")
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted run with the same --out and --model (done files are skipped)")
    ap.add_argument("--json", action="store_true", help="also write the results as JSON beside the CSV")
    ap.add_argument("--dicom-out", type=Path, metavar="DIR",
                    help="also write, for each scored or out-of-scope DICOM input, a Secondary Capture (image, "
                         "heatmap, caption) and a Structured Report (TID 1500) under DIR, mirroring the folder: "
                         "<name>.sc.dcm and <name>.sr.dcm, in new series of the source's study")
    ap.add_argument("--decode-time-limit", type=_non_negative_float, default=None, metavar="SECONDS",
                    help=f"stop decoding a file after SECONDS (its row says so; default {_default_limit():g}; "
                         "0 = no limit; needs decode workers)")
    scope = ap.add_argument_group(
        "input safety",
        "Images that are not adult frontal chest radiographs (other modalities, lateral views, children, colour "
        "or inverted images, tiny or extreme-aspect images) get status out_of_scope with the rule codes in "
        "'reason' and the sentences in 'detail', and no score. Images unlike the model's training data are "
        "scored and marked in the 'caution' column (unusual image - interpret with care; rule code "
        "unlike_training_data), ranked by their score like every scored image.")
    scope.add_argument("--allow-secondary-capture", action="store_true",
                       help="accept DICOM secondary captures (modality OT/SC: scanned films, exports)")
    scope.add_argument("--min-age", type=_non_negative_float, default=None, metavar="N",
                       help=f"youngest patient age in years the model may score (default {_default_min_age():g})")
    scope.add_argument("--disable-rule", action="append", default=[], metavar="CODE", choices=_rule_codes(),
                       help="switch one input-safety rule off (repeatable); CODE is one of: "
                            + ", ".join(_rule_codes()))
    scope.add_argument("--show-anyway", action="store_true",
                       help="also score out-of-scope images: their rows keep status out_of_scope and the reason, "
                            "and the score is not reliable for them")
    return ap


def _default_limit() -> float:
    from cxr_desktop.screening.runner import DEFAULT_DECODE_TIME_LIMIT_S

    return DEFAULT_DECODE_TIME_LIMIT_S


def _rule_codes() -> list[str]:
    from cxr_desktop.scope import RULE_CODES

    return list(RULE_CODES)


def _default_min_age() -> float:
    from cxr_desktop.scope import ScopeSettings

    return ScopeSettings().min_age_years


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError("must be 0 or more")
    return v


def scope_settings_from_args(args: argparse.Namespace) -> "ScopeSettings":
    """The :class:`ScopeSettings` the input-safety options ask for."""
    from cxr_desktop.scope import RULE_CODES, ScopeSettings

    base = ScopeSettings()
    return ScopeSettings(
        allow_secondary_capture=bool(args.allow_secondary_capture),
        min_age_years=base.min_age_years if args.min_age is None else float(args.min_age),
        min_side=base.min_side, max_aspect=base.max_aspect, max_colour_fraction=base.max_colour_fraction,
        enabled_rules=frozenset(RULE_CODES) - set(args.disable_rule or ()),
    )


class _Progress:
    """One status line on stderr: rewritten in place on a terminal, every few seconds otherwise."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last = 0.0
        self._shown = False

    def update(self, done: int, total: int, rate: float, eta: float | None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        pct = 100.0 * done / total if total else 100.0
        line = f"{done}/{total} files ({pct:5.1f}%)  {rate:6.1f} img/s  ETA {clock(eta)}"
        if self.tty:
            self.stream.write("\r" + line.ljust(70))
            self._shown = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end_line(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\n")
            self._shown = False


def quiet_library_output() -> None:
    """Keep stderr for this tool's own lines: Python warnings and library log records go nowhere.

    Decoders and numpy warn about damaged files; each file's outcome is already its row.
    (Decode workers silence their own stderr, see ``screening.dataset.quiet_worker_output``.)
    """
    import logging

    logging.captureWarnings(True)
    wlog = logging.getLogger("py.warnings")
    wlog.propagate = False
    if not wlog.handlers:
        wlog.addHandler(logging.NullHandler())
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())  # no "last resort" printing of library records


def _install_stop_handlers() -> dict[int, object]:
    """SIGTERM and SIGINT raise :class:`_Stopped` in the main thread (once; a second signal waits)."""
    import signal

    fired: list[str] = []

    def handler(signum: int, _frame: object) -> None:
        if fired:
            return  # already stopping: let the clean-up finish
        name = signal.Signals(signum).name
        fired.append(name)
        raise _Stopped(name, EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED)

    previous: dict[int, object] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (embedded use): keep the defaults
            pass
    return previous


def _restore_handlers(previous: dict[int, object]) -> None:
    import signal

    for sig, h in previous.items():
        signal.signal(sig, h)  # type: ignore[arg-type]


class _Job:
    """This process's place in a torchrun job (one process until it joins) and where it journals its rows."""

    def __init__(self, out: Path):
        self.out = out
        self.session: Session = SINGLE

    def prog(self) -> str:
        s = self.session
        return f"cxr-screen (process {s.rank + 1} of {s.world_size})" if s.active else "cxr-screen"

    def journal(self) -> Path:
        from cxr_desktop.screening.distributed import shard_journal_path

        return shard_journal_path(self.out, self.session)


class _Silent:
    """Where the progress and summary of a process other than process 0 go."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _kept_rows(journal: Path) -> tuple[int, Path]:
    """How many finished rows an interrupted run leaves (the journal's valid rows) and where."""
    from cxr_desktop.screening.results import iter_unique, read_journal

    try:
        return sum(1 for _ in iter_unique(read_journal(journal)[1])), journal
    except (OSError, ValueError):
        return 0, journal


def _writable_folder(folder: Path) -> str:
    """'' when a file can be created in ``folder``, else why not (strerror)."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".cxr-screen-", suffix=".probe"):
            pass
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__
    return ""


def main(argv: Sequence[str] | None = None, *, stderr: TextIO | None = None) -> int:
    """Run ``cxr-screen``; returns the exit code."""
    err = stderr or sys.stderr
    args = _parser().parse_args(argv)
    quiet_library_output()
    previous = _install_stop_handlers()
    job = _Job(args.out)
    fail = error_line(err, job.prog)
    try:
        return _run(args, err, fail, job)
    except _Stopped as stop:
        kept, journal = _kept_rows(job.journal())
        what = f"{kept} rows kept in {journal.name}" if kept else "no rows were written yet"
        peers = (" (torchrun stops every process of the job when it is interrupted or when one process fails; "
                 "its summary names a failed process)" if job.session.active else "")
        return fail(stop.code, f"stopped by {stop.signame}{peers}; {what}; resume with --resume.")
    except DistributedError as exc:
        kept, journal = _kept_rows(job.journal())
        what = f" {kept} rows of this process are kept in {journal.name}." if kept else ""
        return fail(EXIT_PEER_LOST, f"{exc}{what}")
    except Exception as exc:  # an unexpected failure: one line here, the details in a redacted crash report
        from cxr_desktop.crash_log import write_crash_log

        report = write_crash_log(type(exc), exc, exc.__traceback__, messages=False)
        kept, journal = _kept_rows(job.journal())
        what = f"{kept} finished rows are kept in {journal.name}" if kept else "no rows were written"
        where = f"a report without patient data is in {report}" if report else "no crash report could be saved"
        return fail(EXIT_STOPPED, f"unexpected failure ({exc.__class__.__name__}); {what}; {where}. Rerun "
                                  "with --resume.")
    finally:
        job.session.close()
        _restore_handlers(previous)


def _run(args: argparse.Namespace, err: TextIO, fail, job: _Job) -> int:  # type: ignore[no-untyped-def]
    if not args.folder.is_dir():
        return fail(EXIT_USAGE, f"{args.folder} is not a folder; give the folder that holds the images.")
    out = args.out
    if out.is_dir():
        return fail(EXIT_USAGE, f"--out {out} is a folder; give a file name such as results.csv.")
    if not out.parent.exists():
        return fail(EXIT_USAGE, f"the folder for --out ({out.parent}) does not exist; create it first.")
    if args.heatmaps is not None and args.heatmaps.exists() and not args.heatmaps.is_dir():
        return fail(EXIT_USAGE, f"--heatmaps {args.heatmaps} is a file; give a folder.")
    if args.dicom_out is not None and args.dicom_out.exists() and not args.dicom_out.is_dir():
        return fail(EXIT_USAGE, f"--dicom-out {args.dicom_out} is a file; give a folder.")
    why = _writable_folder(out.parent)
    if why:
        return fail(EXIT_IO, f"cannot write in the folder of --out ({why}); choose a writable folder. "
                             "No rows were written.")

    from cxr_desktop.paths import default_model_path

    model_path = args.model or default_model_path()
    if not Path(model_path).is_file():
        if args.model is None:
            return fail(EXIT_USAGE, "no bundled model was found; pass the model file with --model FILE.")
        return fail(EXIT_USAGE, f"the model file {Path(model_path).name} does not exist; check --model.")

    from cxr_desktop.distributed import join
    from cxr_desktop.errors import CxrError
    from cxr_desktop.inference.device import select_device
    from cxr_desktop.inference.engine import EngineOptions, load_engine
    from cxr_desktop.screening.runner import DEFAULT_DECODE_TIME_LIMIT_S, prepare_workers

    session = job.session = join(cuda=select_device(args.device).kind == "cuda")  # SINGLE without torchrun
    if not session.is_main:
        err = _Silent()  # type: ignore[assignment] - process 0 alone reports; errors still go through fail
    if args.workers != 0:
        prepare_workers()  # the decode workers' fork server starts while the model loads

    code, message, unexpected = EXIT_OK, "", None
    try:
        engine = load_engine(model_path, options=EngineOptions(device=args.device, max_batch=args.batch_size))
    except CxrError as exc:
        code, message = EXIT_MODEL, f"the model cannot be loaded: {exc}"
    except OSError as exc:
        code, message = EXIT_MODEL, f"the model file cannot be read ({exc.__class__.__name__}); check --model."
    except Exception as exc:  # noqa: BLE001 - reported by main (crash report) once every process knows
        code, unexpected = EXIT_STOPPED, exc
    others = max(session.all_gather(code, "loading the model"))  # every process, whatever happened above
    if unexpected is not None:
        raise unexpected
    if code:
        return fail(code, message)
    if others:
        return others  # the process that failed said why

    from cxr_desktop.screening.distributed import screen_folder_sharded
    from cxr_desktop.screening.runner import (
        ResumeMismatch, RowsDone, ScreenFinished, ScreenNote, ScreenOptions, ScreenStarted, WalkProgress,
    )

    json_path = out.with_suffix(".json") if args.json else None
    if json_path is not None and json_path == out:
        json_path = out.with_name(out.name + ".json")
    limit = DEFAULT_DECODE_TIME_LIMIT_S if args.decode_time_limit is None else args.decode_time_limit
    opts = ScreenOptions(batch_size=args.batch_size, workers=args.workers, heatmaps_dir=args.heatmaps,
                         json_path=json_path, resume=args.resume, scope_settings=scope_settings_from_args(args),
                         show_anyway=args.show_anyway, decode_time_limit_s=limit or None)
    progress = _Progress(err)
    err.write(f"cxr-screen: {DECISION_AID_NOTICE}\n")
    finished: ScreenFinished | None = None
    gen = screen_folder_sharded(args.folder, engine, out, session, options=opts)
    try:
        for ev in gen:
            if isinstance(ev, WalkProgress):
                progress.update(0, ev.found, 0.0, None)
            elif isinstance(ev, ScreenStarted):
                err.write(f"cxr-screen: {ev.total} files ({ev.already_done} already done, {ev.to_do} to do); "
                          f"model {ev.model} on {ev.device}; {ev.workers} decode workers, batch {ev.batch_size}"
                          + (f"; {session.world_size} processes" if session.active else "") + "\n")
            elif isinstance(ev, ScreenNote):
                progress.end_line()
                err.write(f"cxr-screen: note: {ev.message}\n")
            elif isinstance(ev, RowsDone):
                progress.update(ev.done, ev.total, ev.rate, ev.eta_s, force=ev.done == ev.total)
            elif isinstance(ev, ScreenFinished):
                finished = ev
    except ResumeMismatch as exc:  # every process finds it: process 0 says it
        return fail(EXIT_USAGE, str(exc)) if session.is_main else EXIT_USAGE
    except (KeyboardInterrupt, _Stopped) as exc:
        gen.close()  # stops the workers; every scored row is already in the journal
        progress.end_line()
        if isinstance(exc, KeyboardInterrupt):
            exc = _Stopped("SIGINT", EXIT_INTERRUPTED)
        raise exc from None
    except OSError as exc:
        gen.close()
        progress.end_line()
        kept, journal = _kept_rows(job.journal())
        name = Path(exc.filename).name if isinstance(exc.filename, str) else out.name
        what = (f"{kept} finished rows are kept in {journal.name}; free space (or fix the permissions) and "
                "rerun with --resume." if kept else "No rows were written.")
        return fail(EXIT_IO, f"cannot write the results ({exc.strerror or exc.__class__.__name__}: {name}); "
                             f"check --out and free disk space. {what}")
    progress.end_line()
    if finished is None:  # pragma: no cover - the generator always finishes with ScreenFinished
        return fail(EXIT_STOPPED, "screening stopped early; rerun with --resume.")
    _print_summary(err, finished)
    if args.dicom_out is not None and session.is_main:
        _write_dicom_results(args, engine, finished, err)
    return EXIT_OK


def _write_dicom_results(args: argparse.Namespace, engine: object, fin: "ScreenFinished", err: TextIO) -> None:
    """``--dicom-out``: SC + SR per DICOM row (see :mod:`cxr_desktop.dicom_results`); failures are counted."""
    from cxr_desktop.dicom_results import export_screening_results
    from cxr_desktop.screening.results import read_results_csv

    _, rows = read_results_csv(fin.out_csv)
    written = failed = 0
    for res in export_screening_results(args.folder, rows, engine, args.dicom_out):
        if res.error:
            failed += 1
            err.write(f"cxr-screen: note: {res.error}\n")
        else:
            written += 1
    err.write(f"  DICOM results (SC + SR): {written} written to {args.dicom_out}"
              + (f", {failed} not written (see the notes above)" if failed else "") + "\n")


def _print_summary(err: TextIO, fin: "ScreenFinished") -> None:
    s = fin.summary
    status = ", ".join(f"{k} {v}" for k, v in sorted(s["status"].items())) or "none"
    labels = ", ".join(f"{k} {v}" for k, v in sorted(s["labels"].items())) or "none"
    err.write(
        f"cxr-screen: done: {s['files']} files in {clock(fin.elapsed_s)} ({fin.rate:.1f} img/s this run)\n"
        f"  status: {status}\n  predicted label: {labels}\n  above threshold: {s['above_threshold']}\n"
        f"  with a caution (unusual image, scored): {s.get('cautioned', 0)}\n"
        f"  results: {fin.out_csv}\n"
    )
    if fin.json_path:
        err.write(f"  JSON: {fin.json_path}\n")
    if fin.heatmaps_failed:
        err.write(f"  heatmaps not written for {fin.heatmaps_failed} files (see the detail column)\n")


if __name__ == "__main__":
    raise SystemExit(main())
