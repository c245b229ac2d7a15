"""Classification metrics in plain numpy (no scikit-learn at run time).

Binary metrics take labels ``y`` (0/1, 1 = positive class) and scores (the
positive-class probability); multi-class metrics take integer labels and a
probability matrix and report one-vs-rest per class plus macro averages. The
decision threshold is chosen on the validation split (:func:`select_threshold`)
and then reported on the test split. Confidence intervals are percentile
bootstrap intervals with a fixed seed, so a report is reproducible; given the
patient of each image they resample patients, not images (one patient's images
are not independent, and resampling images would make the intervals too narrow).
A bootstrap interval of width zero (e.g. every positive caught) says nothing
about the uncertainty; it is flagged as *degenerate* (:func:`ci_note`) with the
exact binomial interval where one exists, never shown as "1.00 (1.00-1.00)".
Also here: PPV/NPV at a stated prevalence, calibration (reliability bins, ECE),
metrics per input type, the comparison of two models on the same cases, and
the share of cases above the scope check's distance limit.
"""

from __future__ import annotations

import math
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


def _resampler(n: int, groups: Sequence[Any] | np.ndarray | None, rng: np.random.Generator
               ) -> Callable[[], np.ndarray]:
    """A function drawing one bootstrap resample's indices: cases, or whole patients when ``groups`` is given."""
    if groups is None:
        return lambda: rng.integers(0, n, n)
    g = np.asarray(groups)
    if len(g) != n:
        raise ValueError("groups must give one patient per case")
    _, codes = np.unique(g, return_inverse=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(codes))]
    members = [order[bounds[k]:bounds[k + 1]] for k in range(len(bounds) - 1)]
    m = len(members)
    return lambda: np.concatenate([members[k] for k in rng.integers(0, m, m)])


def bootstrap_ci(y: np.ndarray, scores: np.ndarray, statistic: Callable[[np.ndarray, np.ndarray], float],
                 *, n_boot: int = DEFAULT_BOOTSTRAP, alpha: float = 0.05, seed: int = 0,
                 groups: Sequence[Any] | np.ndarray | None = None) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of ``statistic(y, scores)``.

    ``groups`` (the patient of each case): whole patients are resampled with
    replacement, each bringing all of its images (the cluster bootstrap); without
    it, cases are resampled. Resamples in which the statistic is undefined (NaN,
    e.g. one class only) are skipped; (nan, nan) if fewer than 10 % are usable.
    """
    y = np.asarray(y)
    scores = np.asarray(scores)
    n = len(y)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draw = _resampler(n, groups, rng)
    vals = []
    for _ in range(n_boot):
        idx = draw()
        v = statistic(y[idx], scores[idx])
        if np.isfinite(v):
            vals.append(v)
    if len(vals) < max(1, n_boot // 10):
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- degenerate intervals

# metric -> (successes, trials) from the confusion counts, for the exact binomial interval
_PROPORTIONS: dict[str, Callable[[dict[str, int]], tuple[int, int]]] = {
    "sensitivity": lambda c: (c["tp"], c["tp"] + c["fn"]),
    "specificity": lambda c: (c["tn"], c["tn"] + c["fp"]),
    "precision": lambda c: (c["tp"], c["tp"] + c["fp"]),
    "ppv": lambda c: (c["tp"], c["tp"] + c["fp"]),  # at the sample's own prevalence PPV is the precision
    "accuracy": lambda c: (c["tp"] + c["tn"], c["tp"] + c["tn"] + c["fp"] + c["fn"]),
    "npv": lambda c: (c["tn"], c["tn"] + c["fn"]),
}
_WHAT = {"sensitivity": ("positives", "detected"), "specificity": ("negatives", "called negative"),
         "precision": ("positive calls", "correct"), "ppv": ("positive calls", "correct"),
         "accuracy": ("cases", "correct"),
         "npv": ("negative calls", "correct")}


def is_degenerate(value: float, ci: Sequence[float] | None) -> bool:
    """A defined value whose bootstrap interval has width zero or could not be computed."""
    if value is None or not np.isfinite(value):
        return False
    if ci is None or len(ci) != 2 or not all(np.isfinite(v) for v in ci):
        return True
    return bool(ci[1] - ci[0] <= 1e-12)


def exact_all_or_none(k: int, n: int, alpha: float = 0.05) -> tuple[float, float] | None:
    """Clopper-Pearson (1 - alpha) interval when ``k`` is 0 or ``n`` (closed form); None otherwise."""
    if n <= 0:
        return None
    if k == n:
        return (alpha / 2) ** (1.0 / n), 1.0
    if k == 0:
        return 0.0, 1.0 - (alpha / 2) ** (1.0 / n)
    return None


def exact_for(key: str, counts: dict[str, int] | None, units: int | None = None
              ) -> tuple[float, float, int, int, int] | None:
    """Exact 95 % interval of an all-or-none proportion: (lower, upper, successes, trials, units used).

    ``units`` (the patients behind the proportion) replaces the number of images when it is
    smaller, since one patient's images are not independent. None when it does not apply.
    """
    if counts is None or key not in _PROPORTIONS:
        return None
    k, n = _PROPORTIONS[key](counts)
    if not n or k not in (0, n):
        return None
    m = units if units is not None and 0 < units <= n else n
    lo, hi = exact_all_or_none(0 if k == 0 else m, m) or (float("nan"), float("nan"))
    return lo, hi, k, n, m


def _plural(n: int, word: str) -> str:
    return f"{n} {word if n != 1 else word[:-1]}"


def ci_note(key: str, value: float, ci: Sequence[float] | None, counts: dict[str, int] | None = None,
            units: int | None = None, unit: str = "patients") -> str | None:
    """Why a metric's interval is degenerate, in words (None when it is not).

    ``counts``: tp/fp/tn/fn, for the exact binomial interval of a proportion;
    ``units``: how many independent units (patients) that proportion rests on.
    """
    if not is_degenerate(value, ci):
        return None
    text = "CI degenerate: every bootstrap resample gave the same value, so it shows no uncertainty"
    exact = exact_for(key, counts, units)
    if exact is not None:
        lo, hi, k, n, m = exact
        what, verb = _WHAT[key]
        kind = unit if m != n else "cases"
        text = (f"CI degenerate: {'all' if k == n else 'none'} of {n} {what} {verb}"
                f"{f' ({_plural(m, kind)})' if m != n else ''}; exact 95 % interval from {_plural(m, kind)}: "
                f"{lo:.2f}-{hi:.2f}")
    elif key in ("ppv", "npv") and counts is None:
        text = ("CI degenerate: it follows from a sensitivity or specificity that was the same in every "
                "resample (see there)")
    elif key == "auc" and value in (0.0, 1.0):
        text = ("CI degenerate: the classes are perfectly separated in this sample, so the bootstrap shows no "
                "uncertainty; with few cases the true AUC may be much lower")
    return text


def format_value_ci(m: dict[str, Any], key: str, nd: int = 3, *, brief: bool = False) -> str:
    """``"0.850 (0.790-0.900)"``, or the value with the degenerate-interval note instead of a zero-width CI.

    ``brief``: the note shortened to "(CI degenerate; exact 95 % 0.29-1.00)" (terminal, wizard).
    """
    v = m.get(key)
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    note = (m.get("ci_notes") or {}).get(key)
    if note and brief:
        exact = (m.get("ci_exact") or {}).get(key)
        return f"{v:.{nd}f} (CI degenerate" + (f"; exact 95 % {exact[0]:.2f}-{exact[1]:.2f})" if exact else ")")
    if note:
        return f"{v:.{nd}f} [{note}]"
    lo, hi = m.get(f"{key}_ci95", [float("nan")] * 2)
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{v:.{nd}f} (CI n/a)"
    return f"{v:.{nd}f} ({lo:.{nd}f}-{hi:.{nd}f})"


# --------------------------------------------------------------------------- metric texts (wizard and report)

METRIC_KEYS = ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1", "ppv", "npv")
_LABELS = {"auc": "ROC AUC", "f1": "F1", "ppv": "PPV", "npv": "NPV"}


def metric_label(key: str) -> str:
    """How a metric is named where it is shown ("ROC AUC", "F1", "PPV", else the key)."""
    return _LABELS.get(key, key)


@dataclass(frozen=True)
class MetricText:
    """One metric of a split in words: its value, its 95 % interval, or why the interval is degenerate."""

    key: str
    label: str
    value: str  # "0.850" or "n/a"
    interval: str  # "(0.790-0.900)", "(CI n/a)", or "" (no value, or a degenerate interval: see ``note``)
    note: str | None  # the degenerate-interval note (:func:`ci_note`), in full
    brief: str  # value and interval (or the note, shortened) on one line: :func:`format_value_ci` brief


def metric_texts(m: dict[str, Any], keys: Sequence[str] = METRIC_KEYS, nd: int = 3) -> list[MetricText]:
    """The texts of the metrics in ``keys`` that ``m`` (a :func:`binary_report`) holds, in that order."""
    out = []
    for key in keys:
        if key not in m:
            continue
        full = format_value_ci(m, key, nd)
        note = (m.get("ci_notes") or {}).get(key) if full != "n/a" else None
        value, _, interval = full.partition(" ")
        out.append(MetricText(key, metric_label(key), value, "" if note else interval, note,
                              format_value_ci(m, key, nd, brief=True)))
    return out


def prevalence_text(m: dict[str, Any]) -> str:
    """Where PPV and NPV were computed: "at the stated prevalence 0.05" or "at this split's own
    prevalence 0.3 (none stated)" (PPV and NPV depend on it, so the figure is always given)."""
    prev = m.get("prevalence", float("nan"))
    if m.get("prevalence_source") == "stated":
        return f"at the stated prevalence {prev:.3g}"
    return f"at this split's own prevalence {prev:.3g} (none stated)"


def splits_prevalence_text(splits: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """:func:`prevalence_text` for a table whose columns are the ``(name, metrics)`` splits: the one text
    they share, else each split's: "at each split's own prevalence (validation 0.3, test 0.25; none stated)",
    or "per split (validation at its own prevalence 0.3; test at the stated prevalence 0.05)"."""
    if len({prevalence_text(m) for _, m in splits}) == 1:
        return prevalence_text(splits[0][1])
    if not any(m.get("prevalence_source") == "stated" for _, m in splits):
        each = ", ".join(f"{name} {m.get('prevalence', float('nan')):.3g}" for name, m in splits)
        return f"at each split's own prevalence ({each}; none stated)"
    each = "; ".join(f"{name} at " + ("the stated" if m.get("prevalence_source") == "stated" else "its own")
                     + f" prevalence {m.get('prevalence', float('nan')):.3g}" for name, m in splits)
    return f"per split ({each})"


def interval_text(m: dict[str, Any]) -> str:
    """What the intervals are: "95 % percentile bootstrap intervals resampling patients" (or images)."""
    return f"95 % percentile bootstrap intervals resampling {m.get('ci_unit', 'images')}"


def counts_text(m: dict[str, Any], positive: str) -> str:
    """"40 images, 20 patients, 12 opacity": what a split's metrics rest on."""
    pats = f", {m['n_patients']} patients" if "n_patients" in m else ""
    return f"{m['n']} images{pats}, {m['n_positive']} {positive}"


def confusion_labels(classes: Sequence[str], positive: str) -> list[str]:
    """Names of the 2 x 2 confusion matrix's rows and columns (negative, positive): the other class when
    there are two classes, else "not <positive>"."""
    others = [c for c in classes if c != positive]
    return [others[0] if len(others) == 1 else f"not {positive}", str(positive)]


# --------------------------------------------------------------------------- predictive values, calibration


def predictive_values(sensitivity: float, specificity: float, prevalence: float) -> tuple[float, float]:
    """(PPV, NPV) of a test with this sensitivity and specificity where the finding has this prevalence (Bayes)."""
    p, se, sp = float(prevalence), float(sensitivity), float(specificity)
    ppv = _safe_div(se * p, se * p + (1.0 - sp) * (1.0 - p))
    npv = _safe_div(sp * (1.0 - p), sp * (1.0 - p) + (1.0 - se) * p)
    return ppv, npv


def calibration(y: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, n_bins: int = 10
                ) -> dict[str, Any]:
    """Reliability diagram data: equal-width bins of the predicted probability, observed rate per bin, ECE.

    ECE (expected calibration error) = sum over bins of (share of cases) x |observed rate - mean predicted|.
    """
    y = _as_binary(y).astype(np.float64)
    s = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.minimum(np.digitize(s, edges[1:-1], right=False), n_bins - 1)
    bins = []
    for b in range(n_bins):
        sel = which == b
        n = int(sel.sum())
        bins.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "n": n,
                     "mean_predicted": float(s[sel].mean()) if n else None,  # None: empty bin (JSON-safe)
                     "observed": float(y[sel].mean()) if n else None})
    return {"bins": bins, "ece": expected_calibration_error(y, s, n_bins), "n_bins": n_bins}


def expected_calibration_error(y: np.ndarray, scores: np.ndarray, n_bins: int = 10) -> float:
    """ECE of the positive-class probability in ``n_bins`` equal-width bins (NaN without cases)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    s = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
    if not s.size:
        return float("nan")
    which = np.minimum(np.digitize(s, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]), n_bins - 1)
    n = np.bincount(which, minlength=n_bins)
    gap = np.abs(np.bincount(which, y, n_bins) - np.bincount(which, s, n_bins))  # per bin: |sum y - sum p|
    return float(gap.sum() / s.size) if n.sum() else float("nan")


def fisher_exact_p(a: int, b: int, c: int, d: int) -> float:
    """Two-sided Fisher exact test of the 2x2 table [[a, b], [c, d]] (sum of tables no likelier than this one)."""
    r1, r2, c1, n = a + b, c + d, a + c, a + b + c + d
    if n == 0:
        return float("nan")

    def prob(x: int) -> float:
        return math.comb(r1, x) * math.comb(r2, c1 - x) / math.comb(n, c1)

    lo, hi = max(0, c1 - r2), min(r1, c1)
    p0 = prob(a)
    return float(min(1.0, sum(q for q in (prob(x) for x in range(lo, hi + 1)) if q <= p0 * (1 + 1e-9))))


def caution_summary(distances: Sequence[float] | np.ndarray, limit: float,
                    y: Sequence[int] | np.ndarray | None = None) -> dict[str, Any]:
    """Share of cases whose scope distance is above ``limit``, overall and for positives vs negatives.

    ``p_positive_vs_negative``: two-sided Fisher exact test of "the caution rate is the
    same for positives and negatives" (a check that the caution does not single out findings).
    """
    d = np.asarray(distances, dtype=np.float64).ravel()
    above = d > float(limit)
    out: dict[str, Any] = {"limit": float(limit), "n": int(d.size), "above": int(above.sum()),
                           "rate": _safe_div(int(above.sum()), d.size)}
    if y is not None:
        yy = _as_binary(y)
        for name, sel in (("positives", yy == 1), ("negatives", yy == 0)):
            out[name] = {"n": int(sel.sum()), "above": int(above[sel].sum()),
                         "rate": _safe_div(int(above[sel].sum()), int(sel.sum()))}
        a, c = out["positives"]["above"], out["negatives"]["above"]
        out["p_positive_vs_negative"] = fisher_exact_p(a, out["positives"]["n"] - a, c, out["negatives"]["n"] - c)
    return out


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
                  *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, groups: Sequence[Any] | None = None,
                  prevalence: float | None = None) -> dict[str, Any]:
    """Everything a card and report show for a binary task, with 95 % bootstrap CIs.

    ``groups`` (the patient of each image): CIs resample patients. ``prevalence``:
    PPV and NPV are given where the finding has this prevalence; None: at this
    sample's own prevalence (``prevalence_source`` says which).
    """
    y = _as_binary(y)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if groups is not None and len(groups) != y.size:
        raise ValueError("groups must give one patient per image")
    at = binary_metrics_at(y, s, threshold)
    out: dict[str, Any] = {"n": int(y.size), "n_positive": int(y.sum()), "threshold": float(threshold)}
    g = np.asarray(groups) if groups is not None else None
    if g is not None:
        out["n_patients"] = int(len(np.unique(g)))
        out["n_positive_patients"] = int(len(np.unique(g[y == 1])))
        out["n_negative_patients"] = int(len(np.unique(g[y == 0])))
    out["ci_unit"] = "patients" if g is not None else "images"
    boot = {"n_boot": n_boot, "seed": seed, "groups": g}
    out["auc"] = roc_auc(y, s)
    out["auc_ci95"] = list(bootstrap_ci(y, s, roc_auc, **boot))
    for key in ("accuracy", "sensitivity", "specificity", "precision", "f1"):
        out[key] = at[key]
        out[f"{key}_ci95"] = list(bootstrap_ci(
            y, s, lambda yy, ss, k=key: binary_metrics_at(yy, ss, threshold)[k], **boot))
    if prevalence is not None and not 0.0 < float(prevalence) < 1.0:
        raise ValueError("the prevalence must be between 0 and 1 (exclusive)")
    prev = float(prevalence) if prevalence is not None else _safe_div(int(y.sum()), y.size)
    out["prevalence"] = prev
    out["prevalence_source"] = "stated" if prevalence is not None else "test set"
    if prevalence is None:
        out["ppv"], out["npv"] = at["precision"], _safe_div(at["tn"], at["tn"] + at["fn"])
    else:
        out["ppv"], out["npv"] = predictive_values(at["sensitivity"], at["specificity"], prev)

    def pv(yy: np.ndarray, ss: np.ndarray, which: int) -> float:
        m = binary_metrics_at(yy, ss, threshold)
        if prevalence is None:  # at the sample's own prevalence: the observed shares
            return m["precision"] if which == 0 else _safe_div(m["tn"], m["tn"] + m["fn"])
        return predictive_values(m["sensitivity"], m["specificity"], prev)[which]

    out["ppv_ci95"] = list(bootstrap_ci(y, s, lambda yy, ss: pv(yy, ss, 0), **boot))
    out["npv_ci95"] = list(bootstrap_ci(y, s, lambda yy, ss: pv(yy, ss, 1), **boot))
    out["confusion_matrix"] = [[at["tn"], at["fp"]], [at["fn"], at["tp"]]]
    out["ci_notes"] = _ci_notes(out, at, y, s >= threshold, g)
    fpr, tpr, thr = roc_curve(y, s)
    out["roc"] = {"fpr": _finite_list(fpr), "tpr": _finite_list(tpr), "thresholds": _finite_list(thr)}
    return out


def _ci_notes(out: dict[str, Any], at: dict[str, Any], y: np.ndarray, pred: np.ndarray,
              g: np.ndarray | None) -> dict[str, str]:
    """Degenerate-interval notes, only for the metrics whose interval is degenerate (exact intervals in
    ``out["ci_exact"]``).

    The exact interval of an all-or-none proportion rests on the patients behind it
    (positives for sensitivity, positive calls for precision, ...) when they are known.
    """
    behind = {"sensitivity": y == 1, "specificity": y == 0, "accuracy": np.ones(y.size, bool),
              "precision": pred, "ppv": pred, "npv": ~pred}
    own_prevalence = out.get("prevalence_source") == "test set"
    notes: dict[str, str] = {}
    exact: dict[str, list[float]] = {}
    for key in ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1", "ppv", "npv"):
        units = int(len(np.unique(g[behind[key]]))) if g is not None and key in behind else None
        counts = at if key not in ("ppv", "npv") or own_prevalence else None
        note = ci_note(key, out.get(key, float("nan")), out.get(f"{key}_ci95"), counts, units)
        if note:
            notes[key] = note
            e = exact_for(key, counts, units)
            if e is not None:
                exact[key] = [e[0], e[1]]
    out["ci_exact"] = exact
    return notes


def _finite_list(a: np.ndarray) -> list[float]:
    return [float(v) if np.isfinite(v) else (1.0 if v > 0 else 0.0) for v in a]


def multiclass_report(labels: Sequence[int] | np.ndarray, probs: np.ndarray, classes: Sequence[str], *,
                      n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, groups: Sequence[Any] | None = None
                      ) -> dict[str, Any]:
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
    g = np.asarray(groups) if groups is not None else None
    out["ci_unit"] = "patients" if g is not None else "images"
    out["auc_ci95"] = list(bootstrap_ci(t, p, lambda yy, pp: macro_auc(yy, pp), n_boot=n_boot, seed=seed, groups=g))
    out["accuracy_ci95"] = list(bootstrap_ci(
        t, p, lambda yy, pp: float(np.mean(pp.argmax(1) == yy)), n_boot=n_boot, seed=seed, groups=g))
    out["ci_notes"] = {k: n for k in ("auc", "accuracy")
                       if (n := ci_note(k, out[k], out[f"{k}_ci95"])) is not None}
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
