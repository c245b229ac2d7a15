"""The results panel: what the classifier says about the image on screen, and how far to trust it.

Shows the predicted class, the probability of every class, the model's
decision threshold and whether the score is above it, the model's name and
version, the device it ran on, a busy indicator, and always the sentence that
this is a decision aid, not a diagnosis. Demonstration and untrained models get
a banner that cannot be missed.

An image outside the model's scope (not an adult frontal chest radiograph)
shows its reasons and no score; the reader may ask for the score deliberately
("Show score anyway"), which is then marked OUT OF SCOPE. An image unlike the
training images (the learned check) is scored as usual and carries a caution
mark beside its score ("unusual image - interpret with care", distance and limit):
a possible finding is never hidden.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QFrame, QGridLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget,
)

from cxr_desktop import DECISION_AID_NOTICE

OUT_OF_SCOPE_MARK = "OUT OF SCOPE"
CAUTION_TITLE = "CAUTION"
_SCOPE_STYLE = "background:#8b1a1a; color:white; padding:4px; border-radius:3px;"
_CAUTION_STYLE = "background:#b36b00; color:white; padding:4px; border-radius:3px; font-weight:bold;"

_BANNER_STYLE = {
    "danger": "background:#8b1a1a; color:white; padding:6px; border-radius:3px; font-weight:bold;",
    "warning": "background:#8a5a00; color:white; padding:6px; border-radius:3px;",
}


def _label(text: str = "", *, bold: bool = False, wrap: bool = True, size: float | None = None) -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(wrap)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    if bold or size:
        f = QFont(lab.font())
        f.setBold(bold)
        if size:
            f.setPointSizeF(size)
        lab.setFont(f)
    return lab


class ResultsPanel(QWidget):
    """Prediction, per-class probabilities, threshold, model, device, busy state and notices."""

    show_anyway_requested = Signal()  # the reader asked for the score of an out-of-scope image

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.setSpacing(6)

        self.banner = _label()
        self.banner.setVisible(False)
        lay.addWidget(self.banner)

        busy_row = QHBoxLayout()
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)  # indeterminate
        self.busy_bar.setMaximumHeight(10)
        self.busy_bar.setTextVisible(False)
        self.busy_label = _label("Analysing image...", wrap=False)
        busy_row.addWidget(self.busy_label)
        busy_row.addWidget(self.busy_bar, 1)
        self.busy_box = QWidget()
        self.busy_box.setLayout(busy_row)
        busy_row.setContentsMargins(0, 0, 0, 0)
        self.busy_box.setVisible(False)
        lay.addWidget(self.busy_box)

        self.scope_label = _label()
        self.scope_label.setStyleSheet(_SCOPE_STYLE)
        self.scope_label.setVisible(False)
        lay.addWidget(self.scope_label)
        self.show_anyway_button = QPushButton("Show score anyway")
        self.show_anyway_button.setToolTip("Run the model on this out-of-scope image; the score is not reliable "
                                           "and is marked OUT OF SCOPE.")
        self.show_anyway_button.setVisible(False)
        self.show_anyway_button.clicked.connect(self.show_anyway_requested.emit)
        lay.addWidget(self.show_anyway_button)

        self.predicted_label = _label("No image", bold=True, size=13.0)
        lay.addWidget(self.predicted_label)
        self.caution_label = _label()  # the learned check's mark, right under the prediction
        self.caution_label.setStyleSheet(_CAUTION_STYLE)
        self.caution_label.setVisible(False)
        lay.addWidget(self.caution_label)
        self.threshold_label = _label()
        lay.addWidget(self.threshold_label)

        self.prob_frame = QFrame()
        self.prob_grid = QGridLayout(self.prob_frame)
        self.prob_grid.setContentsMargins(0, 0, 0, 0)
        self.prob_grid.setColumnStretch(1, 1)
        lay.addWidget(self.prob_frame)
        self.prob_rows: dict[str, tuple[QLabel, QProgressBar, QLabel]] = {}

        self.message_label = _label()
        self.message_label.setStyleSheet("color:#c06000;")
        self.message_label.setVisible(False)
        lay.addWidget(self.message_label)

        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        lay.addWidget(line)
        self.model_label = _label("Model: loading...")
        self.device_label = _label("Device: -")
        self.learned_label = _label()
        self.learned_label.setStyleSheet("color:#808080;")
        lay.addWidget(self.model_label)
        lay.addWidget(self.device_label)
        lay.addWidget(self.learned_label)

        self.notice_label = _label(DECISION_AID_NOTICE)
        f = QFont(self.notice_label.font())
        f.setItalic(True)
        self.notice_label.setFont(f)
        self.notice_label.setStyleSheet("color:#b0b0b0;" if self.palette().window().color().lightness() < 128
                                        else "color:#505050;")
        lay.addWidget(self.notice_label)
        lay.addStretch(1)
        self._classes: list[str] = []

    # ------------------------------------------------------------ model
    def set_model(self, active: Any) -> None:
        """Show the active model (an :class:`~cxr_desktop.gui.model_controller.ActiveModel`)."""
        card = active.card
        engine = active.engine
        self.model_label.setText(f"Model: {card.display_name}")
        self.model_label.setToolTip(card.intended_use)
        self.device_label.setText(f"Device: {engine.device_label}")
        self.device_label.setToolTip(f"Why: {engine.device_info.reason}")
        banners = []
        style = "warning"
        if active.untrained:
            banners.append("UNTRAINED MODEL - its outputs are meaningless.")
            style = "danger"
        if getattr(card, "demonstration", False):
            banners.append("DEMONSTRATION MODEL - for trying the software only; not validated for "
                           "clinical use.")
            style = "danger"
        from cxr_desktop.model.lineage import lineage_lines  # parent and ancestors (inherited warnings follow)

        banners += lineage_lines(card) if getattr(card, "parent", None) else []
        banners += [n for n in active.notes if n not in banners]
        if not active.untrained:
            banners += list(getattr(card, "warnings", []) or [])
        self.banner.setText("\n".join(banners))
        self.banner.setStyleSheet(_BANNER_STYLE[style])
        self.banner.setVisible(bool(banners))
        self._set_classes(list(card.classes))
        self.clear_result("Waiting for an image" if not self.prob_rows else None)

    def set_model_loading(self, text: str) -> None:
        self.model_label.setText(f"Model: {text}")

    def _set_classes(self, classes: list[str]) -> None:
        if classes == self._classes:
            return
        for labels in self.prob_rows.values():
            for w in labels:
                self.prob_grid.removeWidget(w)
                w.deleteLater()
        self.prob_rows.clear()
        for row, name in enumerate(classes):
            name_lab = _label(name, wrap=False)
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setTextVisible(False)
            bar.setMaximumHeight(12)
            value = _label("-", wrap=False)
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            value.setMinimumWidth(52)
            self.prob_grid.addWidget(name_lab, row, 0)
            self.prob_grid.addWidget(bar, row, 1)
            self.prob_grid.addWidget(value, row, 2)
            self.prob_rows[name] = (name_lab, bar, value)
        self._classes = classes

    # ------------------------------------------------------------ results
    def set_busy(self, busy: bool, text: str = "Analysing image...") -> None:
        self.busy_label.setText(text)
        self.busy_box.setVisible(bool(busy))

    @property
    def busy(self) -> bool:
        return not self.busy_box.isHidden()

    def set_learned_status(self, status: str) -> None:
        """The model's learned input check: on (and how) or off (and why)."""
        self.learned_label.setText(status)

    def _set_scope(self, text: str | None, *, button: bool) -> None:
        self.scope_label.setText(text or "")
        self.scope_label.setVisible(bool(text))
        self.show_anyway_button.setVisible(button)

    def show_out_of_scope(self, reasons: list[str]) -> None:
        """An out-of-scope image: its reasons, no score, and the deliberate 'Show score anyway' button."""
        text = (f"{OUT_OF_SCOPE_MARK}: not scored.\n" + "\n".join(f"- {r}" for r in reasons)
                + "\nThe classifier is for adult frontal chest radiographs; the image can still be viewed.")
        if (self.predicted_label.text() == "Not scored: out of scope" and self.scope_label.text() == text
                and not self.scope_label.isHidden() and self.message_label.isHidden()
                and self.caution_label.isHidden()):
            return  # already shown (the next frame of a series): no relayout per cine frame
        self.clear_result(None)
        self.predicted_label.setText("Not scored: out of scope")
        self._set_scope(text, button=True)

    def _set_caution(self, caution: Any | None) -> None:
        """Show (or hide) the caution mark of a scored image (a :class:`~cxr_desktop.scope.Caution`)."""
        if caution is None:
            self.caution_label.setText("")
            self.caution_label.setToolTip("")
            self.caution_label.setVisible(False)
            return
        from cxr_desktop.viewing.viewer_scope import caution_text

        self.caution_label.setText(caution_text(caution))
        self.caution_label.setToolTip(caution.message)
        self.caution_label.setVisible(True)

    @property
    def caution_shown(self) -> bool:
        return not self.caution_label.isHidden()

    def clear_result(self, message: str | None = None) -> None:
        self._set_scope(None, button=False)
        self._set_caution(None)
        self.predicted_label.setText("No result")
        self.threshold_label.setText("")
        for _, bar, value in self.prob_rows.values():
            bar.setValue(0)
            value.setText("-")
        self.show_message(message)

    def show_message(self, text: str | None) -> None:
        """A note instead of (or beside) a result: not scored, failed, no image."""
        self.message_label.setText(text or "")
        self.message_label.setVisible(bool(text))

    def show_prediction(self, prediction: Any, positive_class: str | None = None, *,
                        out_of_scope: list[str] | None = None, caution: Any | None = None) -> None:
        """Show an engine ``Prediction``; with ``out_of_scope`` reasons it is marked OUT OF SCOPE.

        ``caution`` (the learned check's :class:`~cxr_desktop.scope.Caution`) adds the
        visible "unusual image - interpret with care" mark beside the score.
        """
        self._set_classes(list(prediction.probabilities))
        if out_of_scope:
            self.predicted_label.setText(f"{OUT_OF_SCOPE_MARK} - predicted: {prediction.label} (not reliable)")
        elif caution is not None:
            self.predicted_label.setText(f"Predicted: {prediction.label}  \u26a0")
        else:
            self.predicted_label.setText(f"Predicted: {prediction.label}")
        self._set_caution(caution)
        for name, p in prediction.probabilities.items():
            _, bar, value = self.prob_rows[name]
            bar.setValue(int(round(p * 1000)))
            value.setText(f"{100.0 * p:.1f} %")
        side = "above" if prediction.above_threshold else "below"
        target = f"P({positive_class})" if positive_class else "score"
        self.threshold_label.setText(
            f"{target} = {prediction.score:.3f}: {side} the model's decision threshold {prediction.threshold:.3f}")
        self.show_message(None)
        if out_of_scope:
            self._set_scope(f"{OUT_OF_SCOPE_MARK}: score shown on request; it is not reliable for this image.\n"
                            + "\n".join(f"- {r}" for r in out_of_scope), button=False)
        else:
            self._set_scope(None, button=False)
