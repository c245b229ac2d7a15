"""Modality values -> displayed pixels, fast enough to drag the window on a large radiograph (no Qt).

The result is exactly :func:`cxr_desktop.imaging.display.to_uint8` (the mapping the
model's preprocessing uses), computed through a look-up table when the pixel data
are integers: the table is built once per window, and the per-pixel work is one
indexed read. Built in the image loader's worker, so the GUI thread never pays
for the index array.
"""

from __future__ import annotations

import numpy as np

from cxr_desktop.imaging.display import apply_voi_lut, apply_window, to_uint8
from cxr_desktop.imaging.types import StudyImage, Window

_LUT_MAX_RANGE = 1 << 20  # integer data spanning up to ~1M values go through a table


class DisplayMapper:
    """Modality values -> displayed uint8, exactly as :func:`to_uint8` but via a table when possible."""

    def __init__(self, image: StudyImage):
        self.image = image
        self._idx: np.ndarray | None = None
        self._values: np.ndarray | None = None
        px = image.pixels
        if image.rgb is None and px.size and np.isfinite(px).all():
            lo, hi = float(px.min()), float(px.max())
            if hi - lo < _LUT_MAX_RANGE and bool(np.all(np.floor(px) == px)):
                dtype = np.uint16 if hi - lo < 65536 else np.uint32
                self._idx = (px - lo).astype(dtype)
                self._values = np.arange(lo, hi + 1.0, dtype=np.float32)

    def _table(self, window: Window | None, invert: bool) -> np.ndarray:
        """uint8 display value for every integer value min..max (the look-up table)."""
        im = self.image
        assert self._values is not None
        if window is None and im.voi_lut is not None:
            unit = apply_voi_lut(self._values, im.voi_lut)
        else:
            unit = apply_window(self._values, window or im.window)
        if invert:
            unit = 1.0 - unit
        return np.rint(unit * 255.0).astype(np.uint8)

    def grey(self, window: Window | None, invert: bool) -> np.ndarray:
        """Displayed grey values (rows x cols uint8); ``window`` None = the file's default mapping."""
        im = self.image
        if self._idx is None:
            return to_uint8(im, window, invert=invert)
        out = self._table(window, invert)[self._idx]
        if im.padding_mask is not None:
            out[im.padding_mask] = 0
        return out

    def colour(self, window: Window | None, invert: bool) -> np.ndarray:
        """Displayed RGB (rows x cols x 3 uint8) for colour sources: the window applies per channel."""
        rgb = self.image.rgb
        assert rgb is not None
        return self._channel_table(window, invert)[rgb]

    def _channel_table(self, window: Window | None, invert: bool) -> np.ndarray:
        unit = apply_window(np.arange(256, dtype=np.float32), window or self.image.window)
        if invert:
            unit = 1.0 - unit
        return np.rint(unit * 255.0).astype(np.uint8)

    @property
    def value_span(self) -> float | None:
        """max - min of integer data (None when the table is not used)."""
        if self._values is None:
            return None
        return float(self._values[-1] - self._values[0])

    @property
    def default_window(self) -> Window | None:
        """The file's own mapping: None (its VOI LUT) or its default window."""
        return None if self.image.voi_lut is not None else self.image.window

    def render(self, window: Window | None, invert: bool) -> np.ndarray:
        """uint8 grey (rows x cols) or RGB (rows x cols x 3), as :func:`to_uint8` defines."""
        return self.colour(window, invert) if self.image.rgb is not None else self.grey(window, invert)

    def render_packed(self, window: Window | None, invert: bool) -> np.ndarray:
        """The same picture as 0xFFRRGGBB uint32 (rows x cols): Qt's native RGB32, no conversion to draw."""
        im = self.image
        if im.rgb is not None:
            t = self._channel_table(window, invert).astype(np.uint32)
            rgb = im.rgb
            return (0xFF000000 | (t[rgb[..., 0]] << 16) | (t[rgb[..., 1]] << 8) | t[rgb[..., 2]]).astype(np.uint32)
        if self._idx is None:
            return pack_grey(self.grey(window, invert))
        table = self._table(window, invert).astype(np.uint32) * np.uint32(0x010101) | np.uint32(0xFF000000)
        out = table[self._idx]
        if im.padding_mask is not None:
            out[im.padding_mask] = np.uint32(0xFF000000)
        return out


def pack_grey(grey: np.ndarray) -> np.ndarray:
    """uint8 grey -> 0xFFvvvvvv uint32."""
    return grey.astype(np.uint32) * np.uint32(0x010101) | np.uint32(0xFF000000)
