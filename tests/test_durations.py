"""The shared duration texts (cxr_desktop.durations) used by cxr-screen, the screening dialog, the wizard and the node."""

from cxr_desktop.durations import clock, rough, seconds_text


def test_clock_pads_minutes_and_shows_hours_only_when_there_are_any():
    assert clock(None) == "--:--"
    assert clock(65.4) == "01:05"
    assert clock(3723) == "1:02:03"


def test_rough_switches_units_at_90_seconds_and_90_minutes():
    assert rough(-3) == "0 s"
    assert rough(89) == "89 s"
    assert rough(90) == "2 min"
    assert rough(5399) == "90 min"
    assert rough(5400) == "1.5 h"


def test_seconds_text_one_decimal():
    assert seconds_text(1.25) == "1.2 s"
    assert seconds_text(12) == "12.0 s"
