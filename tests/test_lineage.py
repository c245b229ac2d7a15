"""Lineage: a model trained from another model file inherits its demonstration flag and
warnings, records its parent (name, version, sha256 of the file) and keeps the chain."""

from __future__ import annotations

import pytest

from cxr_desktop.model.card import ModelCard
from cxr_desktop.model.lineage import ancestors, apply, inherit_from, lineage_lines
from cxr_desktop.model.modelfile import file_sha256, load_model, save_model
from cxr_desktop.model.weights import init_model

SIZE = 64


def _card(name: str, version: str = "1", *, demo: bool = False, warnings: list[str] | None = None) -> ModelCard:
    return ModelCard(name=name, classes=["normal", "opacity"], positive_class="opacity", version=version,
                     demonstration=demo, warnings=list(warnings or []))


def test_inheritance_rules_and_chain():
    demo = _card("demo", "2", demo=True, warnings=["Untrained: meaningless", "Trained on synthetic opacities."])
    inh = inherit_from(demo, "a" * 64)
    assert inh.parent == {"name": "demo", "version": "2", "sha256": "a" * 64}
    assert inh.demonstration is True
    assert inh.lineage == [{"name": "demo", "version": "2", "sha256": "a" * 64, "demonstration": True}]
    assert "Inherited from 'demo v2': Trained on synthetic opacities." in inh.warnings
    assert not any("Untrained" in w for w in inh.warnings)  # the child is trained
    assert any(w.startswith("Lineage: trained from the demonstration model 'demo v2'") for w in inh.warnings)

    child = apply(_card("child"), inh)  # not flagged itself: inherits the flag
    assert child.demonstration is True and child.parent["sha256"] == "a" * 64
    grandchild = apply(_card("grandchild"), inherit_from(child, "b" * 64))
    assert [e["sha256"] for e in ancestors(grandchild)] == ["b" * 64, "a" * 64]  # the grandparent stays findable
    assert grandchild.parent == {"name": "child", "version": "1", "sha256": "b" * 64}
    assert grandchild.demonstration is True
    # inherited warnings keep their origin, not "Inherited from child: Inherited from demo: ..."
    assert grandchild.warnings.count("Inherited from 'demo v2': Trained on synthetic opacities.") == 1
    lineage = [w for w in grandchild.warnings if w.startswith("Lineage:")]
    assert lineage == ["Lineage: trained from 'child v1', which descends from the demonstration model 'demo v2', "
                       "so this is a demonstration model too: for trying the software only, not validated for "
                       "clinical use."]
    assert lineage_lines(grandchild) == [
        f"Trained from 'child v1' (sha256 {'b' * 16}..., demonstration model)",
        f"  which was trained from 'demo v2' (sha256 {'a' * 16}..., demonstration model)",
    ]
    # a model with no parent has no lineage; a non-demonstration parent passes no flag
    assert lineage_lines(_card("x")) == [] and inherit_from(_card("plain"), "c" * 64).demonstration is False


def test_card_with_parent_round_trips_through_a_model_file(tmp_path):
    model, card = init_model(classes=["normal", "opacity"], positive_class="opacity", weights="none",
                             input_size=SIZE, seed=0)
    apply(card, inherit_from(_card("demo", "2", demo=True), "d" * 64))
    sha = save_model(tmp_path / "m.safetensors", model, card)
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.sha256 == sha
    assert loaded.card.parent == {"name": "demo", "version": "2", "sha256": "d" * 64}
    assert loaded.card.provenance["lineage"][0]["demonstration"] is True and loaded.card.demonstration


@pytest.fixture(scope="module")
def demo_parent(tmp_path_factory):
    """A demonstration-flagged model file with warnings of its own."""
    path = tmp_path_factory.mktemp("parent") / "demo.safetensors"
    model, card = init_model(classes=["normal", "opacity"], positive_class="opacity", weights="none",
                             input_size=SIZE, name="demo", seed=3)
    card.version = "2"
    card.demonstration = True
    card.warnings = ["Demonstration only: trained on synthetic opacities."]
    save_model(path, model, card)
    return path


def test_init_from_a_model_file_records_the_parent(demo_parent):
    _, card = init_model(classes=["normal", "opacity"], positive_class="opacity", weights=str(demo_parent),
                         input_size=SIZE, seed=0)
    assert card.parent == {"name": "demo", "version": "2", "sha256": file_sha256(demo_parent)}
    assert card.demonstration is True
    assert card.provenance["initial_weights"]["source"] == "file"
    assert not any("unverified" in w for w in card.warnings)  # the parent is named by its sha256 instead
    assert "Inherited from 'demo v2': Demonstration only: trained on synthetic opacities." in card.warnings


@pytest.mark.slow
def test_model_trained_from_a_demonstration_model_inherits(demo_parent, cxr_dir, tmp_path, monkeypatch):
    """cxr-train from a demo-flagged parent: flag, warnings and parent on the trained card; a second
    generation keeps the grandparent."""
    from cxr_desktop.training.config import TrainConfig
    from cxr_desktop.training.engine import run_to_end
    from cxr_desktop.training.synthetic import PATIENT_REGEX, find_sources, write_dataset

    import torch

    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    data = tmp_path / "data"
    write_dataset(find_sources(cxr_dir, max_side=256, limit=10)[:6], data, variants=4, size=SIZE, seed=1)
    out = tmp_path / "child.safetensors"
    cfg = TrainConfig(data_dir=str(data), out=str(out), input_size=SIZE, weights=str(demo_parent),
                      epochs_frozen=1, epochs_finetune=0, batch_size=8, patient_regex=PATIENT_REGEX, bootstrap=20,
                      seed=0, val_fraction=0.25, test_fraction=0.25, threads=1, name="child")
    try:
        result = run_to_end(cfg)
    finally:
        torch.set_num_threads(threads)
    assert result is not None and result.model_path == str(out)
    card = load_model(out).card
    parent_sha = file_sha256(demo_parent)
    assert card.parent == {"name": "demo", "version": "2", "sha256": parent_sha}
    assert card.demonstration is True  # cfg.demonstration was False: inherited
    assert "Inherited from 'demo v2': Demonstration only: trained on synthetic opacities." in card.warnings
    assert any(w.startswith("Lineage: trained from the demonstration model 'demo v2'") for w in card.warnings)
    assert card.provenance["lineage"] == [{"name": "demo", "version": "2", "sha256": parent_sha,
                                           "demonstration": True}]
    assert card.provenance["initial_weights"]["sha256"] == parent_sha

    # cxr-train's summary gives the quality gate's verdict: this tiny test set is refused
    import io

    from cxr_desktop.cli.train import Printer

    buf = io.StringIO()
    Printer(buf)._evaluation(result.evaluation)
    assert "Quality gate NOT met" in buf.getvalue() and "at least 20 are needed" in buf.getvalue()

    _, grandchild = init_model(classes=["normal", "opacity"], weights=str(out), input_size=SIZE, seed=0)
    assert [e["sha256"] for e in grandchild.provenance["lineage"]] == [file_sha256(out), parent_sha]
    assert grandchild.demonstration is True
