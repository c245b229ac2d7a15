"""Start-up timing for bench/bench_gui.py and the screenshot script.

With ``CXR_REPORT_STARTUP=1`` the app prints one JSON line per milestone to
stdout: ``{"event": ..., "t": <time.time()>, ...}`` for ``window_shown`` (first
paint of the main window), ``model_ready``, ``image_shown`` and
``first_result``. ``CXR_EXIT_AFTER=<event>`` quits the app right after that
milestone (for automated runs). No file names or patient data are printed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

ENV_REPORT = "CXR_REPORT_STARTUP"
ENV_EXIT_AFTER = "CXR_EXIT_AFTER"


class StartupReporter:
    """Prints each milestone once (when enabled) and can quit after one of them."""

    def __init__(self, enabled: bool, exit_after: str | None = None,
                 quit_fn: Callable[[], None] | None = None):
        self.enabled = enabled
        self.exit_after = exit_after or None
        self.quit_fn = quit_fn
        self.seen: dict[str, float] = {}
        self.quitting = False

    @classmethod
    def from_env(cls) -> "StartupReporter":
        return cls(os.environ.get(ENV_REPORT, "") not in ("", "0"), os.environ.get(ENV_EXIT_AFTER))

    def mark(self, event: str, **extra: Any) -> None:
        if event in self.seen:
            return
        now = time.time()
        self.seen[event] = now
        if self.enabled:
            sys.stdout.write(json.dumps({"event": event, "t": now, **extra}) + "\n")
            sys.stdout.flush()
        if self.exit_after == event and self.quit_fn is not None:
            self.quitting = True
            self.quit_fn()
