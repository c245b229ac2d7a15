"""Unexpected errors: a friendly dialog for the user, a crash log without patient data for support.

The user never sees a Python traceback as the message: they are told that the
app can carry on, and where the crash report is. The report (written
atomically under ``data_dir()/crash-logs``) holds the traceback with every
Patient ID the viewer has seen, and every path the user opened, replaced by
placeholders (:data:`REDACTOR`). Exceptions in worker threads reach the same
hook, and the dialog is always shown on the GUI thread.
"""

from __future__ import annotations

import datetime
import platform
import re
import sys
import threading
import traceback
from pathlib import Path
from types import TracebackType
from typing import Callable

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtWidgets import QApplication, QMessageBox

from cxr_desktop import __version__


class Redactor:
    """Remembers sensitive strings (Patient IDs, opened paths) and blanks them out of text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, str] = {}

    def register(self, value: object, placeholder: str) -> None:
        text = str(value or "").strip()
        if len(text) >= 2:
            with self._lock:
                self._values[text] = placeholder

    def register_patient_id(self, value: object) -> None:
        self.register(value, "<patient-id>")

    def register_path(self, path: object) -> None:
        self.register(path, "<opened-path>")

    def redact(self, text: str) -> str:
        with self._lock:
            items = sorted(self._values.items(), key=lambda kv: -len(kv[0]))
        for value, placeholder in items:
            text = text.replace(value, placeholder)
        # DICOM-style person names (FAMILY^GIVEN) never belong in a log
        return re.sub(r"\b[\w'-]+\^[\w'^ -]*", "<person-name>", text)


REDACTOR = Redactor()


def crash_dir() -> Path:
    from cxr_desktop.paths import data_dir

    return data_dir() / "crash-logs"


def crash_report(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> str:
    """The text of a crash report (already redacted)."""
    lines = [
        "CXR Review crash report (no patient data: IDs and opened paths are replaced)",
        f"time: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"version: {__version__}",
        f"python: {platform.python_version()} on {platform.platform()}",
        f"thread: {threading.current_thread().name}",
        "",
    ]
    lines += traceback.format_exception(exc_type, exc, tb)
    return REDACTOR.redact("\n".join(line.rstrip("\n") for line in lines)) + "\n"


def write_crash_log(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None,
                    folder: Path | None = None) -> Path | None:
    """Write the report atomically (temp file + fsync + rename); None if even that fails."""
    try:
        folder = Path(folder) if folder is not None else crash_dir()
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        target = folder / f"crash-{stamp}.log"
        from cxr_desktop.atomic import write_text_atomic

        write_text_atomic(target, crash_report(exc_type, exc, tb))
        return target
    except Exception:
        return None


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


def install_excepthook() -> Callable[..., object]:
    """Route uncaught exceptions (GUI and worker threads) to :func:`handle_exception`."""
    global _bridge
    if _bridge is None:
        _bridge = _DialogBridge()
    previous = sys.excepthook
    sys.excepthook = handle_exception
    threading.excepthook = lambda args: handle_exception(args.exc_type, args.exc_value, args.exc_traceback)
    return previous
