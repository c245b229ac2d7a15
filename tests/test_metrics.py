"""Training metrics (pure numpy) against scikit-learn on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_desktop.training import metrics as M

sk = pytest.importorskip("sklearn.metrics")


def _binary(n=300, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = rng.normal(0, 1, n) + 1.2 * y
    if ties:
        s = np.round(s, 1)  # many tied scores
    return y, 1 / (1 + np.exp(-s))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_roc_curve_match_sklearn(seed):
    y, s = _binary(seed=seed)
    assert M.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = M.roc_curve(y, s)
    sf, st, sth = sk.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sf)
    np.testing.assert_allclose(tpr, st)
    np.testing.assert_allclose(thr[1:], sth[1:])


def test_auc_undefined_with_one_class():
    assert np.isnan(M.roc_auc([1, 1, 1], [0.1, 0.5, 0.9]))


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.62])
def test_threshold_metrics_match_sklearn(threshold):
    y, s = _binary(seed=3)
    m = M.binary_metrics_at(y, s, threshold)
    pred = (s >= threshold).astype(int)
    tn, fp, fn, tp = sk.confusion_matrix(y, pred).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(sk.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(sk.recall_score(1 - y, 1 - pred))
    assert m["precision"] == pytest.approx(sk.precision_score(y, pred))
    assert m["f1"] == pytest.approx(sk.f1_score(y, pred))


def test_confusion_matrix_matches_sklearn():
    rng = np.random.default_rng(4)
    t, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    np.testing.assert_array_equal(M.confusion_matrix(t, p, 4), sk.confusion_matrix(t, p, labels=range(4)))


def test_multiclass_one_vs_rest_matches_sklearn():
    rng = np.random.default_rng(5)
    n, c = 400, 3
    t = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), t] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    rep = M.multiclass_report(t, probs, ["a", "b", "c"], n_boot=50)
    assert rep["macro"]["auc"] == pytest.approx(sk.roc_auc_score(t, probs, multi_class="ovr", average="macro"))
    pred = probs.argmax(1)
    prec, rec, f1, _ = sk.precision_recall_fscore_support(t, pred, labels=range(c))
    for k, name in enumerate("abc"):
        row = rep["per_class"][name]
        assert row["auc"] == pytest.approx(sk.roc_auc_score(t == k, probs[:, k]))
        assert row["precision"] == pytest.approx(prec[k])
        assert row["sensitivity"] == pytest.approx(rec[k])
        assert row["f1"] == pytest.approx(f1[k])
    assert rep["macro"]["f1"] == pytest.approx(sk.f1_score(t, pred, average="macro"))
    assert rep["accuracy"] == pytest.approx(sk.accuracy_score(t, pred))
    np.testing.assert_array_equal(rep["confusion_matrix"], sk.confusion_matrix(t, pred))


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_threshold_for_target_sensitivity_is_the_highest_reaching_it(target):
    y, s = _binary(seed=6, ties=False)
    choice = M.select_threshold(y, s, method="sensitivity", target=target)
    at = M.binary_metrics_at(y, s, choice.threshold)
    assert at["sensitivity"] >= target
    assert choice.sensitivity == pytest.approx(at["sensitivity"])
    higher = np.unique(s[s > choice.threshold])
    if higher.size:  # the next higher candidate misses the target
        assert M.binary_metrics_at(y, s, higher.min())["sensitivity"] < target


def test_youden_threshold_maximises_j():
    y, s = _binary(seed=7, ties=False)
    choice = M.select_threshold(y, s, method="youden")
    fpr, tpr, _ = sk.roc_curve(y, s)
    at = M.binary_metrics_at(y, s, choice.threshold)
    assert at["sensitivity"] + at["specificity"] - 1 == pytest.approx((tpr - fpr).max())


def test_bootstrap_ci_is_reproducible_and_brackets_the_estimate():
    y, s = _binary(seed=8)
    rep = M.binary_report(y, s, 0.5, n_boot=300, seed=1)
    again = M.binary_report(y, s, 0.5, n_boot=300, seed=1)
    assert rep["auc_ci95"] == again["auc_ci95"]
    for k in ("auc", "sensitivity", "specificity", "accuracy"):
        lo, hi = rep[f"{k}_ci95"]
        assert lo <= rep[k] <= hi and hi - lo < 0.3
    tn, fp, fn, tp = sk.confusion_matrix(y, (s >= 0.5).astype(int)).ravel()
    assert rep["confusion_matrix"] == [[tn, fp], [fn, tp]]
