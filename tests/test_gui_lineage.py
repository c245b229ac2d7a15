"""The viewer's banner names a model's parent, its demonstration ancestry and inherited warnings."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from cxr_desktop.gui.model_controller import load_model_file  # noqa: E402
from cxr_desktop.gui.results_panel import ResultsPanel  # noqa: E402
from cxr_desktop.model.modelfile import file_sha256, save_model  # noqa: E402
from cxr_desktop.model.weights import init_model  # noqa: E402


def test_banner_shows_parent_and_inherited_warnings(qtbot, tmp_path):
    parent = tmp_path / "demo.safetensors"
    model, card = init_model(classes=["normal", "opacity"], positive_class="opacity", weights="none",
                             input_size=64, name="demo", seed=0)
    card.version, card.demonstration = "2", True
    card.warnings = ["Demonstration only: trained on synthetic opacities."]
    save_model(parent, model, card)
    model, card = init_model(classes=["normal", "opacity"], positive_class="opacity", weights=str(parent),
                             input_size=64, name="child", seed=0)
    card.warnings = [w for w in card.warnings if not w.startswith("Untrained:")]  # as a trained model's card
    child = tmp_path / "child.safetensors"
    save_model(child, model, card)

    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.set_model(load_model_file(str(child), {"device": "cpu"}))
    text = panel.banner.text()
    assert "DEMONSTRATION MODEL" in text  # inherited flag
    assert f"Trained from 'demo v2' (sha256 {file_sha256(parent)[:16]}..., demonstration model)" in text
    assert "Inherited from 'demo v2': Demonstration only: trained on synthetic opacities." in text
    assert not panel.banner.isHidden()
