"""The viewer never ends up without a model: any failure to load the start-up model (refused or
not) falls back to the bundled model with a message naming the file and the reason, and the
model that failed is not remembered.

Failures other than a refusal (out of memory, a library error) cannot be produced by a file
on demand, so those tests make the real loader raise one for one chosen path; every other
model (the bundled one) loads through the real code.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pytestqt")

from cxr_desktop.inference import engine as engine_module  # noqa: E402
from cxr_desktop.model.modelfile import CARD_KEY, save_model  # noqa: E402
from cxr_desktop.model.weights import init_model  # noqa: E402

TIMEOUT = 60_000
ENGINE = {"device": "cpu", "backend": "torch"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A bundled model (resources/models/demo-cxr.safetensors), a chosen model, and one whose card has std 0."""
    root = tmp_path_factory.mktemp("fallback")
    bundled = root / "resources" / "models" / "demo-cxr.safetensors"
    bundled.parent.mkdir(parents=True)
    out = {"resources": root / "resources", "bundled": bundled}
    for name, path, seed in (("Bundled", bundled, 1), ("Chosen", root / "chosen.safetensors", 2)):
        model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal", weights="none",
                                 input_size=64, name=name, seed=seed)
        save_model(path, model, card)
        out[name.lower()] = path
    # the chosen file with std 0 on its card (header edited in place, same length)
    raw = out["chosen"].read_bytes()
    hostile = raw.replace(b'\\"std\\": [0.229, 0.224, 0.225]', b'\\"std\\": [0.000, 0.000, 0.000]')
    assert hostile != raw and len(hostile) == len(raw)
    out["std0"] = root / "std0.safetensors"
    out["std0"].write_bytes(hostile)
    return out


def _fail_for(monkeypatch, path, exc: BaseException) -> None:
    """The real load_engine, except that loading ``path`` raises ``exc``."""
    real = engine_module.load_engine

    def load_engine(p, **kwargs):
        if str(p) == str(path):
            raise exc
        return real(p, **kwargs)

    monkeypatch.setattr(engine_module, "load_engine", load_engine)


@pytest.fixture
def make_window(main_window, app_settings, monkeypatch, models):
    monkeypatch.setenv("CXR_RESOURCES_DIR", str(models["resources"]))

    def make(last_model=None):
        settings = app_settings()
        if last_model:
            settings.last_model = str(last_model)
            settings.add_recent_model(str(last_model))
        return main_window(ENGINE, None, settings=settings, show=False)

    return make


def _start(qtbot, window, model=None):
    with qtbot.waitSignal(window.models.ready, timeout=TIMEOUT) as blocker:
        window.start([], model)
    return blocker.args[0]


def test_remembered_model_failing_with_any_error_falls_back_to_the_bundled_model(qtbot, make_window,
                                                                                 models, monkeypatch):
    _fail_for(monkeypatch, models["chosen"], MemoryError("not enough memory for the weights"))
    w = make_window(last_model=models["chosen"])
    active = _start(qtbot, w)
    assert active.path == str(models["bundled"]) and not active.untrained
    assert active.display_name.startswith("Bundled")
    first = active.notes[0]
    assert "chosen.safetensors could not be used" in first and "MemoryError" in first
    assert "not enough memory" in first and "bundled model is used instead" in first
    assert w.last_message is not None and w.last_message[1] == first  # told to the user
    assert w.classifier.engine is active.engine  # results will come
    assert w.settings.last_model is None  # neither the failed model nor the fallback is remembered
    assert str(models["chosen"]) not in w.settings.recent_models


def test_command_line_model_with_a_hostile_card_is_refused_and_not_remembered(qtbot, make_window, models):
    w = make_window()
    active = _start(qtbot, w, model=str(models["std0"]))
    assert active.path == str(models["bundled"])
    first = active.notes[0]
    assert "std0.safetensors could not be used" in first and "preprocessing.std" in first
    assert w.settings.last_model is None and str(models["std0"]) not in w.settings.recent_models


def test_bundled_model_failing_too_gives_an_untrained_model_with_both_reasons(qtbot, make_window, models,
                                                                             monkeypatch):
    real = engine_module.load_engine

    def load_engine(p, **kwargs):
        if str(p) == str(models["chosen"]):
            raise RuntimeError("simulated library error")
        if str(p) == str(models["bundled"]):
            raise OSError(5, "Input/output error")
        return real(p, **kwargs)

    monkeypatch.setattr(engine_module, "load_engine", load_engine)
    w = make_window(last_model=models["chosen"])
    active = _start(qtbot, w)
    assert active.untrained and active.engine is w.classifier.engine
    text = "\n".join(active.notes)
    assert "chosen.safetensors could not be used: RuntimeError: simulated library error" in text
    assert "An untrained model is used instead" in text
    assert "bundled model (demo-cxr.safetensors) could not be used" in text and "Input/output error" in text
    assert "UNTRAINED MODEL" in w.results.banner.text()


def test_opening_a_model_that_fails_keeps_the_current_one_and_forgets_it(qtbot, make_window, models,
                                                                         monkeypatch):
    w = make_window()
    _start(qtbot, w)
    engine = w.classifier.engine
    _fail_for(monkeypatch, models["chosen"], RuntimeError("simulated failure"))
    with qtbot.waitSignal(w.models.failed, timeout=TIMEOUT) as blocker:
        w.open_model(str(models["chosen"]))
    message = blocker.args[0]
    assert "chosen.safetensors could not be used: RuntimeError: simulated failure" in message
    assert "Still using: Bundled" in message
    assert w.classifier.engine is engine
    assert w.settings.last_model != str(models["chosen"]) and str(models["chosen"]) not in w.settings.recent_models


def test_unverified_bundled_model_says_so_in_the_banner(qtbot, make_window, models, tmp_path, monkeypatch):
    """A model file saved before checksums existed loads, and the banner says its weights are not verified."""
    import struct

    raw = models["bundled"].read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    card = json.loads(header["__metadata__"][CARD_KEY])
    card.pop("tensors_sha256")
    header["__metadata__"][CARD_KEY] = json.dumps(card)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    old_style = tmp_path / "resources" / "models" / "demo-cxr.safetensors"
    old_style.parent.mkdir(parents=True)
    old_style.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    monkeypatch.setenv("CXR_RESOURCES_DIR", str(tmp_path / "resources"))
    w = make_window()
    active = _start(qtbot, w)
    assert active.path == str(old_style) and not active.untrained
    assert "Weights not verified (no checksum stored)" in w.results.banner.text()
