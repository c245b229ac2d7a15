"""Grad-CAM overlay controls: show/hide, opacity, colormap, explained class, and the legend."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget,
)

from cxr_desktop.gui.overlay import COLORMAPS, ColorLegend

OPACITY_STEP = 10


class OverlayPanel(QWidget):
    """Controls for the heatmap layer; changes are re-blends, never a new CAM (except the class)."""

    visible_changed = Signal(bool)
    opacity_changed = Signal(int)  # percent
    colormap_changed = Signal(str)
    cam_class_changed = Signal(object)  # class name, or None for the predicted class

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

        self.class_box = QComboBox()
        self.class_box.addItem("Predicted class", None)
        self.class_box.currentIndexChanged.connect(self._on_class)
        self.class_box.setToolTip("Which class the heatmap explains (a new map is computed for another class).")

        self.legend = ColorLegend()
        self.legend.set_colormap(self.colormap_box.currentText())

        form = QFormLayout()
        form.addRow(self.show_box)
        form.addRow("Opacity", opacity_row)
        form.addRow("Colours", self.colormap_box)
        form.addRow("Explains", self.class_box)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(form)
        lay.addWidget(self.legend)
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
    def cam_class(self) -> str | None:
        return self.class_box.currentData()

    def set_classes(self, classes: list[str]) -> None:
        """The active model's classes (resets the choice to the predicted class)."""
        self.class_box.blockSignals(True)
        self.class_box.clear()
        self.class_box.addItem("Predicted class", None)
        for c in classes:
            self.class_box.addItem(c, c)
        self.class_box.setCurrentIndex(0)
        self.class_box.blockSignals(False)

    def set_explained(self, class_name: str | None) -> None:
        """Which class the map on screen explains (legend title)."""
        self.legend.set_class_name(class_name)

    # -------------------------------------------------------------- slots
    def _on_opacity(self, value: int) -> None:
        self.opacity_value.setText(f"{value} %")
        self.opacity_changed.emit(int(value))

    def _on_colormap(self, name: str) -> None:
        self.legend.set_colormap(name)
        self.colormap_changed.emit(name)

    def _on_class(self, _index: int) -> None:
        self.cam_class_changed.emit(self.class_box.currentData())
