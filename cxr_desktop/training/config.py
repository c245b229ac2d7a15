"""Training settings: one dataclass shared by ``cxr-train`` and the wizard."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxr_desktop.errors import CxrError

OPTIMIZERS = ("adam", "sgd")
SCHEDULERS = ("cosine", "plateau", "none")
MONITORS = ("auc", "loss")
BALANCING = ("weights", "sampler", "none")
FINETUNE_SCOPES = ("auto", "all", "layer3", "layer4")


def resolve_finetune(scope: str, *, cuda: bool) -> str:
    """The blocks stage 2 trains: ``auto`` is "layer4" on a CPU and "all" on CUDA.

    On a CPU a full fine-tune costs about 3x the forward pass per image, fine-tuning
    only the last block about 1.4x; for the few hundred to few thousand images a
    hospital folder holds, training the last block is also the usual transfer-learning
    choice (less over-fitting). On a GPU the whole network is cheap enough to train.
    """
    if scope != "auto":
        return scope
    return "all" if cuda else "layer4"
THRESHOLD_METHODS = ("sensitivity", "youden", "fixed")
AUGMENT_PRESETS = ("none", "light", "standard", "robust")  # see training/data.py

# Settings that must not change when a run is resumed (they define the data, split and model).
RESUME_KEYS = ("data_dir", "test_dir", "classes", "positive_class", "patient_regex", "val_fraction",
               "test_fraction", "seed", "weights", "input_size", "head", "finetune", "optimizer",
               "output_stride")


class TrainingError(CxrError):
    """Training cannot start or continue; the message says why and what to do."""


class RunWriteError(TrainingError):
    """A file of the run (image cache, checkpoint, model file) cannot be written: disk full, read-only, permissions.

    What was saved before stays: checkpoints are written atomically, so a resume continues from the
    last completed epoch once there is room.
    """

    @classmethod
    def of(cls, what: str, folder: Path, exc: OSError) -> "RunWriteError":
        why = exc.strerror or exc.__class__.__name__
        return cls(f"Could not write {what} in the folder {Path(folder).name!r} ({why}). Free disk space there (or, "
                   "with cxr-train, give a writable --work-dir for checkpoints and caches or --out for the model), then "
                   "resume (cxr-train --resume, or the wizard's first page): the epochs already saved are kept.")


@dataclass
class TrainConfig:
    """Everything a training run needs. Defaults are sensible for ImageNet-initialised ResNet50.

    Stage 1 trains the new head with the backbone frozen (backbone features are
    computed once and cached when ``augment_frozen`` is False, the default);
    stage 2 fine-tunes ``finetune`` ("all" blocks, or "layer3"/"layer4" onwards;
    "auto": see :func:`resolve_finetune`) at ``lr_finetune``. The best epoch by the validation ``monitor`` is what is saved.
    """

    data_dir: str
    out: str
    test_dir: str | None = None
    work_dir: str | None = None  # checkpoints and caches; default "<out>.run" beside the model file
    classes: list[str] | None = None  # class order; default: the subfolders, sorted
    positive_class: str | None = None  # default: the last class
    patient_regex: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    weights: str = "imagenet"  # "imagenet" | "none" | path to a weights/model file
    weights_sha256: str | None = None  # expected sha256 of a weights file (verified before use)
    input_size: int = 224
    head: str = "linear"  # "linear" | "mlp"
    output_stride: int = 32  # 16: last stage dilated, a 14 x 14 heatmap at 224 px (model/architecture.py)
    epochs_frozen: int = 5
    epochs_finetune: int = 10
    finetune: str = "auto"  # "auto" | "all" | "layer3" | "layer4" (see resolve_finetune)
    batch_size: int = 32
    lr_head: float = 1e-3
    lr_finetune: float = 1e-4
    weight_decay: float = 1e-4
    optimizer: str = "adam"  # "adam" = AdamW (decoupled weight decay); "sgd" = SGD, momentum 0.9, Nesterov
    scheduler: str = "cosine"
    monitor: str = "auc"
    warmup: bool = True  # stage 2: learning rate ramps up linearly during its first epoch
    patience: int = 5  # epochs without improvement before a stage stops early (0: never)
    balance: str = "weights"
    augment: str = "standard"  # stage 2 augmentation preset
    augment_frozen: bool = False  # augment in stage 1 too (disables the feature cache)
    hflip: bool = False
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    amp: bool = True  # mixed precision, CUDA only
    channels_last: bool = True  # CUDA only
    workers: int | None = None  # DataLoader worker processes; None: automatic
    threads: int | None = None  # torch CPU threads for this process; None: leave torch's default
    sync_batchnorm: bool = False  # torchrun jobs: BatchNorm statistics of the global batch (training/ddp.py)
    resume: bool = False
    keep_run_files: bool = False  # a finished run keeps its checkpoints and caches (else removed once the model is saved)
    threshold_method: str = "sensitivity"
    target_sensitivity: float = 0.95
    half: bool = False  # store the model's weights as fp16
    report: str | None = None  # HTML report path
    name: str | None = None
    version: str = "1"
    demonstration: bool = False
    extra_warnings: list[str] = field(default_factory=list)
    intended_use: str | None = None
    decode_check: bool = True  # decode every image during the scan (finds truncated files early)
    bootstrap: int = 1000
    prevalence: float | None = None  # PPV/NPV at this prevalence of the finding; None: the test set's own
    ood_k: int = 64
    ood_percentile: float = 99.0
    gallery_per_kind: int = 3  # Grad-CAM examples per TP/FP/TN/FN in the report

    def resolved_work_dir(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(str(self.out) + ".run")

    def resolved_workers(self, cuda: bool = False) -> int:
        """DataLoader worker processes: on the CPU the model, not loading, is the bottleneck
        (images are decoded once into a cache), so automatic means 0 there."""
        if self.workers is not None:
            return max(0, int(self.workers))
        return min(8, max(0, (os.cpu_count() or 1) // 2)) if cuda else 0

    def validate(self) -> None:
        """Raise :class:`TrainingError` for settings that cannot work."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise TrainingError(msg)

        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        need(self.scheduler in SCHEDULERS, f"scheduler must be one of {', '.join(SCHEDULERS)}")
        need(self.monitor in MONITORS, f"monitor must be one of {', '.join(MONITORS)}")
        need(self.balance in BALANCING, f"balance must be one of {', '.join(BALANCING)}")
        need(self.finetune in FINETUNE_SCOPES, f"finetune must be one of {', '.join(FINETUNE_SCOPES)}")
        need(self.augment in AUGMENT_PRESETS, f"augment must be one of {', '.join(AUGMENT_PRESETS)}")
        need(self.threshold_method in THRESHOLD_METHODS,
             f"threshold method must be one of {', '.join(THRESHOLD_METHODS)}")
        need(self.device in ("auto", "cpu", "cuda"), "device must be auto, cpu or cuda")
        from cxr_desktop.model.card_checks import INPUT_SIZE_STEP, MAX_INPUT_SIZE, MIN_INPUT_SIZE  # the card's rule

        need(MIN_INPUT_SIZE <= int(self.input_size) <= MAX_INPUT_SIZE and int(self.input_size) % INPUT_SIZE_STEP == 0,
             f"input size must be {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE} pixels, a multiple of {INPUT_SIZE_STEP}")
        need(self.epochs_frozen >= 0 and self.epochs_finetune >= 0 and self.epochs_frozen + self.epochs_finetune > 0,
             "train for at least one epoch (stage 1 or stage 2)")
        need(self.batch_size >= 2, "batch size must be at least 2 (under torchrun: the batch of the whole job)")
        need(self.lr_head > 0 and self.lr_finetune > 0, "learning rates must be positive")
        need(0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
             and self.val_fraction + self.test_fraction < 0.9,
             "validation + test fractions must be below 0.9")
        need(self.val_fraction > 0, "a validation share is needed (it picks the best epoch and the threshold)")
        need(0.5 <= self.target_sensitivity <= 1.0, "target sensitivity must be between 0.5 and 1")
        need(self.head in ("linear", "mlp"), "head must be linear or mlp")
        need(self.output_stride in (16, 32), "output stride must be 16 or 32")
        need(self.prevalence is None or 0 < self.prevalence < 1,
             "prevalence must be between 0 and 1 (for example 0.05 for 5 %)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resume_key(self) -> dict[str, Any]:
        """The settings a checkpoint must share with this config to be resumed."""
        d = self.to_dict()
        out = {k: d[k] for k in RESUME_KEYS}
        for k in ("data_dir", "test_dir"):
            out[k] = str(Path(out[k]).resolve()) if out[k] else None
        return out
