"""Display mapping: modality values -> unit range [0, 1], as DICOM PS3.3 C.11.2 defines.

Used by the viewer *and* by model preprocessing, so what the radiologist sees
with the default window is what the model sees.
"""

from __future__ import annotations

import numpy as np

from typing import Iterator

from cxr_desktop.imaging.types import StudyImage, VoiLut, Window


#: Pixels per band of rows in banded numpy work (keeps temporaries to a few MiB).
BAND_PIXELS = 1 << 20


def row_bands(shape: tuple[int, ...]) -> Iterator[slice]:
    """Slices of about :data:`BAND_PIXELS` pixels over the first axis of an image of ``shape``."""
    rows = int(shape[0]) if shape else 0
    cols = int(shape[1]) if len(shape) > 1 else 1
    step = max(1, BAND_PIXELS // max(cols, 1))
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))


def apply_window(pixels: np.ndarray, window: Window) -> np.ndarray:
    """Map modality values through a window to float32 in [0, 1]."""
    x = np.asarray(pixels, dtype=np.float32)
    c = float(window.center)
    w = float(window.width)
    if window.function == "SIGMOID":
        w = max(w, 1e-6)
        return (1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))).astype(np.float32)
    if window.function == "LINEAR_EXACT":
        w = max(w, 1e-6)
        out = (x - c) / w + 0.5
    else:  # LINEAR: width >= 1 by definition
        w = max(w, 1.0)
        if w == 1.0:
            return (x > c - 0.5).astype(np.float32)
        out = (x - (c - 0.5)) / (w - 1.0) + 0.5
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def apply_voi_lut(pixels: np.ndarray, lut: VoiLut) -> np.ndarray:
    """Map modality values through a VOI LUT table to float32 in [0, 1]."""
    pixels = np.asarray(pixels)
    top = float(2 ** lut.bits - 1) if lut.bits else float(max(lut.table.max(), 1))
    table = lut.table.astype(np.float32)
    out = np.empty(pixels.shape, dtype=np.float32)
    for band in row_bands(pixels.shape):  # float64 / int64 indices for one band only
        idx = pixels[band].astype(np.float64) - lut.first_mapped
        idx = np.clip(idx, 0, len(lut.table) - 1, out=idx).astype(np.int64)
        out[band] = table[idx]
    out /= np.float32(top)
    return np.clip(out, 0.0, 1.0, out=out)


def full_range_window(pixels: np.ndarray, mask: np.ndarray | None = None) -> Window:
    """A window spanning the data's min..max (padding excluded)."""
    vals = pixels[~mask] if mask is not None and mask.any() else pixels
    if vals.size == 0:
        vals = pixels
    lo, hi = float(np.min(vals)), float(np.max(vals))
    # hi - lo, not max(hi - lo, 1): float data (parametric maps) may span less than 1.
    width = hi - lo if hi > lo else 1.0
    return Window(center=lo + width / 2.0, width=width, function="LINEAR_EXACT", source="full")


def to_unit(image: StudyImage, window: Window | None = None, *, invert: bool | None = None) -> np.ndarray:
    """The image as float32 [0, 1] display values (0 = black).

    With no ``window`` the image's own default applies (its VOI LUT if the file
    has one, else its default window). MONOCHROME1 images are inverted so that
    they look, and reach the model, like MONOCHROME2. Padding shows black.
    """
    if window is None and image.voi_lut is not None:
        out = apply_voi_lut(image.pixels, image.voi_lut)
    else:
        out = apply_window(image.pixels, window or image.window)
    out = out.astype(np.float32, copy=False)
    do_invert = image.invert_for_display if invert is None else invert
    if do_invert:
        np.subtract(np.float32(1.0), out, out=out)  # in place: no second full-size copy
    if image.padding_mask is not None:
        out[image.padding_mask] = 0.0
    return out


def to_uint8(image: StudyImage, window: Window | None = None, *, invert: bool | None = None) -> np.ndarray:
    """Display values as uint8 (rows x cols), for drawing and thumbnails."""
    return np.rint(to_unit(image, window, invert=invert) * 255.0).astype(np.uint8)
