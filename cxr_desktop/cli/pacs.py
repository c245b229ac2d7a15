"""``cxr-pacs``: talk to a PACS from the command line (echo, find, get, send).

    cxr-pacs [SERVER OPTIONS] echo
    cxr-pacs [SERVER OPTIONS] find [--patient-id ID] [--patient-name NAME] [--accession N]
                                   [--from YYYY-MM-DD] [--to YYYY-MM-DD] [--modality M ...] [--show-patient] [--json]
    cxr-pacs [SERVER OPTIONS] get [STUDY_UID ...] [find filters] (--out DIR | --cache [DIR]) [--method get|move|wado]
    cxr-pacs [SERVER OPTIONS] send FILE ...

The server comes from ``--config FILE --server NAME`` (JSON written by the app or
by hand, see :mod:`cxr_desktop.pacs.config`) or from flags: ``--host --port
--called-ae [--our-ae --our-port]`` (DIMSE) or ``--url [--auth basic|bearer --user U]``
(DICOMweb; the password or token comes from the system keyring, or from the
environment variable ``CXR_PACS_SECRET``, never from a flag). Messages on stderr
never carry patient data; ``find`` prints patient name / ID / accession number
only with ``--show-patient``. Exit codes: see :data:`EXIT_CODES_HELP`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Sequence, TextIO

from cxr_desktop.cli.arguments import error_line
from cxr_desktop.durations import seconds_text
from cxr_desktop.pacs.errors import PacsError, PacsProblem

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3  # unreachable or timed out
EXIT_REFUSED = 4  # association rejected, credentials refused, service refused, unknown move destination
EXIT_NOT_FOUND = 5
EXIT_PARTIAL = 6
EXIT_IO = 74
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}    done
  {EXIT_USAGE}    usage error: bad arguments or server settings (the message says which)
  {EXIT_UNREACHABLE}    the PACS is unreachable or did not answer in time (check host/port/URL, retry)
  {EXIT_REFUSED}    the PACS refused: association rejected (AE titles), credentials, a service or the C-MOVE
       destination not allowed for our AE (ask the PACS administrator)
  {EXIT_NOT_FOUND}    nothing found / the study is no longer on the PACS
  {EXIT_PARTIAL}    only part of a study arrived, or some files were not accepted: nothing partial is kept;
       retry
  {EXIT_IO}   a local file or folder cannot be read or written (disk full, permissions)
  {EXIT_INTERRUPTED}  stopped by Ctrl-C; nothing partial is kept"""

_CODE_FOR = {
    PacsProblem.UNREACHABLE: EXIT_UNREACHABLE, PacsProblem.TIMEOUT: EXIT_UNREACHABLE,
    PacsProblem.REJECTED: EXIT_REFUSED, PacsProblem.AUTH: EXIT_REFUSED, PacsProblem.REFUSED: EXIT_REFUSED,
    PacsProblem.MOVE_DESTINATION_UNKNOWN: EXIT_REFUSED, PacsProblem.NOT_FOUND: EXIT_NOT_FOUND,
    PacsProblem.PARTIAL: EXIT_PARTIAL, PacsProblem.CANCELLED: EXIT_INTERRUPTED, PacsProblem.CONFIG: EXIT_USAGE,
    PacsProblem.LOCAL: EXIT_IO,
}
SECRET_ENV = "CXR_PACS_SECRET"


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; use YYYY-MM-DD") from None


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patient-id", default="", help="patient ID (wildcards * and ? allowed)")
    p.add_argument("--patient-name", default="", help="patient name, DICOM form FAMILY^GIVEN (wildcards allowed)")
    p.add_argument("--accession", default="", help="accession number")
    p.add_argument("--from", dest="date_from", type=_date, help="first study date (YYYY-MM-DD)")
    p.add_argument("--to", dest="date_to", type=_date, help="last study date (YYYY-MM-DD)")
    p.add_argument("--modality", action="append", default=None, metavar="M",
                   help="modality in the study (repeatable; default CR and DX)")
    p.add_argument("--any-modality", action="store_true", help="do not filter by modality")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cxr-pacs", description="Query, retrieve and send studies to a PACS "
                                 "(DIMSE or DICOMweb).", epilog=EXIT_CODES_HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    srv = ap.add_argument_group("server", "either --config FILE [--server NAME], or the flags of one server")
    srv.add_argument("--config", type=Path, help="JSON file with the PACS servers (as the app saves them)")
    srv.add_argument("--server", help="name of the server in --config (default: the first)")
    srv.add_argument("--host", help="DIMSE: PACS host name or address")
    srv.add_argument("--port", type=int, help="DIMSE: PACS port")
    srv.add_argument("--called-ae", help="DIMSE: the PACS's AE title")
    srv.add_argument("--our-ae", default=None, help="DIMSE: our AE title (default CXRREVIEW)")
    srv.add_argument("--our-port", type=int, default=0, help="DIMSE: our storage port for C-MOVE (0: C-GET only)")
    srv.add_argument("--url", help="DICOMweb: base URL (e.g. http://127.0.0.1:8042/dicom-web)")
    srv.add_argument("--auth", choices=("none", "basic", "bearer"), default="none",
                     help=f"DICOMweb authentication; the password or token from the keyring or ${SECRET_ENV}")
    srv.add_argument("--user", default="", help="DICOMweb basic authentication: user name")
    srv.add_argument("--timeout", type=float, default=None, help="seconds to wait for the PACS (default 30)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("echo", help="test the connection (C-ECHO, or a QIDO-RS search)")
    find = sub.add_parser("find", help="search studies")
    _add_filters(find)
    find.add_argument("--show-patient", action="store_true", help="also print patient name, ID and accession")
    find.add_argument("--json", action="store_true", help="print JSON instead of a table")
    get = sub.add_parser("get", help="retrieve studies (by UID, or every study the filters find)")
    get.add_argument("study_uid", nargs="*", help="Study Instance UIDs (default: every study the filters find)")
    _add_filters(get)
    where = get.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="folder to write each study into (one subfolder per study)")
    where.add_argument("--cache", nargs="?", const="", metavar="DIR",
                       help="into the study cache (default: the app's per-user cache)")
    get.add_argument("--method", choices=("get", "move", "wado"), help="retrieve method (default: the server's)")
    get.add_argument("--cache-limit-gb", type=float, default=None, help="cache size limit in GB (default 5)")
    send = sub.add_parser("send", help="send DICOM files (C-STORE or STOW-RS)")
    send.add_argument("files", nargs="+", type=Path, help="DICOM files (e.g. the .sc.dcm / .sr.dcm results)")
    return ap


def _server(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from cxr_desktop.pacs.config import DEFAULT_AE_TITLE, DicomWebServer, DimseServer, load_servers

    if args.config is not None:
        servers = load_servers(args.config)
        if not servers:
            raise PacsError(PacsProblem.CONFIG, f"{args.config.name} holds no PACS server.")
        if args.server is None:
            return servers[0]
        for s in servers:
            if s.name == args.server:
                return s
        raise PacsError(PacsProblem.CONFIG, f"no server named {args.server!r} in {args.config.name}; it holds: "
                                            + ", ".join(s.name for s in servers))
    timeout = args.timeout or 30.0
    if args.url:
        return DicomWebServer(name=args.server or "command line", url=args.url, auth=args.auth, username=args.user,
                              timeout_s=timeout)
    if args.host and args.port and args.called_ae:
        return DimseServer(name=args.server or "command line", host=args.host, port=args.port,
                           called_ae=args.called_ae, our_ae=args.our_ae or DEFAULT_AE_TITLE,
                           our_port=args.our_port or 0, retrieve="move" if args.our_port else "get",
                           timeout_s=timeout)
    raise PacsError(PacsProblem.CONFIG, "say which PACS: --config FILE [--server NAME], or --host, --port and "
                                        "--called-ae (DIMSE), or --url (DICOMweb).")


def _secrets(server):  # type: ignore[no-untyped-def]
    from cxr_desktop.pacs.config import SecretStore

    store = SecretStore()
    if getattr(server, "auth", "none") != "none" and not store.get(server.name):
        env = os.environ.get(SECRET_ENV)
        if env:
            store = SecretStore(use_keyring=False)
            store.set(server.name, env)
    return store


def _query(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from cxr_desktop.pacs.query import DEFAULT_MODALITIES, StudyQuery

    mods: tuple[str, ...] = () if args.any_modality else tuple(args.modality or DEFAULT_MODALITIES)
    return StudyQuery(patient_id=args.patient_id, patient_name=args.patient_name,
                      accession_number=args.accession, date_from=args.date_from, date_to=args.date_to,
                      modalities=mods)


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run ``cxr-pacs``; returns the exit code."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = _parser().parse_args(argv)

    fail = error_line(err, "cxr-pacs")
    try:
        return _run(args, out, err)
    except PacsError as exc:
        return fail(_CODE_FOR.get(exc.kind, EXIT_REFUSED), str(exc))
    except KeyboardInterrupt:
        return fail(EXIT_INTERRUPTED, "stopped by Ctrl-C; nothing partial was kept.")


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from cxr_desktop.pacs import retrieve as api

    server = _server(args)
    secrets = _secrets(server)
    if args.command == "echo":
        seconds = api.echo(server, secrets=secrets)
        err.write(f"cxr-pacs: {server.where} answered in {seconds * 1000:.0f} ms.\n")
        return EXIT_OK
    if args.command == "find":
        rows = api.find_studies(server, _query(args), secrets=secrets)
        _print_rows(out, rows, show_patient=args.show_patient, as_json=args.json)
        err.write(f"cxr-pacs: {len(rows)} studies found on {server.where}.\n")
        return EXIT_OK
    if args.command == "get":
        return _get(args, server, secrets, out, err)
    return _send(args, server, secrets, err)


def _print_rows(out: TextIO, rows: list, *, show_patient: bool, as_json: bool) -> None:  # type: ignore[type-arg]
    items = []
    for r in rows:
        d = {"study_uid": r.study_uid, "study_date": r.study_date.isoformat() if r.study_date else "",
             "modalities": list(r.modalities), "images": r.images, "description": r.description}
        if show_patient:
            d.update(patient_name=r.patient_name, patient_id=r.patient_id, accession_number=r.accession_number)
        items.append(d)
    if as_json:
        out.write(json.dumps(items, indent=1) + "\n")
        return
    for d in items:
        cells = [d["study_uid"], d["study_date"] or "-", "/".join(d["modalities"]) or "-",
                 "?" if d["images"] is None else str(d["images"]), d["description"] or "-"]
        if show_patient:
            cells += [d["patient_name"] or "-", d["patient_id"] or "-", d["accession_number"] or "-"]
        out.write("\t".join(cells) + "\n")


def _get(args: argparse.Namespace, server, secrets, out: TextIO, err: TextIO) -> int:  # type: ignore[no-untyped-def]
    from cxr_desktop.pacs import retrieve as api
    from cxr_desktop.pacs.cache import DEFAULT_LIMIT_BYTES, StudyCache
    from cxr_desktop.pacs.retrieve import RetrieveDone

    expected: dict[str, int | None] = {}
    uids = list(args.study_uid)
    if not uids:
        rows = api.find_studies(server, _query(args), secrets=secrets)
        uids = [r.study_uid for r in rows]
        expected = {r.study_uid: r.images for r in rows}
        if not uids:
            err.write(f"cxr-pacs: no study matches on {server.where}.\n")
            return EXIT_NOT_FOUND
    cache = None
    if args.cache is not None:
        limit = DEFAULT_LIMIT_BYTES if args.cache_limit_gb is None else int(args.cache_limit_gb * 1e9)
        cache = StudyCache(args.cache or None, limit_bytes=limit)
    failures: list[PacsError] = []
    for i, uid in enumerate(uids, start=1):
        try:
            for ev in api.retrieve_study(server, uid, cache=cache, dest=None if cache else args.out,
                                         method=args.method, secrets=secrets, expected=expected.get(uid)):
                if isinstance(ev, RetrieveDone):
                    how = ("already in the cache" if ev.from_cache
                           else f"{len(ev.files)} images in {seconds_text(ev.elapsed_s)}")
                    err.write(f"cxr-pacs: study {i}/{len(uids)}: {how}.\n")
                    out.write(f"{ev.folder}\n")
        except PacsError as exc:
            if exc.kind in (PacsProblem.UNREACHABLE, PacsProblem.REJECTED, PacsProblem.CONFIG, PacsProblem.AUTH,
                            PacsProblem.MOVE_DESTINATION_UNKNOWN):
                raise  # the same for every study: stop now
            err.write(f"cxr-pacs: study {i}/{len(uids)}: {exc}\n")
            failures.append(exc)
    if failures:
        return _CODE_FOR.get(failures[0].kind, EXIT_REFUSED)
    return EXIT_OK


def _send(args: argparse.Namespace, server, secrets, err: TextIO) -> int:  # type: ignore[no-untyped-def]
    from cxr_desktop.pacs import retrieve as api

    missing = [p.name for p in args.files if not p.is_file()]
    if missing:
        err.write(f"cxr-pacs: {missing[0]} is not a file; nothing was sent.\n")
        return EXIT_USAGE
    last = None
    for last in api.send_files(server, list(args.files), secrets=secrets):
        pass
    err.write(f"cxr-pacs: {last.sent if last else 0} files sent to {server.where}.\n")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
