"""Quality gates: when a freshly trained model may become the viewer's model.

A model evaluated on a handful of test images can show any AUC by chance, and a
model whose test AUC could plausibly be near 0.5 tells a reader little. The
training wizard therefore does not offer "Use this model in the viewer now" by
default, and refuses it (with the reasons, and an explicit override) unless the
test set has at least :data:`MIN_POSITIVES` positives and :data:`MIN_NEGATIVES`
negatives and the lower bound of the test ROC AUC's 95 % CI is at least
:data:`MIN_AUC_LOWER`. ``cxr-train`` prints the same verdict. Qt-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

MIN_POSITIVES = 20
MIN_NEGATIVES = 20
MIN_AUC_LOWER = 0.70
DEFAULT_TEST_FRACTION = 0.15


@dataclass(frozen=True)
class GateResult:
    """The verdict: ``passed`` and, when not, one sentence per unmet condition."""

    passed: bool
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph for the wizard and the terminal."""
        if self.passed:
            return (f"Quality gate met: the test set has at least {MIN_POSITIVES} positives and {MIN_NEGATIVES} "
                    f"negatives, and the test ROC AUC's 95 % CI lower bound is at least {MIN_AUC_LOWER:.2f}.")
        return ("Quality gate NOT met, so this model is not made the viewer's model by default: "
                + " ".join(self.reasons))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def viewer_gate(test_metrics: Mapping[str, Any] | None, positive_class: str | None = None) -> GateResult:
    """Whether a model with these test metrics (``binary_report``'s dict) may be used in the viewer."""
    pos = f"'{positive_class}'" if positive_class else "positive"
    if not test_metrics:
        return GateResult(False, [
            "There is no test set: the only metrics come from the validation split that chose the best epoch and "
            "the threshold, so they are optimistic. Train with a test share or a separate test folder."])
    reasons = []
    n = int(_number(test_metrics.get("n")) or 0)
    n_pos = int(_number(test_metrics.get("n_positive")) or 0)
    n_neg = n - n_pos
    if n_pos < MIN_POSITIVES:
        reasons.append(f"The test set has {n_pos} {pos} image(s); at least {MIN_POSITIVES} are needed for an "
                       "estimate a reader can rely on.")
    if n_neg < MIN_NEGATIVES:
        reasons.append(f"The test set has {n_neg} negative image(s); at least {MIN_NEGATIVES} are needed.")
    ci = test_metrics.get("auc_ci95")
    lo = _number(ci[0]) if isinstance(ci, (list, tuple)) and ci else float("nan")
    if not math.isfinite(lo):
        reasons.append("The test ROC AUC's confidence interval could not be computed (the test set lacks a "
                       "class or is too small).")
    elif lo < MIN_AUC_LOWER:
        reasons.append(f"The test ROC AUC's 95 % CI lower bound is {lo:.3f}, below {MIN_AUC_LOWER:.2f}: the "
                       "model may discriminate little better than chance.")
    return GateResult(not reasons, reasons)


def small_class_warnings(counts: Mapping[str, int], *, test_counts: Mapping[str, int] | None = None,
                         test_fraction: float = DEFAULT_TEST_FRACTION) -> list[str]:
    """Scan/split-page warnings: classes too small for the test set the gate asks for.

    ``counts``: images per class of the training folder; ``test_counts``: of a
    separate test folder (then used as is), else the test set is estimated as
    ``test_fraction`` of each class.
    """
    need = max(MIN_POSITIVES, MIN_NEGATIVES)
    out = []
    for cls, n in counts.items():
        if test_counts is not None:
            expected = int(test_counts.get(cls, 0))
            where = "the test folder holds"
        else:
            expected = int(round(int(n) * float(test_fraction)))
            where = f"a {test_fraction:.0%} test share holds about"
        if expected < need:
            out.append(f"Class '{cls}' is small: {where} {expected} of its images, fewer than the {need} a test "
                       "set needs per class for a reliable estimate; the model will not be offered for the viewer "
                       "without an explicit override. Add images" + ("" if test_counts is not None else
                                                                     " or use a separate test folder") + ".")
    return out
