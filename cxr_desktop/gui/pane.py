"""A comparison pane: its own canvas, image, prediction and heatmap, beside the main one.

The main window's own canvas is pane 0 (its flow is unchanged). A layout adds
these panes for a prior or another study: each decodes in its own
:class:`ImageLoader`, asks its own :class:`ClassifierWorker` (on the window's
engine runner, so predictions never compete for the CPU with the main pane's),
keeps its own input-safety verdict, and draws its own heatmap under the same
rules as the main pane (:mod:`cxr_desktop.heatmap_rules`). Its result is shown in
the decision-aid panel while the pane is the active one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from cxr_desktop.gui.canvas import ImageCanvas
from cxr_desktop.gui.overlay import HeatmapLayer
from cxr_desktop.gui.overlay_panel import SHOWN_BELOW_TEXT
from cxr_desktop.viewing.viewer_scope import ViewerScope
from cxr_desktop.gui.workers import ClassifierWorker, ImageLoader, LoadedStudy, PredictionOutcome, WorkerRunner
from cxr_desktop.heatmap_rules import NO_HEATMAP_TEXT, heatmap_drawn

if TYPE_CHECKING:
    from cxr_desktop.gui.main_window import MainWindow
    from cxr_desktop.imaging.types import StudyImage


class ComparePane(QObject):
    """One extra pane of a layout: an image with its own result and heatmap."""

    image_shown = Signal(object)  # StudyImage
    result_shown = Signal(object)  # PredictionOutcome
    changed = Signal()  # image, result or message changed (header text)

    def __init__(self, window: MainWindow, parent: QObject | None = None):
        super().__init__(parent)
        self.window = window
        self.canvas = ImageCanvas()
        self.canvas.show_message("Empty pane: Shift+P opens the prior of the current image here.")
        self.loader = ImageLoader(WorkerRunner("pane-loader", threads=1), parent=self)
        self.loader.scope_settings = window.scope.settings
        self.classifier = ClassifierWorker(window.engine_runner, parent=self)
        self.scope = ViewerScope(window.scope.settings)
        self.path: str | None = None
        self.label: str | None = None  # e.g. "PACS cache" (cached files have hashed names)
        self.image: StudyImage | None = None
        self.outcome: PredictionOutcome | None = None
        self.layer: HeatmapLayer | None = None
        self.note = ""  # why there is no image or no score (no patient data)
        self.presets: list = []  # window presets of the image (the loader's), for the Presets menu when active
        self.loader.loaded.connect(self._on_loaded)
        self.classifier.result_ready.connect(self._on_outcome)
        active = window.models.active
        if active is not None:
            self.set_model(active)

    # ------------------------------------------------------------ inputs
    def open(self, path: str, label: str | None = None) -> None:
        """Decode ``path`` (first frame) into this pane; ``label`` names it in the header instead of its file."""
        self.path = str(path)
        self.label = label
        self.loader.request(self.path, 0)

    def clear(self) -> None:
        self.path = None
        self.label = None
        self.image = None
        self.outcome = None
        self.layer = None
        self.classifier.cancel()
        self.canvas.show_message("Empty pane")
        self.changed.emit()

    def set_model(self, active: Any) -> None:
        """Use the window's engine (a new model re-scores the pane)."""
        self.classifier.set_engine(active.engine, active.model_id)
        self.scope.set_model(active.engine)
        self.request_prediction()

    # ------------------------------------------------------------ loading and scoring
    def _on_loaded(self, study: LoadedStudy) -> None:
        if study.path != self.path:
            return
        if study.image is None:
            self.image = None
            self.note = study.error.user_message() if study.error else "The file could not be read."
            self.canvas.show_message(self.note)
            self.changed.emit()
            return
        self.image = study.image
        self.presets = list(study.presets or [])
        self.scope.set_image(study.image, study.scope, study.scope_settings)
        self.canvas.set_image(study.image, mapper=study.mapper, prepared=study.prepared)
        self.canvas.set_overlay_opacity(self.window.overlay_panel.opacity / 100.0)
        self.canvas.set_overlay_visible(self.window.overlay_panel.overlay_visible)
        self.image_shown.emit(study.image)
        self.request_prediction()

    def request_prediction(self) -> None:
        self.outcome = None
        self.layer = None
        self.canvas.clear_overlay()
        self.canvas.set_overlay_note("")
        self.note = ""
        image = self.image
        if image is not None:
            verdict = self.scope.before_model(image)
            if not verdict.in_scope and not self.scope.show_anyway:
                self.classifier.cancel()
                self.note = "OUT OF SCOPE: " + "; ".join(r.message for r in verdict.reasons)
            elif self.classifier.engine is None:
                self.note = "The model is still loading; the result follows."
            else:
                self.classifier.request(image, cam_class=self.window.overlay_panel.cam_class,
                                        colormap=self.window.overlay_panel.colormap)
        self.changed.emit()

    def _on_outcome(self, outcome: PredictionOutcome) -> None:
        image = self.image
        if image is None or outcome.key != self.classifier.key_for(image, self.window.overlay_panel.cam_class):
            return
        self.outcome = outcome
        res = outcome.result
        if res is not None and res.heatmap is not None:
            self.layer = outcome.layer or HeatmapLayer(res.heatmap, res.cam_class)
        self.show_overlay()
        self.result_shown.emit(outcome)
        self.changed.emit()

    # ------------------------------------------------------------ drawing
    def show_overlay(self) -> None:
        """This pane's heatmap, drawn only at/above the threshold (as on the main pane)."""
        res = self.outcome.result if self.outcome is not None else None
        if res is None or self.layer is None or self.image is None:
            self.canvas.clear_overlay()
            return
        panel = self.window.overlay_panel
        pred = res.prediction
        if heatmap_drawn(pred.score, pred.threshold, show_anyway=panel.show_below):
            self.canvas.set_overlay(self.layer.image(panel.colormap, panel.style), self.image.shape)
            self.canvas.set_overlay_note(SHOWN_BELOW_TEXT if not pred.above_threshold else "")
        else:
            self.canvas.clear_overlay()
            self.canvas.set_overlay_note(f"{NO_HEATMAP_TEXT}: score {pred.score:.3f} < {pred.threshold:.3f}")

    def show_result_in(self, results: Any, positive_class: str | None) -> None:
        """Put this pane's result (or why there is none) in the decision-aid panel."""
        image = self.image
        res = self.outcome.result if self.outcome is not None else None
        if image is None:
            results.clear_result(self.note or "No image in this pane.")
            return
        verdict = self.scope.before_model(image)
        if not verdict.in_scope and not self.scope.show_anyway:
            results.show_out_of_scope([r.message for r in verdict.reasons])
            return
        if res is None:
            results.clear_result(self.outcome.error if self.outcome is not None and self.outcome.error
                                 else self.note or "Analysing image...")
            return
        after = self.scope.after_model(image, res.pooled)
        results.show_prediction(res.prediction, positive_class,
                                out_of_scope=None if after.in_scope else [r.message for r in after.reasons],
                                caution=after.caution)

    def summary(self, positive_class: str | None = None) -> str:
        """One line for the pane's header: score, then file (no patient data).

        The result comes first so that a narrow pane elides the file name, never the result.
        """
        if self.image is None:
            return self.note or "Empty pane"
        name = self.label or Path(self.image.path or "").name
        res = self.outcome.result if self.outcome is not None else None
        if res is None:
            return f"{self.note or 'analysing...'} - {name}"
        return f"{score_text(res.prediction, positive_class)} - {name}"

    def shutdown(self, timeout_ms: int) -> bool:
        self.classifier.cancel()
        return self.loader.runner.shutdown(timeout_ms)


def score_text(prediction: Any, positive_class: str | None) -> str:
    """'P(finding) 0.812 >= 0.500 (threshold): finding': a pane header's result, short enough for 2x2."""
    p = prediction
    side = ">=" if p.above_threshold else "<"
    return f"P({positive_class or 'finding'}) {p.score:.3f} {side} {p.threshold:.3f} (threshold): {p.label}"
