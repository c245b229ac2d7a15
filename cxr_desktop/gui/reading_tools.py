"""The main window's reading tools: measurement tools, four-corner overlay, cine and wheel frames.

Kept out of :mod:`cxr_desktop.gui.main_window` so the window only wires them in: the
window's action table (:data:`cxr_desktop.gui.shortcuts.SHORTCUTS`) calls
:meth:`ReadingTools.handlers`, and the menus get their entries from
:meth:`ReadingTools.add_menus`. Tools and the corner overlay apply to every canvas of the
window (the comparison panes too); Delete acts on the canvas that has the focus.

Cine plays the frames of a multi-frame image at :attr:`ReadingTools.cine_fps`, one
frame per tick in order; a tick that comes while the previous frame is still decoding
is skipped (the frame rate drops, no frame is jumped over). While it plays, the image
loader decodes the next frames ahead and keeps the series in its bounded cache, so
after the first pass the frames come from memory. The status bar shows the rate set
and, when the frames cannot be decoded that fast, the rate actually achieved.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtGui import QActionGroup
from PySide6.QtWidgets import QApplication, QLabel, QMenu, QMenuBar, QWidget

from cxr_desktop.gui.canvas import ImageCanvas
from cxr_desktop.gui.choice_menu import add_choice_menu
from cxr_desktop.gui.measure_tools import TOOL_NAMES, TOOLS

if TYPE_CHECKING:
    from cxr_desktop.gui.main_window import MainWindow

CINE_RATES = (2, 5, 10, 15, 20, 30)  # frames per second offered in View > Cine rate
DEFAULT_CINE_FPS = 10
_FPS_KEY = "viewer/cine_fps"
_WHEEL_KEY = "viewer/wheel_scrolls_frames"


class ReadingTools(QObject):
    """Measurement tool choice, corner overlay, cine timer, wheel setting, patient data in exports."""

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        q = window.settings.q
        try:
            fps = int(q.value(_FPS_KEY, DEFAULT_CINE_FPS))
        except (TypeError, ValueError):
            fps = DEFAULT_CINE_FPS
        self.cine_fps = fps if fps in CINE_RATES else DEFAULT_CINE_FPS
        self.cine_timer = QTimer(self)
        self.cine_timer.setTimerType(Qt.TimerType.PreciseTimer)  # a coarse timer drifts by up to 5 %
        self.cine_timer.timeout.connect(self._cine_tick)
        self._cine_shown: deque[float] = deque(maxlen=64)  # when the last frames reached the screen
        self.cine_label = QLabel("")  # "Cine 30/s", or the rate achieved when decoding is slower
        self.cine_label.setToolTip("Cine frame rate: the rate set, and the rate achieved when lower")
        self.cine_label.hide()
        window.statusBar().addPermanentWidget(self.cine_label)
        window.image_displayed.connect(self._on_frame_shown)
        self.patient_data_in_exports = False  # never remembered: each session starts without
        window.canvas.wheel_scrolls_frames = str(q.value(_WHEEL_KEY, "false")).lower() in ("true", "1")
        window.canvas.frame_scroll_requested.connect(window.step_frame)
        window.canvas.measure_save_failed.connect(lambda text: window.statusBar().showMessage(text, 8000))
        self.tool_group: QActionGroup | None = None

    # ------------------------------------------------------------ wiring
    def handlers(self) -> dict[str, Callable[[], Any]]:
        """Handlers for this module's entries in :data:`SHORTCUTS` (by id)."""
        h: dict[str, Callable[[], Any]] = {f"tool_{t}": (lambda t=t: self.set_tool(t)) for t in TOOLS}
        h.update({
            "tool_pan": lambda: self.set_tool(None),
            "delete_measurement": self.delete_selected,
            "toggle_corners": self.toggle_corners,
            "cine": self.toggle_cine,
            "wheel_frames": lambda: self.set_wheel_scrolls_frames(not self.window.canvas.wheel_scrolls_frames),
            "export_patient_data": lambda: self.set_patient_data_in_exports(not self.patient_data_in_exports),
        })
        return h

    def add_menus(self, menubar: QMenuBar, view_menu: QMenu, file_menu: QMenu | None = None) -> None:
        """A Measure menu; corner overlay, cine and wheel entries in the View menu."""
        acts = self.window.actions
        acts["toggle_corners"].setCheckable(True)
        acts["cine"].setCheckable(True)
        acts["wheel_frames"].setCheckable(True)
        acts["wheel_frames"].setChecked(self.window.canvas.wheel_scrolls_frames)
        acts["export_patient_data"].setCheckable(True)
        view_menu.addSeparator()
        view_menu.addAction(acts["toggle_corners"])
        view_menu.addAction(acts["cine"])
        add_choice_menu(view_menu, "Cine &rate", CINE_RATES, self.cine_fps, lambda f: f"{f} frames/s",
                        self.set_cine_fps)
        view_menu.addAction(acts["wheel_frames"])
        if file_menu is not None:
            file_menu.addAction(acts["export_patient_data"])
        m = menubar.addMenu("&Measure")
        self.tool_group = QActionGroup(m)
        for key in ("tool_pan", *(f"tool_{t}" for t in TOOLS)):
            acts[key].setCheckable(True)
            self.tool_group.addAction(acts[key])
            m.addAction(acts[key])
        acts["tool_pan"].setChecked(True)
        m.addSeparator()
        m.addAction(acts["delete_measurement"])

    # ------------------------------------------------------------ canvases
    def canvases(self) -> list[ImageCanvas]:
        """Every canvas of the window (the main one first, then the comparison panes)."""
        found = [self.window.canvas]
        room = getattr(self.window, "reading_room", None)  # the layouts' panes (hidden ones too)
        more = [getattr(p, "canvas", None) for p in getattr(room, "panes", [])]
        more += self.window.findChildren(ImageCanvas)
        for c in more:
            if isinstance(c, ImageCanvas) and c not in found:
                found.append(c)
        return found

    def active_canvas(self) -> ImageCanvas:
        """The canvas that has the keyboard focus (the main one when none has)."""
        w: QWidget | None = QApplication.focusWidget()
        while w is not None:
            if isinstance(w, ImageCanvas):
                return w
            w = w.parentWidget()
        return self.window.canvas

    def set_tool(self, tool: str | None) -> None:
        """Choose a measurement tool for every canvas (None: pan / select)."""
        for c in self.canvases():
            c.set_tool(tool)
        act = self.window.actions.get(f"tool_{tool}" if tool else "tool_pan")
        if act is not None:
            act.setChecked(True)
        if tool:
            self.window.statusBar().showMessage(f"{TOOL_NAMES[tool]}: click (or drag) on the image; "
                                                "Esc returns to pan.", 5000)

    def delete_selected(self) -> bool:
        canvas = self.active_canvas()
        if canvas.measure.delete_selected():
            return True
        return any(c.measure.delete_selected() for c in self.canvases() if c is not canvas)

    def measurement_descriptions(self, canvas: ImageCanvas | None = None) -> list[str]:
        """One line per measurement of the image on ``canvas`` (default: the main one), for the case report."""
        return (canvas or self.window.canvas).measure.descriptions()

    def toggle_corners(self) -> None:
        self.set_corners_visible(not self.window.canvas.corners_visible)

    def set_corners_visible(self, on: bool) -> None:
        for c in self.canvases():
            c.set_corners_visible(on)
        self.window.actions["toggle_corners"].setChecked(on)

    def set_patient_data_in_exports(self, on: bool) -> None:
        self.patient_data_in_exports = bool(on)
        self.window.actions["export_patient_data"].setChecked(self.patient_data_in_exports)

    def set_wheel_scrolls_frames(self, on: bool) -> None:
        self.window.canvas.wheel_scrolls_frames = bool(on)
        self.window.settings.q.setValue(_WHEEL_KEY, bool(on))
        self.window.actions["wheel_frames"].setChecked(bool(on))

    # ------------------------------------------------------------ cine
    @property
    def cine_running(self) -> bool:
        return self.cine_timer.isActive()

    def set_cine_fps(self, fps: int) -> None:
        self.cine_fps = max(1, int(fps))
        self.window.settings.q.setValue(_FPS_KEY, self.cine_fps)
        self.cine_timer.setInterval(round(1000 / self.cine_fps))
        self._cine_shown.clear()

    def toggle_cine(self) -> None:
        self.stop_cine() if self.cine_running else self.start_cine()

    def start_cine(self) -> bool:
        im = self.window.current_image
        if im is None or im.frame_count <= 1:
            self.window.statusBar().showMessage("Cine: the image has one frame.", 3000)
            self.window.actions["cine"].setChecked(False)
            return False
        self._cine_shown.clear()
        self.cine_timer.start(round(1000 / self.cine_fps))
        self.window.actions["cine"].setChecked(True)
        self._prefetch(self.window.wanted_frame())
        self._show_rate()
        self.cine_label.show()
        return True

    def stop_cine(self) -> None:
        self.cine_timer.stop()
        self.window.loader.stop_prefetch()
        self.window.actions["cine"].setChecked(False)
        self.cine_label.hide()

    @property
    def achieved_fps(self) -> float | None:
        """Frames per second reaching the screen over the last second of cine (None: too few yet)."""
        times = self._cine_shown
        if len(times) < 3:
            return None
        recent = [t for t in times if t >= times[-1] - 1.0]
        if len(recent) < 3:
            recent = list(times)[-3:]
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else None

    def _on_frame_shown(self, _image: Any) -> None:
        if self.cine_running:
            self._cine_shown.append(time.monotonic())
            if len(self._cine_shown) % 5 == 0:  # a label update per frame is GUI work for nothing
                self._show_rate()

    def _show_rate(self) -> None:
        achieved = self.achieved_fps
        if achieved is None or achieved >= 0.9 * self.cine_fps:
            self.cine_label.setText(f"Cine {self.cine_fps}/s")
        else:
            self.cine_label.setText(f"Cine {self.cine_fps}/s set: {achieved:.1f}/s achieved "
                                    "(frames decode slower)")

    def _prefetch(self, frame: int) -> None:
        w = self.window
        im, entry = w.current_image, w.current_entry
        if im is not None and entry is not None and im.frame_count > 1:
            w.loader.prefetch_series(entry.path, frame, im.frame_count)

    def _cine_tick(self) -> None:
        w = self.window
        im = w.current_image
        if im is None or im.frame_count <= 1:
            self.stop_cine()
            return
        if w.loader.busy:  # the last frame is still decoding: wait (never skip a frame)
            return
        frame = (w.wanted_frame() + 1) % im.frame_count
        w.go_to_frame(frame)
        self._prefetch(frame)
