"""What a training run produces: predictions per split, the evaluation, the result.

:func:`save_with_threshold` writes the trained model again with a decision
threshold the user picked on the validation split's trade-off (the wizard's slider).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr_desktop.model.card import ModelCard
from cxr_desktop.training.config import TrainingError
from cxr_desktop.training.metrics import (
    MetricText, ThresholdChoice, binary_metrics_at, binary_report, confusion_labels, counts_text, interval_text,
    metric_texts, prevalence_text, splits_prevalence_text,
)


@dataclass
class SplitPredictions:
    """Scores of one split: labels (N,), probabilities (N, C), and the files (relative paths)."""

    split: str
    labels: np.ndarray
    probs: np.ndarray
    rels: list[str]
    paths: list[str]
    groups: list[str] = field(default_factory=list)  # hashed patient of each image (patient-level bootstrap)
    kinds: list[str] = field(default_factory=list)  # input type of each image (PNG, DICOM MONOCHROME1 ...)


@dataclass
class Evaluation:
    """What the evaluation page and the report show."""

    classes: list[str]
    positive_index: int
    threshold: ThresholdChoice
    val: SplitPredictions
    test: SplitPredictions | None
    val_metrics: dict[str, Any]
    test_metrics: dict[str, Any] | None

    def positive_scores(self, split: str = "val") -> tuple[np.ndarray, np.ndarray]:
        """(binary labels, positive-class scores) of a split."""
        p = self.val if split == "val" else self.test
        if p is None:
            return np.zeros(0, np.int64), np.zeros(0)
        return (p.labels == self.positive_index).astype(np.int64), p.probs[:, self.positive_index]

    def at_threshold(self, threshold: float, split: str = "val") -> dict[str, float]:
        """Sensitivity, specificity ... of the positive class at ``threshold`` on a split."""
        y, s = self.positive_scores(split)
        return binary_metrics_at(y, s, threshold)

    def threshold_text(self, threshold: float, chosen: float) -> str:
        """Sensitivity and specificity at ``threshold`` on validation (and test), and the one chosen if other."""
        v = self.at_threshold(threshold, "val")
        text = (f"Threshold {threshold:.3f} - validation: sensitivity {v['sensitivity']:.3f}, specificity "
                f"{v['specificity']:.3f}")
        if self.test is not None:
            t = self.at_threshold(threshold, "test")
            text += f"; test: sensitivity {t['sensitivity']:.3f}, specificity {t['specificity']:.3f}"
        if abs(threshold - chosen) > 5e-4:
            text += f"  (chosen on validation: {chosen:.3f})"
        return text

    # -- what the wizard's evaluation page and the HTML report both show (one wording) -----------
    @property
    def positive_class(self) -> str:
        return self.classes[self.positive_index]

    def split_metrics(self) -> list[tuple[str, dict[str, Any]]]:
        """("validation", metrics) and, when there is a test split, ("test", metrics)."""
        return [(name, m) for name, m in (("validation", self.val_metrics), ("test", self.test_metrics))
                if m is not None]

    @property
    def final_metrics(self) -> dict[str, Any]:
        """The honest estimate: the test split's metrics, else validation's."""
        return self.test_metrics or self.val_metrics

    def metric_texts(self, m: dict[str, Any]) -> list[MetricText]:
        """ROC AUC, accuracy, sensitivity ... PPV, NPV of one split's metrics, with their intervals."""
        return metric_texts(m)

    def counts_text(self, m: dict[str, Any]) -> str:
        """"40 images, 20 patients, 12 opacity"."""
        return counts_text(m, self.positive_class)

    def prevalence_text(self, m: dict[str, Any] | None = None) -> str:
        """Where PPV/NPV of one split's metrics ``m`` were computed ("at the stated prevalence 0.05", or
        the split's own, with its figure); without ``m``, of every split (a table with a column each)."""
        return prevalence_text(m) if m is not None else splits_prevalence_text(self.split_metrics())

    def interval_text(self) -> str:
        """What the intervals of the honest estimate are ("95 % percentile bootstrap intervals resampling patients")."""
        return interval_text(self.final_metrics)

    def confusion_labels(self) -> list[str]:
        """Names of the 2 x 2 confusion matrix's rows/columns: (negative, positive)."""
        return confusion_labels(self.classes, self.positive_class)


@dataclass(kw_only=True)
class TrainResult:
    """What a training run gives back; keyword-only so no call site passes a row of positional Nones."""

    work_dir: str
    history: list[Any]  # EpochDone events
    cancelled: bool = False
    model_path: str | None = None
    sha256: str | None = None
    card: ModelCard | None = None
    evaluation: Evaluation | None = None
    best: dict[str, Any] | None = None
    report_path: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def inherit_lineage(card: ModelCard, initial_card: dict[str, Any]) -> ModelCard:
    """Carry the starting model's lineage over to the trained model's card.

    ``initial_card`` is what the engine keeps of the card ``init_model`` made
    (``warnings`` and ``provenance``, also across a resume): when training started
    from a CXR Review model file, the new card records that parent, the chain of
    ancestors, the demonstration flag and the inherited warnings
    (:mod:`cxr_desktop.model.lineage`).
    """
    from cxr_desktop.model.lineage import apply, from_provenance

    inherited = from_provenance(initial_card.get("provenance") or {}, initial_card.get("warnings") or [])
    return card if inherited is None else apply(card, inherited)


def save_with_threshold(result: TrainResult, path: str | Path, threshold: float) -> str:
    """Write the trained model to ``path`` with a different decision threshold (wizard's slider).

    The card's validation and test metrics are recomputed at that threshold, with the run's
    bootstrap, seed and stated prevalence (as the engine computed them); returns the new sha256.
    """
    from cxr_desktop.model.modelfile import load_model, save_model
    from cxr_desktop.training.validation import at_new_threshold

    if result.model_path is None or result.evaluation is None or result.card is None:
        raise TrainingError("There is no trained model to save.")
    loaded = load_model(result.model_path)
    card = loaded.card
    ev = result.evaluation
    card.decision_threshold = float(threshold)
    sel = dict(card.metrics.get("threshold_selection", {}))
    yv, sv = ev.positive_scores("val")
    if abs(float(threshold) - float(sel.get("threshold", -1.0))) > 1e-9:
        at_val = binary_metrics_at(yv, sv, threshold)
        sel.update(method="user", target=None, threshold=float(threshold), sensitivity=at_val["sensitivity"],
                   specificity=at_val["specificity"],
                   note="chosen by the user on the validation split's sensitivity/specificity trade-off")
    card.metrics["threshold_selection"] = sel
    settings = card.provenance.get("settings") or {}
    boot = dict(n_boot=int(settings.get("bootstrap", 1000)), seed=int(settings.get("seed", 0)))

    def at_threshold(split: str, preds: SplitPredictions, before: dict[str, Any]) -> dict[str, Any]:
        y, s = ev.positive_scores(split)
        m = binary_report(y, s, threshold, groups=preds.groups or None, prevalence=settings.get("prevalence"),
                          **boot)
        m.pop("roc", None)
        return m | ({"multiclass": before["multiclass"]} if "multiclass" in before else {})

    card.metrics["validation"] = at_threshold("val", ev.val, ev.val_metrics)
    if ev.test is not None and ev.test_metrics is not None:
        yt, st = ev.positive_scores("test")
        card.metrics["test"] = at_threshold("test", ev.test, ev.test_metrics) | at_new_threshold(
            ev.test_metrics, yt, st, threshold, kinds=ev.test.kinds, groups=ev.test.groups or None,
            n_boot=boot["n_boot"])
    half = bool(settings.get("half", False))
    return save_model(path, loaded.model, card, half=half, extra_tensors=loaded.extra_tensors)


def evaluation_of_card(ev: Evaluation, card: ModelCard) -> Evaluation:
    """``ev`` as a saved card states it: at the card's threshold when the user chose another one.

    The threshold choice and the validation/test metrics then come from the card (recomputed by
    :func:`save_with_threshold`), so a report never shows one threshold's figures beside another's.
    """
    if abs(float(card.decision_threshold) - float(ev.threshold.threshold)) <= 1e-9:
        return ev
    sel = card.metrics.get("threshold_selection") or {}
    nan = float("nan")
    choice = ThresholdChoice(float(card.decision_threshold), str(sel.get("method") or "user"), sel.get("target"),
                             float(sel.get("sensitivity", nan)), float(sel.get("specificity", nan)),
                             str(sel.get("note") or ""))
    test = card.metrics.get("test") if ev.test_metrics is not None else None
    return dataclasses.replace(ev, threshold=choice, val_metrics=card.metrics.get("validation") or ev.val_metrics,
                               test_metrics=test or ev.test_metrics)


def save_model_and_report(result: TrainResult, path: str | Path, threshold: float, report: str | Path | None) -> str:
    """The model with the chosen threshold at ``path``, then its report (from the saved file's card).

    What the wizard's Save button runs (in a worker); returns ``path``.
    """
    from cxr_desktop.model.modelfile import read_card
    from cxr_desktop.training.report import write_report

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sha = save_with_threshold(result, path, threshold)
    if report:
        card = read_card(path)
        final = dataclasses.replace(result, model_path=str(path), sha256=sha, card=card,
                                    evaluation=evaluation_of_card(result.evaluation, card))
        write_report(report, final)
    return str(path)


def default_model_path(data_dir: str | Path, models_dir: Path, now: Any = None) -> Path:
    """Where a trained model is offered to be saved: ``models_dir/<data folder>-YYYYmmdd-HHMM.safetensors``."""
    import datetime

    stem = Path(str(data_dir)).name or "model"
    return models_dir / f"{stem}-{(now or datetime.datetime.now()):%Y%m%d-%H%M}.safetensors"


def report_path_for(model_path: str) -> str | None:
    """The report beside a model file (``x.safetensors`` -> ``x-report.html``); None for another name."""
    suffix = ".safetensors"
    return model_path[: -len(suffix)] + "-report.html" if model_path.endswith(suffix) else None
