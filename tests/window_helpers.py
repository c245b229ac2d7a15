"""Helpers for GUI tests that drive a main window (from the ``main_window`` fixture in conftest.py).

Each waits for the window's own signal, so a test goes on only once the image or model is really there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The model load and the first prediction (torch start-up) take longer than opening an image.
IMAGE_TIMEOUT_MS = 30_000
MODEL_TIMEOUT_MS = 60_000


def open_and_wait(qtbot: Any, window: Any, path: str | Path, timeout: int = IMAGE_TIMEOUT_MS) -> Any:
    """Open ``path`` and wait until it is displayed; returns the displayed image."""
    with qtbot.waitSignal(window.image_displayed, timeout=timeout) as blocker:
        window.open_paths([str(path)])
    return blocker.args[0]


def load_model(qtbot: Any, window: Any, path: str | Path, timeout: int = MODEL_TIMEOUT_MS) -> None:
    """Open the model file ``path`` and wait until it is ready."""
    with qtbot.waitSignal(window.models.ready, timeout=timeout):
        window.open_model(str(path))


def open_and_predict(qtbot: Any, window: Any, path: str | Path, timeout: int = MODEL_TIMEOUT_MS) -> Any:
    """Open ``path`` and wait for its prediction on screen; returns what ``prediction_shown`` carried."""
    with qtbot.waitSignal(window.prediction_shown, timeout=timeout) as blocker:
        window.open_paths([str(path)])
    return blocker.args[0]
