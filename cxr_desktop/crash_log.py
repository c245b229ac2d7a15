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
                 redactor: Redactor | None = None, *, messages: bool = True) -> str:
    """The text of a crash report (already redacted).

    ``messages=False`` leaves out the exceptions' messages (the stack and types stay): for
    tools that never registered the values of the files they read (``cxr-screen``).
    """
    lines = [
        "CXR Review crash report (no patient data: DICOM identifying values, IDs and opened paths are replaced)",
        f"time: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"version: {__version__}",
        f"python: {platform.python_version()} on {platform.platform()}",
        f"thread: {threading.current_thread().name}",
        "",
    ]
    lines += traceback.format_exception(exc_type, exc, tb) if messages else _without_messages(exc, tb)
    return (redactor or REDACTOR).redact("\n".join(line.rstrip("\n") for line in lines)) + "\n"


def _without_messages(exc: BaseException, tb: TracebackType | None) -> list[str]:
    """Traceback lines of ``exc`` and its causes, each message replaced by a placeholder."""
    chain: list[tuple[BaseException, TracebackType | None, str]] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    link = ""
    while cur is not None and id(cur) not in seen and len(chain) < 16:
        seen.add(id(cur))
        chain.append((cur, cur.__traceback__ if cur is not exc else tb, link))
        if cur.__cause__ is not None:
            cur, link = cur.__cause__, "The above exception was the direct cause of the following exception:"
        elif cur.__context__ is not None and not cur.__suppress_context__:
            cur, link = cur.__context__, "During handling of the above exception, another exception occurred:"
        else:
            cur = None
    out: list[str] = []
    for e, etb, link_text in reversed(chain):
        if out:
            out += ["", link_text, ""]
        out.append("Traceback (most recent call last):")
        out += [line.rstrip("\n") for line in traceback.format_tb(etb)]
        out.append(f"{type(e).__module__}.{type(e).__qualname__}: <message withheld: it may quote patient data>")
    return out


def write_crash_log(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None,
                    folder: Path | None = None, *, messages: bool = True) -> Path | None:
    """Write the report atomically (temp file + fsync + rename); None if even that fails."""
    try:
        folder = Path(folder) if folder is not None else crash_dir()
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        target = folder / f"crash-{stamp}.log"
        from cxr_desktop.atomic import write_text_atomic

        write_text_atomic(target, crash_report(exc_type, exc, tb, messages=messages))
        return target
    except Exception:
        return None
