"""The core and the viewer's Qt-free helpers (cxr_desktop.viewing) never import Qt.

Checked in a fresh interpreter: every module of these packages is imported one by one,
and the first one that brings in PySide6 (or shiboken6) is named.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

QT_FREE_PACKAGES = ("viewing", "imaging", "model", "inference", "scope", "screening", "training")
QT_FREE_MODULES = ("preprocess", "atomic", "errors", "distributed")

_PROBE = r"""
import importlib, json, pkgutil, sys

def qt_modules():
    return sorted(n for n in sys.modules if n.split(".")[0] in ("PySide6", "shiboken6"))

packages, modules = json.loads(sys.argv[1])
names = [f"cxr_desktop.{m}" for m in modules]
for pkg in packages:
    mod = importlib.import_module(f"cxr_desktop.{pkg}")
    names.append(mod.__name__)
    names += [f"{mod.__name__}.{info.name}" for info in pkgutil.iter_modules(mod.__path__)]
culprit = None
for name in names:
    importlib.import_module(name)
    if qt_modules():
        culprit = name
        break
found = qt_modules()
import PySide6.QtCore  # the control: the same look-up sees Qt once it is imported
print(json.dumps({"checked": names, "culprit": culprit, "qt": found, "control": qt_modules()}))
"""


def test_core_and_viewing_import_no_qt():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("QT_QPA_PLATFORM", None)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps([QT_FREE_PACKAGES, QT_FREE_MODULES])],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    viewing = {n for n in result["checked"] if n.startswith("cxr_desktop.viewing.")}
    assert {"cxr_desktop.viewing.display_mapper", "cxr_desktop.viewing.study_scan",
            "cxr_desktop.viewing.window_presets", "cxr_desktop.viewing.viewer_scope",
            "cxr_desktop.viewing.startup_report"} <= viewing
    assert result["culprit"] is None, f"{result['culprit']} imports Qt: {result['qt'][:5]}"
    assert result["qt"] == []
    assert "PySide6.QtCore" in result["control"]  # the check would have seen Qt
