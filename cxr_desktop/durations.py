"""How long something took or has left, as shown to the user (one place for the CLI and the GUI).

:func:`clock` is the progress-line form (``"01:05"``, ``"1:02:03"``; ``"--:--"`` when unknown)
used by ``cxr-screen`` and the screening dialog; :func:`rough` is the spoken form (``"45 s"``,
``"3 min"``, ``"1.5 h"``) the training wizard uses for time left, where seconds would be noise;
:func:`seconds_text` is a measured time in log and status lines (``"1.2 s"``).
"""

from __future__ import annotations

UNKNOWN_CLOCK = "--:--"


def clock(seconds: float | None) -> str:
    """``m:ss`` clock text, zero-padded minutes, with hours only when there are any."""
    if seconds is None:
        return UNKNOWN_CLOCK
    whole = int(round(seconds))
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def rough(seconds: float) -> str:
    """Seconds under 90 s, whole minutes under 90 min, else hours to one decimal."""
    secs = max(0, int(seconds))
    if secs < 90:
        return f"{secs} s"
    if secs < 5400:
        return f"{round(secs / 60)} min"
    return f"{secs / 3600:.1f} h"


def seconds_text(value: float) -> str:
    """A measured time in seconds to one decimal (``"1.2 s"``), for log and status lines."""
    return f"{value:.1f} s"
