"""The one preprocessing function: image -> model input.

Training, inference, Grad-CAM and screening all call :func:`preprocess`, so the
model sees the same input everywhere. Steps: default display mapping (window /
VOI LUT, MONOCHROME1 inverted) to [0, 1] grey -> stretch-resize to a square
``input_size`` (INTER_AREA) -> normalise -> replicate to 3 channels. The resize
is a plain stretch, so a heatmap maps back to the original geometry by resizing
it to (rows, columns).

The image the model sees is :func:`load_for_model`: decoded no larger than the
model needs (JPEG / JPEG 2000 at a reduced resolution, see
:mod:`cxr_desktop.imaging.reduced`), so the viewer, screening and training give the
same input, and so the same score, for the same file.
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from cxr_desktop.imaging.display import to_unit
from cxr_desktop.imaging.reduced import may_reduce
from cxr_desktop.imaging.types import StudyImage
from cxr_desktop.model.card import IMAGENET_MEAN, IMAGENET_STD


def unit_grey(image: StudyImage, input_size: int) -> np.ndarray:
    """Resized grey [0, 1] float32 (input_size x input_size): the un-normalised model view."""
    unit = to_unit(image)
    return resize_unit(unit, input_size)


def resize_unit(unit: np.ndarray, input_size: int) -> np.ndarray:
    """Stretch-resize a [0, 1] grey image to a square."""
    if unit.shape == (input_size, input_size):
        return unit.astype(np.float32, copy=False)
    shrinking = unit.shape[0] >= input_size and unit.shape[1] >= input_size
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(unit, (input_size, input_size), interpolation=interp).astype(np.float32, copy=False)


def normalise(grey: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """[0, 1] grey (H, W) -> normalised float32 (3, H, W)."""
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return ((grey[None, :, :] - m) / s).astype(np.float32)


def preprocess(image: StudyImage, *, input_size: int = 224,
               mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Image -> model input, float32 (3, input_size, input_size)."""
    return normalise(unit_grey(image, input_size), mean, std)


def preprocess_for_card(image: StudyImage, preprocessing: dict[str, Any]) -> np.ndarray:
    """:func:`preprocess` with the settings a model card records."""
    return preprocess(
        image,
        input_size=int(preprocessing["input_size"]),
        mean=preprocessing["mean"],
        std=preprocessing["std"],
    )


def decode_min_side(input_size: int) -> int:
    """Shortest decoded side the model input needs: twice the input size, then INTER_AREA.

    At 2x, a reduced decode gives the same model input as a full decode within a few
    grey levels on average (measured in tests/test_reduced_decode.py).
    """
    return 2 * int(input_size)


def load_for_model(path: str, *, input_size: int, frame: int = 0) -> StudyImage:
    """The file as the model sees it (screening, training, and the viewer's prediction)."""
    from cxr_desktop.imaging import load_image

    return load_image(path, frame=frame, min_side=decode_min_side(input_size))


def model_image(image: StudyImage, input_size: int) -> StudyImage:
    """The viewer's full-resolution ``image`` as the model sees it.

    Files a reduced decode applies to are read again at the model's resolution (cheap);
    the rest are returned as they are. A file that cannot be read again (moved, say)
    also falls back to ``image``.
    """
    if not image.path or not may_reduce(image, decode_min_side(input_size)):
        return image
    from cxr_desktop.errors import ImageError

    try:
        return load_for_model(image.path, input_size=input_size, frame=image.frame_index)
    except ImageError:
        return image
