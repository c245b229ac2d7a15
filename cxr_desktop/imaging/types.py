"""The image object every part of the app shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]


@dataclass(frozen=True)
class Window:
    """A display window in modality units (DICOM PS3.3 C.11.2.1.2)."""

    center: float
    width: float
    function: VoiFunction = "LINEAR"
    source: str = "auto"  # "dicom", "dicom-voi-lut", "auto", "full", "preset:<name>"
    explanation: str = ""


@dataclass(frozen=True)
class VoiLut:
    """A VOI LUT table (VOI LUT Sequence item) mapping modality values to display values."""

    first_mapped: int
    table: np.ndarray  # 1-D, output values
    bits: int  # output bit depth of the LUT
    explanation: str = ""


@dataclass
class StudyImage:
    """One decoded frame, ready for display and for the model.

    ``pixels`` is a 2-D float32 array in modality units (after Modality LUT /
    rescale), grey. Colour sources are converted to grey in ``pixels`` and kept in
    ``rgb`` (uint8, rows x cols x 3) for display. ``photometric`` is the source's
    interpretation; for MONOCHROME1 ``invert_for_display`` is True (high values
    are shown dark), which display and preprocessing both honour.
    """

    pixels: np.ndarray
    window: Window
    photometric: str
    frame_count: int = 1
    frame_index: int = 0
    windows: list[Window] = field(default_factory=list)  # every window the file offers
    voi_lut: VoiLut | None = None
    invert_for_display: bool = False
    padding_mask: np.ndarray | None = None  # True where Pixel Padding Value applies
    rgb: np.ndarray | None = None
    source_format: str = "png"  # "png", "jpeg", "tiff", "dicom"
    bits_stored: int = 8
    metadata: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    #: The stored (rows, columns) when decoded at a reduced resolution (``load_image(min_side=...)``).
    source_shape: tuple[int, int] | None = None

    @property
    def full_shape(self) -> tuple[int, int]:
        """(rows, columns) as stored in the file: the geometry heatmaps and size checks use."""
        return self.source_shape if self.source_shape is not None else self.shape

    @property
    def rows(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def columns(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.columns)


@dataclass
class ImageInfo:
    """What a file header says, without decoding pixels (for study lists and folder walks).

    ``format`` is "png", "jpeg", "tiff" or "dicom". ``metadata`` holds the same keys
    as :attr:`StudyImage.metadata` where the header has them (DICOM: patient_id,
    study_uid, series_uid, series_description, ... for grouping in the viewer).
    """

    path: str
    format: str
    rows: int
    columns: int
    frames: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)
