"""Crash reports without patient data, for the app and the command-line tools (no Qt).

A report holds the traceback with every value the :data:`~cxr_desktop.redaction.REDACTOR`
knows (the PS3.15 Annex E values of the studies opened, Patient IDs, opened paths)
replaced by placeholders, and is written atomically under ``data_dir()/crash-logs``.
"""

from __future__ import annotations

import datetime
import platform
import threading
import traceback
from pathlib import Path
from types import TracebackType

from cxr_desktop import __version__
from cxr_desktop.redaction import REDACTOR, Redactor


def crash_dir() -> Path:
    from cxr_desktop.paths import data_dir

    return data_dir() / "crash-logs"


def crash_report(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None,
                 redactor: Redactor | None = None) -> str:
    """The text of a crash report (already redacted)."""
    lines = [
        "CXR Review crash report (no patient data: DICOM identifying values, IDs and opened paths are replaced)",
        f"time: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"version: {__version__}",
        f"python: {platform.python_version()} on {platform.platform()}",
        f"thread: {threading.current_thread().name}",
        "",
    ]
    lines += traceback.format_exception(exc_type, exc, tb)
    return (redactor or REDACTOR).redact("\n".join(line.rstrip("\n") for line in lines)) + "\n"


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
