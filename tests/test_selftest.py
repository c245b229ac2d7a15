"""`cxr-desktop --self-test` decodes the samples, runs predict + CAM and prints one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # each test runs the app's self-test in a child process (5-19 s)


def test_self_test_prints_one_json_line_and_passes(cxr_dir, tmp_path):
    env = dict(os.environ, CXR_CACHE_DIR=str(tmp_path / "cache"), QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-m", "cxr_desktop.cli.desktop", "--self-test"],
                          capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout + proc.stderr
    report = json.loads(lines[0])
    assert proc.returncode == 0, report
    assert report["passed"] is True
    from cxr_desktop.paths import sample_files, sample_studies_dir

    # every sample study decodes (the repository's resources/samples: 4 small public images)
    assert report["samples_decoded"] == len(sample_files(sample_studies_dir())) >= 4
    assert report["samples_failed"] == []
    assert report["predictions"] and all(p["heatmap_ok"] for p in report["predictions"])
    assert "pyjpegls (CharLS)" in report["components"]
    assert not any(str(v).startswith("FAILED") for v in report["components"].values()), report["components"]


def test_self_test_fails_naming_a_library_the_installation_lacks(tmp_path):
    """A safeguard that degrades quietly when its library is missing (here CharLS, as a bundle that did
    not trace the lazy import would be) fails the self-test instead of going unnoticed."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "jpeg_ls.py").write_text('raise ImportError("jpeg_ls is not in this installation")\n')
    env = dict(os.environ, CXR_CACHE_DIR=str(tmp_path / "cache"), QT_QPA_PLATFORM="offscreen",
               PYTHONPATH=os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "cxr_desktop.cli.desktop", "--self-test"],
                          capture_output=True, text=True, env=env, timeout=600)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 1 and report["passed"] is False
    assert report["components"]["pyjpegls (CharLS)"].startswith("FAILED: ImportError")
    assert "missing or broken in this installation: pyjpegls (CharLS)" in report["reasons"]


def test_self_test_fails_when_samples_missing(tmp_path):
    empty = tmp_path / "res"
    (empty / "samples").mkdir(parents=True)
    env = dict(os.environ, CXR_CACHE_DIR=str(tmp_path / "cache"), CXR_RESOURCES_DIR=str(empty))
    proc = subprocess.run([sys.executable, "-m", "cxr_desktop.cli.desktop", "--self-test"],
                          capture_output=True, text=True, env=env, timeout=600)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 1 and report["passed"] is False


# --------------------------------------------------------------------------- --self-test --model FILE (issue 16.8)


def _small_model(path):
    from cxr_desktop.model.modelfile import save_model
    from cxr_desktop.model.weights import init_model

    model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal", weights="none",
                             input_size=64, name="given-model", seed=0)
    save_model(path, model, card)
    return path


def test_self_test_with_a_pickle_as_model_fails_saying_why(tmp_path):
    sentinel = tmp_path / "pwned"
    bad = tmp_path / "research.pt"
    import pickle

    class Evil:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    bad.write_bytes(pickle.dumps({"x": Evil()}, protocol=4))
    env = dict(os.environ, CXR_CACHE_DIR=str(tmp_path / "cache"), QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-m", "cxr_desktop.cli.desktop", "--self-test", "--model", str(bad)],
                          capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout + proc.stderr
    report = json.loads(lines[0])
    assert proc.returncode == 1 and report["passed"] is False
    assert report["model"]["file"] == "research.pt" and report["model"]["given"] is True
    assert "pickle" in report["model_error"] and "predictions" not in report
    assert any("model could not be used" in r and "pickle" in r for r in report["reasons"])
    assert not sentinel.exists()


def test_self_test_tests_the_given_model_and_fails_for_a_damaged_one(tmp_path, monkeypatch):
    import struct

    from cxr_desktop.selftest import run_self_test

    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    good = _small_model(tmp_path / "given.safetensors")
    ok, report = run_self_test(str(good))
    assert report["model"]["name"] == "given-model v0" and report["model"]["weights"] == "verified"
    assert ok is True and report["passed"] is True, report
    assert report["predictions"] and all(p["heatmap_ok"] for p in report["predictions"])

    raw = bytearray(good.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    begin, _ = json.loads(raw[8:8 + n])["head.layers.1.weight"]["data_offsets"]
    raw[8 + n + begin] ^= 0x01
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(bytes(raw))
    ok, report = run_self_test(str(damaged))
    assert not ok and "checksum mismatch" in report["model_error"] and "damaged.safetensors" in report["model_error"]
    assert report["reasons"][0].startswith("the model could not be used: ModelFileError")
