"""What a finished run writes about itself: the evaluation of the best epoch and the model card.

Both are pure functions of the run's settings, data plan and predictions, kept out of the
engine's run class so that the card's contents (provenance, data, settings, metrics, warnings)
can be read and changed in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cxr_desktop.model.card import ModelCard, default_preprocessing, software_versions, utc_now_iso
from cxr_desktop.model.lineage import UNTRAINED_PREFIX
from cxr_desktop.training.config import TrainConfig, resolve_finetune
from cxr_desktop.training.data_plan import DataPlan
from cxr_desktop.training.events import EpochDone
from cxr_desktop.training.metrics import binary_report, multiclass_report, select_threshold
from cxr_desktop.training.results import Evaluation, SplitPredictions, inherit_lineage
from cxr_desktop.training.split import patient_check


def evaluate_best_epoch(cfg: TrainConfig, plan: DataPlan, val: SplitPredictions,
                        test: SplitPredictions | None) -> Evaluation:
    """Threshold chosen on validation, then metrics with patient-bootstrap CIs on validation and test."""
    pos = plan.pos
    yv = (val.labels == pos).astype(np.int64)
    choice = select_threshold(yv, val.probs[:, pos], method=cfg.threshold_method, target=cfg.target_sensitivity)
    val_metrics = binary_report(yv, val.probs[:, pos], choice.threshold, n_boot=cfg.bootstrap, seed=cfg.seed,
                                groups=val.groups, prevalence=cfg.prevalence)
    test_metrics = None
    if test is not None and len(test.labels):
        yt = (test.labels == pos).astype(np.int64)
        test_metrics = binary_report(yt, test.probs[:, pos], choice.threshold, n_boot=cfg.bootstrap,
                                     seed=cfg.seed, groups=test.groups, prevalence=cfg.prevalence)
    if len(plan.classes) > 2:
        val_metrics["multiclass"] = multiclass_report(val.labels, val.probs, plan.classes, n_boot=cfg.bootstrap,
                                                      seed=cfg.seed, groups=val.groups)
        if test_metrics is not None and test is not None:
            test_metrics["multiclass"] = multiclass_report(test.labels, test.probs, plan.classes,
                                                           n_boot=cfg.bootstrap, seed=cfg.seed, groups=test.groups)
    return Evaluation(plan.classes, pos, choice, val, test, val_metrics, test_metrics)


@dataclass
class RunFacts:
    """What the card records of how the run went (beyond its settings and data)."""

    started: str  # UTC ISO time the run first started
    device: str  # label of the device it trained on
    cuda: bool
    history: Sequence[EpochDone]
    best: dict[str, Any] | None  # RunState.best: the epoch whose weights are saved
    initial_card: dict[str, Any]  # warnings and provenance of the starting model
    stopped_by_user: bool


def trained_card(cfg: TrainConfig, plan: DataPlan, ev: Evaluation, ood_info: dict[str, Any],
                 run: RunFacts) -> ModelCard:
    """The trained model's card: classes, input, preprocessing, threshold, provenance, metrics, warnings, lineage."""
    from cxr_desktop.model.modelfile import resolve_head

    warnings = [w for w in run.initial_card["warnings"] if not w.startswith(UNTRAINED_PREFIX)]
    if run.stopped_by_user:
        warnings.append("Training was stopped early by the user; this is the best epoch reached by then.")
    if ev.test_metrics is None:
        warnings.append("No test split: the metrics are from the validation split that chose the threshold "
                        "and the best epoch, so they are optimistic.")
    warnings += list(cfg.extra_warnings)
    settings = {k: v for k, v in cfg.to_dict().items()
                if k not in ("data_dir", "test_dir", "out", "work_dir", "report", "extra_warnings", "resume",
                             "name", "version", "demonstration", "intended_use")}
    settings["finetune_resolved"] = resolve_finetune(cfg.finetune, cuda=run.cuda)
    history = [{"stage": h.stage, "epoch": h.epoch, "train_loss": round(h.train_loss, 5),
                "val_loss": round(h.val_loss, 5), "val_auc": None if math.isnan(h.val_auc) else round(h.val_auc, 5),
                "seconds": round(h.seconds, 1)} for h in run.history]
    card = ModelCard(
        name=cfg.name or "CXR Review model",
        classes=list(plan.classes),
        positive_class=plan.classes[plan.pos],
        version=cfg.version,
        head=resolve_head(cfg.head),
        output_stride=int(cfg.output_stride),
        input_size=int(cfg.input_size),
        preprocessing=default_preprocessing(int(cfg.input_size)),
        decision_threshold=float(ev.threshold.threshold),
        provenance={
            "source": "trained",
            "trained_with": "cxr-train",
            "created": utc_now_iso(),
            "training_started": run.started,
            "software": software_versions(),
            "initial_weights": run.initial_card["provenance"].get("initial_weights"),
            "device": run.device,
            "seed": cfg.seed,
            "settings": settings,
            "data": _data_facts(cfg, plan),
            "best_epoch": dict(run.best or {}),
            "history": history,
            "stopped_early_by_user": run.stopped_by_user,
        },
        metrics={
            "threshold_selection": {
                "split": "validation", "method": ev.threshold.method, "target": ev.threshold.target,
                "threshold": ev.threshold.threshold, "sensitivity": ev.threshold.sensitivity,
                "specificity": ev.threshold.specificity, "note": ev.threshold.note,
            },
            "validation": _without_roc(ev.val_metrics),
            "test": _without_roc(ev.test_metrics),
            "ci": "95 % percentile bootstrap over patients",
        },
        warnings=warnings,
        demonstration=bool(cfg.demonstration),
        extra={"ood": ood_info},
    )
    if cfg.intended_use:
        card.intended_use = cfg.intended_use
    return inherit_lineage(card, run.initial_card)  # parent, ancestors, demonstration flag of the start model


def _data_facts(cfg: TrainConfig, plan: DataPlan) -> dict[str, Any]:
    """The card's account of the data: folder names only (no file names), split sizes, patient checks."""
    train_scan, test_scan = plan.train_scan, plan.test_scan
    return {
        "folder": Path(cfg.data_dir).name,
        "test_folder": Path(cfg.test_dir).name if cfg.test_dir else None,
        "classes": plan.classes,
        "splits": plan.counts,
        "patient_groups": {k: v["groups"] for k, v in plan.counts.items()},
        "patient_check": patient_check(plan.split, plan.items, train_scan, test_scan),
        "grouped_by": train_scan.group_sources(),
        "patient_pattern": cfg.patient_regex,
        "skipped_files": len(train_scan.problems) + (len(test_scan.problems) if test_scan else 0)
        + len(plan.cache.problems),
        "duplicate_sets": len(train_scan.duplicates) + (len(test_scan.duplicates) if test_scan else 0),
        "split_seed": cfg.seed,
        "test_source": plan.split.test_source,
    }


def _without_roc(m: dict[str, Any] | None) -> dict[str, Any] | None:
    """Metrics as the card keeps them: the ROC curve's points stay in the report, not the card."""
    return None if m is None else {k: v for k, v in m.items() if k != "roc"}
