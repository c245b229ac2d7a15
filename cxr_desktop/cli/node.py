"""``cxr-node``: a DICOM node that receives pushed studies and screens each complete study as it arrives.

    cxr-node [--ae-title CXRREVIEW] [--port 11112] [--host 127.0.0.1] [--out DIR] [--model FILE]
             [--study-timeout SECONDS] [--forward PACS --pacs-config FILE]
             [--device ...] [--batch-size N] [--workers N] [--decode-time-limit SECONDS]
             [--allow-secondary-capture] [--min-age N] [--disable-rule CODE ...] [--show-anyway]

A C-STORE SCP (and Verification SCP) for every standard storage SOP class and
transfer syntax. Received objects are written atomically under ``DIR/received``
with hashed names; a study is screened when it is complete (its association was
released, or no image arrived for ``--study-timeout`` seconds) with the same engine,
input-safety rules and journal as ``cxr-screen``; its rows are appended to
``worklist.csv`` in DIR (and its journal). Nothing is scored twice: studies received
but not screened before a stop or crash are screened at the next start. Lines on
stderr name hashed study keys only. Exit codes: see :data:`EXIT_CODES_HELP`.

As a service, send SIGTERM to the node's own process (systemd: ``KillMode=mixed``): the
node then stops its decode worker processes itself, after the batch in flight.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Sequence, TextIO

from cxr_desktop import DECISION_AID_NOTICE
from cxr_desktop.cli.arguments import whole_number
from cxr_desktop.cli.screen import (
    _non_negative_float, _non_negative_int, _positive_int, quiet_library_output, scope_settings_from_args,
)

EXIT_OK = 0
EXIT_STOPPED = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE: the port cannot be listened on
EXIT_IO = 74
_AE_RE = re.compile(r"^[\x20-\x7e]{1,16}$")

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}    stopped by SIGTERM or Ctrl-C (the normal way to stop the node): one line says what was done;
       every stored file is kept, the study being screened stops after its current batch, and studies
       received but not screened are screened at the next start (as a service, signal the node's
       own process only, e.g. systemd KillMode=mixed: it stops its decode workers itself)
  {EXIT_STOPPED}    unexpected failure (a crash report without patient data is saved); restart the node
  {EXIT_USAGE}    usage error: bad arguments, --out holds another model's worklist, or another node uses --out
  {EXIT_MODEL}    the model file cannot be loaded
  {EXIT_UNAVAILABLE}   the port cannot be listened on (in use, or a privileged port); choose another --port
  {EXIT_IO}   --out cannot be written (read-only, disk full, permissions)"""


def _parser() -> argparse.ArgumentParser:
    from cxr_desktop.cli.screen import _default_limit, _default_min_age, _rule_codes
    from cxr_desktop.node.service import DEFAULT_STUDY_TIMEOUT_S

    ap = argparse.ArgumentParser(
        prog="cxr-node",
        description="DICOM node: receive studies pushed by a modality or PACS (C-STORE), screen each complete "
                    "study with the decision-aid model, append it to the worklist, and optionally send the "
                    "results back. " + DECISION_AID_NOTICE,
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--ae-title", default="CXRREVIEW", help="our AE title (called AE title senders must use)")
    ap.add_argument("--port", type=_port, default=11112, help="TCP port to listen on (default 11112)")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; 0.0.0.0 accepts from the network)")
    ap.add_argument("--out", type=Path, default=None,
                    help="node folder: received images, worklist.csv and its journal (default: the app's data "
                         "folder/node)")
    ap.add_argument("--model", type=Path, help="model file (.safetensors); default: the bundled model")
    ap.add_argument("--study-timeout", type=_non_negative_float, default=DEFAULT_STUDY_TIMEOUT_S,
                    metavar="SECONDS",
                    help="a study is complete when no image of it arrived for SECONDS, or when the association "
                         f"that brought it is released (default {DEFAULT_STUDY_TIMEOUT_S:g})")
    ap.add_argument("--forward", metavar="PACS",
                    help="send the results (Secondary Capture + Structured Report) of each screened study to "
                         "the PACS of this name in --pacs-config")
    ap.add_argument("--pacs-config", type=Path, metavar="FILE",
                    help="JSON file of PACS servers (the format cxr-pacs --config reads)")
    ap.add_argument("--forward-retry", type=_non_negative_float, default=None, metavar="SECONDS",
                    help="while the PACS cannot be reached, send the owed results again every SECONDS "
                         "(default 30)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model runs")
    ap.add_argument("--batch-size", type=_positive_int, default=16, help="images per model call (default 16)")
    ap.add_argument("--workers", type=_non_negative_int, default=None,
                    help="decode worker processes (default as cxr-screen; 0 = decode in this process)")
    ap.add_argument("--decode-time-limit", type=_non_negative_float, default=None, metavar="SECONDS",
                    help=f"stop decoding a file after SECONDS (default {_default_limit():g}; 0 = no limit)")
    scope = ap.add_argument_group("input safety (as cxr-screen)")
    scope.add_argument("--allow-secondary-capture", action="store_true",
                       help="accept DICOM secondary captures (modality OT/SC: scanned films, exports)")
    scope.add_argument("--min-age", type=_non_negative_float, default=None, metavar="N",
                       help=f"youngest patient age in years the model may score (default {_default_min_age():g})")
    scope.add_argument("--disable-rule", action="append", default=[], metavar="CODE", choices=_rule_codes(),
                       help="switch one input-safety rule off (repeatable): " + ", ".join(_rule_codes()))
    scope.add_argument("--show-anyway", action="store_true",
                       help="also score out-of-scope images (rows keep status out_of_scope and the reason)")
    return ap


_port = whole_number(0, 65535, noun="port number", out_of_range="use 1 to 65535 (0: any free port)")


def _install_stop(request_stop, fired: list[str]) -> dict[int, object]:  # type: ignore[no-untyped-def]
    """SIGTERM / SIGINT ask the node to stop (flags only; the main loop does the rest)."""
    import signal

    def handler(signum: int, _frame: object) -> None:
        if not fired:
            fired.append(signal.Signals(signum).name)
        request_stop()

    previous: dict[int, object] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (embedded use)
            pass
    return previous


def main(argv: Sequence[str] | None = None, *, stderr: TextIO | None = None) -> int:
    """Run ``cxr-node`` until SIGTERM / Ctrl-C; returns the exit code."""
    err = stderr or sys.stderr
    args = _parser().parse_args(argv)
    quiet_library_output()

    def say(line: str) -> None:
        err.write(f"cxr-node: {line}\n")
        err.flush()

    try:
        return _run(args, say)
    except Exception as exc:  # unexpected: one line here, the details in a redacted crash report
        from cxr_desktop.crash_log import write_crash_log

        report = write_crash_log(type(exc), exc, exc.__traceback__, messages=False)
        where = f"a report without patient data is in {report}" if report else "no crash report could be saved"
        say(f"unexpected failure ({exc.__class__.__name__}); received files are kept; {where}. Restart the node.")
        return EXIT_STOPPED


def _run(args: argparse.Namespace, say) -> int:  # type: ignore[no-untyped-def]
    ae_title = str(args.ae_title).strip()
    if not _AE_RE.match(ae_title) or "\\" in ae_title:
        say(f"--ae-title {args.ae_title!r} is not a valid AE title: use 1 to 16 letters, digits or spaces.")
        return EXIT_USAGE
    if args.forward and not args.pacs_config:
        say("--forward needs --pacs-config FILE (the PACS servers, as cxr-pacs --config reads them).")
        return EXIT_USAGE
    out = args.out
    if out is None:
        from cxr_desktop.paths import data_dir

        out = data_dir() / "node"
    if out.exists() and not out.is_dir():
        say(f"--out {out} is a file; give a folder.")
        return EXIT_USAGE
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        say(f"cannot create --out {out} ({exc.strerror or exc.__class__.__name__}); choose a writable folder.")
        return EXIT_IO

    from cxr_desktop.paths import default_model_path

    model_path = args.model or default_model_path()
    if not Path(model_path).is_file():
        if args.model is None:
            say("no bundled model was found; pass the model file with --model FILE.")
        else:
            say(f"the model file {Path(model_path).name} does not exist; check --model.")
        return EXIT_USAGE

    server = None
    if args.forward:
        from cxr_desktop.node.forward import load_forward_server
        from cxr_desktop.pacs.errors import PacsError

        try:
            server = load_forward_server(args.pacs_config, args.forward)
        except PacsError as exc:
            say(str(exc))
            return EXIT_USAGE

    from cxr_desktop.errors import CxrError
    from cxr_desktop.inference.engine import EngineOptions, load_engine
    from cxr_desktop.screening.runner import DEFAULT_DECODE_TIME_LIMIT_S, ScreenOptions, prepare_workers

    if args.workers != 0:
        prepare_workers()
    try:
        engine = load_engine(model_path, options=EngineOptions(device=args.device, max_batch=args.batch_size))
    except CxrError as exc:
        say(f"the model cannot be loaded: {exc}")
        return EXIT_MODEL
    except OSError as exc:
        say(f"the model file cannot be read ({exc.__class__.__name__}); check --model.")
        return EXIT_MODEL

    forwarder = None
    if server is not None:
        from cxr_desktop.node.forward import PacsForwarder
        from cxr_desktop.pacs.config import DicomWebServer, SecretStore

        secrets = SecretStore() if isinstance(server, DicomWebServer) and server.auth != "none" else None
        forwarder = PacsForwarder(server, out, engine, secrets=secrets)

    from cxr_desktop.node.service import NodeBusy, NodeConfig, NodeService
    from cxr_desktop.screening.runner import ResumeMismatch

    limit = DEFAULT_DECODE_TIME_LIMIT_S if args.decode_time_limit is None else args.decode_time_limit
    screen = ScreenOptions(batch_size=args.batch_size, workers=args.workers,
                           scope_settings=scope_settings_from_args(args), show_anyway=args.show_anyway,
                           decode_time_limit_s=limit or None)
    config = NodeConfig(out=out, ae_title=ae_title, host=args.host, port=args.port,
                        study_timeout_s=args.study_timeout, screen=screen)
    if args.forward_retry is not None:
        config.forward_retry_s = max(0.5, args.forward_retry)
    try:
        node = NodeService(config, engine, forwarder=forwarder, say=say)
    except (NodeBusy, ResumeMismatch) as exc:
        say(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        say(f"cannot write in --out {out} ({exc.strerror or exc.__class__.__name__}); choose a writable folder.")
        return EXIT_IO
    fired: list[str] = []
    previous = _install_stop(node.request_stop, fired)
    try:
        try:
            port = node.start()
        except OSError as exc:
            say(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc.__class__.__name__}); "
                "choose another --port or stop the program that uses it.")
            return EXIT_UNAVAILABLE
        say(DECISION_AID_NOTICE)
        fwd = f"; results go to {server.where}" if server is not None else ""
        say(f"listening on {args.host}:{port} as AE {ae_title}; model {engine.card.display_name} on "
            f"{engine.device_label}; folder {out}{fwd}")
        node.run()
    finally:
        node.close()
        _restore(previous)
    why = fired[0] if fired else "request"
    say(f"stopped by {why}: {node.studies_screened} study pass(es), {node.images_scored} image(s) scored this run; "
        "every stored file is kept and anything not screened yet is screened at the next start.")
    return EXIT_OK


def _restore(previous: dict[int, object]) -> None:
    import signal

    for sig, h in previous.items():
        signal.signal(sig, h)  # type: ignore[arg-type]


if __name__ == "__main__":
    raise SystemExit(main())
