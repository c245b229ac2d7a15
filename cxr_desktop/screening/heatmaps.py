"""Grad-CAM files for screening: a 16-bit grey heatmap and a colour overlay per image.

``<relpath>.heatmap.png``: the map in the image's own geometry (rows x columns),
0..65535 for 0..1, so other tools can threshold it exactly.
``<relpath>.overlay.png``: the map (JET colours) blended over the image as the
viewer shows it by default (window / VOI LUT applied, MONOCHROME1 inverted).
Both mirror the input's relative path under the heatmap folder; both are
written atomically, so an interrupted run never leaves a half-written PNG.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from cxr_desktop.screening.results import atomic_write_bytes

HEATMAP_SUFFIX = ".heatmap.png"
OVERLAY_SUFFIX = ".overlay.png"
OVERLAY_IMAGE_WEIGHT = 0.6  # share of the grey image in the overlay (pytorch-grad-cam's default)


def heatmap_paths(out_dir: str | os.PathLike[str], relpath: str) -> tuple[Path, Path]:
    """(heatmap, overlay) paths for an input's relative path, inside ``out_dir``."""
    base = Path(out_dir).resolve()
    target = (base / relpath).resolve()
    if base != target and base not in target.parents:
        raise ValueError(f"{relpath!r} leads outside the heatmap folder")
    return target.with_name(target.name + HEATMAP_SUFFIX), target.with_name(target.name + OVERLAY_SUFFIX)


def heatmap_png16(heat: np.ndarray) -> bytes:
    """[0, 1] map -> 16-bit grey PNG bytes (same rows x columns)."""
    h16 = np.rint(np.clip(heat, 0.0, 1.0) * 65535.0).astype(np.uint16)
    ok, buf = cv2.imencode(".png", h16, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def overlay_bgr(display: np.ndarray, heat: np.ndarray, image_weight: float = OVERLAY_IMAGE_WEIGHT) -> np.ndarray:
    """Grey uint8 image (rows x cols) + [0, 1] map -> BGR uint8 overlay."""
    colour = cv2.applyColorMap(np.rint(np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    grey = cv2.cvtColor(display, cv2.COLOR_GRAY2BGR)
    return cv2.addWeighted(grey, image_weight, colour, 1.0 - image_weight, 0.0)


def write_heatmap_files(out_dir: str | os.PathLike[str], relpath: str, heat: np.ndarray,
                        display: np.ndarray) -> tuple[Path, Path]:
    """Write both PNGs for one image atomically; returns their paths."""
    if heat.shape != display.shape[:2]:
        raise ValueError(f"heatmap {heat.shape} and image {display.shape[:2]} differ in geometry")
    heat_path, overlay_path = heatmap_paths(out_dir, relpath)
    atomic_write_bytes(heat_path, heatmap_png16(heat))
    ok, buf = cv2.imencode(".png", overlay_bgr(display, heat), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError("PNG encoding failed")
    atomic_write_bytes(overlay_path, buf.tobytes())
    return heat_path, overlay_path
