"""Window/level presets that make sense for the image at hand (no Qt).

Radiographs (CR/DX, PNG, JPEG) have no absolute unit: a pixel value of 1500
means nothing by itself, so CT presets such as "lung W1500/L-600" (Hounsfield
units) would produce a black or white screen. For radiographs the viewer offers:

* the file's own windows (DICOM Window Center/Width, with their explanations)
  and its default (VOI LUT if it has one);
* **Full range**: the data's min..max (padding excluded);
* **relative presets** built from this image's histogram, in display-brightness
  order (so they work for MONOCHROME1 too):
  - *Balanced (1-99 %)*: clips the extreme 1 % at both ends;
  - *Lung fields (dark range)*: the darker 60 % of the histogram, stretched, for
    subtle lung-field opacities and lines;
  - *Mediastinum / bone (bright range)*: the brighter 60 %, stretched, for the
    mediastinum, retrocardiac region, bones and lines/tubes.

CT images (modality CT, values in Hounsfield units) get the usual absolute
presets as well: lung W1500/L-600, mediastinum W350/L50, bone W1800/L400.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxr_desktop.imaging.display import full_range_window
from cxr_desktop.imaging.types import StudyImage, Window

CT_PRESETS: tuple[tuple[str, float, float], ...] = (
    ("Lung (CT, W1500/L-600)", -600.0, 1500.0),
    ("Mediastinum (CT, W350/L50)", 50.0, 350.0),
    ("Bone (CT, W1800/L400)", 400.0, 1800.0),
)
# name, low percentile, high percentile, in display-brightness order (0 = black)
RELATIVE_PRESETS: tuple[tuple[str, float, float], ...] = (
    ("Balanced (1-99 %)", 1.0, 99.0),
    ("Lung fields (dark range)", 0.5, 60.0),
    ("Mediastinum / bone (bright range)", 40.0, 99.5),
)
_SAMPLE_SIDE = 512  # percentiles from a subsample: fast and accurate enough for a window


@dataclass(frozen=True)
class Preset:
    """A named window; ``window`` None means the file's default mapping (its VOI LUT)."""

    name: str
    window: Window | None
    kind: str  # "file", "full", "relative", "ct"


def _sample(image: StudyImage) -> np.ndarray:
    px = image.pixels
    step = max(1, int(max(px.shape) // _SAMPLE_SIDE))
    vals = px[::step, ::step]
    if image.padding_mask is not None:
        vals = vals[~image.padding_mask[::step, ::step]]
    vals = np.asarray(vals, dtype=np.float32).ravel()
    vals = vals[np.isfinite(vals)]
    return vals if vals.size else np.zeros(1, np.float32)


def relative_window(image: StudyImage, low_pct: float, high_pct: float, name: str = "") -> Window:
    """A window from two percentiles of display brightness (inverted data handled)."""
    vals = _sample(image)
    if image.invert_for_display:  # bright on screen = low values
        lo, hi = np.percentile(vals, [100.0 - high_pct, 100.0 - low_pct])
    else:
        lo, hi = np.percentile(vals, [low_pct, high_pct])
    lo, hi = float(lo), float(hi)
    width = hi - lo if hi > lo else 1.0
    return Window(center=lo + width / 2.0, width=width, function="LINEAR_EXACT",
                  source=f"preset:{name}" if name else "preset", explanation=name)


def presets_for(image: StudyImage) -> list[Preset]:
    """Every preset offered for ``image``, file default first."""
    out = [Preset("Default (from file)", None if image.voi_lut is not None else image.window, "file")]
    for i, w in enumerate(image.windows):
        label = w.explanation or f"File window {i + 1}"
        out.append(Preset(f"{label} (W{w.width:g}/L{w.center:g})", w, "file"))
    out.append(Preset("Full range", full_range_window(image.pixels, image.padding_mask), "full"))
    if image.rgb is None:
        for name, lo, hi in RELATIVE_PRESETS:
            out.append(Preset(name, relative_window(image, lo, hi, name), "relative"))
    if str(image.metadata.get("modality", "")).upper() == "CT":
        for name, c, w in CT_PRESETS:
            out.append(Preset(name, Window(center=c, width=w, source=f"preset:{name}", explanation=name), "ct"))
    return out
