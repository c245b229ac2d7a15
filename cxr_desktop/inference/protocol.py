"""What callers of an inference engine rely on, as a typed ``Protocol``.

Screening, the DICOM node, result export and the GUI take "an engine" without
importing :class:`~cxr_desktop.inference.engine.InferenceEngine` (and torch) at
module level; this names the attributes and methods they use so that each of
them is type-checked against the real engine instead of read with ``getattr``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

if TYPE_CHECKING:
    import numpy as np
    import torch

    from cxr_desktop.imaging.types import StudyImage
    from cxr_desktop.inference.device import DeviceInfo
    from cxr_desktop.inference.engine import BatchOutput, EngineOptions, ImageResult
    from cxr_desktop.model.card import ModelCard


class Engine(Protocol):
    """A loaded model ready to score images (implemented by ``InferenceEngine``)."""

    card: ModelCard
    model_sha256: str  # SHA-256 of the model file ("" when built in memory)
    options: EngineOptions
    device_info: DeviceInfo
    notes: list[str]  # events worth telling the user (e.g. fell back to the CPU)
    extra_tensors: dict[str, torch.Tensor]  # extra tensors from the model file (learned scope check)
    model_path: str | None
    weights_status: str | None  # checksum verdict set by load_engine

    @property
    def device_label(self) -> str: ...

    def run_batch(self, batch: np.ndarray, *, cam: bool = False,
                  cam_classes: Sequence[int] | None = None) -> BatchOutput: ...

    def predict(self, image: StudyImage, *, cam: bool = True,
                cam_class: str | int | None = None) -> ImageResult: ...

    def predict_images(self, images: Sequence[StudyImage], *, cam: bool = False) -> list[ImageResult]: ...
