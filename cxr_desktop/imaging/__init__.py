"""Image pipeline (no Qt): files -> :class:`StudyImage`.

``load_image`` decodes one frame of a PNG / JPEG / TIFF / DICOM file; ``probe`` reads
only the header; ``is_image_file`` is a cheap magic-byte test for folder walks;
``read_dicom_tags`` lists header elements for the tag panel. All failures are
:class:`cxr_desktop.errors.ImageError` with a stable :class:`~cxr_desktop.errors.Reason`.
"""

from cxr_desktop.imaging.display import apply_voi_lut, apply_window, full_range_window, to_uint8, to_unit
from cxr_desktop.imaging.types import ImageInfo, StudyImage, VoiLut, Window

# The loader pulls in pydicom and Pillow (~0.5 s): import it on first use, so that the
# GUI can show its window (and the scope rules can be imported) before paying for it.
_LOADER_NAMES = frozenset({
    "DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "SUPPORTED_FORMATS", "is_image_file",
    "load_image", "probe", "read_dicom_tags", "sniff_format",
})


def __getattr__(name: str):
    if name in _LOADER_NAMES:
        from cxr_desktop.imaging import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "ImageInfo",
    "SUPPORTED_FORMATS",
    "StudyImage",
    "VoiLut",
    "Window",
    "apply_voi_lut",
    "apply_window",
    "full_range_window",
    "is_image_file",
    "load_image",
    "probe",
    "read_dicom_tags",
    "sniff_format",
    "to_uint8",
    "to_unit",
]
