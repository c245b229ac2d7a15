"""Input safety wired into screening: CSV status/reason/detail, --show-anyway, the learned hook."""

from __future__ import annotations

from pathlib import Path

import csv
import io
import json
import shutil

import numpy as np
import pytest

from cxr_desktop.cli.screen import EXIT_OK, main
from model_builders import untrained_model_file

NON_CHEST = ("693_UNCI.dcm", "MR2_UNCI.dcm", "US1_UNCI.dcm", "SC_rgb.dcm")
CHEST = ("00000001_000.png", "tbx11k_health_h0001.png")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return untrained_model_file(tmp_path_factory.mktemp("scope-int") / "model.safetensors",
                                name="scope-int", seed=2)


@pytest.fixture(scope="module")
def ood_model_file(tmp_path_factory):
    """A model whose stored feature statistics put every image far away (tiny threshold)."""
    from cxr_desktop.model import init_model, save_model
    from cxr_desktop.scope.learned import METHOD

    model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal", weights="none",
                             input_size=64, name="scope-ood", seed=3)
    rng = np.random.default_rng(0)
    k = 4
    comps = np.linalg.qr(rng.standard_normal((2048, k)))[0].T
    tensors = {"ood.pca_mean": np.full(2048, 50.0, np.float32), "ood.pca_components": comps.astype(np.float32),
               "ood.class_means": np.zeros((2, k), np.float32), "ood.precision": np.eye(k, dtype=np.float32)}
    card.extra["ood"] = {"method": METHOD, "threshold": 1e-3, "k": k}
    path = tmp_path_factory.mktemp("scope-ood") / "model.safetensors"
    save_model(path, model, card, extra_tensors={n: __import__("torch").from_numpy(v) for n, v in tensors.items()})
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "scope-int-cache"))


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, cxr_dir, dicom_dir):
    folder = tmp_path_factory.mktemp("mixed")
    for n in NON_CHEST:
        shutil.copy(dicom_dir / n, folder / n)
    for n in CHEST:
        shutil.copy(cxr_dir / n, folder / n)
    return folder


def _screen(folder, out, model, *extra):
    err = io.StringIO()
    code = main([str(folder), "--out", str(out), "--model", str(model), "--workers", "0", "--device", "cpu",
                 "--json", *extra], stderr=err)
    assert code == EXIT_OK, err.getvalue()
    with open(out, newline="", encoding="utf-8-sig") as fh:
        return {r["path"]: r for r in csv.DictReader(fh)}, err.getvalue()


@pytest.mark.slow
def test_csv_status_is_out_of_scope_with_reason_for_non_chest_files(mixed_folder, model_file, tmp_path):
    rows, text = _screen(mixed_folder, tmp_path / "r.csv", model_file)
    for n in CHEST:
        assert rows[n]["status"] == "ok" and rows[n]["reason"] == "", rows[n]
        assert 0.0 <= float(rows[n]["score"]) <= 1.0
    expected = {"693_UNCI.dcm": "modality_not_radiograph", "MR2_UNCI.dcm": "modality_not_radiograph",
                "US1_UNCI.dcm": "modality_not_radiograph", "SC_rgb.dcm": "secondary_capture"}
    for n, code in expected.items():
        r = rows[n]
        assert r["status"] == "out_of_scope" and code in r["reason"].split(";"), r
        assert r["score"] == "" and r["label"] == "" and r["p_abnormal"] == ""
        assert r["detail"].startswith(f"{n}: not scored:") and len(r["detail"]) > len(r["reason"])
    assert "SC" in rows["SC_rgb.dcm"]["detail"] or "secondary" in rows["SC_rgb.dcm"]["detail"].lower()
    assert "Learned check off" in text  # the model has no feature statistics: the run says so
    doc = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert "Learned check off" in doc["summary"]["input_check"]["learned_check"]
    assert doc["summary"]["input_check"]["settings"]["allow_secondary_capture"] is False


def test_show_anyway_scores_out_of_scope_rows_and_keeps_their_status(mixed_folder, model_file, tmp_path):
    rows, _ = _screen(mixed_folder, tmp_path / "r.csv", model_file, "--show-anyway")
    for n in NON_CHEST:
        r = rows[n]
        assert r["status"] == "out_of_scope" and r["reason"], r
        assert 0.0 <= float(r["score"]) <= 1.0 and r["label"] in ("normal", "abnormal")
        assert "Scored anyway" in r["detail"]
    assert all(rows[n]["status"] == "ok" for n in CHEST)


def test_settings_options_change_the_verdict(mixed_folder, model_file, tmp_path):
    rows, _ = _screen(mixed_folder, tmp_path / "r.csv", model_file, "--allow-secondary-capture",
                      "--disable-rule", "colour_image", "--disable-rule", "image_too_small")
    assert "secondary_capture" not in rows["SC_rgb.dcm"]["reason"].split(";")
    assert rows["693_UNCI.dcm"]["status"] == "out_of_scope"  # CT stays refused


@pytest.mark.slow
def test_learned_check_cautions_and_scores_never_refuses(mixed_folder, ood_model_file, tmp_path):
    """The model's statistics put every image far away: chest images are scored, marked, ranked by score."""
    rows, text = _screen(mixed_folder, tmp_path / "r.csv", ood_model_file)
    assert "Learned check on" in text and "with a caution (unusual image, scored): 2" in text
    for n in CHEST:
        r = rows[n]
        assert r["status"] == "ok" and r["reason"] == "", r
        assert 0.0 <= float(r["score"]) <= 1.0 and r["label"] in ("normal", "abnormal")
        assert r["caution"].startswith("unusual image - interpret with care (feature distance")
        assert float(r["feature_distance"]) > float(r["feature_limit"]) == pytest.approx(1e-3)
    # the CSV ranks the cautioned images by score, above every unscored (refused) row
    with open(tmp_path / "r.csv", newline="", encoding="utf-8-sig") as fh:
        order = [r["path"] for r in csv.DictReader(fh)]
    assert set(order[:2]) == set(CHEST)
    # rules still refuse: a CT never reaches the model and has no caution
    ct = rows["693_UNCI.dcm"]
    assert ct["status"] == "out_of_scope" and ct["reason"].split(";")[0] == "modality_not_radiograph"
    assert "unlike_training_data" not in ct["reason"] and ct["score"] == "" and ct["caution"] == ""
    doc = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert doc["summary"]["cautioned"] == 2
    cautioned = [r for r in doc["rows"] if r["caution"]]
    assert {r["path"] for r in cautioned} == set(CHEST) and all(r["caution"]["code"] == "unlike_training_data"
                                                                 for r in cautioned)
    # with --show-anyway the CT is scored, keeps its rule reason, and carries the caution beside it
    rows, _ = _screen(mixed_folder, tmp_path / "r2.csv", ood_model_file, "--show-anyway")
    ct = rows["693_UNCI.dcm"]
    assert ct["status"] == "out_of_scope" and ct["reason"].split(";")[0] == "modality_not_radiograph"
    assert "unlike_training_data" not in ct["reason"] and ct["score"] != "" and ct["caution"] != ""
