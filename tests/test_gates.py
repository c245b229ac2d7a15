"""Quality gate: a model is not offered for the viewer on a tiny or weak test set."""

from __future__ import annotations

import numpy as np

from cxr_desktop.training.gates import MIN_AUC_LOWER, small_class_warnings, viewer_gate
from cxr_desktop.training.metrics import binary_report


def test_gate_refuses_a_tiny_test_set_even_with_perfect_scores():
    y = np.array([0, 0, 1, 1])
    m = binary_report(y, np.array([0.1, 0.2, 0.8, 0.9]), 0.5, n_boot=50)
    gate = viewer_gate(m, "opacity")
    assert not gate.passed
    assert any("2 'opacity' image(s)" in r for r in gate.reasons)
    assert any("2 negative image(s)" in r for r in gate.reasons)
    assert "NOT met" in gate.summary()


def test_gate_passes_a_large_separable_test_set_and_refuses_a_weak_one():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    good = binary_report(y, np.where(y == 1, rng.uniform(0.6, 1.0, 80), rng.uniform(0.0, 0.4, 80)), 0.5, n_boot=200)
    assert viewer_gate(good).passed and viewer_gate(good).reasons == []
    weak = binary_report(y, rng.uniform(0, 1, 80), 0.5, n_boot=200)  # chance-level scores
    gate = viewer_gate(weak)
    assert weak["auc_ci95"][0] < MIN_AUC_LOWER and not gate.passed
    assert len(gate.reasons) == 1 and "CI lower bound" in gate.reasons[0]


def test_gate_refuses_without_a_test_set_or_ci():
    assert not viewer_gate(None).passed and "no test set" in viewer_gate(None).reasons[0]
    one_class = {"n": 50, "n_positive": 50, "auc_ci95": [float("nan"), float("nan")]}
    reasons = viewer_gate(one_class).reasons
    assert any("0 negative" in r for r in reasons) and any("could not be computed" in r for r in reasons)


def test_small_class_warnings():
    assert small_class_warnings({"normal": 400, "opacity": 300}) == []
    warn = small_class_warnings({"normal": 400, "opacity": 40})
    assert len(warn) == 1 and "'opacity'" in warn[0] and "about 6" in warn[0]
    folder = small_class_warnings({"normal": 10, "opacity": 10}, test_counts={"normal": 25, "opacity": 12})
    assert len(folder) == 1 and "test folder holds 12" in folder[0]
