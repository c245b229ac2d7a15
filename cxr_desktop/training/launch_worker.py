"""One process of a training job started by :func:`cxr_desktop.training.launch.train_local`.

``torchrun ... -m cxr_desktop.training.launch_worker RUN_FOLDER`` runs this in every
process. Each reads the run's settings (``run-config.json`` in ``RUN_FOLDER``) and runs
:func:`cxr_desktop.training.engine.train`, which joins the job itself. The channel back
to the launcher is this process's standard output, kept for messages only: every
process moves its own prints to standard error, rank 0 writes each training event and
the result as one JSON line (:mod:`cxr_desktop.training.event_json`), and any process
that fails writes one line with its error message.

Cancel: the launcher writes a count into ``launch-cancel`` in the run folder; a thread
here sets the engine's cancel event each time the count goes up, so a first cancel
finishes with the best epoch and a second stops the evaluation, as with ``train``.
The same thread ends the process when torchrun or the program that started the job
is gone (torchrun then ends too, its worker having failed), so no process is left behind.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

CANCEL_FILE = "launch-cancel"  # in the run folder: how many times the user pressed cancel
APP_PID_ENV = "CXR_TRAIN_APP_PID"  # the process that called train_local: when it ends, the job ends too
POLL_S = 0.2


class Channel:
    """JSON lines to the launcher on a private copy of standard output."""

    def __init__(self, rank: int):
        self.rank = rank
        self.fd = os.dup(1)
        os.dup2(2, 1)  # stray prints (this process and libraries) go to standard error
        sys.stdout = sys.stderr
        self.lock = threading.Lock()

    def send(self, kind: str, **fields: Any) -> None:
        data = (json.dumps({"kind": kind, "rank": self.rank, **fields}, separators=(",", ":"), allow_nan=True)
                + "\n").encode("utf-8")
        with self.lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]


def without_paths(text: str) -> str:
    """``text`` with quoted file paths replaced by ``<path>``: a file or folder name may name a patient."""
    return re.sub(r"(['\"])[^'\"]*[/\\][^'\"]*\1", "<path>", text)


def read_cancel_count(folder: Path) -> int:
    """How many cancels the launcher asked for (0 when it asked none or the file is being replaced)."""
    try:
        return int((folder / CANCEL_FILE).read_text(encoding="ascii").strip() or 0)
    except (OSError, ValueError):
        return 0


def _app_gone(pid: int | None) -> bool:
    """Whether the program that called train_local has ended (POSIX; elsewhere its closed pipe tells)."""
    if pid is None or os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def watch(folder: Path, cancel: threading.Event, launcher_pid: int, app_pid: int | None) -> None:
    """Set ``cancel`` for each new cancel request; end this process when torchrun or the app is gone."""
    seen = 0  # the launcher removes the file before the job starts: any count is a request
    while True:
        time.sleep(POLL_S)
        if os.getppid() != launcher_pid or _app_gone(app_pid):  # nobody can stop or read this process any more
            os._exit(3)
        count = read_cancel_count(folder)
        if count > seen:
            seen = count
            cancel.set()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: torchrun ... -m cxr_desktop.training.launch_worker RUN_FOLDER", file=sys.stderr)
        return 2
    folder = Path(args[0])
    rank = int(os.environ.get("RANK", "0"))
    channel = Channel(rank)
    channel.send("hello", pid=os.getpid())
    cancel = threading.Event()
    app = os.environ.get(APP_PID_ENV, "")
    threading.Thread(target=watch, args=(folder, cancel, os.getppid(), int(app) if app.isdigit() else None),
                     name="cancel-watch", daemon=True).start()

    from cxr_desktop.errors import CxrError
    from cxr_desktop.training.engine import train
    from cxr_desktop.training.event_json import encode
    from cxr_desktop.training.events import Finished
    from cxr_desktop.training.relay import drain
    from cxr_desktop.training.runs import load_run_config

    finished: Any = None
    try:
        config = load_run_config(folder)

        def relay_event(ev: Any) -> None:
            nonlocal finished
            if rank == 0:
                if isinstance(ev, Finished):
                    finished = ev.result
                channel.send("event", event=encode(ev))

        result = drain(train(config, cancel), relay_event)
        if rank == 0:
            same = result is not None and result is finished
            channel.send("result", same_as_finished=same, result=None if same else encode(result))
        return 0
    except Exception as exc:  # noqa: BLE001 - every failure must reach the launcher as one clear line
        from cxr_desktop.distributed import DistributedError

        kind = "lost_contact" if isinstance(exc, DistributedError) else "error"
        own = isinstance(exc, (CxrError, DistributedError))  # written for the user, as train raises them
        message = str(exc) if own else without_paths(f"{type(exc).__name__}: {exc}")[:300]
        channel.send(kind, type=type(exc).__name__, message=message)
        if not own:
            traceback.print_exc()  # standard error: the launcher keeps it in memory only
        return 1


if __name__ == "__main__":
    sys.exit(main())
