"""``cxr-node --forward PACS``: send each screened image's Secondary Capture + Structured Report to a PACS.

The result objects are made by :mod:`cxr_desktop.dicom_results` (the same writer as
``cxr-screen --dicom-out`` and the viewer's export: new series of the source's
study, stable UIDs derived from the source and the model) and sent with
:func:`cxr_desktop.pacs.send_files` (C-STORE, or STOW-RS for a DICOMweb server). They
are written under ``results/<study>/`` first (atomically), so a resend after a
failure sends the same objects. ``forwarded.jsonl`` records (fsynced) every image
whose results the PACS accepted, so a restart sends only what is still owed, and
never sends twice what was acknowledged. Error rows (unreadable images) have no
result objects. Lines for the log name the study key and the server, never patient data.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from cxr_desktop.inference.protocol import Engine
from cxr_desktop.pacs.config import PacsServer, SecretStore, load_servers
from cxr_desktop.pacs.errors import PacsError, PacsProblem
from cxr_desktop.screening.results import STATUS_OK, STATUS_OUT_OF_SCOPE, ResultRow

FORWARDED_LOG = "forwarded.jsonl"
RESULTS = "results"


class ForwardSetupError(PacsError):
    """``--forward`` names a server the settings file does not hold (or the file cannot be read)."""


def load_forward_server(config: str | os.PathLike[str], name: str) -> PacsServer:
    """The server called ``name`` in the ``cxr-pacs`` settings file; :class:`ForwardSetupError` otherwise."""
    try:
        servers = load_servers(config)
    except PacsError as exc:
        raise ForwardSetupError(exc.kind, f"--pacs-config: {exc.message}") from None
    for s in servers:
        if s.name == name:
            return s
    names = ", ".join(sorted(s.name for s in servers)) or "none"
    raise ForwardSetupError(PacsProblem.CONFIG, f"--forward {name!r}: no such server in {Path(config).name} "
                                                f"(servers: {names}).")


def _forwardable(row: ResultRow) -> bool:
    return row.status in (STATUS_OK, STATUS_OUT_OF_SCOPE) and row.path.startswith("received/")


class PacsForwarder:
    """Makes and sends the result objects of screened rows; remembers what the PACS accepted."""

    def __init__(self, server: PacsServer, root: str | os.PathLike[str], engine: Engine,
                 secrets: SecretStore | None = None):
        from cxr_desktop.dicom_results import ModelInfo

        self.server, self.root, self.engine = server, Path(root), engine
        self.secrets = secrets
        self.model = ModelInfo.from_engine(engine)
        self._log_path = self.root / FORWARDED_LOG
        self._done = self._read_done()
        self._lock = threading.Lock()
        self.sent_images = 0
        self.last_sent_at: float | None = None

    def _read_done(self) -> set[str]:
        done: set[str] = set()
        try:
            for line in self._log_path.read_bytes().split(b"\n"):
                try:
                    done.add(json.loads(line)["path"])
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line (killed mid-write): that image is sent again
        except FileNotFoundError:
            pass
        return done

    def _record(self, rows: list[ResultRow], outcome: str) -> None:
        now = round(time.time(), 3)
        data = b"".join(json.dumps({"time": now, "path": r.path, "outcome": outcome}).encode() + b"\n" for r in rows)
        with self._lock, open(self._log_path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            self._done.update(r.path for r in rows)

    def pending_rows(self, rows: list[ResultRow]) -> dict[str, list[ResultRow]]:
        """Rows screened but not yet sent (or marked as impossible), grouped by study key."""
        out: dict[str, list[ResultRow]] = {}
        for r in rows:
            if _forwardable(r) and r.path not in self._done:
                out.setdefault(r.path.split("/")[1], []).append(r)
        return out

    def forward(self, study: str, rows: list[ResultRow]) -> str:
        """Write and send the SC + SR of each forwardable row; returns a line for the log.

        Raises :class:`PacsError` when the PACS cannot be reached or refuses objects
        (nothing is recorded as sent then; the next start sends them again).
        """
        from cxr_desktop.dicom_results import finding_from_row, result_paths, write_result_objects
        from cxr_desktop.errors import CxrError

        todo = [r for r in rows if _forwardable(r) and r.path not in self._done]
        if not todo:
            return "no result objects to send"
        files: list[Path] = []
        sendable: list[ResultRow] = []
        impossible: list[ResultRow] = []
        out_dir = self.root / RESULTS / study
        for r in todo:
            sc_path, sr_path = result_paths(out_dir, Path(r.path).name)
            if not (sc_path.exists() and sr_path.exists()):
                try:
                    write_result_objects(self.root / r.path, finding_from_row(r), self.model, sc_path, sr_path,
                                         engine=self.engine)
                except (CxrError, ValueError, AttributeError, KeyError, TypeError):
                    impossible.append(r)  # the source lacks what a result object needs: retrying cannot help
                    continue
            files += [sc_path, sr_path]
            sendable.append(r)
        if impossible:
            self._record(impossible, "no_result_object")
        if files:
            from cxr_desktop.pacs import send_files

            for _progress in send_files(self.server, files, secrets=self.secrets):
                pass  # raises PacsError (PARTIAL, UNREACHABLE, ...) when not everything was accepted
            self._record(sendable, "sent")
            self.sent_images += len(sendable)
            self.last_sent_at = time.time()
        skipped = f"; {len(impossible)} image(s) without result objects (see the worklist)" if impossible else ""
        return (f"results of {len(sendable)} image(s) sent to {self.server.name} ({len(files)} objects: "
                f"SC + SR){skipped}")
