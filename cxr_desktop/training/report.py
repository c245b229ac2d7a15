"""Self-contained HTML training report: curves, ROC, confusion matrix, metrics, Grad-CAM gallery.

Validation figures (:mod:`cxr_desktop.training.validation`): patients per split
against the folder layout, intervals over patients (degenerate ones labelled, not
shown as "1.00 (1.00-1.00)"), PPV/NPV at the stated prevalence, a reliability
diagram with ECE, metrics per input type, the caution rate of the test split and
the starting model on the same test images.

Plots are drawn with matplotlib's Agg canvas (no pyplot, no global backend, so it
is safe next to the Qt GUI) and embedded as base64 PNGs. The gallery shows true
and false positives and negatives from the test split with the heatmaps the
app itself would show: the saved model file, loaded and run through
:class:`~cxr_desktop.inference.engine.InferenceEngine`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from cxr_desktop import DECISION_AID_NOTICE
from cxr_desktop.atomic import write_text_atomic
from cxr_desktop.training.metrics import METRIC_KEYS, format_value_ci, metric_label, roc_curve


def _figure(w: float = 5.0, h: float = 3.6) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}"{w} src="data:image/png;base64,{b64}">'


def curves_png(history: Sequence[Any]) -> str:
    """Loss (train, validation) and validation AUC per epoch, stages marked."""
    fig = _figure(7.5, 3.4)
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(1, len(history) + 1)
    ax1.plot(x, [h.train_loss for h in history], "o-", label="train loss")
    ax1.plot(x, [h.val_loss for h in history], "s-", label="validation loss")
    ax2.plot(x, [h.val_auc for h in history], "d-", color="tab:green", label="validation AUC")
    for ax in (ax1, ax2):
        n1 = sum(1 for h in history if h.stage == 1)
        if 0 < n1 < len(history):
            ax.axvline(n1 + 0.5, color="grey", ls="--", lw=1)
        ax.set_xlabel("epoch (stage 1, then stage 2)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    best = [i + 1 for i, h in enumerate(history) if h.is_best]
    if best:
        ax2.axvline(best[-1], color="tab:red", lw=1, alpha=0.6)
    ax1.set_ylabel("cross-entropy")
    ax2.set_ylabel("AUC")
    ax2.set_ylim(0, 1.02)
    return _png(fig)


def roc_png(curves: Sequence[tuple[str, np.ndarray, np.ndarray, float]], threshold_points: Sequence[tuple[str, float, float]] = ()) -> str:
    """ROC curves ``(label, y, scores, auc)`` with the chosen operating points."""
    fig = _figure(4.2, 4.0)
    ax = fig.subplots()
    for label, y, s, auc in curves:
        if len(set(np.asarray(y).tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    for label, fpr, tpr in threshold_points:
        ax.plot([fpr], [tpr], "o", ms=7, label=label)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _png(fig)


def confusion_png(cm: Sequence[Sequence[int]], labels: Sequence[str], title: str) -> str:
    m = np.asarray(cm)
    fig = _figure(3.6, 3.2)
    ax = fig.subplots()
    ax.imshow(m, cmap="Blues")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(int(m[i, j])), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return _png(fig)


def calibration_png(cal: dict[str, Any]) -> str:
    """Reliability diagram: observed rate of the finding against the mean predicted probability per bin,
    with the number of images per bin below (an empty bin has no point)."""
    fig = _figure(4.4, 4.6)
    ax, axn = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    bins = [b for b in cal["bins"] if b["n"] > 0]
    mids = [(b["lower"] + b["upper"]) / 2 for b in cal["bins"]]
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.plot([b["mean_predicted"] for b in bins], [b["observed"] for b in bins], "o-", color="tab:blue",
            label=f"model (ECE {cal['ece']:.3f})")
    ax.set_ylabel("observed share with the finding")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    width = 1.0 / max(1, int(cal.get("n_bins", len(mids))))
    axn.bar(mids, [b["n"] for b in cal["bins"]], width=width * 0.9, color="tab:grey")
    axn.set_xlabel("predicted probability of the finding")
    axn.set_ylabel("images")
    return _png(fig)


def overlay(grey_u8: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Jet heatmap over a grey image, RGB uint8 (what the viewer shows)."""
    colour = cv2.applyColorMap(np.rint(np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    base = np.repeat(grey_u8[..., None], 3, axis=2).astype(np.float32)
    return np.clip((1 - alpha) * base + alpha * colour, 0, 255).astype(np.uint8)


def _png_array(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    return base64.b64encode(buf.tobytes()).decode("ascii") if ok else ""


def pick_examples(y: np.ndarray, scores: np.ndarray, threshold: float, per_kind: int) -> dict[str, list[int]]:
    """Indices of the most confident TP/FP and the most missed FN/TN cases."""
    pred = scores >= threshold
    kinds = {
        "true positive": np.where(pred & (y == 1))[0],
        "false positive": np.where(pred & (y == 0))[0],
        "false negative": np.where(~pred & (y == 1))[0],
        "true negative": np.where(~pred & (y == 0))[0],
    }
    out = {}
    for k, idx in kinds.items():
        descending = k in ("true positive", "false positive")  # most confident positives first
        order = np.argsort(-scores[idx] if descending else scores[idx], kind="stable")
        out[k] = [int(i) for i in idx[order][:per_kind]]
    return out


def gallery(model_path: str, paths: Sequence[str], rels: Sequence[str], y: np.ndarray, scores: np.ndarray,
            threshold: float, per_kind: int, positive: str, thumb: int = 224) -> list[tuple[str, list[tuple[str, str]]]]:
    """[(kind, [(png b64, caption)])] with Grad-CAM of the positive class from the saved model."""
    from cxr_desktop.errors import ImageError
    from cxr_desktop.imaging import load_image, to_uint8
    from cxr_desktop.preprocess import model_image
    from cxr_desktop.inference.engine import EngineOptions, InferenceEngine
    from cxr_desktop.model.modelfile import load_model

    loaded = load_model(model_path)
    engine = InferenceEngine(loaded.model, loaded.card, model_sha256=loaded.sha256,
                             options=EngineOptions(device="cpu", backend="torch"))
    out = []
    for kind, idx in pick_examples(np.asarray(y), np.asarray(scores), threshold, per_kind).items():
        cells = []
        for i in idx:
            try:
                image = load_image(paths[i])
            except ImageError:
                continue
            res = engine.predict(model_image(image, engine.card.input_size), cam=True, cam_class=positive)
            grey = to_uint8(image)
            scale = thumb / max(grey.shape)
            size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
            g = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
            h = cv2.resize(res.heatmap, size, interpolation=cv2.INTER_LINEAR) if res.heatmap is not None else np.zeros_like(g, np.float32)
            cap = f"{rels[i]} - score {res.prediction.score:.3f}"
            cells.append((_png_array(overlay(g, h)), cap))
        out.append((kind, cells))
    return out


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{nd}f}" if isinstance(v, float) else html.escape(str(v))


def _metrics_table(ev: Any) -> str:
    """Validation and test metrics with 95 % intervals; a degenerate interval is named, not printed as a range.

    The texts are the evaluation's own (:meth:`Evaluation.metric_texts`), as the wizard shows them.
    """
    esc = html.escape
    final = ev.final_metrics
    texts = {name: {t.key: t for t in ev.metric_texts(m)} for name, m in ev.split_metrics()}
    rows = []
    for key in METRIC_KEYS:
        if key in ("ppv", "npv") and "ppv" not in final:
            continue
        label = metric_label(key) + (f" {ev.prevalence_text()}" if key in ("ppv", "npv") else "")
        cells = []
        for name in ("validation", "test"):
            t = texts[name].get(key) if name in texts else None
            if name not in texts:
                cells.append("<td>-</td>")
            elif t is None:
                cells.append("<td>n/a</td>")
            elif t.note:
                cells.append(f"<td>{esc(t.value)} <span class=degenerate>{esc(t.note)}</span></td>")
            else:
                cells.append(f"<td>{esc(t.value)} <span class=ci>{esc(t.interval)}</span></td>")
        rows.append(f"<tr><th>{esc(label)}</th>{''.join(cells)}</tr>")
    head = "<tr><th></th><th>validation (chose threshold)</th><th>test</th></tr>"
    counts = [f"{name}: {ev.counts_text(m)}" for name, m in ev.split_metrics()]
    return f"<table>{head}{''.join(rows)}</table><p class=ci>{esc(ev.interval_text())}; {esc('; '.join(counts))}.</p>"


def _patients_section(data: dict[str, Any]) -> str:
    """Patients per split against what the subfolders suggest, and the patient-key warnings (counts only)."""
    check = data.get("patient_check") or {}
    per = check.get("per_split") or {}
    if not per:
        return ""
    parts = ["<h3>Patients per split</h3><table><tr><th>split</th><th>images</th><th>patients</th>"
             "<th>patients the subfolders suggest</th></tr>"]
    for name, row in per.items():
        sug = row.get("folder_patients")
        parts.append(f"<tr><th>{html.escape(name)}</th><td>{row.get('images', 0)}</td><td>{row.get('patients', 0)}"
                     f"</td><td>{'-' if sug is None else sug}</td></tr>")
    parts.append("</table><p>Every image of a patient is in one split. A patient is the DICOM Patient ID, else "
                 "the file-name pattern's match (one key for both), else the file itself.</p>")
    warnings = check.get("warnings") or []
    if warnings:
        parts.append("<div class=warn><b>Check the patient grouping</b><ul>"
                     + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul></div>")
    return "".join(parts)


def _pct(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def _validation_sections(ev: Any, card: Any) -> str:
    """Starting model, calibration, per input type and caution rate of the test split (when there is one)."""
    m = ev.test_metrics
    if not m:
        return ""
    esc = html.escape
    parts: list[str] = []
    start = m.get("starting_model")
    if isinstance(start, dict):
        parts.append("<h2>Compared with the starting model (same test images)</h2>")
        if "trained" in start:
            parts.append("<table><tr><th></th><th>ROC AUC</th><th>threshold</th><th>sensitivity</th>"
                         "<th>specificity</th></tr>")
            for key, label in (("starting", f"starting model: {start.get('name', '')}"), ("trained", "trained model")):
                r = start[key]
                lo, hi = r.get("auc_ci95", [float("nan")] * 2)
                parts.append(f"<tr><th>{esc(label)}</th><td>{_fmt(r['auc'])} <span class=ci>({_fmt(lo)}-{_fmt(hi)})"
                             f"</span></td><td>{_fmt(r['threshold'])}</td><td>{_fmt(r['sensitivity'])}</td>"
                             f"<td>{_fmt(r['specificity'])}</td></tr>")
            lo, hi = start.get("auc_difference_ci95", [float("nan")] * 2)
            parts.append(f"</table><p>AUC difference (trained - starting): {_fmt(start.get('auc_difference'))} "
                         f"<span class=ci>(95 % paired bootstrap over patients: {_fmt(lo)} to {_fmt(hi)})</span>. "
                         "Each model at its own decision threshold.</p>")
        if start.get("note"):
            parts.append(f"<p class=warn>{esc(start['note'])}</p>")
    cal = m.get("calibration")
    if cal:
        parts.append("<h2>Calibration (test split)</h2>")
        parts.append("<div>" + _img(calibration_png(cal), "reliability diagram") + "</div>")
        parts.append(f"<p>Expected calibration error (ECE, {cal.get('n_bins', 10)} bins): {_fmt(cal.get('ece'))}. "
                     "Points on the diagonal: a predicted probability of 0.7 means the finding is present in 70 % "
                     "of such images. The probability is a score of this model on this data, not a risk for a "
                     "patient elsewhere.</p>")
    by_input = m.get("by_input")
    if by_input:
        parts.append("<h2>Metrics per input type (test split)</h2><table><tr><th>input</th><th>images</th>"
                     "<th>patients</th><th>positive images</th><th>ROC AUC</th><th>sensitivity</th>"
                     "<th>specificity</th></tr>")
        for kind, r in by_input.items():
            cells = [format_value_ci(r, k) for k in ("auc", "sensitivity", "specificity")]
            parts.append(f"<tr><th>{esc(kind)}</th><td>{r['n']}</td><td>{r.get('n_patients') or '-'}</td>"
                         f"<td>{r['n_positive']}</td>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
        parts.append("</table><p class=ci>At the model's decision threshold; 95 % intervals over patients. "
                     "A type with few images gives wide or undefined figures.</p>")
    caution = m.get("caution")
    if caution:
        pos, neg = caution.get("positives") or {}, caution.get("negatives") or {}
        parts.append("<h2>Caution rate (test split)</h2>")
        parts.append(f"<p>{caution['above']} of {caution['n']} test images ({_pct(caution['rate'])}) are above the "
                     f"scope check's distance limit ({caution['limit']:.2f}), so the viewer would mark them "
                     "\"unusual image - interpret with care\". Positives: "
                     f"{pos.get('above', 0)} of {pos.get('n', 0)} ({_pct(pos.get('rate'))}); negatives: "
                     f"{neg.get('above', 0)} of {neg.get('n', 0)} ({_pct(neg.get('rate'))}); Fisher exact test of "
                     f"equal rates: p = {_fmt(caution.get('p_positive_vs_negative'))}.</p>")
    return "\n".join(parts)


CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
.ci{color:#666;font-size:.9em} .degenerate{color:#a05000;font-size:.9em} .warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5em 1em}
.notice{background:#eef4ff;border-left:4px solid #3070d0;padding:.5em 1em}
.gallery{display:flex;flex-wrap:wrap;gap:10px} figure{margin:0;width:230px} figcaption{font-size:.75em;word-break:break-all}
"""


def render_html(result: Any, *, gallery_cells: list[tuple[str, list[tuple[str, str]]]] | None = None,
                shortcut_check: Any = None) -> str:
    """The report as one HTML string (``result`` is a :class:`~cxr_desktop.training.engine.TrainResult`)."""
    card = result.card
    ev = result.evaluation
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Training report: {esc(card.display_name)}"
             f"</title><style>{CSS}</style></head><body>"]
    parts.append(f"<h1>Training report: {esc(card.display_name)}</h1>")
    parts.append(f"<p class=notice>{esc(DECISION_AID_NOTICE)}</p>")
    if card.demonstration:
        parts.append("<p class=warn><b>Demonstration model.</b> Not for clinical use.</p>")
    if card.warnings:
        parts.append("<div class=warn><b>Warnings</b><ul>" + "".join(f"<li>{esc(w)}</li>" for w in card.warnings)
                     + "</ul></div>")
    prov = card.provenance
    parts.append("<h2>Model</h2><table>")
    rows = [("classes", ", ".join(card.classes)), ("positive class", card.positive_class),
            ("decision threshold", f"{card.decision_threshold:.4f}"), ("input size", card.input_size),
            ("created", prov.get("created")), ("training started", prov.get("training_started")),
            ("device", prov.get("device")),
            ("initial weights", (prov.get("initial_weights") or {}).get("source")),
            ("model file sha256", result.sha256), ("software", json.dumps(prov.get("software")))]
    parts += [f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in rows]
    parts.append("</table>")

    data = prov.get("data", {})
    parts.append("<h2>Data</h2><table><tr><th>split</th>" + "".join(f"<th>{esc(c)}</th>" for c in card.classes)
                  + "<th>patients</th></tr>")
    for split, row in (data.get("splits") or {}).items():
        parts.append(f"<tr><th>{esc(split)}</th>" + "".join(f"<td>{row.get(c, 0)}</td>" for c in card.classes)
                     + f"<td>{row.get('groups', 0)}</td></tr>")
    parts.append("</table>")
    parts.append(_patients_section(data))
    parts.append(f"<p>Grouped by: {esc(json.dumps(data.get('grouped_by')))}; skipped files: "
                 f"{data.get('skipped_files', 0)}; duplicate sets: {data.get('duplicate_sets', 0)}; test: "
                 f"{esc(str(data.get('test_source')))}.</p>")

    if result.history:
        parts.append("<h2>Training curves</h2>" + _img(curves_png(result.history), "loss and AUC curves"))
        best = result.best or {}
        parts.append(f"<p>Best epoch: stage {best.get('stage')} epoch {best.get('epoch')} "
                     f"(validation {esc(str(best.get('monitor')))}); that epoch's weights were saved.</p>")

    if ev is not None:
        th = ev.threshold
        parts.append("<h2>Threshold and metrics</h2>")
        how = ("by the user, on its sensitivity/specificity trade-off" if th.method == "user"
               else f"by <b>{esc(th.method)}</b>" + (f" (target sensitivity {th.target:.2f})" if th.target else ""))
        parts.append(f"<p>Threshold {th.threshold:.4f} chosen on the validation split {how}"
                     + f"; validation sensitivity {_fmt(th.sensitivity)}, specificity {_fmt(th.specificity)}. "
                     "Test metrics use that threshold unchanged.</p>")
        parts.append(_metrics_table(ev))
        curves = []
        points = []
        for name, m in ev.split_metrics():
            y, s = ev.positive_scores("val" if name == "validation" else "test")
            curves.append((name, y, s, m["auc"]))
            if len(set(y.tolist())) == 2:
                points.append((f"{name} at threshold", 1 - m["specificity"], m["sensitivity"]))
        imgs = [_img(roc_png(curves, points), "ROC curves")]
        final = ev.final_metrics
        title = "test split" if ev.test_metrics else "validation split"
        if "multiclass" in final:
            imgs.append(_img(confusion_png(final["multiclass"]["confusion_matrix"], card.classes, title),
                             "confusion matrix"))
        else:
            imgs.append(_img(confusion_png(final["confusion_matrix"], ev.confusion_labels(), title),
                             "confusion matrix"))
        parts.append("<div>" + " ".join(imgs) + "</div>")
        for name, m in ev.split_metrics():
            if "multiclass" in m:
                mc = m["multiclass"]
                parts.append(f"<h3>{name}: one-vs-rest per class</h3><table><tr><th>class</th><th>AUC</th>"
                             "<th>sensitivity</th><th>specificity</th><th>precision</th><th>F1</th></tr>")
                for c, row in list(mc["per_class"].items()) + [("macro", mc["macro"])]:
                    parts.append(f"<tr><th>{esc(c)}</th>" + "".join(
                        f"<td>{_fmt(row[k])}</td>" for k in ("auc", "sensitivity", "specificity", "precision", "f1"))
                        + "</tr>")
                parts.append("</table>")
        parts.append(_validation_sections(ev, card))

    if gallery_cells:
        parts.append("<h2>Grad-CAM gallery (test split)</h2><p>Heatmaps of the positive class from the saved "
                     "model file, as the viewer shows them.</p>")
        for kind, cells in gallery_cells:
            parts.append(f"<h3>{esc(kind)} ({len(cells)})</h3><div class=gallery>")
            parts += [f"<figure>{_img(b64, kind, 224)}<figcaption>{esc(cap)}</figcaption></figure>" for b64, cap in cells]
            parts.append("</div>")
    if shortcut_check is not None:
        parts.append(shortcut_section(shortcut_check))

    ood = card.extra.get("ood")
    if ood:
        parts.append(f"<h2>Input safety statistics</h2><p>{esc(ood.get('distance', ''))}; k = {ood.get('k')}, "
                     f"caution limit {ood.get('threshold', float('nan')):.2f}, calibrated on "
                     f"{esc(str(ood.get('threshold_split')))} distances: "
                     f"{esc(str((ood.get('calibration') or {}).get('rule', 'the %sth percentile' % ood.get('percentile'))))}"
                     ". Images above it are scored and marked 'unusual image - interpret with care'.</p>")
    parts.append("<h2>Settings</h2><table>" + "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(json.dumps(v))}</td></tr>" for k, v in (prov.get("settings") or {}).items())
        + "</table>")
    parts.append("<h2>Model card</h2><details><summary>full card (JSON)</summary><pre>"
                 + esc(json.dumps(json.loads(card.to_json()), indent=1)) + "</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, result: Any, *, per_kind: int | None = None) -> None:
    """Render and write the HTML report atomically (Grad-CAM gallery from the test split, else validation)."""
    ev = result.evaluation
    cells = None
    if ev is not None and result.model_path:
        split = "test" if ev.test is not None else "val"
        preds = ev.test if ev.test is not None else ev.val
        y, s = ev.positive_scores(split)
        n = per_kind if per_kind is not None else int((result.card.provenance.get("settings") or {}).get(
            "gallery_per_kind", 3))
        if n > 0 and len(y):
            from cxr_desktop.training.scan import redact_patient

            pattern = (result.card.provenance.get("data") or {}).get("patient_pattern")
            rels = [redact_patient(r, pattern) for r in preds.rels]  # no patient id in captions
            cells = gallery(result.model_path, preds.paths, rels, y, s, result.card.decision_threshold, n,
                            result.card.positive_class or result.card.classes[-1])
    check = None
    if ev is not None and result.model_path:
        try:
            from cxr_desktop.training.shortcuts import check_result

            check = check_result(result)
        except Exception as exc:  # the check must not cost the report
            import logging

            logging.getLogger(__name__).warning("shortcut check failed: %s", exc.__class__.__name__)
        result.shortcut_check = check  # cxr-train's summary prints it without computing it again
    write_text_atomic(path, render_html(result, gallery_cells=cells, shortcut_check=check))


def shortcut_section(check: Any) -> str:
    """HTML of the shortcut check (:mod:`cxr_desktop.training.shortcuts`): heatmap mass on border and marks."""
    esc = html.escape
    rows = "".join(
        f"<tr><th>{esc(g.outcome)}</th><td>{g.n}</td><td>{g.border:.1%}</td><td>{g.border_area:.1%}</td>"
        f"<td>{g.text:.1%}</td><td>{g.text_area:.1%}</td></tr>" for g in check.groups)
    warn = ("<div class=warn><b>Possible shortcut</b><ul>" + "".join(f"<li>{esc(w)}</li>" for w in check.warnings)
            + "</ul></div>") if check.warnings else "<p>No group above the limits.</p>"
    return (f"<h2>Shortcut check</h2><p>Where the heatmaps of the positive class lie: the mean share of heatmap mass "
            f"in the outer {check.border_fraction:.0%} border of the image and on burned-in text and markers (bright, "
            f"high-contrast small marks found in the image), per outcome on the test split (else validation), "
            f"next to the share of the image those regions cover (what a flat heatmap would give). Warning, for "
            f"the called-positive groups (TP, FP: the heatmaps the viewer draws), above "
            f"{check.border_limit:.0%} (border) or {check.text_limit:.0%} (marks): a model that looks there may "
            f"have learnt where a film comes from rather than what it shows.</p>"
            f"<table><tr><th>outcome</th><th>images</th><th>border mass</th><th>border area</th><th>mark mass</th>"
            f"<th>mark area</th></tr>{rows}</table>{warn}")
