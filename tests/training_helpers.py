"""Shared pieces of the training tests: a tiny data set, its settings, and a driver that keeps the events.

The data set is small (8 real radiographs x 4 synthetic-opacity variants at 64 px): enough for
the engine's mechanics, not for learning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Generator

from cxr_desktop.training.config import TrainConfig
from cxr_desktop.training.relay import drain
from cxr_desktop.training.synthetic import PATIENT_REGEX, find_sources, write_dataset

SIZE = 64


def write_tiny_dataset(root: Path, cxr_dir: Path) -> Path:
    """Write the tiny class-folder data set under ``root`` and return it."""
    write_dataset(find_sources(cxr_dir, max_side=256)[:8], root, variants=4, size=SIZE, seed=1)
    return root


def tiny_config(data: Path, out: Path, **kw: Any) -> TrainConfig:
    """Settings for a fast run on the tiny data set (64 px, random start, 1 + 2 epochs); ``kw`` overrides."""
    base: dict[str, Any] = dict(
        data_dir=str(data), out=str(out), input_size=SIZE, weights="none", epochs_frozen=1, epochs_finetune=2,
        batch_size=8, patient_regex=PATIENT_REGEX, bootstrap=50, seed=0, val_fraction=0.25, test_fraction=0.25,
        augment="light", threads=1)
    base.update(kw)
    return TrainConfig(**base)


def drive(gen: Generator[Any, None, Any], on_event: Callable[[Any], None] | None = None) -> tuple[list[Any], Any]:
    """Run a training generator to its end: (every event it yielded, its return value)."""
    events: list[Any] = []

    def keep(ev: Any) -> None:
        events.append(ev)
        if on_event is not None:
            on_event(ev)

    return events, drain(gen, keep)
