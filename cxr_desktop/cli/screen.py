"""``cxr-screen``: screen a folder of studies and write a ranked worklist.

    cxr-screen FOLDER --out results.csv [--model FILE] [--heatmaps DIR]
               [--device auto|cpu|cuda] [--batch-size N] [--workers N] [--resume] [--json]
               [--allow-secondary-capture] [--min-age N] [--disable-rule CODE ...] [--show-anyway]

One CSV row per input file (sorted by score, highest first); ``--json`` also
writes ``results.json`` beside it. Images that are not adult frontal chest
radiographs get status ``out_of_scope``, the rule codes in ``reason`` and the
sentences in ``detail``, and no score unless ``--show-anyway``. Progress and a summary go to stderr. Exit
codes: 0 done (files that could not be read are rows, not failures), 1 the run
stopped (interrupted, or an unexpected failure; rerun with --resume), 2 usage
error (bad folder or output, no model given and no bundled one, resume of
another model's results), 3 the model file cannot be loaded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, TextIO

from cxr_desktop import DECISION_AID_NOTICE

if TYPE_CHECKING:
    from cxr_desktop.scope import ScopeSettings
    from cxr_desktop.screening.runner import ScreenFinished

EXIT_OK = 0
EXIT_STOPPED = 1
EXIT_USAGE = 2
EXIT_MODEL = 3


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return v


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return v


def _parser() -> argparse.ArgumentParser:
    from cxr_desktop.screening.runner import default_workers

    ap = argparse.ArgumentParser(
        prog="cxr-screen",
        description="Screen every chest X-ray under FOLDER with the decision-aid model and write a worklist "
                    "ranked by score. " + DECISION_AID_NOTICE,
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
    scope = ap.add_argument_group(
        "input safety",
        "Images that are not adult frontal chest radiographs (other modalities, lateral views, children, colour "
        "or inverted images, tiny or extreme-aspect images, images unlike the model's training data) get status "
        "out_of_scope with the rule codes in 'reason' and the sentences in 'detail', and no score.")
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


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


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
        line = f"{done}/{total} files ({pct:5.1f}%)  {rate:6.1f} img/s  ETA {_fmt_duration(eta)}"
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


def main(argv: Sequence[str] | None = None, *, stderr: TextIO | None = None) -> int:
    """Run ``cxr-screen``; returns the exit code."""
    err = stderr or sys.stderr
    args = _parser().parse_args(argv)

    def fail(code: int, message: str) -> int:
        err.write(f"cxr-screen: {message}\n")
        return code

    if not args.folder.is_dir():
        return fail(EXIT_USAGE, f"{args.folder} is not a folder; give the folder that holds the images.")
    out = args.out
    if out.is_dir():
        return fail(EXIT_USAGE, f"--out {out} is a folder; give a file name such as results.csv.")
    if not out.parent.exists():
        return fail(EXIT_USAGE, f"the folder for --out ({out.parent}) does not exist; create it first.")
    if args.heatmaps is not None and args.heatmaps.exists() and not args.heatmaps.is_dir():
        return fail(EXIT_USAGE, f"--heatmaps {args.heatmaps} is a file; give a folder.")

    from cxr_desktop.paths import default_model_path

    model_path = args.model or default_model_path()
    if not Path(model_path).is_file():
        if args.model is None:
            return fail(EXIT_USAGE, "no bundled model was found; pass the model file with --model FILE.")
        return fail(EXIT_USAGE, f"the model file {Path(model_path).name} does not exist; check --model.")

    from cxr_desktop.errors import CxrError
    from cxr_desktop.inference.engine import EngineOptions, load_engine
    from cxr_desktop.screening.runner import prepare_workers

    if args.workers != 0:
        prepare_workers()  # the decode workers' fork server starts while the model loads

    try:
        engine = load_engine(model_path, options=EngineOptions(device=args.device, max_batch=args.batch_size))
    except CxrError as exc:
        return fail(EXIT_MODEL, f"the model cannot be loaded: {exc}")
    except OSError as exc:
        return fail(EXIT_MODEL, f"the model file cannot be read ({exc.__class__.__name__}); check --model.")

    from cxr_desktop.screening.runner import (
        ResumeMismatch, RowsDone, ScreenFinished, ScreenNote, ScreenOptions, ScreenStarted, WalkProgress,
        screen_folder,
    )

    json_path = out.with_suffix(".json") if args.json else None
    if json_path is not None and json_path == out:
        json_path = out.with_name(out.name + ".json")
    opts = ScreenOptions(batch_size=args.batch_size, workers=args.workers, heatmaps_dir=args.heatmaps,
                         json_path=json_path, resume=args.resume, scope_settings=scope_settings_from_args(args),
                         show_anyway=args.show_anyway)
    progress = _Progress(err)
    err.write(f"cxr-screen: {DECISION_AID_NOTICE}\n")
    finished: ScreenFinished | None = None
    gen = screen_folder(args.folder, engine, out, options=opts)
    try:
        for ev in gen:
            if isinstance(ev, WalkProgress):
                progress.update(0, ev.found, 0.0, None)
            elif isinstance(ev, ScreenStarted):
                err.write(f"cxr-screen: {ev.total} files ({ev.already_done} already done, {ev.to_do} to do); "
                          f"model {ev.model} on {ev.device}; {ev.workers} decode workers, batch {ev.batch_size}\n")
            elif isinstance(ev, ScreenNote):
                progress.end_line()
                err.write(f"cxr-screen: note: {ev.message}\n")
            elif isinstance(ev, RowsDone):
                progress.update(ev.done, ev.total, ev.rate, ev.eta_s, force=ev.done == ev.total)
            elif isinstance(ev, ScreenFinished):
                finished = ev
    except ResumeMismatch as exc:
        return fail(EXIT_USAGE, str(exc))
    except KeyboardInterrupt:
        gen.close()
        progress.end_line()
        return fail(EXIT_STOPPED, "interrupted; finished rows are kept. Run the same command with --resume "
                                  "to continue.")
    except OSError as exc:
        progress.end_line()
        return fail(EXIT_USAGE if finished is None else EXIT_STOPPED,
                    f"cannot write the results ({exc.__class__.__name__}: {exc.strerror or exc}); check --out "
                    "and free disk space. Finished rows are kept; rerun with --resume.")
    progress.end_line()
    if finished is None:  # pragma: no cover - the generator always finishes with ScreenFinished
        return fail(EXIT_STOPPED, "screening stopped early; rerun with --resume.")
    _print_summary(err, finished)
    return EXIT_OK


def _print_summary(err: TextIO, fin: "ScreenFinished") -> None:
    s = fin.summary
    status = ", ".join(f"{k} {v}" for k, v in sorted(s["status"].items())) or "none"
    labels = ", ".join(f"{k} {v}" for k, v in sorted(s["labels"].items())) or "none"
    err.write(
        f"cxr-screen: done: {s['files']} files in {_fmt_duration(fin.elapsed_s)} ({fin.rate:.1f} img/s this run)\n"
        f"  status: {status}\n  predicted label: {labels}\n  above threshold: {s['above_threshold']}\n"
        f"  results: {fin.out_csv}\n"
    )
    if fin.json_path:
        err.write(f"  JSON: {fin.json_path}\n")
    if fin.heatmaps_failed:
        err.write(f"  heatmaps not written for {fin.heatmaps_failed} files (see the detail column)\n")


if __name__ == "__main__":
    raise SystemExit(main())
