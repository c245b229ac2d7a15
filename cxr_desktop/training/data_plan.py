"""What a training run trains on: the typed result of scan -> patient-level split -> image cache.

:func:`build_plan` is the engine's first step (a generator of progress events, like the
engine). Its result, :class:`DataPlan`, is one picklable value, so a torchrun job computes
it once on process 1 and sends it to the others (:func:`cxr_desktop.training.ddp.shared_plan`):
every process trains on the same items, split and decoded-image cache.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generator, Sequence

from cxr_desktop.training.config import RunWriteError, TrainConfig, TrainingError
from cxr_desktop.training.data import ImageCache, PrepareCancelled, prepare_images
from cxr_desktop.training.events import Cancelled, PrepareDone, ScanDone, SplitDone, TrainEvent
from cxr_desktop.training.scan import ScanCancelled, ScanError, ScanItem, ScanResult, iter_scan
from cxr_desktop.training.split import Split, split_counts, split_groups


@dataclass
class DataPlan:
    """The scanned folders, the items in split order, the patient-level split and the decoded images."""

    train_scan: ScanResult
    test_scan: ScanResult | None
    items: list[ScanItem]
    split: Split  # indices into ``items``; images that failed to decode are left out
    classes: list[str]
    pos: int  # index of the positive class
    cache: ImageCache
    prepare_seconds: float
    counts: dict[str, dict[str, int]]  # images per class and patients per split
    monitor: str  # "auc" or "loss": what picks the best epoch (loss when validation lacks a class)
    fingerprint: str  # of the items and split: resume refuses other data
    labels: list[int]  # class index of each item

    def events(self) -> list[TrainEvent]:
        """The events :func:`build_plan` yields at its milestones (replayed by processes that received the plan)."""
        return [ScanDone(self.train_scan, self.test_scan),
                PrepareDone(len(self.items), self.cache.problems, self.prepare_seconds, self.cache.reused),
                SplitDone(self.counts, self.split.seed, self.split.test_source, self.split.warnings)]


def fingerprint(items: Sequence[ScanItem], split: Split) -> str:
    h = hashlib.sha256()
    for name in ("train", "val", "test"):
        for i in split.indices(name):
            h.update(f"{name}|{items[i].rel}|{items[i].sha256}|{items[i].label}\n".encode())
    return h.hexdigest()


def build_plan(cfg: TrainConfig, work: Path, *, workers: int,
               cancelled: Callable[[], bool]) -> Generator[TrainEvent, None, DataPlan | None]:
    """Scan, split by patient and decode every image once; None (after a Cancelled event) when stopped."""
    try:
        train_scan, test_scan = yield from _scan(cfg, workers, cancelled)
    except ScanCancelled:
        yield Cancelled(0, 0, False, "Stopped during the folder scan; nothing was trained.")
        return None
    yield ScanDone(train_scan, test_scan)
    items, split = _split(cfg, train_scan, test_scan)
    classes = list(train_scan.classes)
    pos = classes.index(cfg.positive_class) if cfg.positive_class else len(classes) - 1
    t0 = time.perf_counter()
    try:
        cache = yield from prepare_images(items, cfg.input_size, work / "cache", workers=workers,
                                          cancelled=cancelled)
    except PrepareCancelled:
        yield Cancelled(0, 0, False, "Stopped while preparing the images; nothing was trained.")
        return None
    except OSError as exc:  # the images' own read errors are per-file problems: this is the cache's folder
        raise RunWriteError.of("the decoded-image cache", work / "cache", exc) from None
    seconds = time.perf_counter() - t0
    yield PrepareDone(len(items), cache.problems, seconds, cache.reused)
    if cache.problems:
        split = Split(*(sorted(i for i in split.indices(n) if cache.ok[i]) for n in ("train", "val", "test")),
                      seed=split.seed, val_fraction=split.val_fraction, test_fraction=split.test_fraction,
                      test_source=split.test_source, warnings=split.warnings)
    labels = [it.label for it in items]
    _check_split(split, labels, classes)
    counts = split_counts(split, labels, [it.group for it in items], classes)
    monitor = cfg.monitor
    if monitor == "auc" and len({labels[i] for i in split.val}) < 2:
        monitor = "loss"
        split.warnings.append("the validation split lacks a class, so the best epoch is chosen by loss")
    yield SplitDone(counts, cfg.seed, split.test_source, split.warnings)
    return DataPlan(train_scan, test_scan, items, split, classes, pos, cache, seconds, counts, monitor,
                    fingerprint(items, split), labels)


def _scan(cfg: TrainConfig, workers: int, cancelled: Callable[[], bool]
          ) -> Generator[TrainEvent, None, tuple[ScanResult, ScanResult | None]]:
    try:
        train_scan = yield from iter_scan(cfg.data_dir, classes=cfg.classes, patient_regex=cfg.patient_regex,
                                          decode=cfg.decode_check, workers=workers, cancelled=cancelled)
        test_scan = None
        if cfg.test_dir:
            test_scan = yield from iter_scan(cfg.test_dir, classes=train_scan.classes,
                                             patient_regex=cfg.patient_regex, decode=cfg.decode_check,
                                             workers=workers, cancelled=cancelled)
    except ScanError as exc:
        raise TrainingError(str(exc)) from None
    classes = train_scan.classes
    if cfg.positive_class is not None and cfg.positive_class not in classes:
        raise TrainingError(f"The positive class {cfg.positive_class!r} is not one of the class folders "
                            f"({', '.join(classes)}).")
    counts = train_scan.counts()
    need = 2 if test_scan is not None else 3
    few = [c for c, n in counts.items() if n < need]
    if few:
        raise TrainingError(
            f"Class(es) {', '.join(few)} have fewer than {need} usable images; each class needs images for "
            "training and validation" + ("" if test_scan is not None else " and testing")
            + ". Add images or remove the folder.")
    return train_scan, test_scan


def _split(cfg: TrainConfig, train_scan: ScanResult, test_scan: ScanResult | None) -> tuple[list[ScanItem], Split]:
    items = list(train_scan.items)
    if test_scan is None:
        split = split_groups([it.label for it in items], [it.group for it in items],
                             val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)
        return items, split
    test_groups = set().union(*(it.patient_hashes() for it in test_scan.items))  # every patient reading
    test_hashes = {it.sha256 for it in test_scan.items}
    leaking = [it for it in items if it.patient_hashes() & test_groups or it.sha256 in test_hashes]
    keep = [it for it in items if not (it.patient_hashes() & test_groups or it.sha256 in test_hashes)]
    frac = cfg.val_fraction / max(1e-9, 1.0 - cfg.test_fraction) if cfg.test_fraction else cfg.val_fraction
    split = split_groups([it.label for it in keep], [it.group for it in keep],
                         val_fraction=min(frac, 0.5), test_fraction=0.0, seed=cfg.seed)
    n = len(keep)
    split.test = list(range(n, n + len(test_scan.items)))
    split.test_source = "folder"
    if leaking:
        split.warnings.append(f"{len(leaking)} training-folder images share a patient or file with the test "
                              "folder and were left out of training and validation")
    return keep + list(test_scan.items), split


def _check_split(split: Split, labels: Sequence[int], classes: Sequence[str]) -> None:
    for name in ("train", "val"):
        present = {labels[i] for i in split.indices(name)}
        if name == "train" and len(present) < len(classes):
            missing = [classes[k] for k in range(len(classes)) if k not in present]
            raise TrainingError(f"The training split has no images of {', '.join(missing)} (too few patients). "
                                "Add images of that class.")
        if not split.indices(name):
            raise TrainingError(f"The {name} split is empty; add images or change the split fractions.")
