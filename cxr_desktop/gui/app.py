"""Start the review window: ``cxr-desktop [PATH ...]`` ends up in :func:`run`.

Order matters for start-up time: the window is created and shown first (Qt,
numpy and the light viewer modules only), and the model, which needs torch,
starts loading on a worker thread once the event loop runs.
"""

from __future__ import annotations

import os
import sys

from PySide6.QtWidgets import QApplication

from cxr_desktop.gui.crash import install_excepthook
from cxr_desktop.viewing.startup_report import StartupReporter

QUIT_WAIT_MS = 250  # after the window closed: a last short wait for workers to stop


def create_app(argv: list[str] | None = None) -> QApplication:
    """The QApplication (reused if one exists, e.g. under pytest-qt)."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(argv if argv is not None else sys.argv[:1])
    app.setApplicationName("CXR Review")
    app.setOrganizationName("CXR Review")
    app.setApplicationDisplayName("CXR Review")
    return app  # type: ignore[return-value]


def run(paths: list[str], model: str | None = None, *, samples: bool = False) -> int:
    """Open the main window on ``paths`` (files or folders; ``samples``: the sample studies) until closed."""
    app = create_app()
    install_excepthook()
    from cxr_desktop.gui.main_window import MainWindow

    reporter = StartupReporter.from_env()
    engine_options = {}
    if os.environ.get("CXR_DEVICE"):  # auto | cpu | cuda (support and benchmarks)
        engine_options["device"] = os.environ["CXR_DEVICE"]
    window = MainWindow(reporter=reporter, engine_options=engine_options)
    reporter.quit_fn = window.close  # CXR_EXIT_AFTER quits as File > Quit does (the bench times it)
    window.start_when_shown(list(paths), model, samples=samples)
    window.show()
    code = int(app.exec())
    window.shutdown(timeout_ms=QUIT_WAIT_MS)  # settings synced, queued work dropped, generators stopped
    leave(code)
    return code  # not reached


def leave(code: int) -> None:
    """End the process now, without the interpreter's slow teardown.

    Work that cannot be interrupted (a model load, a backbone pass, a training epoch) is
    not waited for, nor is the seconds-long teardown of torch and Qt's pools: nothing is
    being written that matters (settings are synced, outputs and checkpoints are
    atomic), so the user is never kept waiting after Quit. Logs and output are flushed.
    """
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
