"""Overlay semantics (issue 12.3): the heatmap explains the finding class, is drawn only at or
above the decision threshold (else a note and an explicit "show anyway"), is transparent where the
map is low, names its class and relative scale, and exports at native resolution with a caption.

Images come from the repository's own samples (resources/samples), so these tests need no
shared data. Two small random-weight models differ only in their decision threshold, so the
same image is above the threshold for one and below it for the other.
"""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication

from cxr_desktop.gui.main_window import MainWindow
from cxr_desktop.gui.overlay import HeatmapLayer, layer_argb
from cxr_desktop.gui.overlay_panel import SHOWN_BELOW_TEXT
from cxr_desktop.heatmap_rules import (
    ALPHA_FLOOR, BELOW_THRESHOLD_MARK, NO_HEATMAP_TEXT, alpha_ramp, caption_lines, heatmap_drawn, legend_title,
)
from cxr_desktop.paths import resources_dir
from window_helpers import load_model, open_and_predict

TIMEOUT = 60_000
ENGINE = {"device": "cpu", "backend": "torch"}
SAMPLES = resources_dir() / "samples"
NIH = SAMPLES / "00000001_000.png"  # 512 x 512
NIH2 = SAMPLES / "00027426_000.png"
RG1 = SAMPLES / "RG1_J2KI.dcm"  # 1955 rows x 1841 columns, patient fields hold test labels


def to_array(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format.Format_RGB888)
    w, h = img.width(), img.height()
    arr = np.frombuffer(img.constBits(), dtype=np.uint8, count=img.bytesPerLine() * h)
    return arr.reshape(h, img.bytesPerLine())[:, : 3 * w].reshape(h, w, 3).astype(int)


def colourful(arr: np.ndarray) -> np.ndarray:
    """Per-pixel spread between colour channels (0 for grey)."""
    return arr.max(axis=-1) - arr.min(axis=-1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The same random model twice: threshold 0.001 (the samples score above) and 0.999 (below)."""
    from cxr_desktop.model.modelfile import save_model
    from cxr_desktop.model.weights import init_model

    folder = tmp_path_factory.mktemp("models")
    out = {}
    for key, threshold in (("low", 0.001), ("high", 0.999)):
        model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal", weights="none",
                                 input_size=64, name=f"Gate-{key}", seed=1)
        card.decision_threshold = threshold
        card.version = "1"
        out[key] = folder / f"{key}.safetensors"
        save_model(out[key], model, card)
    return out


@pytest.fixture
def window(main_window):
    return main_window(engine_options=ENGINE)


def viewport(qtbot, window: MainWindow) -> np.ndarray:
    qtbot.wait(30)
    QApplication.processEvents()
    return to_array(window.canvas.render_viewport())


# ------------------------------------------------------------------ rules (no Qt)


def test_alpha_ramp_is_zero_below_the_floor_and_full_at_the_top():
    v = np.linspace(0.0, 1.0, 101)
    a = alpha_ramp(v)
    assert np.all(a[v <= ALPHA_FLOOR] == 0.0)
    assert a[-1] == pytest.approx(1.0) and np.all(np.diff(a) >= 0)
    assert 0.0 < alpha_ramp(np.array([0.6]))[0] < 1.0


def test_drawn_only_at_or_above_threshold_unless_asked():
    assert heatmap_drawn(0.35, 0.35) and heatmap_drawn(0.9, 0.35)
    assert not heatmap_drawn(0.349, 0.35)
    assert heatmap_drawn(0.1, 0.35, show_anyway=True)


def test_legend_and_caption_texts():
    assert legend_title("opacity") == "Evidence for: opacity"
    assert BELOW_THRESHOLD_MARK in legend_title("opacity", below_threshold=True)
    above = caption_lines(explained="opacity", positive_class="opacity", score=0.52, threshold=0.3046,
                          model="CXR Review demonstration model vdemo-2", heatmap_shown=True)
    assert above[0] == "P(opacity) = 0.520, at or above the decision threshold 0.305."
    assert "evidence for 'opacity'" in above[1] and "relative per image" in above[1]
    assert above[-1] == "Model: CXR Review demonstration model vdemo-2."
    below = caption_lines(explained="opacity", positive_class="opacity", score=0.228, threshold=0.3046,
                          model="m v1", heatmap_shown=False)
    assert below[0].startswith("P(opacity) = 0.228, below the decision threshold 0.305")
    assert below[1] == NO_HEATMAP_TEXT + "."
    on_request = caption_lines(explained="opacity", positive_class="opacity", score=0.228, threshold=0.3046,
                               model="m v1", heatmap_shown=True)
    assert BELOW_THRESHOLD_MARK in on_request[1]


# ------------------------------------------------------------------ the coloured layer


def test_layer_is_transparent_where_the_map_is_low():
    heat = np.tile(np.linspace(0.0, 1.0, 256, dtype=np.float32), (8, 1))
    u8 = np.rint(heat * 255).astype(np.uint8)
    argb = layer_argb(u8, "Turbo")
    alpha = (argb >> 24).astype(int)
    assert np.all(alpha[u8 <= int(ALPHA_FLOOR * 255)] == 0)
    assert alpha[:, -1].min() == 255
    rgb = np.stack([(argb >> s) & 0xFF for s in (16, 8, 0)], -1).astype(int)
    assert np.all(rgb <= alpha[..., None])  # premultiplied: no colour where there is no alpha
    img = HeatmapLayer(heat, "abnormal").image("Turbo")
    assert img.format() == QImage.Format.Format_ARGB32_Premultiplied and img.hasAlphaChannel()


def test_contour_style_draws_isolines_only():
    yy, xx = np.mgrid[0:200, 0:200]
    heat = np.exp(-((yy - 100) ** 2 + (xx - 100) ** 2) / (2 * 35.0 ** 2)).astype(np.float32)
    u8 = np.rint(heat * 255).astype(np.uint8)
    alpha = (layer_argb(u8, "Jet", "contours") >> 24).astype(int)
    assert 0.005 < (alpha > 0).mean() < 0.2  # thin lines, not a filled area
    assert alpha[100, 100] == 0  # the centre (the highest values) stays see-through
    assert alpha[0].max() == 0 and alpha[:, 0].max() == 0  # no line along the image border
    with pytest.raises(ValueError, match="style"):
        layer_argb(u8, "Jet", "hatched")


# ------------------------------------------------------------------ the engine default


def test_default_cam_class_is_the_positive_class_not_the_predicted_one():
    from cxr_desktop.imaging import load_image
    from cxr_desktop.inference.engine import EngineOptions, InferenceEngine
    from cxr_desktop.model.weights import init_model
    from cxr_desktop.preprocess import preprocess_for_card

    model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal", weights="none",
                             input_size=64, seed=1)
    eng = InferenceEngine(model, card, options=EngineOptions(device="cpu", backend="torch"))
    image = load_image(NIH)
    res = eng.predict(image, cam=True)
    assert res.prediction.label == "normal"  # predicted normal ...
    assert res.cam_class == "abnormal"  # ... yet the map explains the finding class
    explicit = eng.predict(image, cam=True, cam_class="abnormal")
    np.testing.assert_allclose(res.heatmap, explicit.heatmap, atol=1e-6)
    assert not np.allclose(eng.predict(image, cam=True, cam_class="normal").heatmap, res.heatmap)
    x = np.stack([preprocess_for_card(load_image(p), card.preprocessing) for p in (NIH, NIH2)])
    out = eng.run_batch(x, cam=True)
    assert out.cam_classes.tolist() == [card.positive_index] * 2


# ------------------------------------------------------------------ the viewer


def test_below_threshold_no_heatmap_but_a_note_and_an_explicit_toggle(qtbot, window, models):
    load_model(qtbot, window, models["high"])
    outcome = open_and_predict(qtbot, window, NIH)
    pred = outcome.result.prediction
    assert not pred.above_threshold and outcome.result.cam_class == "abnormal"
    panel, canvas = window.overlay_panel, window.canvas
    assert not canvas.overlay_shown
    assert panel.gate_text == NO_HEATMAP_TEXT and panel.show_below_box.isVisibleTo(panel)
    assert canvas.overlay_note.startswith(NO_HEATMAP_TEXT) and "P(abnormal) = " in canvas.overlay_note
    assert not panel.legend.isVisibleTo(panel)  # no colour bar without a map
    bare = viewport(qtbot, window)
    assert colourful(bare[120:]).max() <= 2  # the radiograph below the note is untinted grey
    # the reader asks for it: drawn, labelled as below threshold
    panel.set_show_below(True)
    assert canvas.overlay_shown and panel.legend.isVisibleTo(panel)
    assert panel.legend.title == legend_title("abnormal", below_threshold=True)
    assert panel.gate_text == SHOWN_BELOW_TEXT and canvas.overlay_note == SHOWN_BELOW_TEXT
    assert colourful(viewport(qtbot, window)[120:]).max() > 40
    # the request is for that image only
    open_and_predict(qtbot, window, NIH2)
    assert not panel.show_below and not canvas.overlay_shown and panel.gate_text == NO_HEATMAP_TEXT


def test_above_threshold_heatmap_drawn_for_the_finding_class(qtbot, window, models):
    load_model(qtbot, window, models["low"])
    assert window.overlay_panel.class_box.itemText(0) == "Finding: abnormal (default)"
    outcome = open_and_predict(qtbot, window, NIH)
    pred = outcome.result.prediction
    assert pred.above_threshold and pred.label == "abnormal"
    panel, canvas = window.overlay_panel, window.canvas
    assert canvas.overlay_shown and canvas.overlay_note == "" and panel.gate_text == ""
    assert not panel.show_below_box.isVisibleTo(panel)
    assert panel.legend.title == "Evidence for: abnormal"
    assert colourful(viewport(qtbot, window)).max() > 40
    # low map values leave the radiograph exactly as it is (the full-resolution render, no zoom)
    window.overlay_panel.set_opacity(100)
    with_overlay = to_array(canvas.render_native())
    window.overlay_panel.set_overlay_visible(False)
    without = to_array(canvas.render_native())
    low = np.rint(outcome.result.heatmap * 255) <= int(ALPHA_FLOOR * 255) - 2
    assert low.mean() > 0.05, "the test needs some low map values"
    assert np.abs(with_overlay - without)[low].max() <= 1
    assert np.abs(with_overlay - without)[~low].max() > 40
    # contour style: a re-colouring of the same map, no new CAM
    window.overlay_panel.set_overlay_visible(True)
    computations = window.classifier.computations
    window.overlay_panel.set_style("contours")
    contours = to_array(canvas.render_native())
    changed = np.abs(contours - without).max(axis=2) > 1
    assert 0.002 < changed.mean() < 0.3 and window.classifier.computations == computations


@pytest.mark.slow
def test_export_native_resolution_with_caption_and_no_patient_data(qtbot, window, models, tmp_path):
    load_model(qtbot, window, models["low"])
    outcome = open_and_predict(qtbot, window, RG1)
    image = window.current_image
    assert image.shape == (1955, 1841)
    caption = window.export_caption()
    pred = outcome.result.prediction
    assert f"P(abnormal) = {pred.score:.3f}" in caption and f"threshold {pred.threshold:.3f}" in caption
    assert "evidence for 'abnormal'" in caption and "Model: Gate-low v1" in caption
    for secret in ("CompressedSamples", "9RG1", "1940", str(RG1.name)):  # patient fields and the file
        assert secret not in caption
    out = window.export_view(str(tmp_path / "native.png"))
    png = QImage(str(out))
    assert png.height() > 1955 and png.width() > 1841  # native picture + legend column + caption row
    arr = to_array(png)
    np.testing.assert_array_equal(arr[:1955, :1841], to_array(window.canvas.render_native()))
    assert colourful(arr[:1955, 1841:]).max() > 100  # the colour bar
    view = QImage(str(window.export_view(str(tmp_path / "view.png"), mode="view")))
    assert view.width() < 1841  # the on-screen view instead
    # below threshold: no legend column (no heatmap drawn); the caption says why
    with qtbot.waitSignal(window.prediction_shown, timeout=TIMEOUT):
        window.open_model(str(models["high"]))
    assert not window.canvas.overlay_shown and NO_HEATMAP_TEXT in window.export_caption()
    plain = QImage(str(window.export_view(str(tmp_path / "plain.png"))))
    assert plain.width() == 1841 and plain.height() > 1955


# ------------------------------------------------------------------ screening overlays


def test_screening_overlay_follows_the_same_rule(tmp_path):
    import cv2

    from cxr_desktop.imaging import load_image, to_uint8
    from cxr_desktop.screening.heatmaps import write_heatmap_files

    display = to_uint8(load_image(NIH))
    yy, xx = np.mgrid[0:512, 0:512]
    heat = np.exp(-((yy - 300) ** 2 + (xx - 200) ** 2) / (2 * 60.0 ** 2)).astype(np.float32)
    grey = cv2.cvtColor(display, cv2.COLOR_GRAY2BGR).astype(int)

    h_path, o_path = write_heatmap_files(tmp_path, "above.png", heat, display, above_threshold=True, score=0.8)
    over = cv2.imread(str(o_path), cv2.IMREAD_UNCHANGED).astype(int)
    low = heat <= ALPHA_FLOOR
    assert np.abs(over - grey)[low].max() == 0  # not tinted where the map is low
    assert colourful(over[heat > 0.9]).min() > 30  # coloured at the hot spot
    assert cv2.imread(str(h_path), cv2.IMREAD_UNCHANGED).dtype == np.uint16

    h_path, o_path = write_heatmap_files(tmp_path, "below.png", heat, display, above_threshold=False, score=0.1)
    marked = cv2.imread(str(o_path), cv2.IMREAD_UNCHANGED).astype(int)
    assert marked.shape == grey.shape
    band = int(np.argmax(np.abs(marked - grey).max(axis=(1, 2)) == 0))  # first untouched row under the band
    assert 5 < band < 60
    assert np.array_equal(marked[band:], grey[band:])  # no colour at all below the band
    assert colourful(marked[:band]).max() > 30  # the coloured "no heatmap" text
    assert h_path.exists()  # the data map is still written (one file set per scored row)
