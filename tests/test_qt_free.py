"""Everything outside ``cxr_desktop.gui`` never imports Qt: the core, the viewer's Qt-free helpers
(``cxr_desktop.viewing``), the PACS/DICOM-node/results code and the command-line tools.

Checked in a fresh interpreter: every module of the package (subpackages included) except
``cxr_desktop.gui`` is imported one by one, and the first one that brings in PySide6 (or
shiboken6) is named. The same probe run on a module that does import Qt must name it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

QT_LAYER = "cxr_desktop.gui"

_PROBE = r"""
import importlib, json, pkgutil, sys

def qt_modules():
    return sorted(n for n in sys.modules if n.split(".")[0] in ("PySide6", "shiboken6"))

root, skip = sys.argv[1], sys.argv[2]
checked, culprit = [], None

def visit(name):  # import, check, then the package's own modules (the skipped part is never imported)
    global culprit
    if culprit is not None or name == skip or name.startswith(skip + "."):
        return
    checked.append(name)
    mod = importlib.import_module(name)
    if qt_modules():
        culprit = name
        return
    for info in pkgutil.iter_modules(getattr(mod, "__path__", [])):
        visit(f"{name}.{info.name}")

visit(root)
print(json.dumps({"checked": checked, "culprit": culprit, "qt": qt_modules()}))
"""


def _probe(root: str, skip: str, extra_path: Path | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("QT_QPA_PLATFORM", None)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(extra_path), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-c", _PROBE, root, skip], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # imports all 114 modules, torch included, in a fresh interpreter (6 s here)
def test_everything_but_the_qt_layer_imports_no_qt():
    result = _probe("cxr_desktop", QT_LAYER)
    checked = set(result["checked"])
    assert {"cxr_desktop.viewing.display_mapper", "cxr_desktop.viewing.study_scan",
            "cxr_desktop.viewing.window_presets", "cxr_desktop.viewing.viewer_scope",
            "cxr_desktop.viewing.startup_report", "cxr_desktop.preprocess", "cxr_desktop.training.engine",
            "cxr_desktop.model.checkpoint_convert", "cxr_desktop.imaging.dicom_metadata",
            "cxr_desktop.pacs", "cxr_desktop.cli.train"} <= checked
    assert not any(n.startswith(QT_LAYER) for n in checked) and len(checked) > 80
    assert result["culprit"] is None, f"{result['culprit']} imports Qt: {result['qt'][:5]}"
    assert result["qt"] == []


def test_the_probe_names_a_module_that_imports_qt(tmp_path):
    """The control: a package whose second module imports PySide6 is caught, and by that module's name."""
    pkg = tmp_path / "qt_leak_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a_clean.py").write_text("import json\n")
    (pkg / "b_leaks.py").write_text("from PySide6 import QtCore\n")
    (pkg / "c_skipped.py").write_text("from PySide6 import QtGui\n")
    assert _probe("qt_leak_probe", "qt_leak_probe.c_skipped", tmp_path)["culprit"] == "qt_leak_probe.b_leaks"
    clean = _probe("qt_leak_probe", "qt_leak_probe.b_leaks", tmp_path)  # skip the leak: the next one is found
    assert clean["culprit"] == "qt_leak_probe.c_skipped"
