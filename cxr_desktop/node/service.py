"""The running node: listener + tracker + screening loop (+ optional forwarding), started and stopped cleanly.

:meth:`NodeService.run` is the main loop: it takes complete studies from the
tracker and screens them, one at a time, in the calling thread, until
:meth:`request_stop` (the SIGTERM handler calls it). Stopping: the listener stops
accepting and gives running associations a few seconds (an object whose transfer is
cut off is never written), the study being screened stops after its current batch
(its finished rows are journalled), and what was received but not screened is
re-queued at the next start. A second node on the same folder is refused (lock file).
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from cxr_desktop.durations import seconds_text
from cxr_desktop.inference.protocol import Engine
from cxr_desktop.node.scp import StorageSCP, Unreadable
from cxr_desktop.node.storage import ReceivedStore
from cxr_desktop.node.tracker import StudyTracker
from cxr_desktop.node.worklist import NodeWorklist, StudyOutcome
from cxr_desktop.screening.results import ResultRow
from cxr_desktop.screening.runner import ScreenOptions

log = logging.getLogger(__name__)

LOCK_NAME = "node.lock"
DEFAULT_STUDY_TIMEOUT_S = 5.0
FORWARD_RETRY_S = 30.0  # how often owed results are sent again while the PACS is unreachable


class NodeBusy(RuntimeError):
    """Another node already runs on this folder."""


class Forwarder(Protocol):
    """Sends a screened study's results somewhere (``--forward``); returns a line for the log."""

    def forward(self, study: str, rows: list[ResultRow]) -> str: ...

    def pending_rows(self, rows: list[ResultRow]) -> dict[str, list[ResultRow]]: ...


@dataclass
class NodeConfig:
    out: Path
    ae_title: str = "CXRREVIEW"
    host: str = "127.0.0.1"
    port: int = 11112
    study_timeout_s: float = DEFAULT_STUDY_TIMEOUT_S
    screen: ScreenOptions | None = None
    forward_retry_s: float = FORWARD_RETRY_S


class NodeService:
    """One node on one folder. ``say`` gets the lines for the operator (no patient data in any of them)."""

    def __init__(self, config: NodeConfig, engine: Engine, *, forwarder: Forwarder | None = None,
                 say: Callable[[str], None] = lambda _line: None):
        self.config = config
        self.say = say
        root = Path(config.out)
        root.mkdir(parents=True, exist_ok=True)
        self._lock_fh = _lock_folder(root / LOCK_NAME)
        self.store = ReceivedStore(root)
        removed = self.store.remove_temp_files()
        if removed:
            say(f"removed {removed} unfinished temporary file(s) left by an earlier run")
        self.tracker = StudyTracker(config.study_timeout_s)
        self.worklist = NodeWorklist(root, engine, self.store, config.screen)
        self.forwarder = forwarder
        self.scp = StorageSCP(self.store, self.tracker, ae_title=config.ae_title, host=config.host,
                              port=config.port, on_unreadable=self._on_unreadable, on_aborted=self._on_aborted)
        self._stop = threading.Event()
        self.cancel = threading.Event()
        self.studies_screened = 0
        self._forward_failed_at: float | None = None
        self.images_scored = 0

    # ----------------------------------------------------------------- life cycle

    def start(self) -> int:
        """Re-queue unfinished work and start listening; returns the port (``OSError`` when it is taken)."""
        again = self.worklist.unscreened_studies()
        for study in again:
            self.tracker.requeue(study)
        if again:
            self.say(f"{len(again)} received stud{'y' if len(again) == 1 else 'ies'} not fully screened before: "
                     "queued again")
        self.scp.start()
        return self.scp.port

    def request_stop(self) -> None:
        """Ask the loop to stop (signal-handler safe: sets flags only)."""
        self._stop.set()
        self.cancel.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Screen complete studies until :meth:`request_stop`; then stop the listener."""
        try:
            self._forward_leftovers()
            while not self._stop.is_set():
                study = self.tracker.take_ready(timeout=0.25)
                if study is not None:
                    self._screen(study)
                elif self._forward_failed_at is not None and \
                        time.monotonic() - self._forward_failed_at >= self.config.forward_retry_s:
                    self._forward_leftovers()  # idle, and a PACS was unreachable: try again now and then
        finally:
            self.scp.stop()

    def close(self) -> None:
        self.scp.stop()
        self.worklist.close()
        try:
            self._lock_fh.close()
        except OSError:
            pass

    # ----------------------------------------------------------------- work

    def _screen(self, study: str) -> StudyOutcome | None:
        try:
            outcome = self.worklist.screen_study(study, cancel=self.cancel, note=lambda m: self.say(f"note: {m}"))
        except Exception as exc:  # one study's failure never stops the node; it is tried again at next start
            self.say(f"study {study}: could not be screened ({exc.__class__.__name__}); its images are kept and "
                     "it is screened again when more images arrive or at the next start")
            log.warning("screening a study failed", exc_info=False)
            return None
        self.studies_screened += 1
        self.images_scored += outcome.scored_now
        counts: dict[str, int] = {}
        for r in outcome.new_rows:
            counts[r.status] = counts.get(r.status, 0) + 1
        what = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing new"
        stopped = " (stopped early: the rest is screened at the next start)" if outcome.cancelled else ""
        self.say(f"study {study}: {len(outcome.new_rows)} image(s) screened ({what}) in "
                 f"{seconds_text(outcome.elapsed_s)}{stopped}")
        if self.forwarder is not None and not self._stop.is_set():
            owed = self.forwarder.pending_rows(self.worklist.rows()).get(study, [])
            if owed:
                self._forward(study, owed)
        return outcome

    def _forward(self, study: str, rows: list[ResultRow]) -> bool:
        assert self.forwarder is not None
        try:
            self.say(f"study {study}: {self.forwarder.forward(study, rows)}")
        except Exception as exc:  # the PACS may be down: results stay owed and are sent later
            self._forward_failed_at = time.monotonic()
            self.say(f"study {study}: results not sent ({exc}); they are sent again in "
                     f"{self.config.forward_retry_s:g} s or at the next start")
            return False
        return True

    def _forward_leftovers(self) -> None:
        """Results screened but never sent (before a restart, or while the PACS was down)."""
        if self.forwarder is None:
            return
        self._forward_failed_at = None
        for study, rows in self.forwarder.pending_rows(self.worklist.rows()).items():
            if self._stop.is_set() or not self._forward(study, rows):
                return  # the PACS is still down: the rest waits for the next try

    def _on_aborted(self, kept: int) -> None:
        if not self._stop.is_set():
            self.say(f"an association was aborted (by the sender or the network): the {kept} object(s) it had "
                     "sent in full are kept; an object still in transfer was discarded (the sender should resend it)")

    def _on_unreadable(self, item: Unreadable) -> None:
        row = self.worklist.add_unreadable(item.relpath or "unreadable/(not kept)", item.why)
        if row is not None:
            self.say(f"received an object that cannot be screened: {item.why} (error row {row.path})")


def _lock_folder(path: Path) -> Any:
    """Hold an exclusive lock on ``path`` for the life of the node; ``NodeBusy`` when another node holds it."""
    fh = open(path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise NodeBusy(f"another cxr-node is already using {path.parent}; stop it or give another --out") from None
    return fh
