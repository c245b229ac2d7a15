"""``cxr-desktop --self-test``: decode the sample studies, load the default model, predict + CAM.

Runs without a window; prints one JSON line; exit 0 only when everything passed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cxr_desktop import __version__
from cxr_desktop.paths import default_model_path, resources_dir, sample_studies_dir


def _engine(report: dict[str, Any]):
    from cxr_desktop.inference.engine import load_engine, InferenceEngine
    from cxr_desktop.model.weights import init_model

    path = default_model_path()
    if path.exists():
        eng = load_engine(path)
        report["model"] = {"file": path.name, "name": eng.card.display_name,
                           "demonstration": eng.card.demonstration}
    else:
        model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal",
                                 weights="imagenet", name="untrained-self-test")
        eng = InferenceEngine(model, card)
        report["model"] = {"file": None, "name": card.display_name,
                           "note": "no bundled model; a freshly initialised one was used",
                           "warnings": card.warnings}
    report["device"] = eng.device_label
    report["engine_notes"] = list(eng.notes)
    return eng


def run_self_test() -> tuple[bool, dict[str, Any]]:
    """Returns (all passed, report)."""
    from cxr_desktop.errors import CxrError
    from cxr_desktop.imaging import is_image_file, load_image

    t0 = time.perf_counter()
    report: dict[str, Any] = {"self_test": "cxr-desktop", "version": __version__}
    ok = True
    samples_dir = sample_studies_dir()
    samples = sorted(p for p in samples_dir.rglob("*") if p.is_file() and is_image_file(p)) if samples_dir.is_dir() else []
    report["samples_dir"] = samples_dir.name
    if not samples:
        report["samples_error"] = f"no sample studies found in {samples_dir}"
        ok = False
    images = []
    failures = []
    for p in samples:
        try:
            images.append((p, load_image(p)))
        except CxrError as exc:
            failures.append({"file": p.name, "error": str(exc)})
    report["samples_decoded"] = len(images)
    report["samples_failed"] = failures
    ok &= not failures

    # Transfer syntaxes: a small bundled set (packaged builds), each must decode.
    ts_dir = resources_dir() / "selftest"
    ts = {}
    if ts_dir.is_dir():
        for p in sorted(ts_dir.glob("*.dcm")):
            try:
                im = load_image(p)
                ts[p.name] = im.metadata.get("transfer_syntax", "ok")
            except CxrError as exc:
                ts[p.name] = f"FAILED: {exc}"
                ok = False
    report["transfer_syntaxes"] = ts or "no bundled transfer-syntax set (repo checkout)"

    try:
        eng = _engine(report)
        results = []
        for p, im in images[:8]:
            r = eng.predict(im, cam=True)
            good = r.heatmap is not None and r.heatmap.shape == im.shape
            ok &= good
            results.append({"file": p.name, "label": r.prediction.label,
                            "score": round(r.prediction.score, 4), "heatmap_ok": good})
        report["predictions"] = results
        if not results:
            ok = False
    except Exception as exc:  # the self-test reports, never crashes
        report["model_error"] = f"{exc.__class__.__name__}: {exc}"
        ok = False
    report["seconds"] = round(time.perf_counter() - t0, 2)
    report["passed"] = bool(ok)
    return bool(ok), report


def main() -> int:
    ok, report = run_self_test()
    print(json.dumps(report, default=str))
    return 0 if ok else 1
