"""What the wizard asks of the core, Qt-free: a new run (folder, config), resuming one, saving the model
and report, and the metric texts and confusion labels the wizard and the HTML report share."""

from __future__ import annotations

import datetime
import html
import json

import numpy as np
import pytest

from cxr_desktop.training.config import TrainConfig, TrainingError
from cxr_desktop.training.metrics import ThresholdChoice, binary_report, confusion_labels
from cxr_desktop.training.results import (
    Evaluation, SplitPredictions, TrainResult, default_model_path, evaluation_of_card, report_path_for,
    save_model_and_report,
)
from cxr_desktop.training.runs import InterruptedRun, load_run_config, new_run_folder, start_run

NOW = datetime.datetime(2026, 11, 26, 3, 4, 5)


# --------------------------------------------------------------------------- runs


def test_start_run_writes_its_folder_and_config(tmp_path):
    root = tmp_path / "runs"
    cfg = start_run(root, data_dir=str(tmp_path / "chest"), test_dir=str(tmp_path / "held"), patient_regex="",
                    val_fraction=0.2, test_fraction=0.3, seed=7, settings={"input_size": 64, "batch_size": 8},
                    overrides={"bootstrap": 50}, now=NOW)
    folder = root / "run-20261126-030405"
    assert cfg.out == str(folder / "model.safetensors")
    assert cfg.test_fraction == 0.0  # a separate test folder: nothing held out of the training folder
    assert cfg.patient_regex is None and cfg.seed == 7 and cfg.val_fraction == 0.2
    assert cfg.name == "Trained on chest" and cfg.input_size == 64 and cfg.bootstrap == 50
    assert load_run_config(folder) == cfg
    raw = json.loads((folder / "run-config.json").read_text())
    assert raw["out"] == cfg.out and raw["test_dir"] == str(tmp_path / "held")

    # no test folder: the test share is held out; a second run in the same second gets its own folder
    again = start_run(root, data_dir=str(tmp_path / "chest"), test_fraction=0.3, now=NOW)
    assert again.test_fraction == 0.3 and again.test_dir is None
    assert again.out == str(root / "run-20261126-030405-2" / "model.safetensors")
    assert new_run_folder(root, NOW).name == "run-20261126-030405-3"


def test_start_run_refuses_settings_that_cannot_work_before_making_a_folder(tmp_path):
    root = tmp_path / "runs"
    with pytest.raises(TrainingError, match="at least one epoch"):
        start_run(root, data_dir="x", settings={"epochs_frozen": 0, "epochs_finetune": 0}, now=NOW)
    assert not root.exists() or not any(root.iterdir())
    with pytest.raises(TypeError):
        start_run(root, data_dir="x", overrides={"no_such_setting": 1}, now=NOW)


def test_resume_config_keeps_the_settings_and_asks_to_resume(tmp_path):
    cfg = TrainConfig(data_dir="d", out=str(tmp_path / "m.safetensors"), seed=3, input_size=64)
    run = InterruptedRun(tmp_path, cfg, stage=2, epoch=1)
    again = run.resume_config()
    assert again.resume and not cfg.resume
    assert {**again.to_dict(), "resume": False} == cfg.to_dict()


def test_default_paths():
    path = default_model_path("/data/chest-xrays", __import__("pathlib").Path("/u/models"), NOW)
    assert str(path) == "/u/models/chest-xrays-20261126-0304.safetensors"
    assert default_model_path("", __import__("pathlib").Path("/u"), NOW).name == "model-20261126-0304.safetensors"
    assert report_path_for("/u/m.safetensors") == "/u/m-report.html"
    assert report_path_for("/u/m.bin") is None


# --------------------------------------------------------------------------- texts shared by wizard and report


def _evaluation(classes: list[str], positive: int, *, perfect: bool = False, prevalence: float | None = None):
    rng = np.random.default_rng(0)
    labels = np.array([positive if i % 2 else (positive + 1) % len(classes) for i in range(40)])
    y = (labels == positive).astype(int)
    scores = np.clip(y * (0.9 if perfect else 0.3) + rng.uniform(0, 0.6, len(y)) * (0.1 if perfect else 1), 0, 1)
    probs = np.zeros((len(y), len(classes)))
    probs[:, positive] = scores
    probs[np.arange(len(y)), (positive + 1) % len(classes)] += 1 - scores
    preds = SplitPredictions("val", labels, probs, [f"{i}.png" for i in range(len(y))], [""] * len(y),
                             groups=[f"p{i // 2}" for i in range(len(y))])
    m = binary_report(y, scores, 0.5, n_boot=50, groups=preds.groups, prevalence=prevalence)
    return Evaluation(classes, positive, ThresholdChoice(0.5, "fixed", None, 0.5, 0.5), preds, preds, m, m)


def test_metric_texts_and_labels_are_those_of_the_report():
    from cxr_desktop.training.report import _metrics_table

    ev = _evaluation(["normal", "opacity"], 1, prevalence=0.05)
    texts = ev.metric_texts(ev.val_metrics)
    assert [t.key for t in texts] == ["auc", "accuracy", "sensitivity", "specificity", "precision", "f1", "ppv",
                                      "npv"]
    assert [t.label for t in texts][:2] == ["ROC AUC", "accuracy"] and texts[5].label == "F1"
    table = _metrics_table(ev)
    for t in texts:  # the report's cells are these texts
        assert f"{t.value} <span class=ci>{t.interval}</span>" in table or t.note in table, t
    assert "PPV at the stated prevalence 0.05" in table and ev.prevalence_text(ev.val_metrics) in table
    assert ev.counts_text(ev.val_metrics) == "40 images, 20 patients, 20 opacity"
    assert f"test: {ev.counts_text(ev.test_metrics)}" in table
    assert ev.interval_text() == "95 % percentile bootstrap intervals resampling patients"
    assert f"<p class=ci>{ev.interval_text()}; validation: " in table


def test_ppv_npv_always_say_at_which_prevalence_with_its_figure():
    """No prevalence stated: each split's own, with the figure (PPV/NPV mean little without it); the report's
    row names both splits' figures when they differ, and the wizard's line its split's."""
    from cxr_desktop.training.report import _metrics_table

    ev = _evaluation(["normal", "opacity"], 1)
    assert ev.prevalence_text(ev.val_metrics) == "at this split's own prevalence 0.5 (none stated)"
    test = dict(ev.test_metrics, prevalence=0.25)
    ev.test_metrics = test
    assert ev.prevalence_text() == "at each split's own prevalence (validation 0.5, test 0.25; none stated)"
    assert html.escape("PPV at each split's own prevalence (validation 0.5, test 0.25; none stated)") in _metrics_table(ev)
    stated = _evaluation(["normal", "opacity"], 1, prevalence=0.05)
    assert stated.prevalence_text() == stated.prevalence_text(stated.test_metrics) == "at the stated prevalence 0.05"


def test_a_degenerate_interval_is_named_in_both_places():
    from cxr_desktop.training.report import _metrics_table

    ev = _evaluation(["normal", "opacity"], 1, perfect=True)
    auc = ev.metric_texts(ev.val_metrics)[0]
    assert auc.value == "1.000" and auc.note and auc.interval == ""
    assert auc.brief == "1.000 (CI degenerate)"
    assert auc.note in _metrics_table(ev) and "(1.000-1.000)" not in _metrics_table(ev)


def test_confusion_labels_name_the_other_class_or_say_not():
    assert _evaluation(["normal", "opacity"], 1).confusion_labels() == ["normal", "opacity"]
    assert _evaluation(["opacity", "normal"], 0).confusion_labels() == ["normal", "opacity"]
    assert confusion_labels(["a", "b", "c"], "c") == ["not c", "c"]


# --------------------------------------------------------------------------- saving


@pytest.mark.slow  # the report's Grad-CAM gallery and shortcut check on real images (about 10 s here)
def test_save_model_and_report_writes_the_chosen_threshold(tmp_path, cxr_dir):
    from cxr_desktop.model.modelfile import load_model, save_model
    from cxr_desktop.model.weights import init_model

    model, card = init_model(classes=["normal", "opacity"], positive_class="opacity", weights="none",
                             input_size=64, name="wizard-core-test", seed=0)
    trained = tmp_path / "run" / "model.safetensors"
    trained.parent.mkdir()
    save_model(trained, model, card)
    files = sorted(p for p in cxr_dir.iterdir() if p.suffix == ".png")[:6]
    labels = np.array([i % 2 for i in range(len(files))])
    scores = np.array([0.2, 0.7, 0.4, 0.9, 0.6, 0.8])[: len(files)]
    preds = SplitPredictions("val", labels, np.stack([1 - scores, scores], 1), [f.name for f in files],
                             [str(f) for f in files])
    m = binary_report(labels, scores, 0.5, n_boot=20)
    ev = Evaluation(["normal", "opacity"], 1, ThresholdChoice(0.5, "fixed", None, 0.5, 0.5), preds, None, m, None)
    result = TrainResult(work_dir=str(tmp_path), history=[], model_path=str(trained), card=card, evaluation=ev)

    out = tmp_path / "saved" / "chosen.safetensors"
    report = report_path_for(str(out))
    assert save_model_and_report(result, out, 0.65, report) == str(out)
    saved = load_model(out)
    assert saved.card.decision_threshold == pytest.approx(0.65)
    assert saved.card.metrics["threshold_selection"]["method"] == "user"
    page = open(report, encoding="utf-8").read()
    assert "0.6500" in page and saved.sha256 in page
    assert load_model(trained).card.decision_threshold != pytest.approx(0.65)  # the run's own file unchanged
    # the report's figures are those at the saved threshold (specificity 2/3 at 0.5, 1 at 0.65), as the card's
    assert saved.card.metrics["validation"]["specificity"] == pytest.approx(1.0)
    spec = next(t for t in ev.metric_texts(saved.card.metrics["validation"]) if t.key == "specificity")
    assert f"<tr><th>specificity</th><td>{spec.value} " in page and "<td>0.667 " not in page
    assert "Threshold 0.6500 chosen on the validation split by the user" in page
    # the same threshold as the run's: the run's own evaluation is reported
    assert evaluation_of_card(ev, load_model(trained).card) is ev
    assert evaluation_of_card(ev, saved.card).val_metrics == saved.card.metrics["validation"]


def test_threshold_text_gives_both_splits_and_the_chosen_threshold():
    ev = _evaluation(["normal", "opacity"], 1)
    v, t = ev.at_threshold(0.3, "val"), ev.at_threshold(0.3, "test")
    assert ev.threshold_text(0.3, 0.5) == (
        f"Threshold 0.300 - validation: sensitivity {v['sensitivity']:.3f}, specificity {v['specificity']:.3f}; "
        f"test: sensitivity {t['sensitivity']:.3f}, specificity {t['specificity']:.3f}  (chosen on validation: 0.500)")
    assert "chosen on validation" not in ev.threshold_text(0.5, 0.5)


# --------------------------------------------------------------------------- before a run: scan and split


def test_scan_text_can_train_and_the_split_preview(tmp_path, cxr_dir):
    from cxr_desktop.training.runs import can_train, preview_split, scan_text
    from cxr_desktop.training.scan import scan_folder
    from cxr_desktop.training.split import split_groups
    from cxr_desktop.training.synthetic import PATIENT_REGEX, find_sources, write_dataset

    write_dataset(find_sources(cxr_dir, max_side=256, limit=10)[:8], tmp_path / "d", variants=4, size=48, seed=2)
    scan = scan_folder(tmp_path / "d", patient_regex=PATIENT_REGEX)
    assert can_train(scan) and not can_train(None)
    assert scan_text(scan) == scan.summary_lines()
    preview = preview_split(scan, val_fraction=0.25, test_fraction=0.25, seed=3)
    items = scan.items
    split = split_groups([i.label for i in items], [i.group for i in items], val_fraction=0.25, test_fraction=0.25,
                         seed=3)  # what the engine does with the same settings
    assert preview.classes == scan.classes and not preview.test_folder
    for name in ("train", "val", "test"):
        assert sum(v for k, v in preview.counts[name].items() if k != "groups") == len(split.indices(name))
    assert any("small" in w for w in preview.warnings)  # a test set this small is named
    # a separate test folder: its counts are the test row, nothing is held out of the training folder
    with_test = preview_split(scan, scan, val_fraction=0.25, test_fraction=0.25, seed=3)
    assert with_test.test_folder and with_test.counts["test"] == {**scan.counts(), "groups": scan.n_groups}
    assert sum(v for k, v in with_test.counts["train"].items() if k != "groups") > sum(
        v for k, v in preview.counts["train"].items() if k != "groups")
    text = scan_text(scan, scan)
    assert "Test folder:" in text and any("also have images in the training folder" in s for s in text)
    with pytest.raises(ValueError):
        preview_split(scan, val_fraction=0.6, test_fraction=0.5, seed=0)
