"""Issue 12.1: the learned check cautions and never hides a possible finding; its limit is calibrated on
held-out patient groups. Screening rows, ranking, CSV/journal (old files too) and the calibration."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cxr_desktop.scope import RULE_CODES, Caution, ScopeSettings, rules
from cxr_desktop.screening.results import (
    Journal, JournalHeader, ResultRow, is_legacy_learned_refusal, journal_path_for, read_journal, read_results_csv,
    sorted_rows, write_csv,
)
from cxr_desktop.screening.runner import ScreenFinished, ScreenOptions, screen_folder
from cxr_desktop.training.ood import calibrate_threshold, fit_ood, ood_distance

SIZE = 64
SYNTHETIC_OK = ScopeSettings(enabled_rules=frozenset(RULE_CODES) - {rules.TOO_SMALL, rules.INVERTED, rules.ASPECT})


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    import torch

    from cxr_desktop.inference.engine import EngineOptions, load_engine
    from cxr_desktop.model import init_model, save_model

    d = tmp_path_factory.mktemp("caution-model")
    model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal", weights="none",
                             input_size=SIZE, name="caution-test", seed=0)
    with torch.no_grad():
        for p in model.head.parameters():
            p.mul_(50.0)  # spread the scores so that ranking is visible
    path = d / "model.safetensors"
    save_model(path, model, card)
    return load_engine(path, options=EngineOptions(device="cpu", cache_dir=d / "cache"))


def _folder(root: Path, n: int) -> Path:
    for i in range(n):
        rng = np.random.default_rng(i)
        img = cv2.GaussianBlur((rng.random((SIZE, SIZE)) * 255).astype(np.uint8), (0, 0), 3 + i % 5)
        root.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / f"x{i}.png"), img)
    return root


def _screen(folder: Path, engine, out: Path, **kw) -> ScreenFinished:
    opts = ScreenOptions(**{"workers": 0, "batch_size": 4, "scope_settings": SYNTHETIC_OK, **kw})
    events = list(screen_folder(folder, engine, out, options=opts))
    assert isinstance(events[-1], ScreenFinished)
    return events[-1]


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- ranking


def test_a_cautioned_row_ranks_by_its_score_never_below_scored_rows():
    c = Caution(distance=12.7, limit=10.0)
    rows = [ResultRow("refused.dcm", "out_of_scope", reason=rules.MODALITY),
            ResultRow("err.png", "error", reason="unreadable"),
            ResultRow("low-caution.png", "ok", label="normal", score=0.01, above_threshold=False, caution=c),
            ResultRow("high.png", "ok", label="abnormal", score=0.9, above_threshold=True),
            ResultRow("mid-caution.png", "ok", label="abnormal", score=0.6, above_threshold=True, caution=c),
            ResultRow("low.png", "ok", label="normal", score=0.02, above_threshold=False)]
    order = [r.path for r in sorted_rows(rows)]
    assert order == ["high.png", "mid-caution.png", "low.png", "low-caution.png", "refused.dcm", "err.png"]
    scored = [i for i, p in enumerate(order) if "refused" not in p and "err" not in p]
    assert scored == list(range(4))  # every scored row (cautioned or not) above every unscored one


@pytest.mark.slow
def test_screening_scores_cautioned_images_with_heatmaps_and_ranks_them(engine, tmp_path):
    folder = _folder(tmp_path / "in", 6)
    seen = []

    def hook(pooled):  # a learned check that finds every other image unusual
        seen.append(pooled.shape)
        return Caution(distance=20.0 + len(seen), limit=10.0) if len(seen) % 2 else None

    out = tmp_path / "r.csv"
    fin = _screen(folder, engine, out, after_model=hook, heatmaps_dir=tmp_path / "h", json_path=tmp_path / "r.json")
    rows = _csv(out)
    assert len(seen) == 6 and len(rows) == 6
    assert all(r["status"] == "ok" and r["score"] != "" and r["reason"] == "" for r in rows)
    cautioned = [r for r in rows if r["caution"]]
    assert len(cautioned) == 3 and fin.summary["cautioned"] == 3
    assert all(r["caution"].startswith("unusual image - interpret with care") and r["feature_limit"] == "10.000000"
               for r in cautioned)
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)  # ranked by score, cautioned or not
    assert len(list((tmp_path / "h").rglob("*.heatmap.png"))) == 6  # a cautioned image keeps its heatmap
    doc = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert sum(r["caution"] is not None for r in doc["rows"]) == 3
    classes, back = read_results_csv(out)
    assert sum(r.caution is not None for r in back) == 3
    assert {r.caution.distance for r in back if r.caution} == {21.0, 23.0, 25.0}


# --------------------------------------------------------------------------- files: new and old


def test_csv_and_journal_carry_the_caution_and_old_files_still_read(tmp_path):
    c = Caution(distance=12.5, limit=10.25)
    rows = [ResultRow("a.png", "ok", label="opacity", score=0.7, above_threshold=True,
                      probabilities={"normal": 0.3, "opacity": 0.7}, model="m", caution=c),
            ResultRow("b.png", "ok", label="normal", score=0.1, above_threshold=False,
                      probabilities={"normal": 0.9, "opacity": 0.1}, model="m")]
    out = tmp_path / "r.csv"
    write_csv(out, rows, ["normal", "opacity"])
    classes, back = read_results_csv(out)
    assert classes == ["normal", "opacity"] and back[0].caution == c and back[1].caution is None
    header = JournalHeader("m", "ab" * 32, ["normal", "opacity"], "opacity", 0.5)
    jp = journal_path_for(out)
    with Journal(jp, header, resume=False) as j:
        j.append(rows)
    _, jrows = read_journal(jp)
    assert jrows[0].caution == c and jrows[1].caution is None
    # a CSV and a journal row written before the caution existed
    old = tmp_path / "old.csv"
    old.write_text("path,status,label,score,above_threshold,p_normal,p_opacity,reason,detail,model\r\n"
                   "a.png,ok,normal,0.200000,false,0.800000,0.200000,,,m\r\n", encoding="utf-8")
    classes, back = read_results_csv(old)
    assert classes == ["normal", "opacity"] and back[0].score == 0.2 and back[0].caution is None
    legacy = ResultRow.from_dict({"path": "a.png", "status": "out_of_scope", "reason": rules.LEARNED,
                                  "detail": "a.png: not scored: unlike the model's training images"})
    assert legacy.caution is None and is_legacy_learned_refusal(legacy)
    assert not is_legacy_learned_refusal(ResultRow("b.dcm", "out_of_scope", reason=f"{rules.MODALITY};{rules.LEARNED}"))
    assert not is_legacy_learned_refusal(rows[0])


def test_resume_screens_again_images_an_old_version_refused_for_the_learned_check(engine, tmp_path):
    folder = _folder(tmp_path / "in", 3)
    out = tmp_path / "r.csv"
    _screen(folder, engine, out)
    first = {r["path"]: r for r in _csv(out)}
    # rewrite the journal as an older version would have left it: x1 refused by the learned check, unscored
    header = JournalHeader(engine.card.display_name, str(engine.model_sha256), list(engine.card.classes),
                           engine.card.classes[engine.card.positive_index], float(engine.card.decision_threshold))
    old_rows = [ResultRow("x0.png", "ok", label=first["x0.png"]["label"], score=float(first["x0.png"]["score"]),
                          above_threshold=first["x0.png"]["above_threshold"] == "true", model=header.model),
                ResultRow("x1.png", "out_of_scope", reason=rules.LEARNED,
                          detail="x1.png: not scored: unlike the model's training images", model=header.model)]
    out.unlink()
    with Journal(journal_path_for(out), header, resume=False) as j:
        j.append([json_roundtrip(r) for r in old_rows])
    calls = []

    def hook(pooled):
        calls.append(1)
        return Caution(distance=11.0, limit=10.0)

    _screen(folder, engine, out, resume=True, after_model=hook)
    rows = {r["path"]: r for r in _csv(out)}
    assert len(calls) == 2  # x1 (the old refusal) and x2 (never done) were screened; x0 was kept
    assert rows["x1.png"]["status"] == "ok" and rows["x1.png"]["score"] != "" and rows["x1.png"]["caution"]
    assert rows["x0.png"]["caution"] == "" and rows["x0.png"]["score"] == first["x0.png"]["score"]


def json_roundtrip(row: ResultRow) -> ResultRow:
    """The row as an old journal stored it: no 'caution' key at all."""
    d = row.to_dict()
    d.pop("caution")
    return ResultRow.from_dict(json.loads(json.dumps(d)))


# --------------------------------------------------------------------------- calibration


def test_calibration_is_a_conformal_quantile_over_patient_groups():
    rng = np.random.default_rng(0)
    d = rng.random(99 * 3) * 10
    groups = np.repeat([f"p{i}" for i in range(99)], 3)
    t, rec = calibrate_threshold(d, groups, alpha=0.05)
    maxima = np.sort(d.reshape(99, 3).max(1))
    assert t == maxima[94]  # ceil(100 * 0.95) = 95th smallest of 99 group maxima
    assert rec["groups"] == 99 and rec["images"] == 297 and "split-conformal" in rec["rule"]
    # a patient with many images counts once: adding 200 low images of one patient does not move the limit
    t2, _ = calibrate_threshold(np.r_[d, np.zeros(200)], np.r_[groups, ["p0"] * 200], alpha=0.05)
    assert t2 == t
    # too few groups for the rate: the largest held-out distance, and the record says why
    t3, rec3 = calibrate_threshold(d[:30], groups[:30], alpha=0.05)
    assert t3 == d[:30].max() and "fewer than the 19" in rec3["rule"]


def _features(rng, n_groups, per_group, noise, d=64):
    basis = np.random.default_rng(99).standard_normal((6, d))  # patients differ along a few directions
    centres = rng.standard_normal((n_groups, 6)) @ basis
    x = np.repeat(centres, per_group, axis=0) + noise * rng.standard_normal((n_groups * per_group, d))
    groups = np.repeat([f"g{rng.integers(1 << 30)}-{i}" for i in range(n_groups)], per_group)
    return x, groups


def test_fit_ood_calibrates_on_held_out_groups_not_on_training_images():
    rng = np.random.default_rng(3)
    # a network fits its own training images: their features are tighter than those of new patients
    x_tr, g_tr = _features(rng, 40, 4, 0.3)
    y_tr = np.arange(len(x_tr)) % 2
    x_val, g_val = _features(rng, 30, 4, 0.6)  # new patients from the same population
    tensors, info = fit_ood(x_tr, y_tr, x_val, n_classes=2, k=8, percentile=95.0, val_groups=g_val,
                            train_groups=g_tr)
    d_val = ood_distance(x_val, tensors)
    d_tr = ood_distance(x_tr, tensors)
    held_out, _ = calibrate_threshold(d_val, g_val, alpha=0.05)
    assert info["threshold"] == pytest.approx(held_out)
    # the statistics fit their own training images: limits from those would be far lower (over-cautioning)
    train_limit, _ = calibrate_threshold(d_tr, g_tr, alpha=0.05)
    assert train_limit < 0.9 * info["threshold"]
    assert info["calibration"]["split"] == "validation" and info["calibration"]["groups"] == 30
    # validation images of patients also in training (copies, a leaked key) are left out of the calibration
    copies = x_tr[:40] + 0.01 * rng.standard_normal((40, x_tr.shape[1]))
    _, leaky = fit_ood(x_tr, y_tr, np.r_[x_val, copies], n_classes=2, k=8, percentile=95.0,
                       val_groups=np.r_[g_val, g_tr[:40]], train_groups=g_tr)
    assert leaky["threshold"] == pytest.approx(info["threshold"])
    assert leaky["calibration"]["excluded_images_of_training_groups"] == 40
    # no held-out group at all: training images cross-fitted by group (each fold scored without itself)
    _, cross = fit_ood(x_tr, y_tr, x_tr[:0], n_classes=2, k=8, percentile=95.0, train_groups=g_tr)
    assert "cross-fitted" in cross["calibration"]["split"] and cross["threshold"] > 1.1 * train_limit



@pytest.mark.slow
def test_recalibration_rewrites_only_the_limit_and_the_file_still_verifies(tmp_path):
    """training/recalibrate_scope.py's writer: every tensor byte for byte, only card.extra['ood'] changes."""
    import sys

    import torch

    from cxr_desktop.model import init_model, save_model
    from cxr_desktop.model.modelfile import load_model

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    from recalibrate_scope import rewrite_card

    model, card = init_model(classes=["normal", "opacity"], positive_class="opacity", weights="none",
                             input_size=64, name="recal", seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 2048)).astype(np.float32)
    tensors, info = fit_ood(x, np.arange(20) % 2, x[:4], n_classes=2, k=4)
    card.extra["ood"] = info
    src = tmp_path / "m.safetensors"
    save_model(src, model, card, half=True, extra_tensors=tensors)
    new = {**info, "threshold": 123.5, "calibration": {"split": "validation", "groups": 9}}
    rewrite_card(src, tmp_path / "r.safetensors", new)
    a, b = load_model(src), load_model(tmp_path / "r.safetensors")
    assert b.weights_verified and b.card.extra["ood"]["threshold"] == 123.5
    assert b.card.extra["ood"]["calibration"]["groups"] == 9 and a.card.extra["ood"]["threshold"] != 123.5
    for name, t in a.model.state_dict().items():
        assert torch.equal(t, b.model.state_dict()[name]), name
    assert set(a.extra_tensors) == set(b.extra_tensors)
    assert all(torch.equal(a.extra_tensors[k], b.extra_tensors[k]) for k in a.extra_tensors)
