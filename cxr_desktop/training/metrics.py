"""Classification metrics in plain numpy (no scikit-learn at run time).

Binary metrics take labels ``y`` (0/1, 1 = positive class) and scores (the
positive-class probability); multi-class metrics take integer labels and a
probability matrix and report one-vs-rest per class plus macro averages. The
decision threshold is chosen on the validation split (:func:`select_threshold`)
and then reported on the test split. Confidence intervals are percentile
bootstrap intervals with a fixed seed, so a report is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

DEFAULT_BOOTSTRAP = 1000


def _as_binary(y: Sequence[int] | np.ndarray) -> np.ndarray:
    y = np.asarray(y).astype(np.int64).ravel()
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("binary labels must be 0 or 1")
    return y


def roc_curve(y: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve (fpr, tpr, thresholds), thresholds decreasing; first point is (0, 0) at +inf.

    Ties share one point, as in scikit-learn (which drops collinear points; we keep them).
    """
    y = _as_binary(y)
    s = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.where(np.diff(s))[0]
    ends = np.r_[distinct, y.size - 1]
    tps = np.cumsum(y)[ends].astype(np.float64)
    fps = (ends + 1 - tps).astype(np.float64)
    pos, neg = tps[-1] if tps.size else 0.0, fps[-1] if fps.size else 0.0
    tpr = np.r_[0.0, tps / pos] if pos > 0 else np.r_[0.0, np.full(tps.size, np.nan)]
    fpr = np.r_[0.0, fps / neg] if neg > 0 else np.r_[0.0, np.full(fps.size, np.nan)]
    thresholds = np.r_[np.inf, s[ends]]
    return fpr, tpr, thresholds


def roc_auc(y: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (rank statistic; ties count one half). NaN if one class is absent."""
    y = _as_binary(y)
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks with ties averaged (Mann-Whitney U)."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    starts = np.r_[0, np.where(np.diff(sorted_s))[0] + 1]
    ends = np.r_[starts[1:], s.size]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return ranks


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                     n_classes: int) -> np.ndarray:
    """Counts (n_classes, n_classes): rows = true class, columns = predicted class."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _safe_div(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


def binary_metrics_at(y: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
                      threshold: float) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, precision, F1 (+ counts) with ``score >= threshold`` positive."""
    y = _as_binary(y)
    pred = np.asarray(scores, dtype=np.float64).ravel() >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    tn = int(np.sum(~pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    sens = _safe_div(tp, tp + fn)
    prec = _safe_div(tp, tp + fp)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    return {
        "accuracy": _safe_div(tp + tn, y.size),
        "sensitivity": sens,
        "specificity": _safe_div(tn, tn + fp),
        "precision": prec,
        "f1": f1,
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }


def bootstrap_ci(y: np.ndarray, scores: np.ndarray, statistic: Callable[[np.ndarray, np.ndarray], float],
                 *, n_boot: int = DEFAULT_BOOTSTRAP, alpha: float = 0.05, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of ``statistic(y, scores)``, resampling cases.

    Resamples in which the statistic is undefined (NaN, e.g. one class only) are
    skipped; (nan, nan) if fewer than 10 % of them are usable.
    """
    y = np.asarray(y)
    scores = np.asarray(scores)
    n = len(y)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        v = statistic(y[idx], scores[idx])
        if np.isfinite(v):
            vals.append(v)
    if len(vals) < max(1, n_boot // 10):
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


@dataclass(frozen=True)
class ThresholdChoice:
    """A decision threshold and why it was chosen."""

    threshold: float
    method: str  # "sensitivity" | "youden" | "fixed"
    target: float | None
    sensitivity: float  # on the split it was chosen on
    specificity: float
    note: str = ""


def select_threshold(y: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, *,
                     method: str = "sensitivity", target: float = 0.95, fixed: float = 0.5
                     ) -> ThresholdChoice:
    """Choose the decision threshold on (validation) data.

    ``"sensitivity"``: the highest threshold whose sensitivity reaches ``target``
    (so specificity is as high as that sensitivity allows); ``"youden"``: maximises
    sensitivity + specificity - 1; ``"fixed"``: ``fixed``. Falls back to 0.5 with
    a note when the data has only one class.
    """
    y = _as_binary(y)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if method == "fixed" or y.size == 0 or y.min() == y.max():
        thr = float(fixed)
        m = binary_metrics_at(y, s, thr) if y.size else {"sensitivity": float("nan"), "specificity": float("nan")}
        note = "" if method == "fixed" else "validation split lacks one class; threshold left at 0.5"
        return ThresholdChoice(thr, "fixed", None, m["sensitivity"], m["specificity"], note)
    fpr, tpr, thr = roc_curve(y, s)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop the +inf point: nothing would be positive
    if method == "sensitivity":
        ok = np.where(tpr >= target - 1e-12)[0]
        i = int(ok[0])  # thresholds decrease, so the first reaching the target is the highest
    elif method == "youden":
        i = int(np.argmax(tpr - fpr))
    else:
        raise ValueError(f"unknown threshold method {method!r}; use sensitivity, youden or fixed")
    t = float(min(max(thr[i], 0.0), 1.0))
    return ThresholdChoice(t, method, target if method == "sensitivity" else None,
                           float(tpr[i]), float(1.0 - fpr[i]))


def binary_report(y: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float,
                  *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """Everything a card and report show for a binary task, with 95 % bootstrap CIs."""
    y = _as_binary(y)
    s = np.asarray(scores, dtype=np.float64).ravel()
    at = binary_metrics_at(y, s, threshold)
    out: dict[str, Any] = {"n": int(y.size), "n_positive": int(y.sum()), "threshold": float(threshold)}
    out["auc"] = roc_auc(y, s)
    out["auc_ci95"] = list(bootstrap_ci(y, s, roc_auc, n_boot=n_boot, seed=seed))
    for key in ("accuracy", "sensitivity", "specificity", "precision", "f1"):
        out[key] = at[key]
        out[f"{key}_ci95"] = list(bootstrap_ci(
            y, s, lambda yy, ss, k=key: binary_metrics_at(yy, ss, threshold)[k], n_boot=n_boot, seed=seed))
    out["confusion_matrix"] = [[at["tn"], at["fp"]], [at["fn"], at["tp"]]]
    fpr, tpr, thr = roc_curve(y, s)
    out["roc"] = {"fpr": _finite_list(fpr), "tpr": _finite_list(tpr), "thresholds": _finite_list(thr)}
    return out


def _finite_list(a: np.ndarray) -> list[float]:
    return [float(v) if np.isfinite(v) else (1.0 if v > 0 else 0.0) for v in a]


def multiclass_report(labels: Sequence[int] | np.ndarray, probs: np.ndarray, classes: Sequence[str], *,
                      n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """One-vs-rest metrics per class (argmax decisions) plus macro averages and the confusion matrix."""
    t = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64)
    pred = p.argmax(1)
    per_class: dict[str, dict[str, float]] = {}
    for k, name in enumerate(classes):
        yk = (t == k).astype(np.int64)
        pk = (pred == k)
        tp = int(np.sum(pk & (yk == 1)))
        fp = int(np.sum(pk & (yk == 0)))
        fn = int(np.sum(~pk & (yk == 1)))
        tn = int(np.sum(~pk & (yk == 0)))
        per_class[name] = {
            "auc": roc_auc(yk, p[:, k]),
            "sensitivity": _safe_div(tp, tp + fn),
            "specificity": _safe_div(tn, tn + fp),
            "precision": _safe_div(tp, tp + fp),
            "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
            "n": int(yk.sum()),
        }
    macro = {key: float(np.nanmean([per_class[c][key] for c in classes]))
             if any(np.isfinite(per_class[c][key]) for c in classes) else float("nan")
             for key in ("auc", "sensitivity", "specificity", "precision", "f1")}
    out: dict[str, Any] = {
        "n": int(t.size),
        "accuracy": _safe_div(int(np.sum(pred == t)), t.size),
        "per_class": per_class,
        "macro": macro,
        "auc": macro["auc"],
        "confusion_matrix": confusion_matrix(t, pred, len(classes)).tolist(),
    }
    out["auc_ci95"] = list(bootstrap_ci(t, p, lambda yy, pp: macro_auc(yy, pp), n_boot=n_boot, seed=seed))
    out["accuracy_ci95"] = list(bootstrap_ci(
        t, p, lambda yy, pp: float(np.mean(pp.argmax(1) == yy)), n_boot=n_boot, seed=seed))
    return out


def macro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC over the classes present (NaN if fewer than two are present)."""
    t = np.asarray(labels, dtype=np.int64).ravel()
    aucs = [roc_auc((t == k).astype(np.int64), probs[:, k]) for k in range(probs.shape[1])]
    aucs = [a for a in aucs if np.isfinite(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def task_auc(labels: np.ndarray, probs: np.ndarray, positive_index: int) -> float:
    """The validation metric: binary AUC of the positive class, macro OvR AUC for more classes."""
    if probs.shape[1] == 2:
        return roc_auc((np.asarray(labels) == positive_index).astype(np.int64), probs[:, positive_index])
    return macro_auc(labels, probs)
