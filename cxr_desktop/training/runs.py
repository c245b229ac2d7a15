"""Training runs started from the wizard: their settings on disk, and the interrupted ones.

Each wizard run has its own folder holding ``run-config.json`` (the full
:class:`TrainConfig`) and its checkpoints. A run whose model file was never written
but which has a checkpoint was interrupted (the app closed or crashed, the computer
restarted); the wizard offers to resume it with exactly its settings.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr_desktop.atomic import write_json_atomic
from cxr_desktop.training import checkpoint as ckpt
from cxr_desktop.training.config import TrainConfig

RUN_CONFIG = "run-config.json"


@dataclass
class InterruptedRun:
    """A run that can be resumed: its folder, settings and where it stopped."""

    folder: Path
    config: TrainConfig
    stage: int
    epoch: int

    def describe(self) -> str:
        """One line for the wizard (folder names only; file names can hold patient data)."""
        data = Path(self.config.data_dir).name or self.config.data_dir
        return (f"{self.folder.name}: data '{data}', stopped after stage {self.stage} epoch {self.epoch} "
                f"({self.config.epochs_frozen} + {self.config.epochs_finetune} epochs planned)")

    def resume_config(self) -> TrainConfig:
        """Exactly the settings it was started with, set to continue from its last checkpoint."""
        return dataclasses.replace(self.config, resume=True)


def new_run_folder(root: Path, now: datetime.datetime | None = None) -> Path:
    """Create a fresh folder under ``root`` named for the start time (``run-YYYYmmdd-HHMMSS``, then ``-2`` ...)."""
    name = (now or datetime.datetime.now()).strftime("run-%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = root / (name if n == 1 else f"{name}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue  # two runs started in the same second: never share a folder (and its checkpoints)
        return folder
    raise OSError(f"no free run folder name under {root}")


def start_run(root: Path, *, data_dir: str, test_dir: str | None = None, patient_regex: str | None = None,
              val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0,
              settings: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
              now: datetime.datetime | None = None) -> TrainConfig:
    """A new wizard run: its settings checked, its folder made and ``run-config.json`` written there.

    The model goes into the run's folder; with a separate test folder no test share is held out; the
    model is named for the data folder. ``settings`` are further :class:`TrainConfig` fields (the
    wizard's settings page); ``overrides`` (tests, administrators) win over everything. Raises
    :class:`~cxr_desktop.training.config.TrainingError` for settings that cannot work, before any
    folder is made.
    """
    test_dir = test_dir or None
    fields = dict(data_dir=data_dir, out="model.safetensors", test_dir=test_dir, patient_regex=patient_regex or None,
                  val_fraction=val_fraction, test_fraction=0.0 if test_dir else test_fraction, seed=seed,
                  name=f"Trained on {Path(data_dir).name}")
    cfg = TrainConfig(**(fields | dict(settings or {}) | dict(overrides or {})))
    cfg.validate()
    folder = new_run_folder(root, now)
    if "out" not in (overrides or {}):
        cfg.out = str(folder / "model.safetensors")
    save_run_config(folder, cfg)  # so that an interrupted run can be resumed from the wizard
    return cfg


def save_run_config(folder: Path, cfg: TrainConfig) -> None:
    """Write the run's settings beside its checkpoints (atomically)."""
    write_json_atomic(folder / RUN_CONFIG, cfg.to_dict())


def load_run_config(folder: Path) -> TrainConfig:
    """The settings a run was started with (unknown keys from other versions are ignored)."""
    raw = json.loads((folder / RUN_CONFIG).read_text(encoding="utf-8"))
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in raw.items() if k in names})


def interrupted_runs(root: Path) -> list[InterruptedRun]:
    """Runs under ``root`` with a checkpoint and no model file, newest first."""
    found: list[InterruptedRun] = []
    if not root.is_dir():
        return found
    for folder in sorted((p for p in root.iterdir() if (p / RUN_CONFIG).is_file()), reverse=True):
        try:
            cfg = load_run_config(folder)
        except (OSError, ValueError, TypeError):
            continue
        if Path(cfg.out).exists():
            continue  # finished
        state: dict[str, Any] | None = ckpt.peek_latest(cfg.resolved_work_dir())
        if not state:
            continue
        found.append(InterruptedRun(folder, cfg, int(state.get("stage") or 0), int(state.get("epoch") or 0)))
    return found


# --------------------------------------------------------------------------- before a run: the scan and the split

MIN_IMAGES_PER_CLASS = 3  # one each for training, validation and test


def can_train(train_scan: Any) -> bool:
    """Whether a scanned folder can be trained on: two classes or more, each with enough usable images."""
    return train_scan is not None and len(train_scan.classes) >= 2 and all(
        n >= MIN_IMAGES_PER_CLASS for n in train_scan.counts().values())


def scan_text(train_scan: Any, test_scan: Any = None) -> list[str]:
    """The scan summary of the training folder (and of a test folder, with the patients the two share)."""
    from cxr_desktop.training.scan import shared_patients

    lines = list(train_scan.summary_lines())
    if test_scan is not None:
        lines += ["", "Test folder:"] + ["  " + s for s in test_scan.summary_lines()]
        shared = shared_patients(train_scan, test_scan)
        if shared:
            lines += ["", f"warning: {shared} test-folder patients also have images in the training folder; "
                      "those training images will be left out of training and validation"]
    return lines


@dataclass
class SplitPreview:
    """The patient-level split a run with these settings makes: images per class and patients per split."""

    classes: list[str]
    counts: dict[str, dict[str, int]]  # {"train"|"val"|"test": {class: images, ..., "groups": patients}}
    warnings: list[str]  # the split's own, then classes too small for a trustworthy test set
    test_folder: bool  # the test row is a separate folder, not held out


def preview_split(train_scan: Any, test_scan: Any = None, *, val_fraction: float, test_fraction: float,
                  seed: int) -> SplitPreview:
    """What :func:`~cxr_desktop.training.split.split_groups` will make of the scanned folder (the engine
    splits the same way with the same seed); ValueError when it cannot split."""
    from cxr_desktop.training.gates import small_class_warnings
    from cxr_desktop.training.split import split_counts, split_groups

    labels, groups = [i.label for i in train_scan.items], [i.group for i in train_scan.items]
    split = split_groups(labels, groups, val_fraction=val_fraction,
                         test_fraction=0.0 if test_scan is not None else test_fraction, seed=seed)
    counts = split_counts(split, labels, groups, train_scan.classes)
    if test_scan is not None:
        counts["test"] = {**test_scan.counts(), "groups": test_scan.n_groups}
    test_counts = {c: int(counts["test"].get(c, 0)) for c in train_scan.classes}
    warnings = list(split.warnings) + small_class_warnings(test_counts, test_counts=test_counts)
    return SplitPreview(list(train_scan.classes), counts, warnings, test_scan is not None)
