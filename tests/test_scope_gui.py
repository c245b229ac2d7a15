"""Issue 12.1 in the GUI: the caution mark beside the score (results panel, viewer scope) and cautioned rows
in the screening worklist (marked, ranked by score, never below the scored rows)."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from cxr_desktop.gui.results_panel import ResultsPanel
from cxr_desktop.viewing.viewer_scope import CAUTION_HEADLINE, ViewerScope
from cxr_desktop.gui.screening_panel import CAUTION_FILTER, SORT_ROLE, WorklistFilter, WorklistModel
from cxr_desktop.inference.engine import Prediction
from cxr_desktop.model.card import ModelCard
from cxr_desktop.scope import CAUTION_MARK, Caution, LearnedScopeCheck, ScopeSettings
from cxr_desktop.scope.learned import METHOD
from cxr_desktop.screening.results import ResultRow

CARD = ModelCard(name="gui-caution", classes=["normal", "opacity"], positive_class="opacity",
                 decision_threshold=0.3)


def test_results_panel_shows_the_caution_with_the_score(qtbot):
    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.show()
    pred = Prediction.from_probs(np.array([0.35, 0.65]), CARD, "cpu")
    panel.show_prediction(pred, "opacity", caution=Caution(distance=12.7, limit=10.0))
    assert panel.caution_shown and panel.caution_label.isVisible()
    text = panel.caution_label.text()
    assert CAUTION_HEADLINE in text and "12.7" in text and "10.0" in text
    assert "interpret with care" in panel.caution_label.toolTip()
    # the score is shown as for any image: predicted class, probabilities, threshold
    assert panel.predicted_label.text().startswith("Predicted: opacity")
    assert panel.prob_rows["opacity"][2].text() == "65.0 %" and "0.650" in panel.threshold_label.text()
    assert not panel.scope_label.isVisible()  # not an out-of-scope verdict
    panel.show_prediction(pred, "opacity")  # the next image, without a caution
    assert not panel.caution_shown
    panel.show_prediction(pred, "opacity", caution=Caution(distance=11.0, limit=10.0))
    panel.clear_result("next")
    assert not panel.caution_shown


def test_viewer_scope_turns_the_learned_check_into_a_caution(cxr_dir):
    import torch

    from cxr_desktop.imaging import load_image

    rng = np.random.default_rng(0)
    k = 4
    comps = np.linalg.qr(rng.standard_normal((2048, k)))[0].T
    tensors = {"ood.pca_mean": torch.zeros(2048), "ood.pca_components": torch.from_numpy(comps.astype(np.float32)),
               "ood.class_means": torch.zeros((2, k)), "ood.precision": torch.eye(k)}
    card = ModelCard(name="m", classes=["normal", "opacity"], positive_class="opacity",
                     extra={"ood": {"method": METHOD, "threshold": 1.0, "k": k}})
    engine = type("E", (), {"extra_tensors": tensors, "card": card})()
    scope = ViewerScope(ScopeSettings())
    scope.set_model(engine)
    assert isinstance(scope.learned, LearnedScopeCheck) and scope.learned.enabled
    assert "caution mark" in scope.learned_status
    image = load_image(cxr_dir / "00000001_000.png")
    scope.set_image(image)
    far = 5.0 * comps[0]  # 5 standard deviations along a principal direction
    verdict = scope.after_model(image, far)
    assert verdict.in_scope and verdict.caution is not None and verdict.caution.distance > 1.0
    assert scope.after_model(image, np.zeros(2048)).caution is None
    off = ViewerScope(ScopeSettings(enabled_rules=ScopeSettings().enabled_rules - {"unlike_training_data"}))
    off.set_model(engine)
    off.set_image(image)
    assert off.after_model(image, far).caution is None


def _worklist(qtbot):
    model = WorklistModel()
    proxy = WorklistFilter()
    proxy.setSourceModel(model)
    c = Caution(distance=13.2, limit=10.0)
    model.set_rows([
        ResultRow("ct.dcm", "out_of_scope", reason="modality_not_radiograph"),
        ResultRow("broken.png", "error", reason="unreadable"),
        ResultRow("caution-low.png", "ok", label="normal", score=0.02, above_threshold=False, caution=c),
        ResultRow("high.png", "ok", label="opacity", score=0.91, above_threshold=True),
        ResultRow("caution-mid.png", "ok", label="opacity", score=0.55, above_threshold=True, caution=c),
        ResultRow("low.png", "ok", label="normal", score=0.05, above_threshold=False),
    ])
    return model, proxy


def _column(proxy, col):
    return [proxy.index(i, col).data() for i in range(proxy.rowCount())]


def test_worklist_marks_cautioned_rows_and_never_ranks_them_below_scored_ones(qtbot):
    model, proxy = _worklist(qtbot)
    proxy.sort(WorklistModel.COL_SCORE, Qt.SortOrder.DescendingOrder)
    paths = _column(proxy, WorklistModel.COL_PATH)
    assert paths[:4] == ["high.png", "caution-mid.png", "low.png", "caution-low.png"]  # by score
    assert set(paths[4:]) == {"ct.dcm", "broken.png"}  # unscored rows below every scored one
    scores = _column(proxy, WorklistModel.COL_SCORE)
    assert scores[1] == "0.550 \u26a0" and scores[0] == "0.910"
    cautions = _column(proxy, WorklistModel.COL_CAUTION)
    assert cautions[1].endswith(f"{CAUTION_MARK} (feature distance 13.2, limit 10.0)") and cautions[0] == ""
    i = paths.index("caution-low.png")
    assert proxy.index(i, WorklistModel.COL_PATH).data(Qt.ItemDataRole.BackgroundRole) is not None
    assert "interpret with care" in proxy.index(i, WorklistModel.COL_PATH).data(Qt.ItemDataRole.ToolTipRole)
    assert proxy.index(0, WorklistModel.COL_PATH).data(Qt.ItemDataRole.BackgroundRole) is None
    # the caution column sorts by distance; the cautioned rows' score sort value is their score
    assert proxy.index(i, WorklistModel.COL_SCORE).data(SORT_ROLE) == pytest.approx(0.02)
    # the status filter's caution entry shows only the cautioned rows
    proxy.set_status(CAUTION_FILTER)
    assert sorted(_column(proxy, WorklistModel.COL_PATH)) == ["caution-low.png", "caution-mid.png"]
    proxy.set_status("ok")
    assert len(_column(proxy, WorklistModel.COL_PATH)) == 4  # cautioned rows are ok rows
