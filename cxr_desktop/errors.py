"""Typed errors with stable reason codes and sentences a radiologist understands.

Messages never contain patient data (names, IDs, dates of birth): only the file
name the user chose, and what to do about the problem.
"""

from __future__ import annotations

import enum
from pathlib import Path


class Reason(str, enum.Enum):
    """Stable reason codes; used in CSV ``reason`` columns and by tests."""

    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED = "truncated"
    NO_PIXEL_DATA = "no_pixel_data"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    UNSUPPORTED_PIXEL_FORMAT = "unsupported_pixel_format"
    TOO_LARGE = "too_large"
    UNREADABLE = "unreadable"
    FRAME_OUT_OF_RANGE = "frame_out_of_range"


class CxrError(Exception):
    """Base of every error this application raises on purpose."""


class ImageError(CxrError):
    """An input file could not be turned into an image.

    ``reason`` is a :class:`Reason`; ``message`` is the full sentence for the user.
    """

    def __init__(self, reason: Reason, message: str, path: str | Path | None = None):
        self.reason = Reason(reason)
        self.path = str(path) if path is not None else None
        self.message = message
        super().__init__(self.user_message())

    def user_message(self) -> str:
        where = f"{Path(self.path).name}: " if self.path else ""
        return f"{where}{self.message}"


class ModelFileError(CxrError):
    """A model file was refused; the message says why and what to do."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        self.message = message
        where = f"{Path(self.path).name}: " if self.path else ""
        super().__init__(f"{where}{message}")
