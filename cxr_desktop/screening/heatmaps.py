"""Grad-CAM files for screening: a 16-bit grey heatmap and a colour overlay per scored image.

``<relpath>.heatmap.png``: the map in the image's own geometry (rows x columns),
0..65535 for 0..1, so other tools can threshold it exactly. It explains the
model's finding (positive) class and is scaled per image; it is data for tools
(join it with the CSV's score), written for every scored image.
``<relpath>.overlay.png``: what a reader looks at, following the viewer's rules
(:mod:`cxr_desktop.heatmap_rules`): at or above the decision threshold, the map
(JET colours) over the image as the viewer shows it by default (window / VOI LUT
applied, MONOCHROME1 inverted), transparent where the map is low so the film is
not tinted; below the threshold, no colour at all: the plain image with a
burned-in "No finding above threshold - no heatmap" band. A reader browsing the
overlays thus sees a hot spot only where the model flagged a finding, and a
missing overlay never has to be told apart from a failed one (one file per
scored row either way). Both files mirror the input's relative path under the
heatmap folder and are written atomically, so an interrupted run never leaves a
half-written PNG.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from cxr_desktop.heatmap_rules import NO_HEATMAP_TEXT, alpha_ramp
from cxr_desktop.paths import path_inside
from cxr_desktop.screening.results import atomic_write_bytes

HEATMAP_SUFFIX = ".heatmap.png"
OVERLAY_SUFFIX = ".overlay.png"
OVERLAY_MAX_ALPHA = 0.5  # weight of the colour where the map is highest (0 where it is low)


def heatmap_paths(out_dir: str | os.PathLike[str], relpath: str) -> tuple[Path, Path]:
    """(heatmap, overlay) paths for an input's relative path, inside ``out_dir``."""
    target = path_inside(out_dir, relpath, "heatmap folder")
    return target.with_name(target.name + HEATMAP_SUFFIX), target.with_name(target.name + OVERLAY_SUFFIX)


def heatmap_png16(heat: np.ndarray) -> bytes:
    """[0, 1] map -> 16-bit grey PNG bytes (same rows x columns)."""
    h16 = np.rint(np.clip(heat, 0.0, 1.0) * 65535.0).astype(np.uint16)
    ok, buf = cv2.imencode(".png", h16, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def overlay_bgr(display: np.ndarray, heat: np.ndarray, max_alpha: float = OVERLAY_MAX_ALPHA) -> np.ndarray:
    """Grey uint8 image (rows x cols) + [0, 1] map -> BGR uint8 overlay, transparent where the map is low."""
    colour = cv2.applyColorMap(np.rint(np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    grey = cv2.cvtColor(display, cv2.COLOR_GRAY2BGR)
    a = (alpha_ramp(heat) * float(max_alpha))[..., None]
    return np.rint(grey * (1.0 - a) + colour * a).astype(np.uint8)


def no_heatmap_bgr(display: np.ndarray, score: float | None = None) -> np.ndarray:
    """Grey uint8 image -> BGR with a burned-in band: no finding above threshold, so no heatmap."""
    out = cv2.cvtColor(display, cv2.COLOR_GRAY2BGR)
    h, w = out.shape[:2]
    text = NO_HEATMAP_TEXT + (f" (score {score:.3f})" if score is not None else "")
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.35, w / 1600.0)
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    if tw > w - 8:  # small image: shrink the text to fit its width
        scale *= (w - 8) / float(tw)
        (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    pad = max(3, th // 2)
    band = min(h, th + base + 2 * pad)
    out[:band] = (out[:band] * 0.25).astype(np.uint8)
    cv2.putText(out, text, (pad, min(h - 1, pad + th)), font, scale, (120, 200, 255), thick, cv2.LINE_AA)
    return out


def write_heatmap_files(out_dir: str | os.PathLike[str], relpath: str, heat: np.ndarray,
                        display: np.ndarray, *, above_threshold: bool = True,
                        score: float | None = None) -> tuple[Path, Path]:
    """Write both PNGs for one image atomically; returns their paths.

    ``above_threshold`` False (P(finding) below the decision threshold): the overlay is the
    plain image marked "no finding above threshold - no heatmap"; the data map is still written.
    """
    if heat.shape != display.shape[:2]:
        raise ValueError(f"heatmap {heat.shape} and image {display.shape[:2]} differ in geometry")
    heat_path, overlay_path = heatmap_paths(out_dir, relpath)
    atomic_write_bytes(heat_path, heatmap_png16(heat))
    picture = overlay_bgr(display, heat) if above_threshold else no_heatmap_bgr(display, score)
    ok, buf = cv2.imencode(".png", picture, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError("PNG encoding failed")
    atomic_write_bytes(overlay_path, buf.tobytes())
    return heat_path, overlay_path
