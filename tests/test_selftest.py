"""`cxr-desktop --self-test` decodes the samples, runs predict + CAM and prints one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys


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


def test_self_test_fails_when_samples_missing(tmp_path):
    empty = tmp_path / "res"
    (empty / "samples").mkdir(parents=True)
    env = dict(os.environ, CXR_CACHE_DIR=str(tmp_path / "cache"), CXR_RESOURCES_DIR=str(empty))
    proc = subprocess.run([sys.executable, "-m", "cxr_desktop.cli.desktop", "--self-test"],
                          capture_output=True, text=True, env=env, timeout=600)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 1 and report["passed"] is False
