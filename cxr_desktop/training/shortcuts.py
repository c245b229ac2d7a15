"""Shortcut check: how much of a heatmap lies on the film's border and on burned-in text and markers.

A classifier can learn where a film came from instead of what it shows: lead
markers ("L", "R"), burned-in text, collimation edges. Its heatmaps then light
up the outer border and bright lettering, not the lungs. This module measures,
per image, the share of heatmap mass in the outer ``BORDER_FRACTION`` of the
image and on burned-in text/markers (bright, high-contrast, small connected
components found with OpenCV), summarises it per outcome (TP/FP/FN/TN), and
warns when a group's mean share exceeds a stated limit. The same detector masks
such marks during training (``cxr_desktop.training.data``, preset "robust").

Qt-free; used by the training report and ``cxr-train``'s summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

BORDER_FRACTION = 0.08  # outer band, each side, as a fraction of the image's short side
BORDER_LIMIT = 0.5  # warn above this mean heatmap mass in the border (a flat map puts ~30 % there: its area)
TEXT_LIMIT = 0.15  # warn when a group's mean heatmap mass on burned-in marks exceeds this
TOPHAT_LEVEL = 0.2  # a mark is this much brighter than its surroundings (grey in [0, 1]) ...
MARK_BRIGHTNESS = 0.8  # ... and near white (lettering and lead markers are burned in at full brightness)
MAX_MARK_AREA = 0.01  # a single mark covers at most this share of the image
OUTCOMES = ("TP", "FP", "FN", "TN")
WARNED = ("TP", "FP")  # the viewer draws a heatmap only at or above the threshold: these are the maps users see


def border_mask(shape: tuple[int, int], fraction: float = BORDER_FRACTION) -> np.ndarray:
    """Boolean mask of the outer band (``fraction`` of the short side, each edge)."""
    rows, cols = int(shape[0]), int(shape[1])
    b = max(1, int(round(fraction * min(rows, cols))))
    m = np.ones((rows, cols), dtype=bool)
    m[b:rows - b, b:cols - b] = False
    return m


def burned_in_mask(grey: np.ndarray, *, level: float = TOPHAT_LEVEL, bright: float = MARK_BRIGHTNESS,
                   max_area: float = MAX_MARK_AREA) -> np.ndarray:
    """Boolean mask of burned-in text and markers in a [0, 1] grey image.

    Marks are bright, sharp and small: a white top-hat (image minus its morphological
    opening with a kernel of 1/24 of the short side) keeps structures narrower than the
    kernel that stand out by ``level`` and are at least ``bright``; connected components larger than ``max_area``
    of the image are dropped (anatomy, a large opacity), as are single pixels (noise).
    A soft focal opacity, wider than the kernel and without sharp edges, is not a mark.
    """
    g = np.asarray(grey, dtype=np.float32)
    if g.ndim != 2 or min(g.shape) < 8:
        return np.zeros(g.shape[:2], dtype=bool)
    k = max(3, int(round(min(g.shape) / 24)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    tophat = cv2.morphologyEx(g, cv2.MORPH_TOPHAT, kernel)
    cand = ((tophat >= level) & (g >= bright)).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
    if n <= 1:
        return np.zeros(g.shape, dtype=bool)
    area = stats[:, cv2.CC_STAT_AREA]
    keep = (area >= 3) & (area <= max_area * g.size)
    keep[0] = False
    mask = keep[labels]
    if mask.any():  # include the mark's anti-aliased rim
        mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return mask


def mass_share(heat: np.ndarray, region: np.ndarray) -> float:
    """Share of the heatmap's total mass inside ``region`` (0 for an all-zero map)."""
    h = np.asarray(heat, dtype=np.float64)
    total = float(h.sum())
    if total <= 1e-12:
        return 0.0
    return float(h[region].sum() / total)


@dataclass
class ImageShares:
    """One image's heatmap mass on the border and on burned-in marks, with the regions' own area."""

    outcome: str
    border: float
    text: float
    border_area: float
    text_area: float


def image_shares(heat: np.ndarray, grey: np.ndarray, outcome: str) -> ImageShares:
    """Shares for one heatmap (any size; resized to the grey image) on one [0, 1] grey image."""
    g = np.asarray(grey, dtype=np.float32)
    h = np.asarray(heat, dtype=np.float32)
    if h.shape != g.shape:
        h = cv2.resize(h, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_LINEAR)
    b = border_mask(g.shape)
    t = burned_in_mask(g)
    return ImageShares(outcome, mass_share(h, b), mass_share(h, t), float(b.mean()), float(t.mean()))


@dataclass
class GroupSummary:
    outcome: str
    n: int
    border: float  # mean share of heatmap mass in the border
    text: float  # mean share on burned-in marks
    border_area: float  # mean share of the image that the border is (what a flat map would give)
    text_area: float


@dataclass
class ShortcutCheck:
    """Per-outcome summary and the warnings it raises (empty: nothing above the limits)."""

    groups: list[GroupSummary]
    warnings: list[str] = field(default_factory=list)
    border_fraction: float = BORDER_FRACTION
    border_limit: float = BORDER_LIMIT
    text_limit: float = TEXT_LIMIT

    def to_dict(self) -> dict:
        return {"border_fraction": self.border_fraction, "border_limit": self.border_limit,
                "text_limit": self.text_limit, "warnings": list(self.warnings),
                "groups": [g.__dict__ for g in self.groups]}

    def lines(self) -> list[str]:
        """Plain-text summary (cxr-train's console output)."""
        out = [f"Shortcut check (heatmap mass in the outer {self.border_fraction:.0%} border / on burned-in "
               f"text and markers; limits {self.border_limit:.0%} / {self.text_limit:.0%}):"]
        for g in self.groups:
            out.append(f"  {g.outcome}: n={g.n}  border {g.border:.1%} (area {g.border_area:.1%})  "
                       f"marks {g.text:.1%} (area {g.text_area:.1%})")
        out += [f"  WARNING: {w}" for w in self.warnings]
        return out


def summarise(shares: Sequence[ImageShares], *, border_limit: float = BORDER_LIMIT,
              text_limit: float = TEXT_LIMIT) -> ShortcutCheck:
    """Mean shares per outcome (TP/FP/FN/TN, those present) and a warning per called-positive group above a limit.

    FN/TN rows are reported too, but not warned about: below the threshold the app shows no heatmap,
    and a positive-class map of an image without a finding, scaled per image, often peaks at the edge.
    """
    groups: list[GroupSummary] = []
    warnings: list[str] = []
    for o in OUTCOMES:
        sel = [s for s in shares if s.outcome == o]
        if not sel:
            continue
        g = GroupSummary(o, len(sel), float(np.mean([s.border for s in sel])), float(np.mean([s.text for s in sel])),
                         float(np.mean([s.border_area for s in sel])), float(np.mean([s.text_area for s in sel])))
        groups.append(g)
        if o not in WARNED:
            continue
        if g.border > border_limit:
            warnings.append(f"{o}: {g.border:.0%} of the heatmap lies in the outer {BORDER_FRACTION:.0%} border "
                            f"(limit {border_limit:.0%}); the model may use the film's edge (collimation, markers) "
                            "rather than the lungs.")
        if g.text > text_limit:
            warnings.append(f"{o}: {g.text:.0%} of the heatmap lies on burned-in text/markers (limit "
                            f"{text_limit:.0%}); the model may read labels rather than the image.")
    return ShortcutCheck(groups, warnings, BORDER_FRACTION, border_limit, text_limit)


def outcome_of(label_positive: bool, predicted_positive: bool) -> str:
    """TP/FP/FN/TN from the true and predicted positive flags."""
    if label_positive:
        return "TP" if predicted_positive else "FN"
    return "FP" if predicted_positive else "TN"


def mask_burned_in(grey: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Paint over burned-in marks with their surroundings (OpenCV inpainting); float32 [0, 1]."""
    g = np.asarray(grey, dtype=np.float32)
    m = burned_in_mask(g) if mask is None else mask
    if not m.any():
        return g
    img8 = np.clip(np.rint(g * 255), 0, 255).astype(np.uint8)
    out = cv2.inpaint(img8, m.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    return out.astype(np.float32) / 255.0


# --------------------------------------------------------------------------- on a trained model

PER_OUTCOME = 24  # images per outcome the check looks at (spread over the split; CPU cost ~0.3 s each)


def pick_per_outcome(y: np.ndarray, scores: np.ndarray, threshold: float, per_outcome: int = PER_OUTCOME
                     ) -> dict[str, list[int]]:
    """Up to ``per_outcome`` indices of each outcome, evenly spread over the split's order (deterministic)."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(scores) >= threshold
    out = {}
    for o in OUTCOMES:
        idx = np.flatnonzero([outcome_of(a, b) == o for a, b in zip(y, pred)])
        if len(idx) > per_outcome:
            idx = idx[np.unique(np.linspace(0, len(idx) - 1, per_outcome).round().astype(int))]
        out[o] = [int(i) for i in idx]
    return out


def check_model(model_path: str, paths: Sequence[str], y: np.ndarray, scores: np.ndarray, threshold: float,
                *, per_outcome: int = PER_OUTCOME, cam_method: str = "gradcam") -> ShortcutCheck:
    """Shortcut check of a saved model on labelled images: heatmaps of the positive class, as the app shows them.

    Each image is read as the model reads it (``load_for_model`` -> ``unit_grey``, the
    square model input); its heatmap and the border/mark masks are compared in that geometry.
    Unreadable files are skipped.
    """
    from cxr_desktop.errors import ImageError
    from cxr_desktop.inference.engine import EngineOptions, InferenceEngine
    from cxr_desktop.model.modelfile import load_model
    from cxr_desktop.preprocess import load_for_model, normalise, unit_grey

    loaded = load_model(model_path)
    engine = InferenceEngine(loaded.model, loaded.card, model_sha256=loaded.sha256,
                             options=EngineOptions(device="cpu", backend="torch", cam_method=cam_method))
    card = engine.card
    size = card.input_size
    shares: list[ImageShares] = []
    for o, idx in pick_per_outcome(y, scores, threshold, per_outcome).items():
        for i in idx:
            try:
                grey = unit_grey(load_for_model(paths[i], input_size=size), size)
            except ImageError:
                continue
            x = normalise(grey, card.preprocessing["mean"], card.preprocessing["std"])[None]
            out = engine.run_batch(x, cam=True, cam_classes=[card.positive_index])
            shares.append(image_shares(out.cams[0], grey, o))  # type: ignore[index]
    return summarise(shares)


def check_result(result: object, *, per_outcome: int = PER_OUTCOME) -> ShortcutCheck | None:
    """The check for a finished training run (its test split, else validation); None without a saved model."""
    ev = getattr(result, "evaluation", None)
    card = getattr(result, "card", None)
    model_path = getattr(result, "model_path", None)
    if ev is None or card is None or not model_path:
        return None
    split = "test" if ev.test is not None else "val"
    preds = ev.test if ev.test is not None else ev.val
    y, s = ev.positive_scores(split)
    if not len(y):
        return None
    return check_model(model_path, preds.paths, y, s, card.decision_threshold, per_outcome=per_outcome)
