"""The cached ONNX graph is checked against torch once; later starts load it without exporting or checking."""

from __future__ import annotations

import os
import shutil

import pytest

from cxr_desktop.inference.backends import OnnxBackend, _marker_path
from cxr_desktop.inference.engine import EngineOptions, InferenceEngine, load_engine


@pytest.mark.slow
def test_verified_graph_loads_without_a_new_check_and_a_replaced_graph_is_checked_again(tmp_path, monkeypatch):
    from cxr_desktop.model import init_model, save_model

    model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal", weights="none",
                             input_size=64, name="onnx-cache", seed=0)
    path = tmp_path / "m.safetensors"
    save_model(path, model, card)
    cache = tmp_path / "cache"
    first = load_engine(path, options=EngineOptions(device="cpu", backend="onnx", cache_dir=cache))
    assert isinstance(first.backend, OnnxBackend) and first.backend.verified
    graph = first.backend.path
    assert _marker_path(graph).exists()
    exported = graph.stat().st_mtime_ns

    checks = []
    real_check = InferenceEngine._agrees_with_torch
    monkeypatch.setattr(InferenceEngine, "_agrees_with_torch",
                        lambda self, b: checks.append(b) or real_check(self, b))
    again = load_engine(path, options=EngineOptions(device="cpu", backend="onnx", cache_dir=cache))
    assert again.backend.path == graph and graph.stat().st_mtime_ns == exported  # not exported again
    assert checks == []  # and not checked again
    x = __import__("numpy").zeros((1, 3, 64, 64), dtype="float32")
    assert abs(again.predict_inputs(x) - first.predict_inputs(x)).max() == 0.0

    copy = graph.with_name("copy.tmp")  # the graph replaced (as an export does: a new file moved in place)
    shutil.copyfile(graph, copy)
    os.replace(copy, graph)
    third = load_engine(path, options=EngineOptions(device="cpu", backend="onnx", cache_dir=cache))
    assert len(checks) == 1 and third.backend.verified  # checked once more, then trusted again

    _marker_path(graph).write_text("not json")
    assert not OnnxBackend(third._cpu_model, input_size=64, model_sha256=third.model_sha256,
                           cache_dir=cache).verified
