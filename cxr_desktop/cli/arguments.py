"""Argument types and the one-line error reporter shared by the ``cxr-*`` commands."""

from __future__ import annotations

import argparse
from typing import Callable, TextIO


def whole_number(low: int, high: int | None = None, *, noun: str = "whole number",
                 out_of_range: str | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``low`` to ``high``, with messages that say what is wanted."""
    wanted = out_of_range or ("must be at least 1" if low == 1 else f"must be {low} or more")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {noun}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(wanted)
        return value

    return parse


def error_line(err: TextIO, prog: str | Callable[[], str]) -> Callable[[int, str], int]:
    """``fail(code, message)``: writes ``prog: message`` to ``err`` and returns ``code`` (``return fail(...)``).

    ``prog`` may be a function, for a name that changes while the command runs (a process of a job).
    """

    def fail(code: int, message: str) -> int:
        err.write(f"{prog() if callable(prog) else prog}: {message}\n")
        return code

    return fail
