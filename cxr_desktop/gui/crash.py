"""Unexpected errors: a friendly dialog for the user, a crash log without patient data for support.

The user never sees a Python traceback as the message: they are told that the
app can carry on, and where the crash report is. The report (written
atomically under ``data_dir()/crash-logs``, see :mod:`cxr_desktop.crash_log`)
holds the traceback with every PS3.15 Annex E value of the studies opened
(names, IDs, dates, institution, accession number, UIDs, ...; see
:mod:`cxr_desktop.redaction`), and every path the user opened, replaced by
placeholders (:data:`REDACTOR`). Logged errors go through the same redactor.
Exceptions in worker threads reach the same hook, and the dialog is always shown
on the GUI thread.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Callable

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtWidgets import QApplication, QMessageBox

from cxr_desktop.crash_log import crash_dir, crash_report, write_crash_log  # noqa: F401  (re-exported)
from cxr_desktop.redaction import REDACTOR, RedactingFilter, Redactor  # noqa: F401  (re-exported)


def user_message(log_path: Path | None) -> str:
    where = (f"A report for support (without patient data) was saved to:\n{log_path}" if log_path
             else "A crash report could not be saved.")
    return ("Something unexpected went wrong in CXR Review.\n\nThe images you opened are still there "
            "and you can carry on working. If it happens again, please send the report to your "
            f"support team.\n\n{where}")


class _DialogBridge(QObject):
    """Carries crash notices from any thread to the GUI thread."""

    crashed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.showing = False
        self.shown = 0
        self.crashed.connect(self._show, Qt.ConnectionType.QueuedConnection)

    @Slot(str)
    def _show(self, log_path: str) -> None:
        self.shown += 1
        if self.showing:  # one dialog at a time; the log has the rest
            return
        self.showing = True
        try:
            box = QMessageBox(QMessageBox.Icon.Warning, "CXR Review - unexpected problem",
                              user_message(Path(log_path) if log_path else None),
                              QMessageBox.StandardButton.Ok, QApplication.activeWindow())
            box.exec()
        finally:
            self.showing = False


_bridge: _DialogBridge | None = None


def handle_exception(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> Path | None:
    """Log the crash and tell the user (dialog on the GUI thread)."""
    if issubclass(exc_type, KeyboardInterrupt):
        QApplication.quit()
        return None
    path = write_crash_log(exc_type, exc, tb)
    if _bridge is not None:
        _bridge.crashed.emit(str(path or ""))
    else:
        sys.stderr.write(user_message(path) + "\n")
    return path


def redact_logging() -> None:
    """Every logged message and traceback goes through :data:`REDACTOR` (idempotent).

    The filter sits on the handlers (a logger's own filters do not see records of its
    children); the root logger gets a stderr handler when it has none, so Python's
    last-resort handler never prints an unredacted record.
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def install_excepthook() -> Callable[..., object]:
    """Route uncaught exceptions (GUI and worker threads) to :func:`handle_exception`."""
    global _bridge
    if _bridge is None:
        _bridge = _DialogBridge()
    redact_logging()
    previous = sys.excepthook
    sys.excepthook = handle_exception
    threading.excepthook = lambda args: handle_exception(args.exc_type, args.exc_value, args.exc_traceback)
    return previous
