"""Typed progress events yielded by :func:`cxr_desktop.training.engine.train`.

The command line prints them, the wizard turns them into Qt signals; neither
needs to know how training works. Events carry counts and hashed ids only,
never patient data. :mod:`cxr_desktop.training.event_json` turns each into one JSON
line and back (a training job's rank-0 process to :mod:`cxr_desktop.training.launch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cxr_desktop.training.scan import ScanProblem, ScanProgress, ScanResult


@dataclass
class ScanDone:
    """The data folder (and the optional test folder) were scanned."""

    train: ScanResult
    test: ScanResult | None = None


@dataclass
class SplitDone:
    """Images per class and patient groups in each split: ``{"train": {"normal": 40, ..., "groups": 12}, ...}``."""

    counts: dict[str, dict[str, int]]
    seed: int
    test_source: str  # "split" | "folder"
    warnings: list[str] = field(default_factory=list)


@dataclass
class PrepareProgress:
    """Images decoded and resized once into the run's image cache."""

    done: int
    total: int


@dataclass
class PrepareDone:
    total: int
    skipped: list[ScanProblem]
    seconds: float
    reused: bool  # the cache from an earlier (interrupted) run was reused


@dataclass
class ModelReady:
    """The model to train exists: new (initial weights described) or restored from a checkpoint."""

    device: str
    initial_weights: dict[str, Any]
    warnings: list[str]
    trainable_parameters: int


@dataclass
class Resumed:
    """Training continues after the last completed epoch of an earlier run."""

    stage: int
    epoch: int  # last completed epoch of that stage
    best_score: float | None


@dataclass
class StageStarted:
    stage: int  # 1: head only, backbone frozen; 2: fine-tuning
    epochs: int
    lr: float
    trainable: str  # "head" | "all" | "layer3+" | "layer4+"
    cached_features: bool


@dataclass
class FeatureProgress:
    """Stage 1: backbone features being computed once (not every epoch)."""

    split: str
    done: int
    total: int


@dataclass
class EpochStarted:
    stage: int
    epoch: int  # 1-based within the stage
    epochs: int
    lr: float


@dataclass
class BatchProgress:
    stage: int
    epoch: int
    phase: str  # "train" | "val"
    batch: int  # 1-based
    batches: int
    loss: float | None
    images_per_second: float


@dataclass
class EpochDone:
    stage: int
    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    seconds: float
    lr: float = 0.0
    val_accuracy: float = float("nan")
    is_best: bool = False


@dataclass
class CheckpointSaved:
    path: str
    stage: int
    epoch: int


@dataclass
class EarlyStopped:
    stage: int
    epoch: int
    reason: str


@dataclass
class EvaluationStarted:
    split: str
    images: int


@dataclass
class EvaluationDone:
    """Validation picks the threshold; test reports it. ``evaluation`` is :class:`~cxr_desktop.training.engine.Evaluation`."""

    evaluation: Any


@dataclass
class ModelSaved:
    path: str
    sha256: str
    size_bytes: int


@dataclass
class ReportSaved:
    """The HTML report was written (``error`` set: it failed; the model file is saved regardless)."""

    path: str
    error: str | None = None


@dataclass
class Cancelled:
    """The user stopped the run. ``kept_best``: the best epoch so far will still be evaluated and saved."""

    stage: int
    epoch: int
    kept_best: bool
    message: str


@dataclass
class Finished:
    """The run ended; ``result`` is :class:`~cxr_desktop.training.engine.TrainResult`."""

    result: Any


TrainEvent = (ScanProgress | ScanDone | SplitDone | PrepareProgress | PrepareDone | ModelReady | Resumed
              | StageStarted | FeatureProgress | EpochStarted | BatchProgress | EpochDone | CheckpointSaved
              | EarlyStopped | EvaluationStarted | EvaluationDone | ModelSaved | ReportSaved | Cancelled | Finished)
