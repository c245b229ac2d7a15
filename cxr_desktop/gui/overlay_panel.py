"""Grad-CAM overlay controls: show/hide, opacity, colormap, style, explained class, the legend,
and the below-threshold note with its explicit "show anyway" toggle.

By default the map explains the model's finding (positive) class and is drawn only when
P(finding) reaches the decision threshold (:mod:`cxr_desktop.heatmap_rules`); below it the
panel (and the canvas) say so, and the reader may ask for the map for this image.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget,
)

from cxr_desktop.gui.overlay import COLORMAPS, STYLES, ColorLegend
from cxr_desktop.heatmap_rules import NO_HEATMAP_TEXT

OPACITY_STEP = 10
STYLE_NAMES = {"filled": "Filled (transparent where low)", "contours": "Contours (isolines)"}
SHOWN_BELOW_TEXT = "Below threshold: heatmap shown on request - not a finding"


class OverlayPanel(QWidget):
    """Controls for the heatmap layer; changes are re-blends, never a new CAM (except the class)."""

    visible_changed = Signal(bool)
    opacity_changed = Signal(int)  # percent
    colormap_changed = Signal(str)
    cam_class_changed = Signal(object)  # class name, or None for the finding (positive) class
    style_changed = Signal(str)  # "filled" | "contours"
    show_below_changed = Signal(bool)  # the reader's explicit request to see a below-threshold map

    def __init__(self, parent: QWidget | None = None, *, opacity: int = 40, colormap: str = "Turbo",
                 visible: bool = True):
        super().__init__(parent)
        self.show_box = QCheckBox("Show heatmap")
        self.show_box.setChecked(visible)
        self.show_box.toggled.connect(self.visible_changed.emit)

        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setSingleStep(5)
        self.opacity_slider.setPageStep(OPACITY_STEP)
        self.opacity_slider.setValue(opacity)
        self.opacity_value = QLabel(f"{opacity} %")
        self.opacity_value.setMinimumWidth(40)
        self.opacity_slider.valueChanged.connect(self._on_opacity)
        opacity_row = QHBoxLayout()
        opacity_row.addWidget(self.opacity_slider, 1)
        opacity_row.addWidget(self.opacity_value)

        self.colormap_box = QComboBox()
        self.colormap_box.addItems(list(COLORMAPS))
        if colormap in COLORMAPS:
            self.colormap_box.setCurrentText(colormap)
        self.colormap_box.currentTextChanged.connect(self._on_colormap)

        self.style_box = QComboBox()
        for key in STYLES:
            self.style_box.addItem(STYLE_NAMES[key], key)
        self.style_box.currentIndexChanged.connect(lambda _i: self.style_changed.emit(self.style))
        self.style_box.setToolTip("Filled colour (low values transparent) or isolines of the map only.")

        self.class_box = QComboBox()
        self.class_box.addItem("Finding class", None)
        self.class_box.currentIndexChanged.connect(self._on_class)
        self.class_box.setToolTip("Which class the heatmap explains: by default the model's finding class "
                                  "(a new map is computed for another class).")

        self.gate_label = QLabel("")
        self.gate_label.setWordWrap(True)
        self.gate_label.setStyleSheet("color:#c06000; font-weight:bold;")
        self.gate_label.setVisible(False)
        self.show_below_box = QCheckBox("Show heatmap anyway (below threshold)")
        self.show_below_box.setToolTip("Draw the map for this image although P(finding) is below the decision "
                                       "threshold. It is labelled as below threshold; it does not mean a finding.")
        self.show_below_box.setVisible(False)
        self.show_below_box.toggled.connect(self.show_below_changed.emit)

        self.legend = ColorLegend()
        self.legend.set_colormap(self.colormap_box.currentText())

        form = QFormLayout()
        form.addRow(self.show_box)
        form.addRow("Opacity", opacity_row)
        form.addRow("Colours", self.colormap_box)
        form.addRow("Style", self.style_box)
        form.addRow("Explains", self.class_box)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(form)
        lay.addWidget(self.gate_label)
        lay.addWidget(self.show_below_box)
        lay.addWidget(self.legend)
        self.legend.setVisible(False)  # until a map is drawn
        lay.addStretch(1)

    # -------------------------------------------------------------- state
    @property
    def opacity(self) -> int:
        return int(self.opacity_slider.value())

    def set_opacity(self, percent: int) -> None:
        self.opacity_slider.setValue(max(0, min(100, int(percent))))

    def step_opacity(self, delta: int) -> None:
        self.set_opacity(self.opacity + delta)

    @property
    def colormap(self) -> str:
        return self.colormap_box.currentText()

    def set_colormap(self, name: str) -> None:
        self.colormap_box.setCurrentText(name)

    def cycle_colormap(self) -> None:
        self.colormap_box.setCurrentIndex((self.colormap_box.currentIndex() + 1) % self.colormap_box.count())

    @property
    def overlay_visible(self) -> bool:
        return self.show_box.isChecked()

    def set_overlay_visible(self, on: bool) -> None:
        self.show_box.setChecked(on)

    @property
    def style(self) -> str:
        return str(self.style_box.currentData())

    def set_style(self, style: str) -> None:
        i = self.style_box.findData(style)
        if i < 0:
            raise ValueError(f"unknown overlay style {style!r}")
        self.style_box.setCurrentIndex(i)

    @property
    def cam_class(self) -> str | None:
        return self.class_box.currentData()

    def set_classes(self, classes: list[str], positive: str | None = None) -> None:
        """The active model's classes; the choice resets to the finding (positive) class."""
        self.class_box.blockSignals(True)
        self.class_box.clear()
        self.class_box.addItem(f"Finding: {positive} (default)" if positive else "Finding class", None)
        for c in classes:
            self.class_box.addItem(c, c)
        self.class_box.setCurrentIndex(0)
        self.class_box.blockSignals(False)

    def set_explained(self, class_name: str | None, *, below_threshold: bool = False) -> None:
        """Which class the map on screen explains (legend title), and whether it is shown below threshold."""
        self.legend.set_class_name(class_name, below_threshold=below_threshold)

    @property
    def show_below(self) -> bool:
        return self.show_below_box.isChecked()

    def set_show_below(self, on: bool) -> None:
        self.show_below_box.setChecked(bool(on))

    def set_gate(self, state: str | None) -> None:
        """The threshold note: None (no result), "drawn", "below" (no map) or "below_shown" (on request)."""
        text = {"below": NO_HEATMAP_TEXT, "below_shown": SHOWN_BELOW_TEXT}.get(state or "", "")
        self.gate_label.setText(text)
        self.gate_label.setVisible(bool(text))
        self.show_below_box.setVisible(state in ("below", "below_shown"))
        self.legend.setVisible(state in ("drawn", "below_shown"))  # a colour bar only for a map on screen

    @property
    def gate_text(self) -> str:
        return self.gate_label.text() if self.gate_label.isVisibleTo(self) else ""

    # -------------------------------------------------------------- slots
    def _on_opacity(self, value: int) -> None:
        self.opacity_value.setText(f"{value} %")
        self.opacity_changed.emit(int(value))

    def _on_colormap(self, name: str) -> None:
        self.legend.set_colormap(name)
        self.colormap_changed.emit(name)

    def _on_class(self, _index: int) -> None:
        self.cam_class_changed.emit(self.class_box.currentData())
