"""The review window with a model: worker results, overlay re-blending, caching, model switching,
refused model files and responsiveness while prediction + Grad-CAM run.

Two small model files (input 64 px, random weights) are made once for the module.
"""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication

from cxr_desktop import DECISION_AID_NOTICE
from cxr_desktop.gui.main_window import MainWindow
from window_helpers import load_model, open_and_predict

TIMEOUT = 60_000
ENGINE = {"device": "cpu", "backend": "torch"}  # the ONNX path is exercised by the engine tests and bench


def qimage_to_array(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format.Format_RGB888)
    w, h = img.width(), img.height()
    arr = np.frombuffer(img.constBits(), dtype=np.uint8, count=img.bytesPerLine() * h)
    return arr.reshape(h, img.bytesPerLine())[:, : 3 * w].reshape(h, w, 3).copy()


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    from cxr_desktop.model.modelfile import save_model
    from cxr_desktop.model.weights import init_model

    folder = tmp_path_factory.mktemp("models")
    out = {}
    for name, classes, seed in (("Alpha", ["normal", "abnormal"], 1), ("Beta", ["healthy", "tb", "other"], 2)):
        model, card = init_model(classes=classes, positive_class=classes[1], weights="none", input_size=64,
                                 name=name, seed=seed)
        card.version = "7" if name == "Beta" else "3"
        path = folder / f"{name.lower()}.safetensors"
        save_model(path, model, card)
        out[name] = path
    bad = folder / "research.safetensors"
    bad.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)  # a pickle under a model file name
    out["pickle"] = bad
    return out


@pytest.fixture
def window(main_window):
    return main_window(engine_options=ENGINE)


def count_cam_calls(engine) -> list[int]:
    """Wrap the engine so every backbone/CAM computation is counted."""
    calls: list[int] = []
    original = engine.run_batch

    def counted(*args, **kwargs):
        calls.append(int(bool(kwargs.get("cam"))))
        return original(*args, **kwargs)

    engine.run_batch = counted
    return calls


def view(qtbot, window: MainWindow) -> np.ndarray:
    qtbot.wait(30)
    QApplication.processEvents()
    return qimage_to_array(window.canvas.render_viewport()).astype(int)


def test_worker_result_signal_probabilities_and_heatmap(qtbot, window, model_files, cxr_dir):
    load_model(qtbot, window, model_files["Alpha"])
    outcome = open_and_predict(qtbot, window, cxr_dir / "16747_3_1.jpg")
    res = outcome.result
    assert outcome.error is None and not outcome.from_cache
    probs = res.prediction.probabilities
    assert list(probs) == ["normal", "abnormal"]
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert res.heatmap.shape == (885, 1036) == window.current_image.shape
    assert 0.0 <= res.heatmap.min() and res.heatmap.max() <= 1.0
    # the panel shows it all
    panel = window.results
    assert panel.predicted_label.text() == f"Predicted: {res.prediction.label}"
    assert "Alpha v3" in panel.model_label.text()
    assert "CPU" in panel.device_label.text()
    assert panel.notice_label.text() == DECISION_AID_NOTICE and panel.notice_label.isVisible()
    assert "threshold 0.500" in panel.threshold_label.text()
    assert ("above" if res.prediction.above_threshold else "below") in panel.threshold_label.text()
    for name, p in probs.items():
        assert panel.prob_rows[name][2].text() == f"{100 * p:.1f} %"
    assert not panel.busy
    # the model card warns that it is untrained; the banner shows the card's warnings
    assert panel.banner.isVisible() and "Untrained" in panel.banner.text()
    # the map explains the finding class and is drawn only at or above the decision threshold
    assert window.overlay_panel.legend.class_name == res.cam_class == "abnormal"
    assert window.canvas.overlay_shown == res.prediction.above_threshold


def test_opacity_and_colormap_rebend_without_new_cam(qtbot, window, model_files, cxr_dir):
    load_model(qtbot, window, model_files["Alpha"])
    calls = count_cam_calls(window.classifier.engine)
    open_and_predict(qtbot, window, cxr_dir / "00000001_000.png")
    assert calls == [1]
    window.overlay_panel.set_show_below(True)  # Alpha scores below its threshold: the map on request
    computations = window.classifier.computations
    window.overlay_panel.set_opacity(20)
    v20 = view(qtbot, window)
    window.overlay_panel.set_opacity(80)
    v80 = view(qtbot, window)
    assert np.abs(v80 - v20).mean() > 3, "opacity must change the rendered pixels"
    assert window.canvas.overlay_opacity == pytest.approx(0.8)
    colourings = window.layer.colourings
    window.actions["opacity_down"].trigger()
    assert window.overlay_panel.opacity == 70
    assert window.layer.colourings == colourings  # opacity is a blend only

    window.overlay_panel.set_colormap("Viridis (perceptually uniform)")
    v_viridis = view(qtbot, window)
    assert np.abs(v_viridis - view(qtbot, window)).max() == 0  # stable
    window.overlay_panel.set_colormap("Jet")
    v_jet = view(qtbot, window)
    assert np.abs(v_jet - v_viridis).mean() > 3, "colormap must change the rendered pixels"
    assert window.layer.colourings == colourings + 2  # re-coloured, not recomputed

    window.actions["toggle_overlay"].trigger()
    v_off = view(qtbot, window)
    assert not window.canvas.overlay_shown
    window.actions["toggle_overlay"].trigger()
    assert window.canvas.overlay_shown
    assert np.abs(v_off - v_jet).mean() > 3
    window.overlay_panel.set_opacity(0)
    assert np.abs(view(qtbot, window) - v_off).max() <= 1  # 0 % = the bare image

    assert calls == [1] and window.classifier.computations == computations
    # window/level under the overlay does not recompute either
    window.canvas.toggle_invert()
    view(qtbot, window)
    assert calls == [1]
    # the settings remember the look
    assert window.settings.overlay_colormap == "Jet" and window.settings.overlay_opacity == 0


def test_results_are_cached_per_image_and_model(qtbot, window, model_files, cxr_dir):
    load_model(qtbot, window, model_files["Alpha"])
    calls = count_cam_calls(window.classifier.engine)
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT):
        window.open_paths([str(cxr_dir / "00000001_000.png")])
    assert window.classifier.busy and window.current_outcome is None
    with qtbot.waitSignal(window.prediction_shown, timeout=TIMEOUT) as blocker:
        for _ in range(3):  # asked again while it is being computed: computed once
            window.request_prediction()
    first = blocker.args[0]
    qtbot.waitUntil(lambda: not window.classifier.busy, timeout=TIMEOUT)
    assert len(calls) == 1 and not first.from_cache
    second = open_and_predict(qtbot, window, cxr_dir / "00027426_000.png")
    assert len(calls) == 2 and not second.from_cache
    with qtbot.waitSignal(window.prediction_shown, timeout=TIMEOUT) as blocker:
        window.study_list.select_path(str(cxr_dir / "00000001_000.png"))
    again = blocker.args[0]
    assert again.from_cache and len(calls) == 2
    assert again.result.prediction.probabilities == first.result.prediction.probabilities
    # another explained class is another map (computed once, then cached)
    with qtbot.waitSignal(window.prediction_shown, timeout=TIMEOUT) as blocker:
        window.overlay_panel.class_box.setCurrentIndex(window.overlay_panel.class_box.findData("abnormal"))
    assert blocker.args[0].result.cam_class == "abnormal" and len(calls) == 3
    assert window.overlay_panel.legend.class_name == "abnormal"


def test_moving_on_quickly_supersedes_waiting_predictions(qtbot, window, model_files, cxr_dir):
    load_model(qtbot, window, model_files["Alpha"])
    with qtbot.waitSignal(window.prediction_shown, timeout=TIMEOUT):
        window.open_paths([str(cxr_dir)])
    qtbot.waitUntil(lambda: not window.study_list.scanning, timeout=TIMEOUT)
    n = len(window.study_list.entries())
    assert n > 20
    calls = count_cam_calls(window.classifier.engine)
    shown = []
    window.prediction_shown.connect(lambda o: shown.append((o.key.path, window.current_image.path)))
    for _ in range(12):  # the user holds the "next" key
        window.actions["next_image"].trigger()
        qtbot.wait(5)
    final = window.study_list.current_entry().path
    qtbot.waitUntil(lambda: window.current_outcome is not None and window.current_outcome.key.path == final,
                    timeout=TIMEOUT)
    qtbot.waitUntil(lambda: not window.classifier.busy, timeout=TIMEOUT)
    assert len(calls) < 12, "skipped images must not all be computed"
    assert shown and shown[-1][0] == final
    assert all(result_for == on_screen for result_for, on_screen in shown), "a stale result was shown"
    assert window.loader.superseded + window.classifier.superseded > 0


def test_model_switch_updates_results_panel(qtbot, window, model_files, cxr_dir):
    load_model(qtbot, window, model_files["Alpha"])
    open_and_predict(qtbot, window, cxr_dir / "00000001_000.png")
    assert "Alpha v3" in window.results.model_label.text()
    with qtbot.waitSignal(window.prediction_shown, timeout=TIMEOUT) as blocker:
        window.open_model(str(model_files["Beta"]))
    outcome = blocker.args[0]
    assert list(outcome.result.prediction.probabilities) == ["healthy", "tb", "other"]
    assert "Beta v7" in window.results.model_label.text()
    assert list(window.results.prob_rows) == ["healthy", "tb", "other"]
    assert [window.overlay_panel.class_box.itemData(i) for i in range(window.overlay_panel.class_box.count())] \
        == [None, "healthy", "tb", "other"]
    assert window.settings.last_model == str(model_files["Beta"])
    assert window.settings.recent_models[:2] == [str(model_files["Beta"]), str(model_files["Alpha"])]
    assert [a.text() for a in window.recent_models_menu.actions()][:2] == window.settings.recent_models[:2]
    window.show_model_card()
    assert "Beta v7" in window._dialogs[-1].text and "healthy, tb, other" in window._dialogs[-1].text
    window.show_about()
    about = window._dialogs[-1].text
    assert "Device in use" in about and window.models.active.engine.device_info.reason in about


def test_refused_model_file_keeps_the_viewer_working(qtbot, window, model_files, cxr_dir):
    load_model(qtbot, window, model_files["Alpha"])
    engine = window.classifier.engine
    with qtbot.waitSignal(window.models.failed, timeout=TIMEOUT) as blocker:
        window.open_model(str(model_files["pickle"]))
    message = blocker.args[0]
    assert "pickle" in message.lower() and "Still using: Alpha v3" in message
    assert window.last_message is not None and window.last_message[1] == message
    assert window.classifier.engine is engine and "Alpha v3" in window.results.model_label.text()
    with qtbot.waitSignal(window.models.failed, timeout=TIMEOUT) as blocker:
        window.open_model(str(model_files["Alpha"].parent / "missing.safetensors"))
    assert "does not exist" in blocker.args[0]
    outcome = open_and_predict(qtbot, window, cxr_dir / "00000001_000.png")
    assert outcome.result is not None and outcome.result.prediction.model == "Alpha v3"
    assert window.settings.last_model == str(model_files["Alpha"])


def test_remembered_model_that_vanished_falls_back_with_a_message(qtbot, tmp_path, monkeypatch, model_files,
                                                                  main_window, app_settings):
    monkeypatch.setenv("CXR_RESOURCES_DIR", str(tmp_path / "no-resources"))  # no bundled model either
    settings = app_settings()
    settings.last_model = str(tmp_path / "gone.safetensors")
    w = main_window(ENGINE, None, settings=settings, show=False)
    with qtbot.waitSignal(w.models.ready, timeout=TIMEOUT) as blocker:
        w.start([], None)
    active = blocker.args[0]
    assert active.untrained and active.path is None
    assert "UNTRAINED MODEL" in w.results.banner.text()
    assert w.last_message is not None and "could not be used" in w.last_message[1]
    assert settings.last_model is None


def test_out_of_scope_image_is_not_scored(qtbot, window, model_files, dicom_dir):
    load_model(qtbot, window, model_files["Alpha"])
    calls = count_cam_calls(window.classifier.engine)
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT):
        window.open_paths([str(dicom_dir / "693_UNCI.dcm")])  # a CT slice
    panel = window.results
    assert "OUT OF SCOPE" in panel.scope_label.text() and "CT" in panel.scope_label.text()
    assert panel.threshold_label.text() == "" and not panel.show_anyway_button.isHidden()
    qtbot.wait(100)
    assert calls == [] and not window.canvas.overlay_shown
    with qtbot.waitSignal(window.prediction_shown, timeout=TIMEOUT):
        panel.show_anyway_button.click()  # deliberate: the score, marked out of scope
    assert panel.predicted_label.text().startswith("OUT OF SCOPE") and "=" in panel.threshold_label.text()
    assert "CT" in panel.scope_label.text() and panel.show_anyway_button.isHidden()


def test_export_includes_overlay_and_legend(qtbot, window, model_files, cxr_dir, tmp_path):
    load_model(qtbot, window, model_files["Alpha"])
    open_and_predict(qtbot, window, cxr_dir / "00000001_000.png")
    window.overlay_panel.set_show_below(True)  # Alpha scores below its threshold: the map on request
    window.overlay_panel.set_opacity(50)
    out = window.export_view(str(tmp_path / "view.png"), mode="view")
    img = qimage_to_array(QImage(str(out))).astype(int)
    vp = window.canvas.viewport()
    assert img.shape[1] > vp.width()  # legend column added
    legend = img[: vp.height(), vp.width():]
    assert (legend.max(axis=2) - legend.min(axis=2)).max() > 100  # coloured bar present
    np.testing.assert_array_equal(img[: vp.height(), : vp.width()], view(qtbot, window))


def test_gui_stays_responsive_while_predicting(qtbot, window, model_files, cxr_dir, heartbeat):
    """A 20 ms heartbeat on the GUI thread while images are decoded, predicted and overlaid."""
    load_model(qtbot, window, model_files["Alpha"])
    files = [cxr_dir / n for n in ("covid-19-pneumonia-58-prior.jpg", "16747_3_1.jpg", "siim_pneumothorax_sample.dcm",
                                   "00000001_000.png", "tbx11k_tb_tb0005.png", "tbx11k_health_h0001.png")]  # all in scope
    with heartbeat:
        qtbot.wait(100)
        done = []
        window.prediction_shown.connect(lambda o: done.append(o))
        for f in files:
            n = len(done)
            window.open_paths([str(f)])
            qtbot.waitUntil(lambda: len(done) > n and done[-1].key.path == str(f), timeout=TIMEOUT)
        qtbot.wait(60)
    assert len(done) >= len(files)
    gaps = heartbeat.gaps_ms
    assert gaps.size > 10
    print(f"heartbeat gaps: n={gaps.size} p99={np.percentile(gaps, 99):.0f} ms max={gaps.max():.0f} ms")
    assert gaps.max() < 300.0, f"GUI thread blocked for {gaps.max():.0f} ms"


def test_training_wizard_model_becomes_active(qtbot, window, model_files):
    load_model(qtbot, window, model_files["Alpha"])
    window.actions["train_model"].trigger()
    from cxr_desktop.gui.training_wizard import TrainingWizard

    wizard = window._dialogs[-1]
    assert isinstance(wizard, TrainingWizard)
    with qtbot.waitSignal(window.models.ready, timeout=TIMEOUT) as blocker:
        wizard.model_ready.emit(str(model_files["Beta"]))
    assert blocker.args[0].card.name == "Beta" and "Beta v7" in window.results.model_label.text()
    wizard.close()
