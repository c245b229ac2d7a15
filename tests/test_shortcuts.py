"""Shortcut check (issue 12.2): heatmap mass on the film's border and on burned-in marks, on constructed maps."""

from __future__ import annotations

import cv2
import numpy as np

from cxr_desktop.training.data import augment_grey, augment_spec
from cxr_desktop.training.shortcuts import (
    BORDER_FRACTION, BORDER_LIMIT, TEXT_LIMIT, border_mask, burned_in_mask, image_shares, mask_burned_in,
    pick_per_outcome, summarise,
)

S = 224


def _film(seed: int = 0) -> np.ndarray:
    """A chest-like grey image: smooth mid-grey with darker lung fields and a soft focal opacity."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S
    g = 0.55 - 0.2 * (np.exp(-((xx - 0.3) ** 2 + (yy - 0.5) ** 2) / 0.02) + np.exp(-((xx - 0.7) ** 2 + (yy - 0.5) ** 2) / 0.02))
    g += 0.3 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.45) ** 2) / 0.004)  # soft opacity: not a mark
    g += rng.normal(0, 0.01, g.shape)
    return np.clip(g, 0, 1).astype(np.float32)


def _with_text(g: np.ndarray) -> np.ndarray:
    ink = np.zeros(g.shape, np.uint8)  # OpenCV draws text on 8-bit images only
    cv2.putText(ink, "AP ERECT", (130, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 1, cv2.LINE_AA)
    cv2.putText(ink, "L", (200, 200), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 2, cv2.LINE_AA)
    a = ink.astype(np.float32) / 255.0
    return (g * (1 - a) + a).astype(np.float32)


def _gauss(cx: float, cy: float, sigma: float, n: int = 14) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / (n - 1)
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def test_border_mask_is_the_outer_band():
    m = border_mask((200, 100))
    b = round(BORDER_FRACTION * 100)
    assert m[0].all() and m[:, 0].all() and m[-1].all() and m[:, -1].all()
    assert not m[b:200 - b, b:100 - b].any() and m[b - 1, 50]


def test_burned_in_text_found_soft_opacity_not():
    g = _film()
    assert burned_in_mask(g).mean() < 0.001  # the soft opacity and the lungs are no marks
    t = burned_in_mask(_with_text(g))
    assert t[10:30, 130:210].mean() > 0.15  # the lettering
    assert t[180:205, 195:215].any()  # the "L" marker
    assert t[60:160, 30:110].sum() == 0  # nothing in the lung with the opacity
    cleaned = mask_burned_in(_with_text(g))
    assert burned_in_mask(cleaned).sum() < 0.2 * t.sum()
    assert np.abs(cleaned - g)[60:160, 30:110].max() < 0.02  # the rest of the film is untouched


def test_border_heatmap_warns_central_does_not():
    g = _with_text(_film())
    edge = _gauss(0.0, 0.5, 0.08)  # a hot spot on the left edge
    centre = _gauss(0.3, 0.45, 0.12)  # on the opacity
    on_text = _gauss(0.75, 0.08, 0.05)  # on the lettering at the top
    shares = [image_shares(edge, g, "FP"), image_shares(edge, g, "FP"),
              image_shares(centre, g, "TP"), image_shares(centre, g, "TP")]
    check = summarise(shares)
    by = {x.outcome: x for x in check.groups}
    assert by["FP"].border > BORDER_LIMIT > by["TP"].border
    assert any(w.startswith("FP:") and "border" in w for w in check.warnings)
    assert not any(w.startswith("TP:") for w in check.warnings)
    text_check = summarise([image_shares(on_text, g, "FP"), image_shares(on_text, g, "TN")])
    assert text_check.groups[0].text > TEXT_LIMIT
    assert any("burned-in" in w for w in text_check.warnings)
    assert not any(w.startswith("TN:") for w in text_check.warnings)  # no heatmap is shown below the threshold
    assert "WARNING" in "\n".join(text_check.lines())
    # a flat map puts on the border exactly the border's share of the image
    flat = image_shares(np.ones((14, 14), np.float32), g, "TN")
    assert abs(flat.border - flat.border_area) < 1e-6


def test_pick_per_outcome_spreads_and_caps():
    y = np.array([1] * 30 + [0] * 30)
    s = np.r_[np.linspace(0.6, 1, 25), np.linspace(0, 0.4, 5), np.linspace(0, 0.4, 28), [0.9, 0.95]]
    got = pick_per_outcome(y, s, 0.5, per_outcome=10)
    assert [len(got[k]) for k in ("TP", "FP", "FN", "TN")] == [10, 2, 5, 10]
    assert got["TP"][0] == 0 and got["TP"][-1] == 24  # spread over the whole group


def test_robust_augmentation_blanks_borders_and_masks_marks():
    g = _with_text(_film())
    spec = augment_spec("robust")
    assert spec.crop and spec.border and spec.mask_marks
    outs = [augment_grey(g, np.random.default_rng(i), spec) for i in range(12)]
    assert all(o.shape == g.shape and o.dtype == np.float32 for o in outs)
    flat_edges = sum(float(np.ptp(o[:2, :])) < 1e-6 or float(np.ptp(o[:, :2])) < 1e-6 for o in outs)
    assert flat_edges >= 2  # some samples have a blanked band
    marks = [burned_in_mask(o).sum() for o in outs]
    assert min(marks) < 0.3 * burned_in_mask(g).sum()  # some samples have the lettering painted over


def test_check_model_runs_on_a_saved_dilated_model(tmp_path, cxr_dir):
    """The check as cxr-train runs it: a model file (output stride 16) on labelled files, per outcome."""
    import torch

    from cxr_desktop.model.architecture import build_classifier
    from cxr_desktop.model.card import ModelCard, default_preprocessing
    from cxr_desktop.model.modelfile import load_model, save_model
    from cxr_desktop.training.report import shortcut_section
    from cxr_desktop.training.shortcuts import check_model

    torch.manual_seed(0)
    model = build_classifier(num_classes=2, output_stride=16).eval()
    card = ModelCard(name="t", classes=["normal", "abnormal"], positive_class="abnormal", input_size=64,
                     output_stride=16, preprocessing=default_preprocessing(64))
    path = tmp_path / "m.safetensors"
    save_model(path, model, card, half=True)
    assert load_model(path).model.output_stride == 16  # the file rebuilds the dilated backbone
    files = [str(p) for p in sorted(cxr_dir.glob("*.png"))[:4]]
    y = np.array([1, 1, 0, 0])
    scores = np.array([0.9, 0.1, 0.8, 0.2])
    check = check_model(str(path), files, y, scores, 0.5, per_outcome=1)
    assert [g.outcome for g in check.groups] == ["TP", "FP", "FN", "TN"]
    area = float(border_mask((64, 64)).mean())
    assert all(g.n == 1 and 0.0 <= g.border <= 1.0 and g.border_area == area for g in check.groups)
    html_text = shortcut_section(check)
    assert "Shortcut check" in html_text and "outer 8% border" in html_text
