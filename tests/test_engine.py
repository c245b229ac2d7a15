"""Inference engine: ONNX Runtime == torch, OOM fallback, thread safety, flat memory."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from cxr_desktop.inference.engine import EngineOptions, InferenceEngine, Prediction
from cxr_desktop.model.architecture import build_classifier
from cxr_desktop.model.card import ModelCard, default_preprocessing

SIZE = 128


def _card(n=2, size=SIZE, threshold=0.5):
    classes = ["normal", "abnormal", "other"][:n]
    return ModelCard(name="test", classes=classes, positive_class="abnormal", input_size=size,
                     preprocessing=default_preprocessing(size), decision_threshold=threshold)


def _model(n=2, seed=0):
    torch.manual_seed(seed)
    m = build_classifier(num_classes=n).eval()
    for p in m.head.parameters():
        p.data.mul_(20.0)
    return m


@pytest.fixture(scope="module")
def onnx_engine(tmp_path_factory):
    cache = tmp_path_factory.mktemp("onnx-cache")
    return InferenceEngine(_model(), _card(), model_sha256="ab" * 32,
                           options=EngineOptions(backend="auto", device="cpu", cache_dir=cache))


def test_onnx_backend_matches_torch(onnx_engine):
    assert onnx_engine.backend.name == "onnxruntime-cpu", onnx_engine.notes
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 3, SIZE, SIZE)).astype(np.float32) * 0.5
    with torch.inference_mode():
        ref = torch.softmax(onnx_engine._cpu_model(torch.from_numpy(x)), 1).numpy()
    got = onnx_engine.predict_inputs(x)
    assert np.abs(ref - got).max() <= 1e-4
    # probabilities of a random model may saturate; the features and logits must agree too
    with torch.inference_mode():
        ref_feats = onnx_engine._cpu_model.features(torch.from_numpy(x))
        ref_logits = onnx_engine.head(ref_feats)
        got_feats = onnx_engine.backend.features(x)
        got_logits = onnx_engine.head(got_feats)
    assert float((got_feats - ref_feats).abs().max()) <= 1e-3 * float(ref_feats.abs().max())
    assert float((got_logits - ref_logits).abs().max()) <= 1e-3 * float(ref_logits.abs().max())


def test_onnx_export_cached_per_model_hash(onnx_engine):
    cache = onnx_engine.options.cache_dir
    files = list(cache.glob("*.onnx"))
    assert len(files) == 1 and "abababab" in files[0].name
    mtime = files[0].stat().st_mtime_ns
    again = InferenceEngine(onnx_engine._cpu_model, onnx_engine.card, model_sha256="ab" * 32,
                            options=EngineOptions(device="cpu", cache_dir=cache))
    assert again.backend.name == "onnxruntime-cpu"
    assert files[0].stat().st_mtime_ns == mtime  # reused, not re-exported


def test_prediction_fields():
    card = _card(threshold=0.3)
    p = Prediction.from_probs(np.array([0.6, 0.4]), card, "CPU")
    # the label follows the model's operating point, not the argmax: 0.4 >= 0.3 -> the positive class
    assert p.label == "abnormal" and p.score == pytest.approx(0.4) and p.above_threshold
    below = Prediction.from_probs(np.array([0.75, 0.25]), card, "CPU")
    assert below.label == "normal" and not below.above_threshold
    assert p.model == "test v0"


def test_decide_multiclass_uses_the_threshold_for_the_positive_class_only():
    from cxr_desktop.inference.engine import decide

    card = _card(n=3, threshold=0.3)  # classes normal, abnormal (positive, index 1), other
    probs = np.array([[0.5, 0.3, 0.2],    # positive reaches the threshold
                      [0.3, 0.25, 0.45],  # below: the most probable other class
                      [0.1, 0.8, 0.1]])
    assert decide(probs, card).tolist() == [1, 2, 1]


class _OomBackend:
    """Raises CUDA OOM for batches larger than ``limit`` (or always when limit=0)."""

    name = "fake-cuda"

    def __init__(self, model, limit):
        self.model, self.limit, self.calls = model, limit, []

    def features(self, batch):
        self.calls.append(len(batch))
        if len(batch) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        with torch.inference_mode():
            return self.model.features(torch.from_numpy(batch))


def test_cuda_oom_retries_smaller_then_cpu():
    eng = InferenceEngine(_model(), _card(), options=EngineOptions(backend="torch", device="cpu", max_batch=8))
    x = np.random.default_rng(0).standard_normal((8, 3, SIZE, SIZE)).astype(np.float32)
    expected = eng.predict_inputs(x)
    eng.backend = _OomBackend(eng._cpu_model, limit=2)
    got = eng.predict_inputs(x)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert eng._batch == 2 and any("batch size 2" in n for n in eng.notes)
    eng.backend = _OomBackend(eng._cpu_model, limit=0)
    got = eng.predict_inputs(x)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert eng.device_info.kind == "cpu" and eng.backend.name == "torch-cpu"
    assert any("continuing on the CPU" in n for n in eng.notes)


def test_engine_is_safe_from_several_threads(onnx_engine):
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((2, 3, SIZE, SIZE)).astype(np.float32) for _ in range(6)]
    expected = [onnx_engine.run_batch(x, cam=True) for x in xs]
    results = [None] * len(xs)

    def work(i):
        results[i] = onnx_engine.run_batch(xs[i], cam=True)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r, e in zip(results, expected):
        np.testing.assert_allclose(r.probabilities, e.probabilities, atol=1e-6)
        np.testing.assert_allclose(r.cams, e.cams, atol=1e-5)


def test_rss_flat_over_200_predict_cam_calls(onnx_engine, cxr_dir):
    psutil = pytest.importorskip("psutil")
    from cxr_desktop.imaging import load_image

    img = load_image(cxr_dir / "00000001_000.png")
    proc = psutil.Process()
    for _ in range(20):  # warm-up: allocator pools, ORT arenas
        onnx_engine.predict(img, cam=True)
    base = proc.memory_info().rss
    for _ in range(200):
        res = onnx_engine.predict(img, cam=True)
    grown = (proc.memory_info().rss - base) / 2**20
    assert res.heatmap.shape == img.shape
    assert grown < 30, f"RSS grew {grown:.1f} MiB over 200 calls"
