"""The viewer's colour theme: dark (the reading-room default, low glare beside the images) or light.

Both use Qt's Fusion style with an explicit palette, so the look is the same on
every platform and follows the app's font scaling (HiDPI). The image canvas keeps
its own black background in both.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QStyleFactory

THEMES = ("dark", "light")
DEFAULT_THEME = "dark"
_light_palette: QPalette | None = None


def dark_palette() -> QPalette:
    """A dim grey palette with light text and a blue highlight (contrast >= 7:1 for body text)."""
    p = QPalette()
    base, window, text = QColor(30, 30, 32), QColor(42, 42, 46), QColor(226, 226, 226)
    disabled = QColor(128, 128, 128)
    for role, colour in (
        (QPalette.ColorRole.Window, window), (QPalette.ColorRole.WindowText, text),
        (QPalette.ColorRole.Base, base), (QPalette.ColorRole.AlternateBase, QColor(38, 38, 42)),
        (QPalette.ColorRole.ToolTipBase, QColor(56, 56, 60)), (QPalette.ColorRole.ToolTipText, text),
        (QPalette.ColorRole.PlaceholderText, disabled), (QPalette.ColorRole.Text, text),
        (QPalette.ColorRole.Button, QColor(50, 50, 55)), (QPalette.ColorRole.ButtonText, text),
        (QPalette.ColorRole.BrightText, QColor(255, 90, 90)), (QPalette.ColorRole.Link, QColor(110, 170, 255)),
        (QPalette.ColorRole.Highlight, QColor(50, 110, 190)),
        (QPalette.ColorRole.HighlightedText, QColor(255, 255, 255)),
        (QPalette.ColorRole.Light, QColor(70, 70, 76)), (QPalette.ColorRole.Midlight, QColor(60, 60, 66)),
        (QPalette.ColorRole.Mid, QColor(36, 36, 40)), (QPalette.ColorRole.Dark, QColor(24, 24, 26)),
        (QPalette.ColorRole.Shadow, QColor(0, 0, 0)),
    ):
        p.setColor(role, colour)
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    return p


def apply_theme(name: str, app: QApplication | None = None) -> str:
    """Apply theme ``name`` ("dark" or "light"; anything else: the default) app-wide; returns the one applied."""
    global _light_palette
    app = app or QApplication.instance()
    name = name if name in THEMES else DEFAULT_THEME
    if app is None:
        return name
    fusion = QStyleFactory.create("Fusion")
    if fusion is not None and app.style().name().lower() != "fusion":
        app.setStyle(fusion)
    if _light_palette is None:
        _light_palette = app.style().standardPalette()
    app.setPalette(dark_palette() if name == "dark" else QPalette(_light_palette))
    app.setProperty("cxr_theme", name)
    return name


def current_theme(app: QApplication | None = None) -> str:
    app = app or QApplication.instance()
    value = app.property("cxr_theme") if app is not None else None
    return str(value) if value in THEMES else DEFAULT_THEME


def is_dark(palette: QPalette) -> bool:
    """Whether a palette is a dark one (window background darker than its text)."""
    window, text = palette.color(QPalette.ColorRole.Window), palette.color(QPalette.ColorRole.WindowText)
    return window.lightness() < text.lightness()
