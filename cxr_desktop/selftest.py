"""``cxr-desktop --self-test [--model FILE]``: decode the sample studies, load the model, predict + CAM,
and use once each library that a feature loads only when needed (:mod:`cxr_desktop.runtime_components`).

The model is the one given with ``--model`` (a file that is refused fails the test: it is
never replaced by the bundled model), else the bundled default model. Runs without a
window; prints one JSON line; exit 0 only when everything passed; ``reasons`` says why not.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cxr_desktop import __version__
from cxr_desktop.paths import default_model_path, resources_dir, sample_studies_dir


def _engine(report: dict[str, Any], model: str | None = None):
    from cxr_desktop.inference.engine import load_engine, InferenceEngine
    from cxr_desktop.model.weights import init_model

    path = Path(model) if model else default_model_path()
    if model or path.exists():
        report["model"] = {"file": path.name, "given": bool(model)}
        eng = load_engine(path)
        report["model"].update(name=eng.card.display_name, demonstration=eng.card.demonstration,
                               weights=eng.weights_status)
    else:
        model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal",
                                 weights="imagenet", name="untrained-self-test")
        eng = InferenceEngine(model, card)
        report["model"] = {"file": None, "name": card.display_name,
                           "note": "no bundled model; a freshly initialised one was used",
                           "warnings": card.warnings}
    report["device"] = eng.device_label
    report["device_reason"] = eng.device_info.reason
    report["engine_notes"] = list(eng.notes)
    return eng


def bundle_info() -> dict[str, Any] | None:
    """The packaged build's description (variant, version, build date), None in a checkout."""
    path = resources_dir() / "bundle.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"error": "bundle.json unreadable"}
    return {k: info.get(k) for k in ("variant", "version", "built_utc", "glibc")}


def check_transfer_syntaxes(ts_dir: Path) -> tuple[bool, dict[str, str]]:
    """Decode every file of the bundled transfer-syntax set; (all passed, {name: result}).

    With the ``manifest.json`` written at build time (packaging/collect_samples.py) each file
    must also report the expected transfer syntax and size, every required syntax must have a
    file, and the pydicom decoder plugins the build machine had for it (pylibjpeg for JPEG,
    JPEG-LS and JPEG 2000) must be available here too - else a plugin whose entry points were
    not bundled would go unnoticed wherever a fallback decoder exists.
    """
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    from cxr_desktop.errors import CxrError
    from cxr_desktop.imaging import load_image

    manifest_path = ts_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    except (OSError, ValueError) as exc:
        return False, {"manifest.json": f"FAILED: unreadable ({exc.__class__.__name__})"}
    entries = manifest.get("files") or [{"file": p.name} for p in sorted(ts_dir.glob("*.dcm"))]
    ok = True
    results: dict[str, str] = {}
    for entry in entries:
        name = entry.get("name") or entry["file"]
        uid = entry.get("uid")
        try:
            im = load_image(ts_dir / entry["file"])
        except CxrError as exc:
            results[name] = f"FAILED: {exc}"
            ok = False
            continue
        got = im.metadata.get("transfer_syntax", "ok")
        problems = []
        if uid and got != UID(uid).name:
            problems.append(f"read as {got!r}, expected {UID(uid).name!r}")
        if entry.get("shape") and list(im.shape) != list(entry["shape"]):
            problems.append(f"shape {tuple(im.shape)}, expected {tuple(entry['shape'])}")
        wanted_plugins = set(entry.get("plugins") or [])
        if uid and wanted_plugins:
            have = set(get_decoder(UID(uid)).available_plugins)
            if wanted_plugins - have:
                problems.append(f"decoder plugin(s) {sorted(wanted_plugins - have)} not available")
        results[name] = f"FAILED: {'; '.join(problems)}" if problems else got
        ok &= not problems
    listed = {e.get("uid") for e in entries}
    for uid in manifest.get("required", []):
        if uid not in listed:
            results[UID(uid).name] = "FAILED: no file for this required transfer syntax"
            ok = False
    if not entries:
        ok = False
        results["-"] = "FAILED: the transfer-syntax folder is empty"
    return ok, results


def run_self_test(model: str | None = None) -> tuple[bool, dict[str, Any]]:
    """Returns (all passed, report); ``model``: the model file to test instead of the bundled one."""
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
    if ts_dir.is_dir():
        ts_ok, ts = check_transfer_syntaxes(ts_dir)
        report["transfer_syntaxes"] = ts
        ok &= ts_ok
    else:
        report["transfer_syntaxes"] = "no bundled transfer-syntax set (repo checkout)"
    from cxr_desktop.runtime_components import check_components

    components_ok, report["components"] = check_components()  # libraries whose absence would go unnoticed
    ok &= components_ok
    bundle = bundle_info()
    if bundle:
        report["bundle"] = bundle

    try:
        eng = _engine(report, model)
        from cxr_desktop.scope import check_image, check_learned, from_loaded

        learned = from_loaded(eng)  # input safety as the viewer applies it: rules refuse, learned check cautions
        report["learned_check"] = learned.status
        results = []
        for p, im in images[:8]:
            r = eng.predict(im, cam=True)
            good = r.heatmap is not None and r.heatmap.shape == im.shape
            ok &= good
            caution = check_learned(r.pooled, learned) if r.pooled is not None else None
            results.append({"file": p.name, "label": r.prediction.label,
                            "score": round(r.prediction.score, 4), "heatmap_ok": good,
                            "out_of_scope": check_image(im).codes,
                            "caution": None if caution is None else caution.short})
        report["predictions"] = results
        if not results:
            ok = False
    except Exception as exc:  # the self-test reports, never crashes
        report["model_error"] = f"{exc.__class__.__name__}: {exc}"
        ok = False
    report["seconds"] = round(time.perf_counter() - t0, 2)
    report["passed"] = bool(ok)
    if not ok:
        report["reasons"] = _reasons(report)
    return bool(ok), report


def _reasons(report: dict[str, Any]) -> list[str]:
    """Why the self-test failed, one short sentence per problem (for the JSON line)."""
    out = []
    if "model_error" in report:
        out.append(f"the model could not be used: {report['model_error']}")
    elif not report.get("predictions"):
        out.append("no prediction was made (no sample decoded)")
    elif not all(p.get("heatmap_ok") for p in report["predictions"]):
        out.append("a heatmap did not match its image")
    if report.get("samples_error"):
        out.append(report["samples_error"])
    if report.get("samples_failed"):
        out.append(f"{len(report['samples_failed'])} sample studies did not decode")
    missing = [name for name, v in report.get("components", {}).items() if str(v).startswith("FAILED")]
    if missing:
        out.append(f"missing or broken in this installation: {', '.join(missing)}")
    ts = report.get("transfer_syntaxes")
    if isinstance(ts, dict) and any(str(v).startswith("FAILED") for v in ts.values()):
        out.append("a bundled transfer-syntax file did not decode as expected")
    return out or ["see the report"]


def main(model: str | None = None) -> int:
    ok, report = run_self_test(model)
    print(json.dumps(report, default=str))
    return 0 if ok else 1
