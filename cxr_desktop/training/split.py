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
from typing import Any, Sequence

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


def _patient_folder(rel: str) -> str | None:
    """The first subfolder inside the class folder (``class/<sub>/.../file``), the usual patient folder."""
    parts = rel.split("/")
    return parts[1] if len(parts) >= 3 else None


def patient_check(split: Split, items: Sequence[Any], train_scan: Any = None, test_scan: Any = None
                  ) -> dict[str, Any]:
    """Patients per split against what the folder layout suggests (counts only, no ids).

    ``items``: the scanned items (``rel``, ``group``) the split indexes. Per split:
    images, patients, and the patients a one-subfolder-per-patient layout would give.
    A subfolder whose images sit in more than one split is the sign of a patient in
    two splits that the patient keys missed; it is counted and warned about.
    """
    from cxr_desktop.training.scan import folder_patient_count

    per: dict[str, dict[str, Any]] = {}
    folder_splits: dict[str, set[str]] = defaultdict(set)
    warnings: list[str] = []
    for name in SPLITS:
        idx = split.indices(name)
        rels = [items[i].rel for i in idx]
        patients = len({items[i].group for i in idx})
        suggested = folder_patient_count(rels) if rels else None
        per[name] = {"images": len(idx), "patients": patients, "folder_patients": suggested}
        for r in rels:
            f = _patient_folder(r)
            if f is not None:
                folder_splits[f].add(name)
        if suggested is not None and suggested != patients:
            warnings.append(f"{name}: {patients} patients, but its subfolders suggest {suggested} "
                            "(one patient per subfolder)")
    crossing = sum(1 for v in folder_splits.values() if len(v) > 1)
    if crossing:
        warnings.append(f"{crossing} subfolders have images in more than one split; if a subfolder is one patient, "
                        "that patient is in two splits - check the DICOM Patient IDs or set a file-name pattern")
    out: dict[str, Any] = {"per_split": per, "subfolders_in_several_splits": crossing}
    conflicts = sum(int(getattr(sc, "patient_conflicts", 0) or 0) for sc in (train_scan, test_scan) if sc is not None)
    out["patient_key_conflicts"] = conflicts
    if conflicts:
        warnings.append(f"{conflicts} DICOM files: the Patient ID and the file-name pattern name different patients "
                        "(the Patient ID was used; both kept in one split)")
    if train_scan is not None and test_scan is not None:
        from cxr_desktop.training.scan import shared_patients

        shared = shared_patients(train_scan, test_scan)
        out["test_folder_patients_in_training_folder"] = shared
        if shared:
            warnings.append(f"{shared} test-folder patients also have images in the training folder (those training "
                            "images were left out)")
    out["warnings"] = warnings
    return out
