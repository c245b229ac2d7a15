"""Wait for the real app in bench and screenshot scripts: process Qt events until a condition holds."""

from __future__ import annotations

import time
from typing import Any, Callable


def wait_until(app: Any, predicate: Callable[[], bool], timeout_s: float = 300.0, *, poll_s: float = 0.002) -> None:
    """Run ``app``'s event loop until ``predicate()`` is true; TimeoutError after ``timeout_s`` seconds."""
    deadline = time.perf_counter() + timeout_s
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the app did not get there within {timeout_s:g} s")
        app.processEvents()
        time.sleep(poll_s)
