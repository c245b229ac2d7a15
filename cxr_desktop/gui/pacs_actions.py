"""The PACS menu entries of the main window, kept out of it: settings, query/retrieve, send, export as DICOM.

:class:`PacsActions` adds File > Query PACS..., File > Send results to PACS...,
File > Export as DICOM... and Tools > PACS settings... to the window's menus, a
"Send to PACS" button to the screening worklist, and owns the worker that writes
exported objects. The main window calls :meth:`PacsActions.shutdown` when it closes,
so no PACS job outlives it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QMenu, QPushButton, QWidget

from cxr_desktop.gui.workers import WorkerRunner

log = logging.getLogger(__name__)


class PacsActions(QObject):
    """PACS integration of one main window."""

    def __init__(self, window: Any):
        super().__init__(window)
        self.window = window
        self.runner = WorkerRunner("cxr-pacs-export", threads=1)
        self.dialogs: list[QWidget] = []
        self.actions: dict[str, QAction] = {}
        self.last_export: tuple[Path, Path] | None = None

    # -- menus
    def _action(self, key: str, text: str, tip: str, slot: Any) -> QAction:
        act = QAction(text, self.window)
        act.setStatusTip(tip)
        act.triggered.connect(lambda _c=False: slot())
        self.actions[key] = act
        return act

    def add_file_actions(self, menu: QMenu) -> None:
        menu.addAction(self._action("query_pacs", "Query &PACS...", "Search a PACS and retrieve studies",
                                    self.open_query))
        menu.addAction(self._action("send_results", "Se&nd results to PACS...",
                                    "Send the current image's Secondary Capture + Structured Report to a PACS",
                                    self.send_current))
        menu.addAction(self._action("export_dicom", "Export as &DICOM...",
                                    "Write the current image's Secondary Capture + Structured Report to a folder",
                                    self.choose_export_dicom))

    def add_tools_actions(self, menu: QMenu) -> None:
        menu.addAction(self._action("pacs_settings", "P&ACS settings...", "PACS servers and the local study cache",
                                    self.open_settings))

    def _keep(self, dialog: QWidget) -> QWidget:
        self.dialogs = [d for d in self.dialogs if d.isVisible()]
        self.dialogs.append(dialog)
        dialog.show()
        dialog.raise_()
        return dialog

    # -- dialogs
    def open_settings(self) -> QWidget:
        from cxr_desktop.gui.pacs_settings import PacsSettingsDialog

        return self._keep(PacsSettingsDialog(self.window, settings=self.window.settings.q))

    def open_query(self) -> QWidget:
        from cxr_desktop.gui.pacs_query import QueryPacsDialog

        dialog = QueryPacsDialog(self.window, settings=self.window.settings.q)
        dialog.studies_retrieved.connect(self.window.open_paths)
        return self._keep(dialog)

    def send_current(self) -> QWidget | None:
        from cxr_desktop.gui.send_results import NothingToSend, SendResultsDialog, send_viewer_job, viewer_finding

        try:
            result = viewer_finding(self.window)
        except NothingToSend as exc:
            self.window.inform("Send results to PACS", str(exc))
            return None

        def job(server: Any, secrets: Any, cancel: Any) -> Any:
            yield from send_viewer_job(result, server, secrets, cancel)

        return self._keep(SendResultsDialog(job, f"The result of {result.source.name}.", self.window,
                                            settings=self.window.settings.q))

    def attach_to_screening(self, dialog: Any) -> None:
        """Add "Send to PACS..." buttons (selected rows / all above threshold) next to the worklist's exports."""
        bottom = _layout_holding(dialog.layout(), dialog.export_csv_button)
        for above in (False, True):
            button = QPushButton("Send all above threshold to PACS..." if above else "Send selected to PACS...")
            button.clicked.connect(lambda _c=False, a=above: self.send_worklist(dialog, above_only=a))
            if bottom is not None:
                bottom.insertWidget(bottom.indexOf(dialog.export_csv_button), button)
            else:
                dialog.layout().addWidget(button)
            setattr(dialog, "send_above_button" if above else "send_selected_button", button)

    def send_worklist(self, dialog: Any, *, above_only: bool) -> QWidget | None:
        from cxr_desktop.gui.send_results import SendResultsDialog, send_worklist_job, worklist_rows

        rows = worklist_rows(dialog, above_only=above_only)
        folder, model_path = dialog._run_folder, dialog._model_path()
        if not rows or folder is None or model_path is None:
            self.window.inform("Send results to PACS", "No worklist rows to send: screen a folder, then select "
                                                       "scored or out-of-scope rows (or use 'all above threshold').")
            return None
        factory = dialog._factory

        def job(server: Any, secrets: Any, cancel: Any) -> Any:
            yield from send_worklist_job(Path(folder), rows, factory, Path(model_path), server, secrets, cancel)

        what = f"{len(rows)} worklist row{'s' if len(rows) != 1 else ''}" + \
               (" (every row at or above the threshold)." if above_only else " (selected).")
        return self._keep(SendResultsDialog(job, what, dialog, settings=self.window.settings.q))

    # -- export as DICOM
    def choose_export_dicom(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.window, "Export as DICOM: choose a folder",
                                                  self.window.settings.last_dir)
        if folder:
            self.export_dicom(folder)

    def export_dicom(self, folder: str | Path) -> Any:
        """Write the current image's SC + SR into ``folder`` in a worker; the window says where."""
        from cxr_desktop.gui.send_results import NothingToSend, export_viewer_job, viewer_finding

        try:
            result = viewer_finding(self.window)
        except NothingToSend as exc:
            self.window.inform("Export as DICOM", str(exc))
            return None
        self.window.statusBar().showMessage("Writing the DICOM result objects…")
        return self.runner.start_function(export_viewer_job, result, Path(folder), returned=self._exported,
                                          errored=self._export_failed)

    def _exported(self, paths: tuple[Path, Path]) -> None:
        self.last_export = paths
        self.window.statusBar().showMessage(f"Exported {paths[0].name} and {paths[1].name} "
                                            f"to {paths[0].parent}", 8000)

    def _export_failed(self, exc: BaseException) -> None:
        log.warning("export as DICOM failed: %s", exc.__class__.__name__)
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc.__class__.__name__
        self.window.inform("Export as DICOM", f"The result objects could not be written ({why}); "
                                              "choose another folder, or check that the image is a complete DICOM.")

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        ok = True
        for d in self.dialogs:
            stop = getattr(d, "shutdown", None)
            if stop is not None:
                ok = bool(stop(timeout_ms)) and ok
        return self.runner.shutdown(timeout_ms) and ok


def _layout_holding(layout: Any, widget: QWidget) -> Any:
    """The (nested) box layout that directly holds ``widget``, or None."""
    if layout is None:
        return None
    if layout.indexOf(widget) >= 0:
        return layout
    for i in range(layout.count()):
        child = layout.itemAt(i).layout()
        found = _layout_holding(child, widget) if child is not None else None
        if found is not None:
            return found
    return None
