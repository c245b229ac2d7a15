"""Honest validation: one patient key per patient across file types, patient-level bootstrap,
degenerate intervals labelled, PPV/NPV, calibration, and the report's validation sections.

The patient-key tests write real (small) DICOM files with pydicom and PNGs named with the
patient pattern into tmp_path, so a folder mixes both file types for the same patients.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydicom.uid import generate_uid

from cxr_desktop.training import metrics as M
from cxr_desktop.training.scan import ScanItem, patient_group, scan_folder
from cxr_desktop.training.split import patient_check, split_groups
from cxr_desktop.training.validation import compare_models, metrics_by_input, split_extras
from dicom_builders import new_dataset

PATTERN = r"^(P\d{4})_"


def _pixels(seed: int, size: int = 96) -> np.ndarray:
    """A distinct grey image per file (so no two files are content duplicates)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    img = 0.5 + 0.3 * np.sin(x / (5 + seed % 7)) * np.cos(y / (4 + seed % 5)) + 0.1 * rng.random((size, size))
    return np.clip(img * 4000, 0, 4095).astype(np.uint16)


def write_dicom(path: Path, patient_id: str, seed: int, photometric: str = "MONOCHROME2") -> Path:
    ds = new_dataset()
    ds.PatientID = patient_id
    ds.PatientName = "Doe^Jane"
    ds.Modality = "DX"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.set_pixel_data(_pixels(seed), photometric, 12)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png(path: Path, seed: int) -> Path:
    cv2.imwrite(str(path), (_pixels(seed) // 16).astype(np.uint8))
    return path


@pytest.fixture()
def mixed(tmp_path):
    """12 patients, each with one DICOM (PatientID set, neutral file name) and one or two PNGs named
    ``P00xx_...png``; half the patients are "abnormal". Returns (root, true patient of each rel)."""
    root = tmp_path / "data"
    truth: dict[str, str] = {}
    seed = 0
    for p in range(12):
        pid = f"P{p + 1:04d}"
        cls = "abnormal" if p % 2 else "normal"
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        seed += 1
        name = f"study_{seed:03d}.dcm"
        write_dicom(d / name, pid, seed, "MONOCHROME1" if p % 3 == 0 else "MONOCHROME2")
        truth[f"{cls}/{name}"] = pid
        for v in range(1 + p % 2):
            seed += 1
            png = f"{pid}_v{v}.png"
            write_png(d / png, seed)
            truth[f"{cls}/{png}"] = pid
    return root, truth


def test_dicom_and_png_of_one_patient_are_one_patient(mixed):
    root, truth = mixed
    r = scan_folder(root, patient_regex=PATTERN, workers=1)
    assert len(r.items) == len(truth)
    by_patient: dict[str, set[str]] = defaultdict(set)
    for it in r.items:
        by_patient[truth[it.rel]].add(it.group)
    # one group per patient whatever the file type (the old dicom/pattern key spaces gave two)
    assert all(len(g) == 1 for g in by_patient.values()), by_patient
    assert r.n_patients == 12 and len({next(iter(g)) for g in by_patient.values()}) == 12
    assert r.group_sources() == {"dicom": 12, "pattern": 18, "file": 0}
    assert r.patient_conflicts == 0
    assert patient_group("P0001") == patient_group(" p0001 ")  # DICOM padding and case do not split a patient
    kinds = {it.rel: it.input_kind for it in r.items}
    assert kinds["normal/study_001.dcm"] == "DICOM MONOCHROME1" and kinds["abnormal/study_003.dcm"] == "DICOM"
    assert kinds["normal/P0001_v0.png"] == "PNG"
    assert r.patients_by_class() == {"abnormal": 6, "normal": 6}
    shown = "\n".join(r.summary_lines()) + repr(r.summary()) + "".join(r.warnings)
    assert "12 patients" in shown
    assert not any(pid in shown or pid.lower() in shown for pid in set(truth.values()))


@pytest.mark.parametrize("seed", range(5))
def test_the_split_never_puts_one_patient_in_two_splits(mixed, seed):
    root, truth = mixed
    r = scan_folder(root, patient_regex=PATTERN, decode=False, workers=1)
    split = split_groups([it.label for it in r.items], [it.group for it in r.items], val_fraction=0.25,
                         test_fraction=0.25, seed=seed)
    where: dict[str, set[str]] = defaultdict(set)
    for name in ("train", "val", "test"):
        for i in split.indices(name):
            where[truth[r.items[i].rel]].add(name)
    assert all(len(s) == 1 for s in where.values()), where
    assert all(split.indices(n) for n in ("train", "val", "test"))
    check = patient_check(split, r.items, r)
    assert sum(v["patients"] for v in check["per_split"].values()) == 12
    assert check["subfolders_in_several_splits"] == 0 and check["warnings"] == []


def test_a_conflicting_dicom_is_reported_and_kept_with_both_patients(mixed):
    root, truth = mixed
    # a DICOM whose name says P0003 but whose Patient ID says P0005
    write_dicom(root / "normal" / "P0003_extra.dcm", "P0005", 999)
    r = scan_folder(root, patient_regex=PATTERN, decode=False, workers=1)
    assert r.patient_conflicts == 1
    warning = next(w for w in r.warnings if "Patient ID" in w)
    assert warning.startswith("1 DICOM files") and "P0003" not in warning and "P0005" not in warning
    groups = {it.group for it in r.items if truth.get(it.rel) in ("P0003", "P0005") or it.rel.endswith("extra.dcm")}
    assert len(groups) == 1  # both readings kept together: neither can leak into another split
    assert r.n_patients == 11


def test_subfolders_per_patient_that_the_keys_split_are_warned_about(tmp_path):
    """PNGs in one folder per patient, no pattern: each file is its own patient, the folders say otherwise."""
    root = tmp_path / "data"
    seed = 0
    for cls in ("normal", "abnormal"):
        for p in range(6):
            d = root / cls / f"case{cls[0]}{p}"
            d.mkdir(parents=True)
            for v in range(3):
                seed += 1
                write_png(d / f"img{v}.png", seed)
    r = scan_folder(root, decode=False, workers=1)
    assert r.folder_patients == 12 and r.n_patients == 36
    assert any("subfolders suggest 12 patients" in w and "36" in w for w in r.warnings)
    split = split_groups([it.label for it in r.items], [it.group for it in r.items], val_fraction=0.2,
                         test_fraction=0.2, seed=0)
    check = patient_check(split, r.items, r)
    assert check["subfolders_in_several_splits"] > 0
    assert any("more than one split" in w for w in check["warnings"])


def test_test_folder_patient_found_through_either_key(mixed, tmp_path):
    """A test-folder PNG named for a patient whose training images are DICOM only: counted as shared."""
    root, _ = mixed
    test = tmp_path / "test"
    (test / "normal").mkdir(parents=True)
    (test / "abnormal").mkdir()
    write_png(test / "normal" / "P0001_later.png", 5000)
    write_png(test / "abnormal" / "P0099_new.png", 5001)
    from cxr_desktop.training.scan import shared_patients

    tr = scan_folder(root, patient_regex=PATTERN, decode=False, workers=1)
    te = scan_folder(test, classes=tr.classes, patient_regex=PATTERN, decode=False, workers=1)
    assert shared_patients(tr, te) == 1


# --------------------------------------------------------------------------- bootstrap over patients


def test_bootstrap_resamples_patients_not_images():
    """One patient with 30 correctly classified images and 5 patients with one wrong image each.

    Over images, accuracy is 30/35 and its interval stays far from 0. Over patients, a
    third of the resamples hold no image of the big patient, so the interval reaches 0.
    """
    y = np.r_[np.ones(30), np.zeros(5)].astype(int)
    s = np.r_[np.full(30, 0.9), np.full(5, 0.8)]  # the 5 negatives are called positive
    groups = ["big"] * 30 + [f"p{i}" for i in range(5)]

    def acc(yy, ss):
        return float(np.mean((ss >= 0.5) == yy))

    lo_img, hi_img = M.bootstrap_ci(y, s, acc, n_boot=500, seed=0)
    lo_pat, hi_pat = M.bootstrap_ci(y, s, acc, n_boot=500, seed=0, groups=groups)
    assert lo_img > 0.7 and hi_img <= 1.0
    assert lo_pat == 0.0 and hi_pat > 0.95
    rep = M.binary_report(y, s, 0.5, n_boot=300, groups=groups)
    assert rep["ci_unit"] == "patients" and rep["n_patients"] == 6 and rep["accuracy_ci95"][0] == 0.0
    with pytest.raises(ValueError, match="one patient per"):
        M.binary_report(y, s, 0.5, n_boot=10, groups=groups[:-1])


def test_patient_resample_keeps_each_patients_images_together():
    y = np.array([0, 1, 0, 1, 1, 0])
    s = np.arange(6, dtype=float)
    groups = ["a", "a", "b", "b", "c", "c"]
    seen = []

    def record(yy, ss):
        seen.append(ss.copy())
        return 0.0

    M.bootstrap_ci(y, s, record, n_boot=50, seed=3, groups=groups)
    pairs = {(0.0, 1.0), (2.0, 3.0), (4.0, 5.0)}
    for ss in seen:
        assert len(ss) == 6 and all((ss[i], ss[i + 1]) in pairs for i in range(0, 6, 2))


# --------------------------------------------------------------------------- degenerate intervals


def test_all_positives_caught_is_labelled_degenerate_not_one_to_one():
    y = np.r_[np.ones(5), np.zeros(20)].astype(int)
    s = np.r_[np.full(5, 0.9), np.linspace(0.0, 0.8, 20)]
    groups = [f"p{i}" for i in range(25)]
    rep = M.binary_report(y, s, 0.5, n_boot=200, groups=groups)
    assert rep["sensitivity"] == 1.0 and rep["sensitivity_ci95"] == [1.0, 1.0]
    note = rep["ci_notes"]["sensitivity"]
    assert "degenerate" in note and "all of 5 positives" in note
    assert f"{0.025 ** (1 / 5):.2f}-1.00" in note  # exact (Clopper-Pearson) lower bound for 5 of 5
    text = M.format_value_ci(rep, "sensitivity")
    assert "(1.000-1.000)" not in text and "degenerate" in text
    assert "specificity" not in rep["ci_notes"]  # a real interval stays a range
    assert M.format_value_ci(rep, "specificity").count("(") == 1
    assert "auc" in rep["ci_notes"] and "perfectly separated" in rep["ci_notes"]["auc"]
    assert M.format_value_ci(rep, "sensitivity", brief=True) == f"1.000 (CI degenerate; exact 95 % {0.025 ** 0.2:.2f}-1.00)"
    assert M.format_value_ci(rep, "auc", brief=True) == "1.000 (CI degenerate)"


def test_exact_interval_uses_patients_behind_the_proportion():
    y = np.r_[np.ones(6), np.zeros(6)].astype(int)
    s = np.r_[np.full(6, 0.9), np.linspace(0.0, 0.95, 6)]
    groups = ["a", "a", "a", "b", "b", "b"] + [f"n{i}" for i in range(6)]  # 6 positive images, 2 patients
    rep = M.binary_report(y, s, 0.5, n_boot=100, groups=groups)
    assert "(2 patients)" in rep["ci_notes"]["sensitivity"]
    assert f"{0.025 ** (1 / 2):.2f}-1.00" in rep["ci_notes"]["sensitivity"]
    one = M.binary_report(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.1, 0.2]), 0.5, n_boot=50,
                          groups=["a", "a", "b", "c"])
    assert "from 1 patient:" in one["ci_notes"]["sensitivity"]
    assert one["ci_exact"]["ppv"] == one["ci_exact"]["precision"]  # PPV at the sample's prevalence = precision


def test_clopper_pearson_closed_form_matches_scipy():
    from scipy.stats import beta

    for n in (1, 3, 10, 40):
        lo, hi = M.exact_all_or_none(n, n)
        assert lo == pytest.approx(beta.ppf(0.025, n, 1)) and hi == 1.0
        lo, hi = M.exact_all_or_none(0, n)
        assert lo == 0.0 and hi == pytest.approx(beta.ppf(0.975, 1, n))
    assert M.exact_all_or_none(2, 5) is None


# --------------------------------------------------------------------------- PPV/NPV, calibration, caution


def test_ppv_npv_arithmetic():
    ppv, npv = M.predictive_values(0.9, 0.8, 0.1)
    assert ppv == pytest.approx(0.09 / (0.09 + 0.18)) and npv == pytest.approx(0.72 / (0.72 + 0.01))
    assert M.predictive_values(1.0, 1.0, 0.3) == (1.0, 1.0)
    y = np.r_[np.ones(10), np.zeros(30)].astype(int)
    s = np.r_[np.linspace(0.4, 1.0, 10), np.linspace(0.0, 0.7, 30)]
    stated = M.binary_report(y, s, 0.5, n_boot=100, prevalence=0.02)
    at = M.binary_metrics_at(y, s, 0.5)
    assert stated["prevalence_source"] == "stated"
    assert (stated["ppv"], stated["npv"]) == pytest.approx(M.predictive_values(at["sensitivity"], at["specificity"], 0.02))
    own = M.binary_report(y, s, 0.5, n_boot=100)
    assert own["prevalence_source"] == "test set" and own["prevalence"] == pytest.approx(0.25)
    assert own["ppv"] == pytest.approx(at["tp"] / (at["tp"] + at["fp"]))
    assert own["npv"] == pytest.approx(at["tn"] / (at["tn"] + at["fn"]))
    assert stated["ppv"] < own["ppv"]  # a rarer finding: fewer positive calls are right
    with pytest.raises(ValueError, match="prevalence"):
        M.binary_report(y, s, 0.5, n_boot=10, prevalence=1.5)


def test_calibration_bins_and_ece_by_hand():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.05, 0.15, 0.85, 0.95, 0.55, 0.45])
    cal = M.calibration(y, p, n_bins=2)
    lo, hi = cal["bins"]
    assert (lo["n"], hi["n"]) == (3, 3)
    assert lo["mean_predicted"] == pytest.approx(0.65 / 3) and lo["observed"] == 0.0
    assert hi["mean_predicted"] == pytest.approx(2.35 / 3) and hi["observed"] == 1.0
    assert cal["ece"] == pytest.approx(0.5 * 0.65 / 3 + 0.5 * (1 - 2.35 / 3))
    perfect = M.calibration(np.r_[np.zeros(9), np.ones(1)].astype(int), np.full(10, 0.1), n_bins=10)
    assert perfect["ece"] == pytest.approx(0.0, abs=1e-12)


def test_caution_rate_and_fisher_test():
    from scipy.stats import fisher_exact

    y = np.r_[np.ones(8), np.zeros(12)].astype(int)
    d = np.r_[[12.0, 11.0, 3.0, 4.0, 5.0, 1.0, 2.0, 3.0], np.full(11, 2.0), [10.5]]
    c = M.caution_summary(d, 10.0, y)
    assert (c["above"], c["n"]) == (3, 20) and c["rate"] == pytest.approx(0.15)
    assert c["positives"] == {"n": 8, "above": 2, "rate": 0.25} and c["negatives"]["above"] == 1
    assert c["p_positive_vs_negative"] == pytest.approx(fisher_exact([[2, 6], [1, 11]])[1])
    for table in ([[6, 0], [0, 6]], [[3, 40], [9, 12]], [[0, 5], [0, 7]]):
        (a, b), (cc, dd) = table
        assert M.fisher_exact_p(a, b, cc, dd) == pytest.approx(fisher_exact(table)[1])


def test_metrics_per_input_type_and_model_comparison():
    rng = np.random.default_rng(0)
    n = 60
    y = (np.arange(n) % 2).astype(int)
    kinds = ["PNG"] * 30 + ["DICOM MONOCHROME1"] * 30
    good = np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.05, n)
    s = good.copy()
    s[30:] = 1 - s[30:]  # the model gets the inverted grey scale backwards
    groups = [f"p{i // 2}" for i in range(n)]
    by = metrics_by_input(y, s, kinds, 0.5, groups=groups, n_boot=100)
    assert by["PNG"]["auc"] == 1.0 and by["DICOM MONOCHROME1"]["auc"] == 0.0
    assert by["PNG"]["n"] == 30 and by["PNG"]["n_patients"] == 15 and by["PNG"]["n_positive"] == 15
    cmp = compare_models(y, good, s, 0.5, 0.5, groups=groups, n_boot=200)
    assert cmp["trained"]["auc"] == 1.0 and cmp["starting"]["auc"] == pytest.approx(M.roc_auc(y, s))
    lo, hi = cmp["auc_difference_ci95"]
    assert cmp["auc_difference"] == pytest.approx(1.0 - cmp["starting"]["auc"]) and 0 < lo <= hi
    extras = split_extras(y, s, 0.5, kinds=kinds, groups=groups, distances=np.arange(n, dtype=float), limit=50.0,
                          n_boot=50)
    assert set(extras) == {"calibration", "by_input", "caution"} and extras["caution"]["above"] == 9


# --------------------------------------------------------------------------- the report


def _small_result(tmp_path):
    """A TrainResult built from real metric computations on synthetic scores (no training)."""
    from cxr_desktop.model.card import ModelCard, default_preprocessing
    from cxr_desktop.training.results import Evaluation, SplitPredictions, TrainResult
    from cxr_desktop.training.split import Split

    rng = np.random.default_rng(1)
    n = 40
    labels = (np.arange(n) % 2).astype(np.int64)
    p1 = np.clip(np.where(labels == 1, 0.75, 0.3) + rng.normal(0, 0.12, n), 0.01, 0.99)
    probs = np.stack([1 - p1, p1], 1)
    groups = [f"g-{i // 2:012d}" for i in range(n)]
    kinds = ["PNG"] * 20 + ["DICOM"] * 12 + ["DICOM MONOCHROME1"] * 8
    rels = [f"{'opacity' if k else 'normal'}/img{i}.png" for i, k in enumerate(labels)]
    pred = SplitPredictions("test", labels, probs, rels, rels, groups=groups, kinds=kinds)
    val = SplitPredictions("val", labels, probs, rels, rels, groups=groups, kinds=kinds)
    choice = M.select_threshold(labels, p1)
    vm = M.binary_report(labels, p1, choice.threshold, n_boot=100, groups=groups)
    tm = M.binary_report(labels, p1, choice.threshold, n_boot=100, groups=groups, prevalence=0.05)
    tm.update(split_extras(labels, p1, choice.threshold, kinds=kinds, groups=groups,
                           distances=rng.gamma(4, 1.5, n), limit=10.0, n_boot=100))
    start = {"name": "demo v1", "sha256": "0" * 64, "classes": ["normal", "opacity"], "input_size": 224}
    start.update(compare_models(labels, p1, rng.random(n), choice.threshold, 0.5, groups=groups, n_boot=100))
    tm["starting_model"] = start
    ev = Evaluation(["normal", "opacity"], 1, choice, val, pred, vm, tm)
    split = Split(list(range(20)), list(range(20, 30)), list(range(30, 40)), 0, 0.25, 0.25)

    items = [ScanItem(path=f"/x/{i}.png", rel=f"{'abnormal' if i % 2 else 'normal'}/case{i // 4}/img{i}.png",
                      label=int(labels[i]), cls="", sha256="", group=groups[i], group_source="file", format="png",
                      rows=64, columns=64) for i in range(n)]
    data = {"splits": {"train": {"normal": 10, "opacity": 10, "groups": 10}},
            "patient_check": patient_check(split, items)}
    card = ModelCard(name="test model", classes=["normal", "opacity"], positive_class="opacity", input_size=64,
                     preprocessing=default_preprocessing(64), decision_threshold=choice.threshold,
                     provenance={"data": data, "settings": {"prevalence": 0.05}}, metrics={})
    return TrainResult(sha256="f" * 64, card=card, evaluation=ev, history=[], cancelled=False,
                       work_dir=str(tmp_path), data=data)


def test_report_has_the_validation_sections(tmp_path):
    from cxr_desktop.training.report import render_html

    page = render_html(_small_result(tmp_path))
    for text in ("Patients per split", "patients the subfolders suggest", "resampling patients",
                 "Compared with the starting model (same test images)", "demo v1", "AUC difference",
                 "Calibration (test split)", 'alt="reliability diagram"', "Expected calibration error",
                 "Metrics per input type", "DICOM MONOCHROME1", "Caution rate (test split)",
                 # validation's PPV/NPV are at its own prevalence here, the test's at the stated one
                 "PPV per split (validation at its own prevalence 0.5; test at the stated prevalence 0.05)",
                 "NPV per split (validation at its own prevalence 0.5; test at the stated prevalence 0.05)"):
        assert text in page, text
    assert "subfolders suggest" in page and "more than one split" in page  # the folder-layout warning
    assert "(1.000-1.000)" not in page


def test_cli_summary_shows_the_validation_figures(tmp_path):
    import io

    from cxr_desktop.cli.train import Printer
    from cxr_desktop.training import events as E

    buf = io.StringIO()
    printer = Printer(buf)
    result = _small_result(tmp_path)
    printer(E.EvaluationDone(result.evaluation))
    printer(E.Finished(result))
    out = buf.getvalue()
    for text in ("95% CI over patients", "PPV / NPV at prevalence 0.05 (stated)", "patients per split",
                 "starting model 'demo v1'", "calibration (test): ECE", "DICOM MONOCHROME1:",
                 "caution rate (test, distance above 10.00)"):
        assert text in out, text
    assert not math.isnan(result.evaluation.test_metrics["calibration"]["ece"])


# --------------------------------------------------------------------------- the engine, end to end


@pytest.mark.slow
def test_training_from_a_model_file_reports_patients_and_the_starting_model(mixed, tmp_path, monkeypatch):
    """Two tiny runs on the mixed DICOM/PNG folder: the second starts from the first's model file."""
    import torch

    from cxr_desktop.training.config import TrainConfig
    from cxr_desktop.training.engine import run_to_end

    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    root, truth = mixed
    base = dict(data_dir=str(root), input_size=64, weights="none", epochs_frozen=1, epochs_finetune=0, batch_size=8,
                patient_regex=PATTERN, bootstrap=50, seed=0, val_fraction=0.25, test_fraction=0.25, threads=1,
                gallery_per_kind=0)
    try:
        first = run_to_end(TrainConfig(out=str(tmp_path / "m1.safetensors"), **base))
        second = run_to_end(TrainConfig(**{**base, "weights": first.model_path, "gallery_per_kind": 1}, out=str(tmp_path / "m2.safetensors"),
                                        prevalence=0.05, report=str(tmp_path / "m2.html")))
    finally:
        torch.set_num_threads(threads)
    ev = second.evaluation
    val_patients = {truth[r] for r in ev.val.rels}
    test_patients = {truth[r] for r in ev.test.rels}
    assert val_patients and test_patients and not val_patients & test_patients
    check = second.data["patient_check"]
    assert sum(v["patients"] for v in check["per_split"].values()) == 12
    tm = ev.test_metrics
    assert tm["ci_unit"] == "patients" and tm["n_patients"] == len(test_patients)
    assert tm["prevalence_source"] == "stated" and tm["prevalence"] == 0.05
    start = tm["starting_model"]
    assert start["sha256"] == first.sha256 and {"trained", "starting", "auc_difference"} <= set(start)
    assert set(tm["by_input"]) <= {"PNG", "DICOM", "DICOM MONOCHROME1"} and "PNG" in tm["by_input"]
    assert tm["caution"]["n"] == len(ev.test.rels) and "ece" in tm["calibration"]
    assert second.card.metrics["test"]["starting_model"]["name"] == start["name"]
    page = Path(second.report_path).read_text()
    for text in ("Compared with the starting model", "Calibration (test split)", "Metrics per input type",
                 "Caution rate (test split)", "Patients per split"):
        assert text in page
    assert "Grad-CAM gallery" in page and "<figcaption>" in page  # captions name files ...
    assert not any(pid in page for pid in set(truth.values()))  # ... never with the patient id

    # the wizard's threshold slider re-saves the model: the card keeps intervals over patients and the extras
    from cxr_desktop.model.modelfile import read_card
    from cxr_desktop.training.results import save_with_threshold

    save_with_threshold(second, tmp_path / "m3.safetensors", 0.3)
    again = read_card(tmp_path / "m3.safetensors").metrics["test"]
    assert again["ci_unit"] == "patients" and again["threshold"] == 0.3 and again["prevalence"] == 0.05
    assert again["calibration"] == tm["calibration"] and again["starting_model"]["trained"]["threshold"] == 0.3
    assert any(b["n"] == 0 and b["observed"] is None for b in again["calibration"]["bins"])  # JSON-safe empty bins
    assert set(again["by_input"]) == set(tm["by_input"])


def test_scan_summary_names_problem_files_without_the_patient_id(mixed):
    root, _ = mixed
    (root / "normal" / "P0077_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    r = scan_folder(root, patient_regex=PATTERN, decode=False, workers=1)
    assert "normal/P0077_bad.png" in {p.rel for p in r.problems}  # the program still knows the file
    text = "\n".join(r.summary_lines())
    assert "normal/[patient]_bad.png" in text and "P0077" not in text


def test_report_captions_hide_the_patient_part_of_file_names():
    from cxr_desktop.training.scan import redact_patient

    assert redact_patient("opacity/P0001_v0.png", PATTERN) == "opacity/[patient]_v0.png"
    assert redact_patient("a/P0002/P0002_x.png", r"P\d{4}") == "a/P0002/[patient]_x.png"  # the file name only
    assert redact_patient("normal/study_1.dcm", PATTERN) == "normal/study_1.dcm"
    assert redact_patient("normal/P0001_v0.png", None) == "normal/P0001_v0.png"
