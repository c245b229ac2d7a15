"""How a heatmap is shown: when it is drawn at all, how transparent it is, and what its labels say.

One set of rules for the viewer, the exported view and the screening overlays,
so that a reader sees the same thing everywhere:

- The map explains the model's finding (positive) class, not the predicted one:
  "where is the evidence for the finding" is the question a reader asks.
- It is drawn only when P(finding) reaches the card's decision threshold.
  Below it the model found nothing, and a per-image-scaled map would still
  show a red hot spot somewhere (the scale is relative), which reads as a
  finding. The viewer can still show it on explicit request, labelled as such.
- Low values are transparent: the alpha ramps from 0 at :data:`ALPHA_FLOOR` of
  the map's range to 1 at its maximum (times the opacity the user chose), so
  the radiograph is never tinted where the model paid little attention.

No Qt here: the screening writer uses it too.
"""

from __future__ import annotations

import numpy as np

ALPHA_FLOOR = 0.25  # map values (relative, 0..1) at or below this are fully transparent
CONTOUR_LEVELS = (0.4, 0.6, 0.8)  # isolines of the contour style (relative map values)
NO_HEATMAP_TEXT = "No finding above threshold - no heatmap"
BELOW_THRESHOLD_MARK = "BELOW THRESHOLD"
SCALE_NOTE = "Scale relative per image: colours are not comparable between images."


def alpha_ramp(values: np.ndarray, floor: float = ALPHA_FLOOR) -> np.ndarray:
    """Opacity (0..1, float32) for relative map values: 0 up to ``floor``, then linear to 1 at 1."""
    v = np.asarray(values, dtype=np.float32)
    return np.clip((v - floor) / max(1e-6, 1.0 - floor), 0.0, 1.0).astype(np.float32)


def alpha_table(floor: float = ALPHA_FLOOR) -> np.ndarray:
    """:func:`alpha_ramp` for the 256 levels of a uint8 map, as uint8 (a look-up table)."""
    return np.rint(alpha_ramp(np.arange(256, dtype=np.float32) / 255.0, floor) * 255.0).astype(np.uint8)


def heatmap_drawn(score: float, threshold: float, *, show_anyway: bool = False) -> bool:
    """Whether the map is drawn: P(finding) >= threshold, or the reader asked for it explicitly."""
    return bool(show_anyway) or float(score) >= float(threshold)


def legend_title(class_name: str | None, *, below_threshold: bool = False) -> str:
    """The legend's title: which class the map explains (and a mark when shown below threshold)."""
    title = f"Evidence for: {class_name}" if class_name else "Model attention"
    return f"{title} ({BELOW_THRESHOLD_MARK}, shown on request)" if below_threshold else title


def score_sentence(class_name: str, score: float, threshold: float) -> str:
    """``P(opacity) = 0.228, below the decision threshold 0.350``."""
    side = "at or above" if score >= threshold else "below"
    return f"P({class_name}) = {score:.3f}, {side} the decision threshold {threshold:.3f}"


def caption_lines(*, explained: str | None, positive_class: str, score: float, threshold: float,
                  model: str, method: str = "Grad-CAM", heatmap_shown: bool) -> list[str]:
    """Caption of an exported view: class, probability, threshold, model; no patient data.

    The decision-aid sentence is added by the exporter (it is on every export).
    """
    lines = [score_sentence(positive_class, score, threshold) + "."]
    if heatmap_shown and explained:
        mark = f" {BELOW_THRESHOLD_MARK}: shown on request, not a finding." if score < threshold else ""
        lines.append(f"Heatmap: {method} evidence for '{explained}', scale relative per image.{mark}")
    elif score < threshold:
        lines.append(NO_HEATMAP_TEXT + ".")
    lines.append(f"Model: {model}.")
    return lines
