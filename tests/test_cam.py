"""Head-only Grad-CAM agrees with pytorch-grad-cam's GradCAM (reference), and stays in geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_desktop.inference.cam import GradCAM, to_image_geometry
from cxr_desktop.inference.engine import EngineOptions, InferenceEngine
from cxr_desktop.model.architecture import build_classifier
from cxr_desktop.model.card import ModelCard, default_preprocessing

pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam import GradCAM as RefGradCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

SIZE = 160


def _model(num_classes: int, head: dict, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = build_classifier(num_classes=num_classes, head=head).eval()
    # a random body gives near-uniform activations; make the head decisive so maps have structure
    for p in m.head.parameters():
        p.data.mul_(20.0)
    return m


def _inputs(cxr_dir, n=2) -> torch.Tensor:
    from cxr_desktop.imaging import load_image
    from cxr_desktop.preprocess import preprocess

    files = sorted(cxr_dir.glob("*.png"))[:n]
    return torch.from_numpy(np.stack([preprocess(load_image(f), input_size=SIZE) for f in files]))


@pytest.mark.parametrize(
    "head,num_classes,seed",
    [
        ({"type": "gap_dropout_linear", "dropout": 0.2}, 2, 0),
        ({"type": "gap_mlp", "hidden": [64], "dropout": 0.5}, 2, 1),
        ({"type": "gap_mlp", "hidden": [128, 32], "dropout": 0.1}, 3, 2),
    ],
)
def test_head_only_gradcam_matches_pytorch_grad_cam(cxr_dir, head, num_classes, seed):
    model = _model(num_classes, head, seed)
    x = _inputs(cxr_dir)
    with torch.no_grad():
        acts = model.features(x)
    ours_cam = GradCAM(model.head)
    for cls in range(num_classes):
        with RefGradCAM(model=model, target_layers=[model.target_layer]) as ref:
            ref_maps = ref(input_tensor=x.clone(), targets=[ClassifierOutputTarget(cls)] * len(x))
        ours = ours_cam(acts, torch.full((len(x),), cls, dtype=torch.long))
        for i in range(len(x)):
            up = to_image_geometry(ours[i], SIZE, SIZE)
            if ref_maps[i].std() < 1e-6:  # degenerate (all-negative) map: ours must be flat too
                assert up.std() < 1e-6
                continue
            r = np.corrcoef(up.ravel(), ref_maps[i].ravel())[0, 1]
            assert r >= 0.99, f"class {cls} image {i}: Pearson r={r:.4f}"


def test_engine_heatmap_in_image_geometry(cxr_dir, tmp_path):
    from cxr_desktop.imaging import load_image

    model = _model(2, {"type": "gap_dropout_linear", "dropout": 0.2}, 3)
    card = ModelCard(name="t", classes=["normal", "abnormal"], positive_class="abnormal",
                     input_size=SIZE, preprocessing=default_preprocessing(SIZE))
    eng = InferenceEngine(model, card, options=EngineOptions(backend="torch", device="cpu"))
    img = load_image(cxr_dir / "16747_3_1.jpg")  # non-square
    res = eng.predict(img, cam=True)
    assert res.heatmap.shape == img.shape
    assert 0.0 <= res.heatmap.min() and res.heatmap.max() <= 1.0
    assert abs(sum(res.prediction.probabilities.values()) - 1) < 1e-5
    # an explicit class: map differs from the other class's map
    other = eng.predict(img, cam=True, cam_class="normal")
    assert other.cam_class == "normal"
    assert not np.allclose(other.heatmap, res.heatmap)


# --------------------------------------------------------------------------- other CAM methods (issue 12.2)
from pytorch_grad_cam import GradCAMPlusPlus as RefGradCAMPlusPlus  # noqa: E402
from pytorch_grad_cam import HiResCAM as RefHiResCAM  # noqa: E402
from pytorch_grad_cam import LayerCAM as RefLayerCAM  # noqa: E402

from cxr_desktop.inference.cam import (  # noqa: E402
    CAM_METHODS, GradCAMPlusPlus, HiResCAM, LayerCAM, make_cam, scale_per_image,
)


@pytest.mark.parametrize(
    "ours_cls,ref_cls,head,output_stride",
    [
        (GradCAMPlusPlus, RefGradCAMPlusPlus, {"type": "gap_dropout_linear", "dropout": 0.2}, 32),
        (GradCAMPlusPlus, RefGradCAMPlusPlus, {"type": "gap_mlp", "hidden": [64], "dropout": 0.5}, 16),
        (HiResCAM, RefHiResCAM, {"type": "gap_mlp", "hidden": [64], "dropout": 0.5}, 32),
        (LayerCAM, RefLayerCAM, {"type": "gap_dropout_linear", "dropout": 0.2}, 16),
        (LayerCAM, RefLayerCAM, {"type": "gap_mlp", "hidden": [64], "dropout": 0.5}, 32),
    ],
)
def test_closed_form_cams_match_pytorch_grad_cam(cxr_dir, ours_cls, ref_cls, head, output_stride):
    """Head-only closed forms (cam.py's module doc) against the reference's full backward pass."""
    from cxr_desktop.model.architecture import with_output_stride

    model = with_output_stride(_model(2, head, 7), output_stride).eval()
    x = _inputs(cxr_dir)
    with torch.no_grad():
        acts = model.features(x)
    assert acts.shape[-1] == SIZE // output_stride
    ours_cam = ours_cls(model.head)
    compared = 0
    for cls in range(2):
        with ref_cls(model=model, target_layers=[model.target_layer]) as ref:
            ref_maps = ref(input_tensor=x.clone(), targets=[ClassifierOutputTarget(cls)] * len(x))
        ours = ours_cam(acts, torch.full((len(x),), cls, dtype=torch.long))
        for i in range(len(x)):
            up = to_image_geometry(ours[i], SIZE, SIZE)
            if ref_maps[i].max() < 1e-6:  # all-negative evidence: both flat
                assert up.max() < 1e-6
                continue
            # the reference min-max scales again after resizing (bilinear upsampling by an even factor
            # lowers the peak a little); do the same to ours before comparing values
            up = scale_per_image(up[None])[0]
            assert np.abs(up - ref_maps[i]).max() <= 2e-3, f"class {cls} image {i}"
            compared += 1
    assert compared >= 2  # the comparison ran on real maps, not only on flat ones


def test_hirescam_equals_gradcam_behind_a_pooling_head(cxr_dir):
    model = _model(2, {"type": "gap_mlp", "hidden": [32], "dropout": 0.1}, 4)
    with torch.no_grad():
        acts = model.features(_inputs(cxr_dir))
    t = torch.tensor([1, 0])
    np.testing.assert_allclose(HiResCAM(model.head)(acts, t), GradCAM(model.head)(acts, t), atol=1e-6)
    # Layer-CAM drops negative channels: a different map from Grad-CAM on this model
    assert not np.allclose(LayerCAM(model.head)(acts, t), GradCAM(model.head)(acts, t), atol=1e-3)


def test_engine_selects_cam_method(cxr_dir):
    from cxr_desktop.imaging import load_image

    model = _model(2, {"type": "gap_dropout_linear", "dropout": 0.2}, 5)
    card = ModelCard(name="t", classes=["normal", "abnormal"], positive_class="abnormal",
                     input_size=SIZE, preprocessing=default_preprocessing(SIZE))
    img = load_image(cxr_dir / "00000001_000.png")
    maps = {}
    for method in ("gradcam", "layercam", "gradcam++"):
        eng = InferenceEngine(model, card, options=EngineOptions(backend="torch", device="cpu", cam_method=method))
        assert type(eng.cam) is CAM_METHODS[method]
        maps[method] = eng.predict(img, cam=True, cam_class="abnormal").heatmap
    assert not np.allclose(maps["gradcam"], maps["layercam"], atol=1e-3)
    with pytest.raises(ValueError, match="Unknown heatmap method"):
        make_cam("scorecam", model.head)
