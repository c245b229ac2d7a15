"""Every keyboard shortcut, in one table that both the menus and Help > Shortcuts read.

Because the main window builds its actions from :data:`SHORTCUTS`, the help
dialog can never disagree with what the keys do.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QHeaderView, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)


@dataclass(frozen=True)
class Shortcut:
    """One action: its id (the main window's handler), menu text, keys, group and help text."""

    id: str
    text: str
    keys: tuple[str, ...]
    group: str
    help: str = ""


SHORTCUTS: tuple[Shortcut, ...] = (
    # File
    Shortcut("open_files", "&Open files...", ("Ctrl+O",), "File", "Open image files (PNG, JPEG, TIFF, DICOM)."),
    Shortcut("open_folder", "Open &folder...", ("Ctrl+Shift+O",), "File", "Open every image in a folder."),
    Shortcut("export_view", "&Export view as PNG...", ("Ctrl+E",), "File",
             "Save the current view with overlay and legend (no patient data)."),
    Shortcut("export_report", "Export &report...", ("Ctrl+Shift+E",), "File",
             "One-page PDF: image, heatmap, result, model; patient data only if ticked."),
    Shortcut("close_all", "&Close all", ("Ctrl+W",), "File", "Clear the study list."),
    Shortcut("quit", "&Quit", ("Ctrl+Q",), "File"),
    # Navigate
    Shortcut("next_image", "&Next image", ("N", "Ctrl+Down"), "Navigate", "Next file in the study list."),
    Shortcut("prev_image", "&Previous image", ("P", "Ctrl+Up"), "Navigate", "Previous file in the study list."),
    Shortcut("next_frame", "Next &frame", ("PgDown", "]"), "Navigate", "Multi-frame images."),
    Shortcut("prev_frame", "Previous f&rame", ("PgUp", "["), "Navigate", "Multi-frame images."),
    Shortcut("first_frame", "First frame", ("Home",), "Navigate"),
    Shortcut("last_frame", "Last frame", ("End",), "Navigate"),
    # View
    Shortcut("fit", "&Fit to window", ("F",), "View"),
    Shortcut("actual_size", "&1:1 (actual pixels)", ("1",), "View"),
    Shortcut("zoom_in", "Zoom &in", ("+", "="), "View", "Or the mouse wheel, around the cursor."),
    Shortcut("zoom_out", "Zoom &out", ("-",), "View"),
    Shortcut("rotate_cw", "Rotate &right (90 deg)", ("R",), "View", "View only; the file is not changed."),
    Shortcut("rotate_ccw", "Rotate &left (90 deg)", ("Shift+R",), "View", "View only."),
    Shortcut("flip_h", "Flip &horizontal", ("H",), "View", "View only."),
    Shortcut("flip_v", "Flip &vertical", ("V",), "View", "View only."),
    Shortcut("reset_view", "Reset &view", ("Ctrl+R",), "View", "Zoom, orientation, window and inversion."),
    # Window / level
    Shortcut("invert", "&Invert", ("I",), "Window/level"),
    Shortcut("reset_window", "&Reset window", ("W",), "Window/level", "Back to the file's own window."),
    Shortcut("preset_1", "Preset 1", ("Ctrl+1",), "Window/level", "Window presets in menu order (Ctrl+1..9)."),
    Shortcut("preset_2", "Preset 2", ("Ctrl+2",), "Window/level"),
    Shortcut("preset_3", "Preset 3", ("Ctrl+3",), "Window/level"),
    Shortcut("preset_4", "Preset 4", ("Ctrl+4",), "Window/level"),
    Shortcut("preset_5", "Preset 5", ("Ctrl+5",), "Window/level"),
    Shortcut("preset_6", "Preset 6", ("Ctrl+6",), "Window/level"),
    Shortcut("preset_7", "Preset 7", ("Ctrl+7",), "Window/level"),
    Shortcut("preset_8", "Preset 8", ("Ctrl+8",), "Window/level"),
    Shortcut("preset_9", "Preset 9", ("Ctrl+9",), "Window/level"),
    # Overlay
    Shortcut("toggle_overlay", "Show &heatmap", ("O",), "Overlay", "Grad-CAM overlay on/off."),
    Shortcut("opacity_up", "Opacity +10 %", (".", ">"), "Overlay"),
    Shortcut("opacity_down", "Opacity -10 %", (",", "<"), "Overlay"),
    Shortcut("cycle_colormap", "Next &colour map", ("C",), "Overlay", "Turbo, Jet, Viridis, Inferno."),
    # Frames, four-corner overlay, measurements (cxr_desktop.gui.reading_tools)
    Shortcut("cine", "&Cine play / stop", ("Space",), "Navigate",
             "Play the frames of a multi-frame image (View > Cine rate)."),
    Shortcut("wheel_frames", "Mouse &wheel scrolls frames", (), "Navigate",
             "Otherwise Shift+wheel or Ctrl+wheel scrolls frames and the wheel zooms."),
    Shortcut("toggle_corners", "Four-corner &information", ("Shift+I",), "View",
             "Patient, study date, series/instance, laterality/view, W/L, zoom, frame."),
    Shortcut("tool_pan", "&Pan / select", ("Esc",), "Measure", "Left-drag pans; drag a measurement to edit it."),
    Shortcut("tool_distance", "&Distance", ("D",), "Measure",
             "mm from Pixel Spacing (Imager Pixel Spacing: at the detector, marked *); pixels without."),
    Shortcut("tool_angle", "&Angle", ("A",), "Measure", "Three clicks: arm, vertex, arm."),
    Shortcut("tool_rectangle", "&Rectangle ROI", ("B",), "Measure", "Mean and SD in modality units."),
    Shortcut("tool_ellipse", "&Ellipse ROI", ("E",), "Measure", "Mean and SD in modality units."),
    Shortcut("tool_arrow", "Arro&w", ("Shift+A",), "Measure", "Press at the tip, release at the tail."),
    Shortcut("tool_text", "&Text", ("T",), "Measure", "Click where the text goes."),
    Shortcut("delete_measurement", "De&lete measurement", ("Del", "Backspace"), "Measure",
             "The selected one (or right-click a measurement)."),
    Shortcut("export_patient_data", "Patient data in e&xports", (), "File",
             "Off by default: exported images carry no patient name, ID or date."),
    # Layouts, priors and the docked worklist (cxr_desktop.gui.layout, cxr_desktop.gui.worklist_dock)
    Shortcut("layout_1x1", "&1 x 1 layout", ("Alt+1",), "Layout"),
    Shortcut("layout_1x2", "1 x &2 layout (compare)", ("Alt+2",), "Layout"),
    Shortcut("layout_2x2", "&2 x 2 layout", ("Alt+4",), "Layout"),
    Shortcut("open_prior", "Open &prior beside the current image", ("Shift+P",), "Layout",
             "Same Patient ID, latest earlier Study Date, from the study list or the PACS cache."),
    Shortcut("link_views", "&Link zoom, pan and window/level", ("L",), "Layout",
             "Inversion follows too; rotate/flip stay per pane. View keys act on the active (clicked) pane."),
    Shortcut("next_unread", "Next &unread (by score)", ("U",), "Worklist",
             "Docked worklist: opens the next unread study, highest score first."),
    Shortcut("prev_unread", "Previous unread (by score)", ("Shift+U",), "Worklist"),
    Shortcut("mark_read", "&Mark as read / unread", ("M",), "Worklist"),
    # Model
    Shortcut("open_model", "&Open model file...", ("Ctrl+M",), "Model", "Use another .safetensors model file."),
    Shortcut("show_card", "Show model &card", ("Ctrl+Shift+M",), "Model", "What the model is, how it was made."),
    Shortcut("default_model", "Use the &default model", (), "Model"),
    # Tools
    Shortcut("screen_folder", "&Screen a folder...", (), "Tools", "Score every image in a folder."),
    Shortcut("train_model", "&Train a model...", (), "Tools", "Train a classifier on your own labelled images."),
    # Help
    Shortcut("show_shortcuts", "&Keyboard shortcuts", ("F1", "?"), "Help"),
    Shortcut("about", "&About CXR Review", (), "Help", "Version, and which device the model runs on and why."),
)

MOUSE_HELP: tuple[tuple[str, str], ...] = (
    ("Mouse wheel", "Zoom around the cursor"),
    ("Left-drag", "Pan"),
    ("Right-drag", "Window/level: left-right = width (contrast), up-down = level (brightness)"),
    ("Shift+wheel", "Scroll frames of a multi-frame image (Ctrl+wheel too)"),
    ("Right-click", "On a measurement: delete it or edit its text"),
    ("Arrow keys", "Pan (when the image has focus)"),
    ("Drag and drop", "Drop files or folders on the window to open them"),
)

BY_ID: dict[str, Shortcut] = {s.id: s for s in SHORTCUTS}


def key_sequences(shortcut: Shortcut) -> list[QKeySequence]:
    return [QKeySequence(k) for k in shortcut.keys]


def keys_text(shortcut: Shortcut) -> str:
    return ", ".join(QKeySequence(k).toString(QKeySequence.SequenceFormat.NativeText) for k in shortcut.keys)


class ShortcutsDialog(QDialog):
    """Help > Keyboard shortcuts: every action with its keys, plus the mouse gestures."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        rows = [(s.group, s.text.replace("&", "").rstrip("."), keys_text(s), s.help) for s in SHORTCUTS if s.keys]
        rows += [("Mouse", "", what, how) for what, how in MOUSE_HELP]  # the gesture as keys, what it does as notes
        self.table = QTableWidget(len(rows), 4, self)
        self.table.setHorizontalHeaderLabels(["Group", "Action", "Keys", "Notes"])
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(True)  # long notes wrap onto more lines instead of being cut off
        header = self.table.horizontalHeader()
        for c in range(3):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)  # Notes: the width left, wrapped
        # rows grow to hold their wrapped text (re-measured whenever the Notes column changes width)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.table)
        lay.addWidget(buttons)
        self.resize(900, 600)
