"""Reading-room layouts: 1x1, 1x2 and 2x2 panes, the prior beside the current image, linked views.

Pane 0 is the main window's own canvas (study list, results and shortcuts drive it
as before); panes 1-3 are :class:`~cxr_desktop.gui.pane.ComparePane` objects with
their own image, result and heatmap. The active pane (click it) has a highlighted
frame and drives the decision-aid panel. With views linked, zoom and pan (as a
fraction of each image, so a prior of another size follows sensibly) and
window/level follow whichever pane the reader moves.

Keyboard view actions (zoom in/out, fit, 1:1, rotate/flip, invert, W/L presets and
reset, reset view) act on the ACTIVE pane. Link rules (key L): zoom, pan and W/L
are linked (a reader compares the same region at the same window); inversion is
linked too (it is part of how grey levels are shown, and a prior in the other
polarity would read as a change); rotation and flips are never linked: they
correct one image's acquisition orientation, and turning a correctly oriented
prior with the current one would mis-orient it.

Shift+P opens the prior of the current image (same Patient ID, latest earlier
Study Date, among the study list and the local PACS study cache) beside it; the
headers are read in a worker. Patient facts are for the screen only, never logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import QEvent, QObject, QPointF, QRect, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QGuiApplication, QPixmapCache
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QMenu, QSizePolicy, QVBoxLayout, QWidget

from cxr_desktop.gui.canvas import ImageCanvas
from cxr_desktop.gui.choice_menu import add_choice_menu
from cxr_desktop.gui.pane import ComparePane, score_text
from cxr_desktop.gui.study_facts import StudyFacts, facts_from_metadata, search_prior
from cxr_desktop.gui.theme import THEMES, apply_theme
from cxr_desktop.gui.workers import WorkerRunner
from cxr_desktop.gui.worklist_dock import WorklistDock

if TYPE_CHECKING:
    from cxr_desktop.gui.main_window import MainWindow

LAYOUTS = {"1x1": (1, 1), "1x2": (1, 2), "2x2": (2, 2)}
DEFAULT_SIZE = (1400, 900)
SCREEN_SHARE = 0.92  # the window opens at most this share of the available screen
PANE_MIN_SIZE = (120, 90)  # logical pixels: a 2x2 layout with the worklist fits 960x540 (1080p at scale 2)
PAN_CACHE_KIB_PER_PANE = 2 * 16 * 1024  # pixmap-cache room for a pane's image + heatmap caches (a limit, not a use)

# keyboard view actions, applied to the active pane's canvas (see the module docstring for what links)
VIEW_ACTIONS: dict[str, Callable[[ImageCanvas], object]] = {
    "fit": ImageCanvas.fit,
    "actual_size": ImageCanvas.actual_size,
    "zoom_in": lambda c: c.zoom_by(1.25),
    "zoom_out": lambda c: c.zoom_by(0.8),
    "rotate_cw": ImageCanvas.rotate_clockwise,  # orientation: this pane only, even when linked
    "rotate_ccw": ImageCanvas.rotate_counterclockwise,
    "flip_h": ImageCanvas.flip_horizontal,
    "flip_v": ImageCanvas.flip_vertical,
    "reset_window": ImageCanvas.reset_window,  # W/L: linked panes follow through ViewLink
}


def initial_geometry(available: QRect, wanted: tuple[int, int] = DEFAULT_SIZE) -> QRect:
    """The window's first geometry: ``wanted`` capped to the available screen area, centred on it."""
    w = min(wanted[0], int(available.width() * SCREEN_SHARE))
    h = min(wanted[1], int(available.height() * SCREEN_SHARE))
    x = available.x() + (available.width() - w) // 2
    y = available.y() + (available.height() - h) // 2
    return QRect(x, y, max(1, w), max(1, h))


class PaneFrame(QFrame):
    """A canvas with a one-line header; the active pane's frame is highlighted."""

    def __init__(self, canvas: ImageCanvas, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("paneFrame")
        self.canvas = canvas
        self.header = QLabel("")
        self.header.setObjectName("paneHeader")
        self.header.setTextFormat(Qt.TextFormat.PlainText)
        self.header.setContentsMargins(6, 2, 6, 2)
        # long text is elided by the frame, never allowed to widen the pane (the window must fit the screen)
        self.header.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.header.setMinimumWidth(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(0)
        lay.addWidget(self.header)
        lay.addWidget(canvas, 1)
        self._text = ""
        self.set_active(False)

    def set_text(self, text: str) -> None:
        """The header line; elided with '...' when the pane is narrow (in full in its tooltip)."""
        self._text = text
        self.header.setToolTip(text)
        self._elide()

    def text(self) -> str:
        return self._text

    def _elide(self) -> None:
        width = max(10, self.header.width() - 12)
        self.header.setText(self.header.fontMetrics().elidedText(self._text, Qt.TextElideMode.ElideRight, width))

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._elide()

    def set_active(self, on: bool) -> None:
        self.active = on
        colour = "#3d8ee6" if on else "transparent"
        # the header is a dark bar above the black canvas in either theme
        self.setStyleSheet(f"QFrame#paneFrame {{ border: 2px solid {colour}; }}"
                           "QLabel#paneHeader { background: #202024; color: #e2e2e2; }")


class ViewLink(QObject):
    """Propagates zoom/pan and window/level from the canvas the reader moves to the others."""

    def __init__(self, canvases: Callable[[], list[ImageCanvas]], parent: QObject | None = None):
        super().__init__(parent)
        self._canvases = canvases
        self.enabled = False
        self._busy = False

    def attach(self, canvas: ImageCanvas) -> None:
        canvas.view_changed.connect(lambda c=canvas: self.view_moved(c))
        canvas.horizontalScrollBar().valueChanged.connect(lambda _v, c=canvas: self.view_moved(c))
        canvas.verticalScrollBar().valueChanged.connect(lambda _v, c=canvas: self.view_moved(c))
        canvas.window_changed.connect(lambda w, c=canvas: self.window_moved(c, w))

    def _others(self, source: ImageCanvas) -> list[ImageCanvas]:
        return [c for c in self._canvases() if c is not source and c.image is not None and c.isVisible()]

    def view_moved(self, source: ImageCanvas) -> None:
        if not self.enabled or self._busy or source.image is None:
            return
        self._busy = True
        try:
            self._follow_view(source)
        finally:
            self._busy = False

    def _follow_view(self, source: ImageCanvas) -> None:
        others = self._others(source)
        if not others:
            return
        if source.fitting:
            for c in others:
                if not c.fitting or c.transform().m11() != c.fit_zoom():
                    c.fit()
            return
        rel_zoom = source.zoom / source.fit_zoom()
        centre = source.image_point(source.viewport().rect().center())
        fx = centre.x() / max(1, source.image.columns)
        fy = centre.y() / max(1, source.image.rows)
        for c in others:
            c.show_at(rel_zoom * c.fit_zoom(), QPointF(fx * c.image.columns, fy * c.image.rows))

    def window_moved(self, source: ImageCanvas, window: object) -> None:
        if not self.enabled or self._busy or source.image is None:
            return
        self._busy = True
        try:
            for c in self._others(source):
                if c.window != window:
                    c.set_window(window)
        finally:
            self._busy = False

    def inversion_set(self, source: ImageCanvas) -> None:
        """Linked panes take ``source``'s inversion (orientation is never linked)."""
        if not self.enabled or source.image is None:
            return
        for c in self._others(source):
            if c.inverted != source.inverted:
                c.set_inverted(source.inverted)

    def sync_from(self, source: ImageCanvas) -> None:
        """Bring every other pane to ``source``'s view, window and inversion now (linking switched on)."""
        self.view_moved(source)
        self.window_moved(source, source.window)
        self.inversion_set(source)


class _ActivateOnClick(QObject):
    def __init__(self, room: ReadingRoom, index: int):
        super().__init__(room)
        self.room, self.index = room, index

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() == QEvent.Type.MouseButtonPress:
            self.room.set_active(self.index)
        return False


class ReadingRoom(QObject):
    """The layouts of a main window: panes, active pane, linking, prior lookup, and their menu."""

    prior_searched = Signal(object)  # StudyFacts of the prior opened, or None (none found)

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self._prior_runner = WorkerRunner("prior-lookup", threads=1)
        self._prior_token = 0
        self._main_presets: list = []  # the main image's window presets (the menu may show another pane's)
        self.window = window
        self.panes: list[ComparePane] = [ComparePane(window, self) for _ in range(3)]
        self.frames = [PaneFrame(window.canvas)] + [PaneFrame(p.canvas) for p in self.panes]
        self.grid_widget = QWidget()
        self.grid = QGridLayout(self.grid_widget)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(2)
        self.link = ViewLink(self.canvases, self)
        self.layout_name = "1x1"
        self.active = 0
        for i, frame in enumerate(self.frames):
            frame.canvas.setMinimumSize(*PANE_MIN_SIZE)  # four panes and the docks still fit a small screen
            self.link.attach(frame.canvas)
            watcher = _ActivateOnClick(self, i)
            frame.canvas.viewport().installEventFilter(watcher)
            frame.canvas.installEventFilter(watcher)
        for i, pane in enumerate(self.panes, start=1):
            pane.changed.connect(lambda i=i: self._pane_changed(i))
            pane.image_shown.connect(lambda _im, i=i: self._offer_active_presets() if i == self.active else None)
        window.image_displayed.connect(lambda _im: self._pane_changed(0))
        window.image_displayed.connect(self._main_image_shown)
        window.prediction_shown.connect(self._main_result_shown)
        window.models.ready.connect(self._model_ready)
        window.overlay_panel.colormap_changed.connect(lambda _c: self._redraw_overlays())
        window.overlay_panel.style_changed.connect(lambda _s: self._redraw_overlays())
        window.overlay_panel.show_below_changed.connect(lambda _on: self._redraw_overlays())
        window.overlay_panel.opacity_changed.connect(
            lambda pct: [p.canvas.set_overlay_opacity(pct / 100.0) for p in self.panes])
        window.overlay_panel.visible_changed.connect(
            lambda on: [p.canvas.set_overlay_visible(on) for p in self.panes])
        # "Show score anyway" is for the image the panel describes: the active pane's, not always the main one
        window.results.show_anyway_requested.disconnect(window.show_score_anyway)
        window.results.show_anyway_requested.connect(self.show_score_anyway)
        window.takeCentralWidget()  # the canvas moves into pane 0's frame (setCentralWidget would delete it)
        window.setCentralWidget(self.grid_widget)
        window.canvas.show()
        self.worklist = WorklistDock(window)
        # the side docks keep their full height; the worklist sits under the images only
        window.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        window.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.worklist)
        self.worklist.hide()  # shown when screening results arrive (or from the Layout menu)
        self.worklist.open_requested.connect(lambda path: window.open_paths([path]))
        self.theme = apply_theme(window.settings.theme)
        self._build_actions()
        self.set_layout("1x1")

    # ------------------------------------------------------------ panes
    def canvases(self) -> list[ImageCanvas]:
        return [f.canvas for f in self.frames]

    def visible_count(self) -> int:
        r, c = LAYOUTS[self.layout_name]
        return r * c

    def set_layout(self, name: str) -> None:
        """Show 1, 2 or 4 panes; panes hidden keep their images for when they come back."""
        rows, cols = LAYOUTS[name]
        self.layout_name = name
        for frame in self.frames:
            self.grid.removeWidget(frame)
        for i, frame in enumerate(self.frames):
            if i < rows * cols:
                self.grid.addWidget(frame, i // cols, i % cols)
                frame.show()
            else:
                frame.hide()
        for r in range(2):
            self.grid.setRowStretch(r, 1 if r < rows else 0)
        for c in range(2):
            self.grid.setColumnStretch(c, 1 if c < cols else 0)
        for i, frame in enumerate(self.frames):
            frame.header.setVisible(rows * cols > 1)
            frame.canvas.set_pan_cache(rows * cols > 1)  # several panes repaint per pan step: move cached pixels
        if rows * cols > 1:
            need = PAN_CACHE_KIB_PER_PANE * rows * cols
            if QPixmapCache.cacheLimit() < need:  # the item caches live in Qt's pixmap cache
                QPixmapCache.setCacheLimit(need)
        if self.active >= rows * cols:
            self.set_active(0)
        else:
            self.set_active(self.active)
        self.actions[name].setChecked(True)

    def set_active(self, index: int) -> None:
        """Make pane ``index`` the one the decision-aid panel describes."""
        index = max(0, min(index, self.visible_count() - 1))
        changed = index != self.active
        self.active = index
        for i, frame in enumerate(self.frames):
            frame.set_active(i == index and self.visible_count() > 1)
        if changed:
            self._show_active_result()
            self._offer_active_presets()

    def active_canvas(self) -> ImageCanvas:
        """The canvas the keyboard view actions act on."""
        return self.frames[self.active].canvas

    def _offer_active_presets(self) -> None:
        """The Presets menu and the Invert check describe the active pane's image."""
        w = self.window
        canvas = self.active_canvas()
        if canvas.image is not None:
            presets = self.panes[self.active - 1].presets if self.active else self._main_presets
            w._rebuild_presets(canvas.image, presets or None)
        w.actions["invert"].setChecked(canvas.inverted)

    def _main_image_shown(self, _image: object) -> None:
        self._main_presets = list(self.window.presets)
        if self.active != 0:  # the menu keeps offering the active pane's presets
            self._offer_active_presets()

    # ------------------------------------------------------------ view actions (active pane)
    def view_action(self, name: str) -> None:
        """Zoom/fit/orientation/W-L reset ``name`` on the active pane (linked panes follow zoom, pan, W/L)."""
        VIEW_ACTIONS[name](self.active_canvas())

    def toggle_invert(self) -> None:
        """Invert the active pane; linked panes take the same inversion."""
        canvas = self.active_canvas()
        canvas.toggle_invert()
        self.link.inversion_set(canvas)
        self.window.actions["invert"].setChecked(canvas.inverted)

    def reset_view(self) -> None:
        """The active pane back to how its file opened (linked panes follow its view, window, inversion)."""
        canvas = self.active_canvas()
        canvas.reset_view()
        self.link.inversion_set(canvas)
        self.window.actions["invert"].setChecked(False)

    def _show_active_result(self) -> None:
        if self.active == 0:
            self.window.request_prediction()  # cached: the main pane's result comes back at once
        else:
            self._show_pane_result(self.panes[self.active - 1])

    def _show_pane_result(self, pane: ComparePane) -> None:
        active = self.window.models.active
        pane.show_result_in(self.window.results, active.card.positive_class if active else None)

    def show_score_anyway(self) -> None:
        """The reader asks for the score of the out-of-scope image in the active pane (that one only)."""
        if self.active == 0:
            self.window.show_score_anyway()
            return
        pane = self.panes[self.active - 1]
        if pane.image is not None:
            pane.scope.show_anyway = True
            pane.request_prediction()

    def _main_result_shown(self, _outcome: object) -> None:
        self._pane_changed(0)
        if self.active != 0:  # a late result of the main pane must not replace the active pane's
            self._show_pane_result(self.panes[self.active - 1])

    def _pane_changed(self, index: int) -> None:
        frame = self.frames[index]
        if index == 0:
            text = self._main_summary()
        else:
            pane = self.panes[index - 1]
            text = self._dated(pane.path, pane.image.metadata if pane.image else None,
                               pane.summary(self._positive_class()))
            if index == self.active:
                self._show_pane_result(pane)
        frame.set_text(text)
        if self.link.enabled and index != 0 and frame.canvas.image is not None:
            self.link.sync_from(self.frames[self.active if self.active != index else 0].canvas)

    def _main_summary(self) -> str:
        w = self.window
        image = w.current_image
        if image is None:
            return "Current: no image"
        res = w.current_outcome.result if w.current_outcome is not None else None
        name = Path(image.path or "").name
        text = f"{score_text(res.prediction, self._positive_class())} - {name}" if res is not None else name
        return self._dated(image.path, image.metadata, text)  # the result before the name (elided last)

    def _positive_class(self) -> str | None:
        active = self.window.models.active
        return active.card.positive_class if active is not None else None

    @staticmethod
    def _dated(path: str | None, metadata: dict | None, text: str) -> str:
        """``text`` after the study date from the decoded image's metadata (no header read here)."""
        facts = facts_from_metadata(path or "", metadata or {}) if path else None
        return f"{facts.date_text}  {text}" if facts is not None and facts.date_text else text

    def _model_ready(self, active: object) -> None:
        for pane in self.panes:
            pane.set_model(active)

    def _redraw_overlays(self) -> None:
        for pane in self.panes:
            pane.show_overlay()

    # ------------------------------------------------------------ priors
    def pacs_cache_root(self) -> Path:
        """The local PACS study cache folder of the settings (read here, never created)."""
        from cxr_desktop.gui.pacs_settings import PacsSettings
        from cxr_desktop.pacs.cache import default_cache_root

        return Path(PacsSettings(self.window.settings.q).cache_dir or default_cache_root())

    def open_prior(self) -> bool:
        """Look for the current image's prior in a worker, then open it beside it (1x2 at least).

        Returns False (with a note) when there is no current image; the outcome arrives as
        :attr:`prior_searched` (the prior's facts, or None with a note in the status bar).
        """
        image = self.window.current_image
        if image is None or not image.path:
            self.window.statusBar().showMessage("No prior found: open a study first.", 6000)
            self.prior_searched.emit(None)
            return False
        self._prior_token += 1
        listed = [(e.path, dict(e.metadata)) for e in self.window.study_list.entries() if e.ok]
        self.window.statusBar().showMessage("Looking for a prior of this patient...", 3000)
        self._prior_runner.start_function(
            search_prior, str(image.path), dict(image.metadata or {}), listed, self.pacs_cache_root(),
            returned=lambda prior, t=self._prior_token: self._prior_found(t, prior),
            errored=lambda _exc, t=self._prior_token: self._prior_found(t, None))
        return True

    def _prior_found(self, token: int, prior: StudyFacts | None) -> None:
        if token != self._prior_token:
            return  # a later Shift+P supersedes this search
        if prior is None:
            self.window.statusBar().showMessage(
                "No prior found: no study of this patient in the study list or the PACS cache has an "
                "earlier study date.", 6000)
        else:
            if self.layout_name == "1x1":
                self.set_layout("1x2")
            cache = self.pacs_cache_root()
            in_cache = Path(prior.path).parent.parent == cache
            self.open_in_pane(1, prior.path, "prior from the PACS cache" if in_cache else None)
            self.window.statusBar().showMessage(f"Prior of {prior.date_text} opened beside the current image.", 5000)
        self.prior_searched.emit(prior)

    def open_in_pane(self, index: int, path: str, label: str | None = None) -> None:
        """Open ``path`` in compare pane ``index`` (1-3); ``label`` replaces the file name in its header."""
        self.panes[index - 1].open(path, label)

    # ------------------------------------------------------------ linking
    def toggle_linked(self) -> None:
        self.set_linked(not self.link.enabled)

    def set_linked(self, on: bool) -> None:
        self.link.enabled = bool(on)
        self.actions["link"].setChecked(self.link.enabled)
        if on:
            self.link.sync_from(self.frames[self.active].canvas)

    # ------------------------------------------------------------ menu
    def _build_actions(self) -> None:
        """The Layout menu, from the window's actions (keys in :data:`~cxr_desktop.gui.shortcuts.SHORTCUTS`)."""
        w = self.window
        acts = w.actions
        self.actions: dict[str, QAction] = {}
        menu = QMenu("&Layout", w.menuBar())
        group = QActionGroup(menu)
        for name in LAYOUTS:
            act = acts[f"layout_{name}"]
            act.setCheckable(True)
            group.addAction(act)
            menu.addAction(act)
            self.actions[name] = act
        menu.addSeparator()
        acts["link_views"].setCheckable(True)
        for key, short in (("open_prior", "prior"), ("link_views", "link")):
            menu.addAction(acts[key])
            self.actions[short] = acts[key]
        menu.addSeparator()
        show_worklist = self.worklist.toggleViewAction()
        show_worklist.setText("Show &worklist")
        menu.addAction(show_worklist)
        for key in ("next_unread", "prev_unread", "mark_read"):
            menu.addAction(acts[key])
            self.actions[key] = acts[key]
        menu.addSeparator()
        themes = add_choice_menu(menu, "&Theme", THEMES, self.theme,
                                 lambda n: f"{n.capitalize()}{' (reading room)' if n == 'dark' else ''}",
                                 self.set_theme)
        for name, act in themes.items():
            self.actions[f"theme_{name}"] = act
        help_menu = next((a for a in w.menuBar().actions() if a.text().replace("&", "") == "Help"), None)
        if help_menu is not None:  # Layout before Help
            w.menuBar().insertMenu(help_menu, menu)
        else:
            w.menuBar().addMenu(menu)
        self.menu = menu

    def set_theme(self, name: str) -> None:
        """Switch between the dark (default) and light theme, and remember it."""
        self.theme = apply_theme(name)
        self.window.settings.theme = self.theme
        self.actions[f"theme_{self.theme}"].setChecked(True)

    # ------------------------------------------------------------ worklist
    def attach_screening(self, dialog: QWidget) -> None:
        """Follow a screening dialog's results in the docked worklist."""
        model = getattr(dialog, "model", None)
        if model is None:
            return

        def sync(*_args: object) -> None:
            folder = getattr(dialog, "run_folder", None)
            if folder is not None and model.rowCount():
                self.worklist.set_results(folder, model.rows())
                if not self.worklist.isVisible():
                    self.worklist.show()
                    self.window.resizeDocks([self.worklist], [max(160, self.window.height() // 4)],
                                            Qt.Orientation.Vertical)

        model.modelReset.connect(sync)
        model.rowsInserted.connect(sync)

    def shutdown(self, timeout_ms: int) -> bool:
        ok = self._prior_runner.shutdown(timeout_ms)
        ok = self.worklist.shutdown(timeout_ms) and ok
        for pane in self.panes:
            ok = pane.shutdown(timeout_ms) and ok
        return ok


def reading_room_handlers(window: MainWindow) -> dict[str, Callable[[], object]]:
    """Handlers for the layout and worklist entries of SHORTCUTS.

    The room is looked up when a key is used, so the window may build its actions first.
    """

    def room() -> ReadingRoom:
        return window.reading_room

    out: dict[str, Callable[[], object]] = {f"layout_{n}": (lambda n=n: room().set_layout(n)) for n in LAYOUTS}
    out.update({
        "open_prior": lambda: room().open_prior(),
        "link_views": lambda: room().toggle_linked(),
        "next_unread": lambda: room().worklist.step_unread(+1),
        "prev_unread": lambda: room().worklist.step_unread(-1),
        "mark_read": lambda: room().worklist.toggle_read(),
        "invert": lambda: room().toggle_invert(),
    })
    out.update({name: (lambda n=name: room().view_action(n)) for name in VIEW_ACTIONS})
    return out


def fit_to_screen(window: QWidget, wanted: tuple[int, int] = DEFAULT_SIZE) -> None:
    """Size ``window`` to ``wanted`` but never larger than its screen's available area (HiDPI safe)."""
    screen = window.screen() or QGuiApplication.primaryScreen()
    if screen is None:
        window.resize(*wanted)
        return
    window.setGeometry(initial_geometry(screen.availableGeometry(), wanted))
