"""Image pipeline (no Qt): files -> :class:`StudyImage`."""

from cxr_desktop.imaging.types import StudyImage, VoiLut, Window

__all__ = ["StudyImage", "VoiLut", "Window"]
