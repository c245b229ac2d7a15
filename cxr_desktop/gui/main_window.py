"""The review window: study list, image canvas with Grad-CAM overlay, results, tags, menus.

The window only wires widgets and workers together; decoding, prediction and
model loading run in workers (:mod:`cxr_desktop.gui.workers`,
:mod:`cxr_desktop.gui.model_controller`), so the window never freezes. Flow:
study list selection -> :class:`ImageLoader` decodes the frame -> canvas shows
it -> :class:`ClassifierWorker` predicts + computes Grad-CAM -> results panel
and overlay. Messages to the user never contain patient data or tracebacks.

The heatmap explains the model's finding class and is drawn only when P(finding)
reaches the decision threshold; otherwise the canvas and the overlay panel say
"No finding above threshold - no heatmap", and the reader may show it for this
image on request, labelled as below threshold (:mod:`cxr_desktop.heatmap_rules`).
"""

from __future__ import annotations

import datetime
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QTabWidget,
    QVBoxLayout, QWidget,
)

from cxr_desktop.gui.canvas import ImageCanvas, PixelReadout
from cxr_desktop.gui.crash import REDACTOR
from cxr_desktop.gui.dialogs import AboutDialog, ModelCardDialog
from cxr_desktop.gui.export_view import caption_with, export_png
from cxr_desktop.gui.fit_scroll import FitScrollArea
from cxr_desktop.gui.layout import ReadingRoom, fit_to_screen, reading_room_handlers
from cxr_desktop.gui.model_controller import ActiveModel, ModelController
from cxr_desktop.gui.overlay import HeatmapLayer
from cxr_desktop.gui.overlay_panel import OPACITY_STEP, SHOWN_BELOW_TEXT, OverlayPanel
from cxr_desktop.gui.pacs_actions import PacsActions
from cxr_desktop.gui.reading_tools import ReadingTools
from cxr_desktop.gui.results_panel import ResultsPanel
from cxr_desktop.viewing.viewer_scope import ViewerScope
from cxr_desktop.gui.screening_panel import ScreeningDialog
from cxr_desktop.gui.settings import AppSettings
from cxr_desktop.gui.shortcuts import SHORTCUTS, ShortcutsDialog, key_sequences
from cxr_desktop.viewing.startup_report import StartupReporter
from cxr_desktop.gui.study_list import StudyListWidget
from cxr_desktop.viewing.study_scan import StudyEntry, recent_entry
from cxr_desktop.gui.tags_panel import TagsPanel
from cxr_desktop.gui.training_wizard import TrainingWizard
from cxr_desktop.gui.workers import ClassifierWorker, ImageLoader, LoadedStudy, PredictionOutcome, WorkerRunner
from cxr_desktop.heatmap_rules import NO_HEATMAP_TEXT, caption_lines, heatmap_drawn, legend_title

if TYPE_CHECKING:  # imaging (pydicom) is imported by the workers once the window is up
    from cxr_desktop.viewing.window_presets import Preset
    from cxr_desktop.imaging.types import StudyImage

log = logging.getLogger(__name__)

IMAGE_FILTER = "Images (*.dcm *.dicom *.png *.jpg *.jpeg *.tif *.tiff);;All files (*)"
MODEL_FILTER = "CXR Review model (*.safetensors);;All files (*)"
EXPORT_FILTERS = {"native": "PNG, whole image at native resolution (*.png)",
                  "view": "PNG, current view as shown on screen (*.png)"}
CLOSE_WAIT_MS = 250  # what closing the window waits, in all, for workers to stop (then app.run leaves)
OPEN_HINT = "Open a file or folder (Ctrl+O / Ctrl+Shift+O), or drop files here."


def no_samples_message(folder: Path) -> str:
    """What the window says when ``--samples`` finds nothing: where it looked and how to open files."""
    return (f"No sample studies were found (looked in {folder}).\n\n"
            "Open your own images with File > Open files (Ctrl+O) or File > Open folder (Ctrl+Shift+O), "
            "or drop files or a folder on this window. PNG, JPEG, TIFF and DICOM files are read.")


class _FirstPaint(QObject):
    """Calls ``callback`` once, on the window's first paint (= the user can see it)."""

    def __init__(self, callback: Callable[[], None]):
        super().__init__()
        self._callback: Callable[[], None] | None = callback

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if self._callback is not None and event.type() in (QEvent.Type.Paint, QEvent.Type.Expose):
            cb, self._callback = self._callback, None
            cb()
        return False


class MainWindow(QMainWindow):
    """CXR Review's main window."""

    image_displayed = Signal(object)  # StudyImage on the canvas
    prediction_shown = Signal(object)  # PredictionOutcome shown in the results panel
    load_failed = Signal(object)  # LoadedStudy whose file could not be decoded

    def __init__(self, settings: AppSettings | None = None, *, engine_options: dict[str, Any] | None = None,
                 reporter: StartupReporter | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("CXR Review")
        self.setAcceptDrops(True)
        self.settings = settings or AppSettings.from_env()
        self.reporter = reporter or StartupReporter(False)

        self.engine_runner = WorkerRunner("engine", threads=1)
        self.loader = ImageLoader(parent=self)
        self.scope = ViewerScope(self.settings.scope_settings)  # input safety for the image on screen
        self.loader.scope_settings = self.scope.settings  # the rules run in the loader's worker
        self.classifier = ClassifierWorker(self.engine_runner, parent=self)
        self.models = ModelController(self.engine_runner, self.settings, engine_options=engine_options, parent=self)

        self.canvas = ImageCanvas(self)
        self.study_list = StudyListWidget()
        self.results = ResultsPanel()
        self.overlay_panel = OverlayPanel(opacity=self.settings.overlay_opacity,
                                          colormap=self.settings.overlay_colormap,
                                          visible=self.settings.overlay_visible)
        self.tags = TagsPanel()
        self.setCentralWidget(self.canvas)
        self._build_docks()
        self._build_status_bar()

        self.current_entry: StudyEntry | None = None
        self._entry_auto = False
        self.current_image: StudyImage | None = None
        self.current_outcome: PredictionOutcome | None = None
        self.layer: HeatmapLayer | None = None
        self.presets: list[Preset] = []
        self.last_message: tuple[str, str] | None = None  # (title, text) of the last dialog/notice
        self._message_box: QMessageBox | None = None
        self._dialogs: list[QWidget] = []
        self.actions: dict[str, QAction] = {}
        self._frame_wanted: int | None = None  # the frame last asked for (key repeat steps from it)
        self.reading = ReadingTools(self)  # measurements, four-corner overlay, cine, wheel frames (issue 14)

        self._build_menus()
        self._connect()
        self.canvas.set_overlay_opacity(self.overlay_panel.opacity / 100.0)
        self.canvas.set_overlay_visible(self.overlay_panel.overlay_visible)
        self.reading_room = ReadingRoom(self)  # layouts, prior, linked views, docked worklist, theme (issue 14)
        fit_to_screen(self)  # 1400x900 at most, never larger than the available screen (HiDPI)
        self._pending_start: tuple[list[str], str | None, bool] | None = None
        self._shown = False
        self._first_paint = _FirstPaint(self._on_first_paint)
        self.installEventFilter(self._first_paint)

    # ================================================================ layout
    def _build_docks(self) -> None:
        left = QDockWidget("Studies", self)
        left.setObjectName("studies")
        left.setWidget(self.study_list)
        left.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, left)

        right = QWidget()
        col = QVBoxLayout(right)
        col.setContentsMargins(0, 0, 0, 0)
        # the wrapped text of the decision aid gets the height it needs, and scrolls when the dock is short
        self.results_scroll = FitScrollArea(self.results)
        col.addWidget(self.results_scroll, 0)
        self.side_tabs = QTabWidget()
        self.side_tabs.addTab(self.overlay_panel, "Heatmap")
        self.side_tabs.addTab(self.tags, "DICOM tags")
        col.addWidget(self.side_tabs, 1)
        dock = QDockWidget("Decision aid", self)
        dock.setObjectName("results")
        dock.setWidget(right)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.resizeDocks([left, dock], [250, 340], Qt.Orientation.Horizontal)
        self.docks = {"studies": left, "results": dock}

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.pixel_label = QLabel("")
        self.window_label = QLabel("")
        self.zoom_label = QLabel("")
        self.frame_label = QLabel("")
        for w in (self.pixel_label, self.window_label, self.zoom_label, self.frame_label):
            w.setMinimumWidth(60)
        self.pixel_label.setMinimumWidth(240)
        sb.addPermanentWidget(self.pixel_label)
        sb.addPermanentWidget(self.window_label)
        sb.addPermanentWidget(self.zoom_label)
        sb.addPermanentWidget(self.frame_label)

    def _build_menus(self) -> None:
        handlers: dict[str, Callable[[], Any]] = {
            "open_files": self.choose_files, "open_folder": self.choose_folder, "export_view": self.choose_export,
            "export_report": self.choose_report,
            "close_all": self.close_all, "quit": self.close,
            "next_image": lambda: self.study_list.step(+1), "prev_image": lambda: self.study_list.step(-1),
            "next_frame": lambda: self.step_frame(+1), "prev_frame": lambda: self.step_frame(-1),
            "first_frame": lambda: self.go_to_frame(0), "last_frame": lambda: self.go_to_frame(10**9),
            # zoom, fit, 1:1, rotate/flip, invert, W/L reset and presets act on the active pane (linked panes
            # follow the link rules): their handlers come from reading_room_handlers below
            "reset_view": self.reset_view,
            "toggle_overlay": lambda: self.overlay_panel.set_overlay_visible(not self.overlay_panel.overlay_visible),
            "opacity_up": lambda: self.overlay_panel.step_opacity(OPACITY_STEP),
            "opacity_down": lambda: self.overlay_panel.step_opacity(-OPACITY_STEP),
            "cycle_colormap": self.overlay_panel.cycle_colormap,
            "open_model": self.choose_model, "show_card": self.show_model_card,
            "default_model": self.models.use_default,
            "screen_folder": self.open_screening, "train_model": self.open_training,
            "show_shortcuts": self.show_shortcuts, "about": self.show_about,
        }
        for i in range(1, 10):
            handlers[f"preset_{i}"] = (lambda n=i: self.apply_preset(n - 1))
        handlers.update(self.reading.handlers())
        handlers.update(reading_room_handlers(self))  # layouts, prior, linking, worklist keys
        for sc in SHORTCUTS:
            act = QAction(sc.text, self)
            if sc.keys:
                act.setShortcuts(key_sequences(sc))
                act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            if sc.help:
                act.setStatusTip(sc.help)
            act.triggered.connect(lambda _checked=False, h=handlers[sc.id]: h())
            self.actions[sc.id] = act
            self.addAction(act)  # shortcuts work even for actions not in a menu
        self.actions["toggle_overlay"].setCheckable(True)
        self.actions["toggle_overlay"].setChecked(self.overlay_panel.overlay_visible)
        self.actions["invert"].setCheckable(True)

        mb = self.menuBar()
        m = mb.addMenu("&File")
        for key in ("open_files", "open_folder"):
            m.addAction(self.actions[key])
        self.actions["open_samples"] = m.addAction("Open &sample studies")
        self.actions["open_samples"].setStatusTip("Open the small public sample studies that come with the app")
        self.actions["open_samples"].triggered.connect(lambda _c=False: self.open_samples())
        self.recent_menu = m.addMenu("Open &recent")
        m.addSeparator()
        m.addAction(self.actions["export_view"])
        m.addAction(self.actions["export_report"])
        file_menu = m
        self.pacs = PacsActions(self)  # Query PACS, Send results, Export as DICOM (issue 13)
        self.pacs.add_file_actions(m)
        m.addAction(self.actions["close_all"])
        m.addSeparator()
        m.addAction(self.actions["quit"])

        m = mb.addMenu("&View")
        for key in ("next_image", "prev_image", None, "next_frame", "prev_frame", "first_frame", "last_frame", None,
                    "fit", "actual_size", "zoom_in", "zoom_out", None, "rotate_cw", "rotate_ccw", "flip_h",
                    "flip_v", None, "reset_view"):
            m.addSeparator() if key is None else m.addAction(self.actions[key])
        self.reading.add_menus(mb, m, file_menu)

        m = mb.addMenu("&Window/level")
        m.addAction(self.actions["invert"])
        m.addAction(self.actions["reset_window"])
        m.addSeparator()
        self.presets_menu = m.addMenu("&Presets")
        self.presets_menu.setEnabled(False)

        m = mb.addMenu("&Overlay")
        for key in ("toggle_overlay", "opacity_up", "opacity_down", "cycle_colormap"):
            m.addAction(self.actions[key])

        m = mb.addMenu("&Model")
        m.addAction(self.actions["open_model"])
        self.recent_models_menu = m.addMenu("&Recent models")
        m.addAction(self.actions["default_model"])
        m.addSeparator()
        m.addAction(self.actions["show_card"])

        m = mb.addMenu("&Tools")
        m.addAction(self.actions["screen_folder"])
        m.addAction(self.actions["train_model"])
        self.pacs.add_tools_actions(m)

        m = mb.addMenu("&Help")
        m.addAction(self.actions["show_shortcuts"])
        m.addAction(self.actions["about"])
        self._refresh_recent_menus()

    def _connect(self) -> None:
        self.study_list.entry_selected.connect(self._on_entry_selected)
        self.results.show_anyway_requested.connect(self.show_score_anyway)
        self.study_list.bad_entry_selected.connect(self._on_bad_entry)
        self.loader.loaded.connect(self._on_loaded)
        self.classifier.result_ready.connect(self._on_outcome)
        self.classifier.busy_changed.connect(self._update_busy)
        self.loader.busy_changed.connect(self._update_busy)
        self.models.ready.connect(self._on_model_ready)
        self.models.failed.connect(self._on_model_failed)
        self.models.loading.connect(self._on_model_loading)
        self.canvas.pixel_hovered.connect(self._on_pixel)
        self.canvas.window_changed.connect(self._on_window_changed)
        self.canvas.view_changed.connect(self._on_view_changed)
        self.canvas.files_dropped.connect(self.open_paths)
        self.overlay_panel.opacity_changed.connect(self._on_opacity)
        self.overlay_panel.colormap_changed.connect(self._on_colormap)
        self.overlay_panel.visible_changed.connect(self._on_overlay_visible)
        self.overlay_panel.cam_class_changed.connect(lambda _c: self.request_prediction())
        self.overlay_panel.style_changed.connect(lambda _s: self._show_overlay())
        self.overlay_panel.show_below_changed.connect(lambda _on: self._show_overlay())

    # ================================================================ start-up
    def _on_first_paint(self) -> None:
        self._shown = True
        self.reporter.mark("window_shown", torch_loaded="torch" in sys.modules,
                           pydicom_loaded="pydicom" in sys.modules)
        if self._pending_start is not None:
            QTimer.singleShot(0, self._start_pending)

    def start_when_shown(self, paths: list[str] | None = None, model: str | None = None, *,
                         samples: bool = False) -> None:
        """:meth:`start` once the window has been painted, so that nothing delays the first window."""
        self._pending_start = (list(paths or []), model, samples)
        if self._shown:
            QTimer.singleShot(0, self._start_pending)
        else:  # never painted (e.g. minimised): start anyway
            QTimer.singleShot(2000, self._start_pending)

    def _start_pending(self) -> None:
        pending, self._pending_start = self._pending_start, None
        if pending is not None and not self.reporter.quitting:
            self.start(*pending)

    def start(self, paths: list[str] | None = None, model: str | None = None, samples: bool = False) -> None:
        """Begin loading the model (worker) and open ``paths`` (and the sample studies with ``samples``)."""
        self.models.load_startup(model)
        if paths:
            self.open_paths(paths)
        if samples:
            self.open_samples()

    def open_samples(self) -> bool:
        """Open the bundled sample studies; when there are none, say so and how to open files."""
        from cxr_desktop.paths import sample_files, sample_studies_dir

        folder = sample_studies_dir()
        if not sample_files(folder):
            if self.current_image is None:  # the empty canvas says it, where the image would be
                self.canvas.show_message(no_samples_message(folder))
            else:
                self.inform("No sample studies", no_samples_message(folder))
            self.statusBar().showMessage("No sample studies found", 10000)
            return False
        self.open_paths([str(folder)])
        return True

    # ================================================================ opening
    def open_paths(self, paths: list[str]) -> None:
        """Open files and/or folders (menu, command line, drag and drop, recent files)."""
        paths = [str(p) for p in paths if str(p)]
        if not paths:
            return
        for p in paths:
            REDACTOR.register_path(p)
            REDACTOR.register_path(Path(p).resolve())
        recent = recent_entry(paths)  # one entry per opening (files together: their folder); never a missing path
        if recent is not None:
            self.settings.add_recent_file(recent)
        self._refresh_recent_menus()
        self.study_list.add_paths(paths, select_first=True)

    def choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Open images", self.settings.last_dir, IMAGE_FILTER)
        if files:
            self.settings.last_dir = str(Path(files[0]).parent)
            self.open_paths(files)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open folder", self.settings.last_dir)
        if folder:
            self.settings.last_dir = folder
            self.open_paths([folder])

    def close_all(self) -> None:
        self.study_list.clear()
        self.current_entry = None
        self._show_nothing(OPEN_HINT)

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.open_paths(paths)
            event.acceptProposedAction()

    # ================================================================ images
    def _on_entry_selected(self, entry: StudyEntry) -> None:
        self.current_entry = entry
        self._entry_auto = self.study_list.selection_is_auto
        self.load_frame(0)

    def _on_bad_entry(self, entry: StudyEntry) -> None:
        self.current_entry = entry
        self._show_nothing(f"{entry.message}\n\n(reason: {entry.reason})")

    def _show_nothing(self, message: str) -> None:
        self.current_image = None
        self.current_outcome = None
        self.layer = None
        self.classifier.cancel()
        self.canvas.show_message(message)
        self.results.clear_result(None)
        self.tags.set_tags(None, "No DICOM file shown.")
        self.frame_label.setText("")
        self.presets_menu.setEnabled(False)

    def load_frame(self, frame: int) -> None:
        if self.current_entry is None:
            return
        self._frame_wanted = int(frame)
        self.loader.request(self.current_entry.path, frame)
        self._update_busy()

    def wanted_frame(self) -> int:
        """The frame last asked for in the file on screen (it may still be decoding), else the one shown."""
        im = self.current_image
        if im is None:
            return 0
        same = self.current_entry is not None and im.path == self.current_entry.path
        return self._frame_wanted if (same and self._frame_wanted is not None) else im.frame_index

    def step_frame(self, delta: int) -> None:
        """Step from the frame last asked for, so that presses made while a frame decodes add up."""
        if self.current_image is not None:
            self.go_to_frame(self.wanted_frame() + delta)

    def go_to_frame(self, frame: int) -> None:
        im = self.current_image
        if im is None or im.frame_count <= 1:
            return
        frame = max(0, min(im.frame_count - 1, int(frame)))
        if frame != self.wanted_frame():
            self.load_frame(frame)

    def _on_loaded(self, study: LoadedStudy) -> None:
        entry = self.current_entry
        if entry is None or study.path != entry.path:
            return
        if study.image is None:
            err = study.error
            self.study_list.mark_failed(study.path, err)
            self._show_nothing(f"{err.user_message() if err else 'The file could not be read.'}")
            self._update_busy()
            self.load_failed.emit(study)
            if self._entry_auto:  # opened, not chosen: show the next readable file instead
                self.study_list.select_readable_after(study.path)
            return
        image = study.image
        pid = image.metadata.get("patient_id")
        if pid:
            REDACTOR.register_patient_id(pid)
        same_file = self.current_image is not None and self.current_image.path == image.path
        if not same_file:  # "show anyway" is a request for one image, never carried to the next
            self.overlay_panel.show_below_box.blockSignals(True)
            self.overlay_panel.set_show_below(False)
            self.overlay_panel.show_below_box.blockSignals(False)
        self.scope.set_image(image, study.scope, study.scope_settings)
        self.current_image = image
        self.current_outcome = None
        self.layer = None
        self.canvas.set_image(image, keep_view=same_file, mapper=study.mapper, prepared=study.prepared)
        self._rebuild_presets(image, study.presets)
        if study.tags is not None:  # another frame of the same file only updates the frame rows
            self.tags.set_tags(study.tags, frame=(image.frame_index, image.frame_count), frame_rows=study.frame_tags)
        else:
            self.tags.set_tags(None, study.tags_error or f"{image.source_format.upper()} file: no DICOM tags.")
        self.frame_label.setText(f"Frame {image.frame_index + 1}/{image.frame_count}" if image.frame_count > 1
                                 else "")
        self.setWindowTitle(f"CXR Review - {Path(image.path or '').name}")
        self.image_displayed.emit(image)
        self.reporter.mark("image_shown")
        self.request_prediction()

    def show_score_anyway(self) -> None:
        """The reader deliberately asks for the score of the out-of-scope image on screen."""
        if self.current_image is None:
            return
        self.scope.show_anyway = True
        self.request_prediction()

    # ================================================================ predictions
    def request_prediction(self) -> None:
        """Ask the classifier about the image on screen (cached, superseded, off the GUI thread)."""
        image = self.current_image
        self.current_outcome = None
        self.canvas.clear_overlay()
        self.canvas.set_overlay_note("")
        self.overlay_panel.set_gate(None)
        self.layer = None
        if image is None:
            return
        verdict = self.scope.before_model(image)
        if not verdict.in_scope and not self.scope.show_anyway:
            self.classifier.cancel()
            self._update_busy()
            self.results.show_out_of_scope([r.message for r in verdict.reasons])
            return
        if self.classifier.engine is None:
            self.results.clear_result("The model is still loading; the result follows.")
            self._update_busy()
            return
        self.results.clear_result(None)
        self.classifier.request(image, cam_class=self.overlay_panel.cam_class, colormap=self.overlay_panel.colormap)

    def _update_busy(self, *_args: Any) -> None:
        """One busy indicator for loading the image, loading the model and analysing."""
        if self.loader.busy:
            self.results.set_busy(True, "Loading image...")
        elif self.models.busy and self.current_image is not None:
            self.results.set_busy(True, "Loading the model...")
        elif self.classifier.busy:
            self.results.set_busy(True, "Analysing image...")
        else:
            self.results.set_busy(False)

    def _on_outcome(self, outcome: PredictionOutcome) -> None:
        image = self.current_image
        if image is None:
            return
        expected = self.classifier.key_for(image, self.overlay_panel.cam_class)
        if outcome.key != expected:
            return
        self._update_busy()
        self.current_outcome = outcome
        if outcome.result is None:
            self.results.clear_result(outcome.error)
            self.prediction_shown.emit(outcome)
            return
        active = self.models.active
        res = outcome.result
        verdict = self.scope.after_model(image, res.pooled)
        if not verdict.in_scope and not self.scope.show_anyway:
            self.results.show_out_of_scope([r.message for r in verdict.reasons])
            self.prediction_shown.emit(outcome)
            return
        self.results.show_prediction(res.prediction, active.card.positive_class if active else None,
                                     out_of_scope=None if verdict.in_scope else [r.message for r in verdict.reasons],
                                     caution=verdict.caution)
        if res.heatmap is not None:
            self.layer = outcome.layer or HeatmapLayer(res.heatmap, res.cam_class)
        self._show_overlay()
        self.prediction_shown.emit(outcome)
        self.reporter.mark("first_result")

    # ================================================================ overlay
    def _on_opacity(self, percent: int) -> None:
        self.canvas.set_overlay_opacity(percent / 100.0)
        self.settings.overlay_opacity = percent

    def _on_colormap(self, name: str) -> None:
        self.settings.overlay_colormap = name
        self._show_overlay()

    def _show_overlay(self) -> None:
        """Draw the heatmap of the current result, or say why not (below the decision threshold)."""
        outcome, image, layer = self.current_outcome, self.current_image, self.layer
        if outcome is None or outcome.result is None or image is None or layer is None:
            self.canvas.clear_overlay()
            self.canvas.set_overlay_note("")
            self.overlay_panel.set_gate(None)
            return
        pred = outcome.result.prediction
        below = not pred.above_threshold
        if heatmap_drawn(pred.score, pred.threshold, show_anyway=self.overlay_panel.show_below):
            self.canvas.set_overlay(layer.image(self.overlay_panel.colormap, self.overlay_panel.style), image.shape)
            self.overlay_panel.set_explained(layer.class_name, below_threshold=below)
            self.overlay_panel.set_gate("below_shown" if below else "drawn")
            self.canvas.set_overlay_note(SHOWN_BELOW_TEXT if below else "")
        else:
            self.canvas.clear_overlay()
            self.overlay_panel.set_explained(layer.class_name)
            self.overlay_panel.set_gate("below")
            positive = self.models.active.card.positive_class if self.models.active else "finding"
            self.canvas.set_overlay_note(
                f"{NO_HEATMAP_TEXT}: P({positive}) = {pred.score:.3f} < {pred.threshold:.3f}. "
                "To see it anyway: Heatmap tab > 'Show heatmap anyway'.")

    def _on_overlay_visible(self, on: bool) -> None:
        self.canvas.set_overlay_visible(on)
        self.actions["toggle_overlay"].setChecked(on)
        self.settings.overlay_visible = on

    # ================================================================ window/level
    def _rebuild_presets(self, image: StudyImage, presets: list[Preset] | None = None) -> None:
        if presets is None:
            from cxr_desktop.viewing.window_presets import presets_for

            presets = presets_for(image)
        if presets and presets == self.presets and self.presets_menu.isEnabled():
            return  # the next frame of a series offers the same windows: keep the menu (cine)
        self.presets = presets
        self.presets_menu.clear()
        group = QActionGroup(self.presets_menu)
        for i, preset in enumerate(self.presets):
            act = self.presets_menu.addAction(preset.name)
            if i < 9:
                act.setShortcut(QKeySequence(f"Ctrl+{i + 1}"))
                act.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)  # the window-wide action fires
            act.triggered.connect(lambda _c=False, n=i: self.apply_preset(n))
            group.addAction(act)
        self.presets_menu.setEnabled(bool(self.presets))

    def apply_preset(self, index: int) -> None:
        """Preset ``index`` of the menu (the active pane's presets) on the active pane."""
        canvas = self.reading_room.active_canvas()
        if canvas.image is None or not 0 <= index < len(self.presets):
            return
        preset = self.presets[index]
        canvas.set_window(preset.window)  # None: the file's VOI LUT
        self.statusBar().showMessage(f"Window: {preset.name}", 3000)

    def reset_view(self) -> None:
        self.reading_room.reset_view()

    # ================================================================ status bar
    def _on_pixel(self, readout: PixelReadout | None) -> None:
        self.pixel_label.setText(readout.text() if readout is not None else "")

    def _on_window_changed(self, window) -> None:
        if window is None:
            self.window_label.setText("W/L: file VOI LUT")
        else:
            self.window_label.setText(f"W {window.width:.6g} / L {window.center:.6g}")
        self.actions["invert"].setChecked(self.canvas.inverted)

    def _on_view_changed(self) -> None:
        self.zoom_label.setText(f"Zoom {self.canvas.zoom * 100:.0f} %")

    # ================================================================ models
    def _on_model_loading(self, text: str) -> None:
        self.results.set_model_loading(text)
        self.statusBar().showMessage(text)
        self._update_busy()

    def _on_model_ready(self, active: ActiveModel) -> None:
        self.classifier.set_engine(active.engine, active.model_id)
        self._update_busy()
        self.results.set_model(active)
        self.scope.set_model(active.engine)
        self.results.set_learned_status(self.scope.learned_status)
        self.overlay_panel.set_classes(list(active.card.classes), active.card.positive_class)
        self.statusBar().showMessage(f"Model ready: {active.display_name} on {active.engine.device_label}", 5000)
        self._refresh_recent_menus()
        self.reporter.mark("model_ready")
        if active.refused_path:
            self.inform("Model not used", active.notes[0] if active.notes else "The model could not be used.")
        self.request_prediction()

    def _on_model_failed(self, message: str) -> None:
        self._update_busy()
        self.statusBar().showMessage("The model was not changed.", 5000)
        if self.models.active is not None:
            self.results.set_model(self.models.active)
        self.inform("Model not used", message)

    def choose_model(self) -> None:
        start = str(Path(self.settings.last_model).parent) if self.settings.last_model else ""
        path, _ = QFileDialog.getOpenFileName(self, "Open model file", start, MODEL_FILTER)
        if path:
            self.models.open_model(path)

    def open_model(self, path: str) -> None:
        """Switch model (same as Model > Open model file)."""
        self.models.open_model(path)

    def show_model_card(self) -> None:
        if self.models.active is None:
            self.inform("Model card", "The model is still loading.")
            return
        self._keep_dialog(ModelCardDialog(self.models.active, self))

    # ================================================================ recent lists
    def _refresh_recent_menus(self) -> None:
        self.recent_menu.clear()
        for p in self.settings.recent_files:
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _c=False, path=p: self._open_recent(path))
        self.recent_menu.setEnabled(bool(self.settings.recent_files))
        self.recent_models_menu.clear()
        for p in self.settings.recent_models:
            act = self.recent_models_menu.addAction(p)
            act.triggered.connect(lambda _c=False, path=p: self.models.open_model(path))
        self.recent_models_menu.setEnabled(bool(self.settings.recent_models))

    def _open_recent(self, path: str) -> None:
        if not Path(path).exists():
            self.inform("File not found", f"{Path(path).name} is no longer there (moved or deleted).")
            return
        self.open_paths([path])

    # ================================================================ export
    def choose_export(self) -> None:
        if self.current_image is None:
            self.inform("Export view", "Open an image first.")
            return
        default = Path(self.settings.last_dir or ".") / f"cxr-view-{datetime.datetime.now():%Y%m%d-%H%M%S}.png"
        path, chosen = QFileDialog.getSaveFileName(self, "Export image as PNG", str(default),
                                                   ";;".join(EXPORT_FILTERS.values()), EXPORT_FILTERS["native"])
        if path:
            if not path.lower().endswith(".png"):
                path += ".png"
            mode = "view" if chosen == EXPORT_FILTERS["view"] else "native"
            self.export_view(path, mode=mode)

    def export_caption(self) -> str:
        """The export's caption: class, probability, threshold, model (never patient data)."""
        active = self.models.active
        outcome = self.current_outcome
        if active is None or outcome is None or outcome.result is None:
            return ""
        pred = outcome.result.prediction
        from cxr_desktop.inference.cam import CAM_LABELS  # torch is loaded with the model already

        method = active.engine.options.cam_method
        shown = self.canvas.overlay_shown and self.layer is not None
        return "\n".join(caption_lines(
            explained=self.layer.class_name if self.layer is not None else None,
            positive_class=active.card.positive_class, score=pred.score, threshold=pred.threshold,
            model=active.display_name, method=CAM_LABELS.get(method, method), heatmap_shown=shown))

    def export_view(self, path: str, mode: str = "native", patient_data: bool | None = None) -> Path | None:
        """Save the image with legend, measurements and caption (no patient data unless asked).

        ``patient_data`` None: as File > Patient data in exports says (off unless the user ticks it).

        ``mode`` "native": the whole image at its own resolution, as displayed; "view": the
        canvas viewport exactly as shown (zoom, pan).
        """
        if mode not in EXPORT_FILTERS:
            raise ValueError(f"unknown export mode {mode!r}")
        overlay_on = self.canvas.overlay_shown and self.layer is not None
        below = (self.current_outcome is not None and self.current_outcome.result is not None
                 and not self.current_outcome.result.prediction.above_threshold)
        title = legend_title(self.layer.class_name, below_threshold=below) if overlay_on and self.layer else ""
        patient = self.reading.patient_data_in_exports if patient_data is None else bool(patient_data)
        picture = self.canvas.render_native() if mode == "native" else None
        if picture is None:
            picture = self.canvas.render_viewport(patient_data=patient)
        caption = caption_with(self.export_caption(), measurements=self.canvas.measure.descriptions(),
                               patient=self.canvas.corner_text(patient_data=True).get("top_left", []) if patient
                               else ())
        return self._exported("view", path, lambda: export_png(
            path, picture, colormap=self.overlay_panel.colormap if overlay_on else None, legend_title=title,
            caption=caption))

    def _exported(self, what: str, path: str, write: Callable[[], Path]) -> Path | None:
        """Run ``write``; show where ``what`` (view, report) went, or why it could not be saved (None)."""
        try:
            out = write()
        except OSError as exc:
            self.inform("Export failed", f"The {what} could not be saved to {Path(path).name} "
                                         f"({exc.strerror or type(exc).__name__}). Choose another folder.")
            return None
        self.statusBar().showMessage(f"{what.capitalize()} exported to {out.name}", 5000)
        return out

    # ================================================================ case report
    def choose_report(self) -> None:
        """File > Export report...: ask where (and whether to print patient data), then write the PDF."""
        from cxr_desktop.gui.case_report import ExportReportDialog

        if self.current_image is None:
            self.inform("Export report", "Open an image first.")
            return
        default = Path(self.settings.last_dir or ".") / f"cxr-report-{datetime.datetime.now():%Y%m%d-%H%M%S}.pdf"
        dialog = ExportReportDialog(str(default), self)
        dialog.accepted.connect(lambda: self.export_report(dialog.chosen_path(),
                                                           include_patient=dialog.include_patient.isChecked()))
        self.report_dialog = dialog
        dialog.open()

    def export_report(self, path: str, *, include_patient: bool = False) -> Path | None:
        """Write the one-page PDF case report of the image on screen (patient data only if asked)."""
        from cxr_desktop.gui.case_report import collect_case_report, render_case_report

        if self.current_image is None:
            return None
        try:
            measurements = self.canvas.measure.descriptions()
        except AttributeError:  # no measurement tools in this window
            measurements = []
        report, plain, heat = collect_case_report(self, include_patient=include_patient, measurements=measurements)
        return self._exported("report", path, lambda: render_case_report(path, report, plain, heat))

    # ================================================================ tools
    def new_screening_dialog(self) -> ScreeningDialog:
        """A screening dialog on this window, preset with the active model."""
        active = self.models.active
        model_path = active.path if active is not None and active.path else None
        return ScreeningDialog(self, model_path=model_path)

    def open_screening(self) -> None:
        dialog = self.new_screening_dialog()
        dialog.open_study_requested.connect(lambda path: self.open_paths([path]))
        self.pacs.attach_to_screening(dialog)
        self.reading_room.attach_screening(dialog)  # its results also in the docked worklist
        self._keep_dialog(dialog)

    def open_training(self) -> None:
        dialog = TrainingWizard(self, self.settings.q)
        dialog.model_ready.connect(self.open_model)
        self._keep_dialog(dialog)

    # ================================================================ help
    def show_shortcuts(self) -> None:
        self._keep_dialog(ShortcutsDialog(self))

    def show_about(self) -> None:
        self._keep_dialog(AboutDialog(self.models.active, self))

    def _keep_dialog(self, dialog: QWidget) -> None:
        self._dialogs = [d for d in self._dialogs if d.isVisible()]
        self._dialogs.append(dialog)
        dialog.show()
        dialog.raise_()

    def inform(self, title: str, text: str) -> None:
        """A non-blocking message box (the viewer keeps working behind it)."""
        self.last_message = (title, text)
        if self._message_box is not None:
            self._message_box.close()
        box = QMessageBox(QMessageBox.Icon.Information, title, text, QMessageBox.StandardButton.Ok, self)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.open()
        self._message_box = box

    # ================================================================ shutdown
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        # Quit must feel instant: cancel, wait briefly, and let app.run leave without waiting for
        # work that cannot be interrupted (a model load, a backbone pass); nothing written is lost.
        self.shutdown(timeout_ms=CLOSE_WAIT_MS)
        super().closeEvent(event)

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Stop workers; False if one is still busy after ``timeout_ms`` in all (e.g. a model still loading)."""
        import time

        self.settings.sync()
        self.classifier.cancel()
        deadline = time.monotonic() + timeout_ms / 1000.0

        def left() -> int:  # one budget for all the pools, not one per pool
            return max(0, int(1000 * (deadline - time.monotonic())))

        ok = True
        wizards = self.findChildren(TrainingWizard)  # open or closed: their workers too
        for wizard in wizards:  # asked first, so that a run is stopping while the other pools drain
            wizard.stop_work()
        for stop in (self.study_list.shutdown, self.loader.runner.shutdown, self.engine_runner.shutdown,
                     self.pacs.shutdown, self.reading_room.shutdown, *(w.shutdown for w in wizards)):
            ok = stop(left()) and ok
        return ok

