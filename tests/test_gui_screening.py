"""Screening dialog (headless): run, worklist sorting/filtering, cancel, previous results, responsiveness."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from cxr_desktop.gui.screening_panel import SORT_ROLE, ScreeningDialog, WorklistModel
from cxr_desktop.scope import RULE_CODES, ScopeSettings, rules
from cxr_desktop.screening.runner import ScreenOptions

# the synthetic images here are small noise: switch off the rules that would (rightly) refuse them
SYNTHETIC_OK = ScopeSettings(enabled_rules=frozenset(RULE_CODES) - {rules.TOO_SMALL, rules.INVERTED, rules.ASPECT})


@pytest.fixture(scope="module")
def model_and_engine(tmp_path_factory):
    import torch

    from cxr_desktop.inference.engine import EngineOptions, load_engine
    from cxr_desktop.model import init_model, save_model

    d = tmp_path_factory.mktemp("gui-model")
    model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal", weights="none",
                             input_size=64, name="gui-test", seed=2)
    with torch.no_grad():
        for p in model.head.parameters():
            p.mul_(50.0)  # spread the scores
    path = d / "model.safetensors"
    save_model(path, model, card)
    engine = load_engine(path, options=EngineOptions(device="cpu", cache_dir=d / "cache"))
    # a threshold that splits this folder's scores is set per test from the scores themselves
    return path, engine


def _folder(root: Path, n: int, broken: int = 0) -> Path:
    rng = np.random.default_rng(3)
    for i in range(n):
        img = cv2.GaussianBlur((rng.random((60 + i % 7, 64)) * 255).astype(np.uint8), (0, 0), 1 + i % 4)
        sub = root / ("x" if i % 2 else "y")
        sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sub / f"s{i:03d}.png"), img)
    for i in range(broken):
        (root / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


def _dialog(qtbot, model_and_engine, folder, results_root, **opts) -> ScreeningDialog:
    path, engine = model_and_engine
    options = ScreenOptions(**{"workers": 1, "batch_size": 4, "scope_settings": SYNTHETIC_OK, **opts})
    dlg = ScreeningDialog(folder=folder, model_path=path, engine_factory=lambda _p: engine,
                          results_root=results_root, screen_options=options)
    qtbot.addWidget(dlg)
    return dlg


def _wait_checked(qtbot, dlg):
    qtbot.waitUntil(lambda: dlg._model_sha is not None, timeout=30000)


def _run_to_end(qtbot, dlg, timeout=120000):
    with qtbot.waitSignal(dlg.run_finished, timeout=timeout) as blocker:
        assert dlg.start()
    return blocker.args[0]


def _proxy_column(dlg, col, role=SORT_ROLE):
    return [dlg.proxy.index(i, col).data(role) for i in range(dlg.proxy.rowCount())]


def test_run_fills_a_sortable_filterable_worklist(qtbot, model_and_engine, tmp_path):
    folder = _folder(tmp_path / "in", 9, broken=2)
    dlg = _dialog(qtbot, model_and_engine, folder, tmp_path / "store")
    dlg.show()
    _wait_checked(qtbot, dlg)
    assert not dlg.previous_banner.isVisible()
    fin = _run_to_end(qtbot, dlg)
    assert dlg.last_error is None and fin is not None and not fin.cancelled
    assert dlg.model.rowCount() == 11 and dlg.progress.value() == dlg.progress.maximum() == 11
    assert "Done: 11 files" in dlg.status_label.text()

    # sorted by score, highest first; unscored rows last
    scores = _proxy_column(dlg, WorklistModel.COL_SCORE)
    assert scores == sorted(scores, reverse=True) and scores[-2:] == [-1.0, -1.0]
    dlg.table.sortByColumn(WorklistModel.COL_SCORE, Qt.SortOrder.AscendingOrder)
    assert _proxy_column(dlg, WorklistModel.COL_SCORE) == sorted(scores)

    rows = dlg.model.rows()
    dlg.status_filter.setCurrentIndex(dlg.status_filter.findData("error"))
    assert dlg.proxy.rowCount() == 2
    assert {dlg.proxy.index(i, WorklistModel.COL_PATH).data() for i in range(2)} == {"broken0.png", "broken1.png"}
    dlg.status_filter.setCurrentIndex(0)
    for label in ("normal", "abnormal"):
        dlg.label_filter.setCurrentIndex(dlg.label_filter.findData(label))
        assert dlg.proxy.rowCount() == sum(r.label == label for r in rows)
    dlg.label_filter.setCurrentIndex(0)
    dlg.above_only.setChecked(True)
    assert dlg.proxy.rowCount() == sum(bool(r.above_threshold) for r in rows)
    dlg.above_only.setChecked(False)
    assert dlg.proxy.rowCount() == 11

    # double-click asks the main window to open the study
    target = dlg.proxy.index(0, WorklistModel.COL_PATH)
    rect = dlg.table.visualRect(target)
    with qtbot.waitSignal(dlg.open_study_requested, timeout=5000) as opened:
        qtbot.mouseClick(dlg.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        qtbot.mouseDClick(dlg.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert Path(opened.args[0]) == folder / target.data()
    assert Path(opened.args[0]).is_file()

    # thumbnails are made on demand, only when asked for
    row = next(i for i, r in enumerate(dlg.model.rows()) if r.status == "ok")
    rel = dlg.model.row_at(row).path
    if dlg.model.cached_thumbnail(rel) is None:
        dlg.model.data(dlg.model.index(row, WorklistModel.COL_THUMB), Qt.ItemDataRole.DecorationRole)
    qtbot.waitUntil(lambda: isinstance(dlg.model.cached_thumbnail(rel), QImage), timeout=20000)
    thumb = dlg.model.cached_thumbnail(rel)
    assert 0 < max(thumb.width(), thumb.height()) <= 64

    # export
    dlg.export_csv(tmp_path / "w.csv")
    dlg.export_json(tmp_path / "w.json")
    with open(tmp_path / "w.csv", newline="", encoding="utf-8-sig") as fh:
        exported = list(csv.DictReader(fh))
    assert len(exported) == 11 and exported[-1]["status"] == "error"
    assert json.loads((tmp_path / "w.json").read_text(encoding="utf-8"))["model"]["name"] == "gui-test v0"
    assert dlg.shutdown()


def test_cancel_keeps_rows_and_reopening_offers_previous_results(qtbot, model_and_engine, tmp_path):
    folder = _folder(tmp_path / "in", 40)
    store = tmp_path / "store"
    dlg = _dialog(qtbot, model_and_engine, folder, store, batch_size=2)
    _wait_checked(qtbot, dlg)
    with qtbot.waitSignal(dlg.run_finished, timeout=120000) as blocker:
        assert dlg.start()
        qtbot.waitUntil(lambda: dlg.model.rowCount() > 0, timeout=60000)
        dlg.cancel()
    fin = blocker.args[0]
    kept = dlg.model.rowCount()
    assert fin.cancelled and 0 < kept < 40 and fin.rows_written == kept
    assert "Cancelled" in dlg.status_label.text()
    assert dlg.shutdown()

    # the same folder and model in a new dialog: previous results are offered
    again = _dialog(qtbot, model_and_engine, folder, store)
    with qtbot.waitSignal(again.previous_checked, timeout=30000) as checked:
        pass
    prev = checked.args[0]
    assert prev is not None and prev.rows == kept and not prev.complete
    again.show()
    assert again.previous_banner.isVisible()
    again.open_previous()
    assert again.model.rowCount() == kept
    # starting again continues: only the rest is screened, every file ends with one row
    fin = _run_to_end(qtbot, again)
    assert fin.rows_written == 40 and again.model.rowCount() == 40
    assert len({r.path for r in again.model.rows()}) == 40
    assert again.shutdown()
    # another model: nothing offered
    other = _dialog(qtbot, model_and_engine, folder, store)
    other.set_model_path(tmp_path / "missing.safetensors")
    assert not other.start_button.isEnabled()


@pytest.mark.slow
def test_gui_stays_responsive_during_a_run(qtbot, model_and_engine, tmp_path, heartbeat):
    folder = _folder(tmp_path / "in", 60, broken=1)
    dlg = _dialog(qtbot, model_and_engine, folder, tmp_path / "store", workers=2, batch_size=8)
    dlg.show()
    _wait_checked(qtbot, dlg)
    with heartbeat:
        fin = _run_to_end(qtbot, dlg)
    assert fin.rows_written == 61 and dlg.model.rowCount() == 61
    gaps = heartbeat.gaps_ms
    assert heartbeat.count > 20
    assert gaps.max() < 300.0, f"longest GUI stall {gaps.max():.0f} ms"
    assert dlg.shutdown()


def test_out_of_scope_scores_hidden_until_shown_anyway(qtbot, model_and_engine, tmp_path):
    from cxr_desktop.screening.results import ResultRow

    dlg = _dialog(qtbot, model_and_engine, tmp_path, tmp_path / "store")
    _wait_checked(qtbot, dlg)  # let the background previous-results check finish first
    rows = [ResultRow("ct.dcm", "out_of_scope", label="abnormal", score=0.91, above_threshold=True,
                      reason="modality_not_radiograph", detail="Modality CT is not a radiograph."),
            ResultRow("cxr.png", "ok", label="normal", score=0.2, above_threshold=False)]
    dlg.model.set_rows(rows)
    col = WorklistModel.COL_SCORE
    texts = lambda: {dlg.model.index(i, WorklistModel.COL_PATH).data(): dlg.model.index(i, col).data()  # noqa: E731
                     for i in range(dlg.model.rowCount())}
    assert texts()["ct.dcm"] == "out of scope" and texts()["cxr.png"] == "0.200"
    dlg.show_oos_scores.setChecked(True)
    assert texts()["ct.dcm"] == "0.910 (OUT OF SCOPE)"
    dlg.show_oos_scores.setChecked(False)
    assert texts()["ct.dcm"] == "out of scope"
