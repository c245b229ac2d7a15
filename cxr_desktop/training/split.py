"""Stratified, patient-level train/validation/test split with a fixed seed.

Every image of a patient group goes to the same split, so the model is never
evaluated on a patient it was trained on. Groups are stratified by their
(majority) class: within each class, groups are shuffled with the seed and
filled into test, then validation, until each split holds its share of that
class's images; the rest is training.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """Indices (into the scanned items) of each split, plus what the split was made from."""

    train: list[int]
    val: list[int]
    test: list[int]
    seed: int
    val_fraction: float
    test_fraction: float
    test_source: str = "split"  # "split" (from the same folder) or "folder" (a separate test folder)
    warnings: list[str] = field(default_factory=list)

    def indices(self, name: str) -> list[int]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def split_groups(labels: Sequence[int], groups: Sequence[str], *, val_fraction: float = 0.15,
                 test_fraction: float = 0.15, seed: int = 0) -> Split:
    """Stratified patient-level split of items with ``labels`` and ``groups``.

    ``test_fraction=0`` makes a train/validation split (for a separate test folder).
    Each split with a non-zero fraction gets at least one group of every class
    that has enough groups (3 or more), so validation AUC is defined.
    """
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ValueError("validation and test fractions must be in [0, 1) and sum to less than 1")
    labels = list(labels)
    groups = list(groups)
    if len(labels) != len(groups):
        raise ValueError("labels and groups must have the same length")
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    # a group's stratum is its most common label (ties: the smallest label, deterministic)
    stratum: dict[str, int] = {}
    for g, idx in members.items():
        counts = Counter(labels[i] for i in idx)
        stratum[g] = min(counts, key=lambda c: (-counts[c], c))
    rng = np.random.default_rng(seed)
    assign: dict[str, str] = {}
    warnings: list[str] = []
    for cls in sorted(set(stratum.values())):
        gs = sorted(g for g in stratum if stratum[g] == cls)
        gs = [gs[i] for i in rng.permutation(len(gs))]
        total = sum(len(members[g]) for g in gs)
        targets = [("test", test_fraction * total), ("val", val_fraction * total)]
        pos = 0
        for name, target in targets:
            if target <= 0:
                continue
            taken = 0
            while pos < len(gs) - 1:  # the last group of a class always stays for training
                size = len(members[gs[pos]])
                if taken > 0 and taken + size / 2.0 > target:  # adding would move away from the share
                    break
                assign[gs[pos]] = name
                taken += size
                pos += 1
            if taken == 0:
                warnings.append(f"class {cls}: too few patient groups for a {name} share")
        for g in gs[pos:]:
            assign[g] = "train"
        if not any(assign[g] == "train" for g in gs):
            warnings.append(f"class {cls}: no patient group left for training")
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for g, idx in members.items():
        out[assign[g]].extend(idx)
    return Split(train=sorted(out["train"]), val=sorted(out["val"]), test=sorted(out["test"]), seed=seed,
                 val_fraction=val_fraction, test_fraction=test_fraction, warnings=warnings)


def split_counts(split: Split, labels: Sequence[int], groups: Sequence[str], classes: Sequence[str]
                 ) -> dict[str, dict[str, int]]:
    """``{split: {class: images, ..., "groups": n}}`` for summaries and the model card."""
    out: dict[str, dict[str, int]] = {}
    for name in SPLITS:
        idx = split.indices(name)
        c = Counter(labels[i] for i in idx)
        row = {cls: int(c.get(k, 0)) for k, cls in enumerate(classes)}
        row["groups"] = len({groups[i] for i in idx})
        out[name] = row
    return out
