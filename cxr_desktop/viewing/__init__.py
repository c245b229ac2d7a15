"""What the viewer decides, without Qt: display mapping, study scanning, window presets,
the input-safety verdict of the image on screen, and start-up timing.

These helpers were in ``cxr_desktop.gui`` but import no Qt, so they live here: the core
and the tests can use them without a display, and ``cxr_desktop.gui`` stays a thin layer
of widgets over them. Nothing in this package may import PySide6 (a test checks it).
Submodules load on demand (``import cxr_desktop.viewing`` itself imports nothing heavy).
"""
