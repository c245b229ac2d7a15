"""The steps of checkpoint conversion (key remapping, head mapping, checks, card) one by one,
and a conversion from this app's own key layout with a new head (the CLI tests cover torchvision's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cxr_desktop.errors import ModelFileError
from cxr_desktop.model.architecture import build_classifier
from cxr_desktop.model.checkpoint_convert import (
    CheckpointKeys,
    check_state,
    conversion_card,
    convert_checkpoint,
    map_head,
    remap_keys,
)
from cxr_desktop.model.modelfile import HEAD_PRESETS, file_sha256, load_model

LINEAR, MLP = HEAD_PRESETS["linear"], HEAD_PRESETS["mlp"]
HERE = Path("research.pt")


@pytest.fixture(scope="module")
def expected() -> dict[str, dict[str, torch.Tensor]]:
    """State dicts of a 2-class classifier with each head (what a checkpoint must fit)."""
    torch.manual_seed(0)
    return {name: build_classifier(num_classes=2, head=spec).state_dict()
            for name, spec in (("linear", LINEAR), ("mlp", MLP))}


def _torchvision_keys(sd: dict[str, torch.Tensor], outputs: int = 2) -> dict[str, torch.Tensor]:
    """The same body under torchvision's names, with a torchvision ``fc``."""
    out = {k[len("body."):]: v for k, v in sd.items() if k.startswith("body.")}
    out["fc.weight"], out["fc.bias"] = torch.randn(outputs, 2048), torch.randn(outputs)
    return out


def test_remap_keys_sorts_torchvision_and_own_layouts(expected):
    sd = expected["linear"]
    tv = remap_keys(_torchvision_keys(sd), HERE)
    assert set(tv.body) == {k for k in sd if k.startswith("body.")}
    assert set(tv.fc) == {"fc.weight", "fc.bias"} and tv.head == {}
    own = remap_keys(sd, HERE)
    assert set(own.head) == {"head.layers.1.weight", "head.layers.1.bias"} and own.fc == {}
    assert torch.equal(own.body["body.conv1.weight"], sd["body.conv1.weight"])
    with pytest.raises(ModelFileError, match=r"not a ResNet50 state dict: 2 tensors have unknown names"):
        remap_keys({**_torchvision_keys(sd), "encoder.a": torch.zeros(1), "encoder.b": torch.zeros(1)}, HERE)


def test_map_head_fc_new_head_and_refusals(expected):
    lin = expected["linear"]
    keys = remap_keys(_torchvision_keys(lin), HERE)
    mapped = map_head(keys, lin, LINEAR, ["a", "b"], new_head=False, p=HERE)
    assert set(mapped.head) == {"head.layers.1.weight", "head.layers.1.bias"} and mapped.dropped == ()
    assert torch.equal(mapped.head["head.layers.1.weight"], keys.fc["fc.weight"])
    fresh = map_head(keys, expected["mlp"], MLP, ["a", "b"], new_head=True, p=HERE)
    assert fresh.head == {} and fresh.dropped == ("fc.bias", "fc.weight")
    with pytest.raises(ModelFileError, match="cannot be mapped onto a gap_mlp head. Use --new-head"):
        map_head(keys, expected["mlp"], MLP, ["a", "b"], new_head=False, p=HERE)
    with pytest.raises(ModelFileError, match="3 outputs but 2 classes"):
        map_head(remap_keys(_torchvision_keys(lin, 3), HERE), lin, LINEAR, ["a", "b"], new_head=False, p=HERE)
    with pytest.raises(ModelFileError, match=r"no classifier layer \(fc\)"):
        map_head(CheckpointKeys(body={}), lin, LINEAR, ["a", "b"], new_head=False, p=HERE)


def test_check_state_missing_shape_and_nan(expected):
    lin = expected["linear"]
    body = {k: v for k, v in lin.items() if k.startswith("body.")}
    check_state(body, lin, LINEAR, with_head=False, p=HERE)  # a new head need not be in the checkpoint
    with pytest.raises(ModelFileError, match="2 tensors missing"):
        check_state(body, lin, LINEAR, with_head=True, p=HERE)
    with pytest.raises(ModelFileError, match=r"wrong shape for ResNet50 \(e.g. body.conv1.weight"):
        check_state({**body, "body.conv1.weight": torch.zeros(1)}, lin, LINEAR, with_head=False, p=HERE)
    nan = body["body.bn1.weight"].clone()
    nan[0] = float("nan")
    with pytest.raises(ModelFileError, match="NaN or infinite weights"):
        check_state({**body, "body.bn1.weight": nan}, lin, LINEAR, with_head=False, p=HERE)


def test_conversion_card_records_source_and_refuses_bad_classes(tmp_path):
    src = tmp_path / "weights.pt"
    src.write_bytes(b"checkpoint bytes")
    card = conversion_card(src, classes=["normal", "effusion"], positive_class=None, spec=dict(LINEAR),
                           name=None, input_size=224, head_converted=False)
    assert card.name == "weights" and card.decision_threshold == 0.5 and card.metrics == {}
    assert card.provenance["source_sha256"] == file_sha256(src)
    assert card.provenance["head"] == "new (untrained)"
    assert any(w.startswith("Untrained head") for w in card.warnings)
    with pytest.raises(ValueError, match="positive"):
        conversion_card(src, classes=["a", "b"], positive_class="z", spec=dict(LINEAR), name="m",
                        input_size=224, head_converted=True)


def test_convert_own_layout_with_a_new_mlp_head(tmp_path, expected):
    src = tmp_path / "own.pt"
    torch.save(expected["linear"], src)
    res = convert_checkpoint(src, tmp_path / "m.safetensors", classes=["a", "b"], head="mlp", new_head=True,
                             seed=1, half=True)
    assert not res.head_converted
    assert res.dropped_keys == ("head.layers.1.bias", "head.layers.1.weight")
    loaded = load_model(res.path)
    assert loaded.card.head["type"] == "gap_mlp" and loaded.sha256 == res.sha256
    assert torch.equal(loaded.model.body.conv1.weight, expected["linear"]["body.conv1.weight"].half().float())
