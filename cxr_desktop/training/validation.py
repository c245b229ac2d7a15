"""Test-split figures beyond the headline metrics: what a reader needs to judge a trained model.

* **per input type** (PNG, JPEG, DICOM, DICOM MONOCHROME1 ...): a model can do well on
  one file type and badly on another (e.g. an inverted grey scale);
* **the starting model** (when training continued from a model file): scored on the
  same test images, with the paired difference in AUC, so "better than before" is shown,
  not assumed;
* **calibration**: reliability bins and ECE of the positive-class probability;
* **caution rate**: the share of test images above the scope check's distance limit,
  for positives and negatives separately.

All intervals resample patients (:func:`~cxr_desktop.training.metrics.bootstrap_ci`
with ``groups``). Nothing here holds patient data: groups are hashed ids.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cxr_desktop.training.metrics import (
    DEFAULT_BOOTSTRAP, binary_metrics_at, bootstrap_ci, calibration, caution_summary, ci_note, exact_for,
    roc_auc,
)


def metrics_by_input(y: np.ndarray, scores: np.ndarray, kinds: Sequence[str], threshold: float, *,
                     groups: Sequence[str] | None = None, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
                     ) -> dict[str, dict[str, Any]]:
    """AUC (with CI), sensitivity and specificity at ``threshold`` for each input type, with counts."""
    y = np.asarray(y, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    k = np.asarray(list(kinds), dtype=object)
    g = np.asarray(groups) if groups is not None else None
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted(set(k.tolist())):
        sel = k == kind
        yy, ss = y[sel], s[sel]
        gg = g[sel] if g is not None else None
        at = binary_metrics_at(yy, ss, threshold)
        row: dict[str, Any] = {"n": int(sel.sum()), "n_positive": int(yy.sum()),
                               "n_patients": int(len(np.unique(gg))) if gg is not None else None,
                               "auc": roc_auc(yy, ss), "sensitivity": at["sensitivity"],
                               "specificity": at["specificity"], "tp": at["tp"], "fp": at["fp"], "tn": at["tn"],
                               "fn": at["fn"]}
        row["auc_ci95"] = list(bootstrap_ci(yy, ss, roc_auc, n_boot=n_boot, seed=seed, groups=gg))
        notes = {}
        for key in ("sensitivity", "specificity"):
            row[f"{key}_ci95"] = list(bootstrap_ci(
                yy, ss, lambda a, b, kk=key: binary_metrics_at(a, b, threshold)[kk], n_boot=n_boot, seed=seed,
                groups=gg))
        exact = {}
        for key in ("auc", "sensitivity", "specificity"):
            units = None
            if gg is not None and key != "auc":
                units = int(len(np.unique(gg[yy == (1 if key == "sensitivity" else 0)])))
            note = ci_note(key, row[key], row[f"{key}_ci95"], at if key != "auc" else None, units)
            if note:
                notes[key] = note
                e = exact_for(key, at, units) if key != "auc" else None
                if e is not None:
                    exact[key] = [e[0], e[1]]
        row["ci_notes"] = notes
        row["ci_exact"] = exact
        out[kind] = row
    return out


def compare_models(y: np.ndarray, new: np.ndarray, start: np.ndarray, new_threshold: float,
                   start_threshold: float, *, groups: Sequence[str] | None = None,
                   n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """The trained and the starting model on the same cases: AUC each, paired AUC difference (new - start).

    Each model is judged at its own decision threshold (the one its card carries).
    """
    y = np.asarray(y, dtype=np.int64)
    both = np.stack([np.asarray(new, np.float64), np.asarray(start, np.float64)], axis=1)
    g = np.asarray(groups) if groups is not None else None
    out: dict[str, Any] = {"n": int(y.size), "n_positive": int(y.sum())}
    for name, col, thr in (("trained", 0, new_threshold), ("starting", 1, start_threshold)):
        at = binary_metrics_at(y, both[:, col], thr)
        out[name] = {"auc": roc_auc(y, both[:, col]), "threshold": float(thr), "sensitivity": at["sensitivity"],
                     "specificity": at["specificity"],
                     "auc_ci95": list(bootstrap_ci(y, both[:, col], roc_auc, n_boot=n_boot, seed=seed, groups=g))}
    out["auc_difference"] = out["trained"]["auc"] - out["starting"]["auc"]
    out["auc_difference_ci95"] = list(bootstrap_ci(
        y, both, lambda a, b: roc_auc(a, b[:, 0]) - roc_auc(a, b[:, 1]), n_boot=n_boot, seed=seed, groups=g))
    return out


def split_extras(y: np.ndarray, scores: np.ndarray, threshold: float, *, kinds: Sequence[str],
                groups: Sequence[str] | None = None, distances: np.ndarray | None = None,
                limit: float | None = None, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """Calibration, metrics per input type and (given the scope distances) the caution rate of a test split."""
    out: dict[str, Any] = {
        "calibration": calibration(y, scores),
        "by_input": metrics_by_input(y, scores, kinds, threshold, groups=groups, n_boot=n_boot, seed=seed),
    }
    if distances is not None and limit is not None and np.isfinite(limit):
        out["caution"] = caution_summary(distances, float(limit), y)
    return out


def at_new_threshold(extras: dict[str, Any], y: np.ndarray, scores: np.ndarray, threshold: float, *,
                     kinds: Sequence[str] | None = None, groups: Sequence[str] | None = None,
                     n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """The extras of a split's metrics (:func:`split_extras`, ``starting_model``) at another decision threshold.

    Calibration and the caution rate do not depend on the threshold and are kept;
    metrics per input type and the trained model's side of the comparison are recomputed.
    """
    out = {k: extras[k] for k in ("calibration", "caution") if k in extras}
    if kinds is not None and len(kinds) == len(y) and "by_input" in extras:
        out["by_input"] = metrics_by_input(y, scores, kinds, threshold, groups=groups, n_boot=n_boot, seed=seed)
    start = extras.get("starting_model")
    if isinstance(start, dict):
        start = dict(start)
        if isinstance(start.get("trained"), dict):
            at = binary_metrics_at(y, scores, threshold)
            start["trained"] = {**start["trained"], "threshold": float(threshold),
                                "sensitivity": at["sensitivity"], "specificity": at["specificity"]}
        out["starting_model"] = start
    return out
