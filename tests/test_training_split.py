"""Patient-level split: no patient in two splits, stratified, reproducible."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from cxr_desktop.training.split import split_counts, split_groups


def _cohort(seed: int, n_patients: int = 120):
    """Patients with 1-6 images each, mostly one class per patient, some with both, imbalanced classes."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for p in range(n_patients):
        base = int(rng.random() < 0.3)  # 30 % positive patients
        for _ in range(int(rng.integers(1, 7))):
            labels.append(base if rng.random() > 0.1 else 1 - base)
            groups.append(f"g{p:04d}")
    order = rng.permutation(len(labels))
    return [labels[i] for i in order], [groups[i] for i in order]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fractions", [(0.15, 0.15), (0.2, 0.1), (0.1, 0.0), (0.3, 0.3)])
def test_no_patient_in_two_splits(seed, fractions):
    labels, groups = _cohort(seed)
    val_f, test_f = fractions
    s = split_groups(labels, groups, val_fraction=val_f, test_fraction=test_f, seed=seed)
    parts = {name: set(s.indices(name)) for name in ("train", "val", "test")}
    assert sorted(parts["train"] | parts["val"] | parts["test"]) == list(range(len(labels)))
    assert not (parts["train"] & parts["val"] or parts["train"] & parts["test"] or parts["val"] & parts["test"])
    pg = {name: {groups[i] for i in idx} for name, idx in parts.items()}
    assert not (pg["train"] & pg["val"]) and not (pg["train"] & pg["test"]) and not (pg["val"] & pg["test"])
    if test_f == 0:
        assert not parts["test"]
    # stratified: each class's share of images in val/test is near the requested fraction
    n_by_class = Counter(labels)
    for name, frac in (("val", val_f), ("test", test_f)):
        got = Counter(labels[i] for i in parts[name])
        for cls, n in n_by_class.items():
            assert abs(got.get(cls, 0) / n - frac) < 0.08, (name, cls, got, n)


def test_same_seed_same_split_and_other_seed_differs():
    labels, groups = _cohort(11)
    a = split_groups(labels, groups, seed=3)
    b = split_groups(labels, groups, seed=3)
    c = split_groups(labels, groups, seed=4)
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    assert (a.train, a.val, a.test) != (c.train, c.val, c.test)


def test_small_class_still_reaches_validation():
    labels = [0] * 40 + [1] * 3
    groups = [f"a{i}" for i in range(40)] + ["b0", "b1", "b2"]
    s = split_groups(labels, groups, val_fraction=0.15, test_fraction=0.15, seed=0)
    assert {labels[i] for i in s.val} == {0, 1} and {labels[i] for i in s.train} == {0, 1}
    counts = split_counts(s, labels, groups, ["neg", "pos"])
    assert counts["train"]["pos"] + counts["val"]["pos"] + counts["test"]["pos"] == 3
    assert counts["val"]["groups"] == len({groups[i] for i in s.val})


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError):
        split_groups([0, 1], ["a", "b"], val_fraction=0.6, test_fraction=0.5)
