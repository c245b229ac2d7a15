"""What a training run keeps across epochs and saves in every checkpoint (the JSON part).

One typed record instead of a string-keyed dict. Checkpoints keep the dict layout they always
had: :meth:`RunState.to_dict` writes it and :meth:`RunState.from_dict` reads it, so checkpoints
written before this class existed still resume (missing keys take the old defaults).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunState:
    """Progress of one run: where it is, the best epoch so far, and what it was started with."""

    config: dict[str, Any] = field(default_factory=dict)  # TrainConfig.resume_key(): resume refuses other settings
    data: str = ""  # fingerprint of the scanned files and split: resume refuses changed data
    initial_card: dict[str, Any] = field(default_factory=dict)  # warnings and provenance of the starting model
    started: str = ""  # UTC ISO time the run first started
    stage: int = 1
    epoch: int = 0
    number: int = 0  # completed epochs over both stages: numbers the checkpoint files
    history: list[dict[str, Any]] = field(default_factory=list)  # EpochDone fields, one dict per epoch
    best: dict[str, Any] | None = None  # score, stage, epoch, val_auc, val_loss, monitor of the best epoch
    best_file: str | None = None  # name of the best-weights file in the run folder
    bad_epochs: int = 0  # epochs without improvement (patience)
    stage1_done: bool = False
    stage2_done: bool = False
    scheduler: dict[str, Any] | None = None  # learning-rate scheduler state of the current stage

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's JSON layout (the same keys the engine has always written)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        """Read a checkpoint's JSON part; keys it does not know (e.g. ``optimizer``) are left out."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
