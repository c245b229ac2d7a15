"""Help > About and Model > Show model card."""

from __future__ import annotations

import html
import json
import platform
from typing import Any

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

from cxr_desktop import DECISION_AID_NOTICE, __version__


def _esc(value: Any) -> str:
    return html.escape(str(value))


class _TextDialog(QDialog):
    def __init__(self, title: str, body_html: str, parent: QWidget | None = None, size=(620, 520)):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.browser = QTextBrowser(self)
        self.browser.setOpenExternalLinks(False)
        self.browser.setHtml(body_html)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.browser)
        lay.addWidget(buttons)
        self.resize(*size)

    @property
    def text(self) -> str:
        return self.browser.toPlainText()


def about_html(active: Any | None) -> str:
    """Version, the model in use, and the device it runs on with the reason."""
    from PySide6 import __version__ as qt_version

    rows = [("Version", __version__), ("Python", platform.python_version()), ("Qt (PySide6)", qt_version)]
    if active is not None:
        eng = active.engine
        info = getattr(eng, "device_info", None)
        rows += [("Model", active.card.display_name),
                 ("Device in use", eng.device_label),
                 ("Why this device", info.reason if info is not None else "-")]
        notes = list(getattr(eng, "notes", []) or [])
        if notes:
            rows.append(("Engine notes", "; ".join(notes)))
    else:
        rows.append(("Model", "still loading"))
    table = "".join(f"<tr><td><b>{_esc(k)}</b></td><td>{_esc(v)}</td></tr>" for k, v in rows)
    return (f"<h2>CXR Review</h2><p>Chest X-ray review with a ResNet50 decision aid and Grad-CAM.</p>"
            f"<table cellspacing='6'>{table}</table><p><i>{_esc(DECISION_AID_NOTICE)}</i></p>")


class AboutDialog(_TextDialog):
    def __init__(self, active: Any | None, parent: QWidget | None = None):
        super().__init__("About CXR Review", about_html(active), parent, size=(560, 420))


METRIC_NAMES = (("auc", "ROC AUC"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
                ("precision", "Precision"), ("ppv", "PPV"), ("npv", "NPV"), ("f1", "F1"),
                ("accuracy", "Accuracy"), ("threshold", "Threshold"))
_SPLITS = (("validation", "Validation"), ("test", "Test"))


def _metric_cell(m: dict[str, Any], key: str) -> str:
    """One metric with 3 decimals and its 95 % interval: "0.936 (0.898-0.968)"."""
    from cxr_desktop.training.metrics import format_value_ci  # torch-free

    if key not in m:
        return ""
    if key == "threshold":
        try:
            return f"{float(m[key]):.3f}"
        except (TypeError, ValueError):
            return _esc(m[key])
    try:
        return _esc(format_value_ci(m, key))
    except (TypeError, ValueError, IndexError):  # a hand-edited card: show what is there
        return _esc(m.get(key))


def metrics_html(metrics: dict[str, Any]) -> str:
    """The card's validation/test metrics as a table (3 decimals, 95 % intervals), plus what the rest says."""
    if not isinstance(metrics, dict) or not metrics:
        return "<p>No metrics recorded in this model card.</p>"
    splits = [(k, label) for k, label in _SPLITS if isinstance(metrics.get(k), dict)]
    parts = []
    if splits:
        keys = [(k, n) for k, n in METRIC_NAMES if any(k in metrics[s] for s, _ in splits)]
        head = "".join(f"<th align='left'>{_esc(label)}</th>" for _, label in splits)
        rows = []
        for k, name in keys:
            cells = "".join(f"<td>{_metric_cell(metrics[s], k)}</td>" for s, _ in splits)
            rows.append(f"<tr><td><b>{_esc(name)}</b></td>{cells}</tr>")
        counts = []
        for s, _ in splits:
            m = metrics[s]
            n = m.get("n", "?")
            pos = m.get("n_positive")
            pats = f", {m['n_patients']} patients" if "n_patients" in m else ""
            counts.append(f"<td>{_esc(n)} images{_esc(pats)}" + (f", {_esc(pos)} positive" if pos is not None
                                                                   else "") + "</td>")
        rows.append(f"<tr><td><b>Cases</b></td>{''.join(counts)}</tr>")
        cms = []
        for s, _ in splits:
            cm = metrics[s].get("confusion_matrix")
            ok = (isinstance(cm, list) and len(cm) == 2 and all(isinstance(r, list) and len(r) == 2 for r in cm))
            cms.append(f"<td>TN {cm[0][0]}, FP {cm[0][1]}, FN {cm[1][0]}, TP {cm[1][1]}</td>" if ok else "<td></td>")
        rows.append(f"<tr><td><b>Confusion matrix</b></td>{''.join(cms)}</tr>")
        parts.append(f"<table cellspacing='0' cellpadding='3' border='1'><tr><th></th>{head}</tr>"
                     + "".join(rows) + "</table>")
        unit = next((metrics[s].get("ci_unit") for s, _ in splits if metrics[s].get("ci_unit")), None)
        parts.append("<p><small>In brackets: " + _esc(metrics.get("ci") or (f"95 % bootstrap interval over {unit}"
                                                                          if unit else "95 % interval"))
                     + ".</small></p>")
    sel = metrics.get("threshold_selection")
    if isinstance(sel, dict) and sel:
        bits = [f"method {sel.get('method', '?')}"]
        if sel.get("target") is not None:
            bits.append(f"target sensitivity {_num(sel['target'])}")
        if sel.get("split"):
            bits.append(f"chosen on the {sel['split']} split")
        if sel.get("sensitivity") is not None and sel.get("specificity") is not None:
            bits.append(f"there: sensitivity {_num(sel['sensitivity'])}, specificity {_num(sel['specificity'])}")
        if sel.get("note"):
            bits.append(str(sel["note"]))
        parts.append(f"<p><b>Threshold selection:</b> {_esc('; '.join(bits))}</p>")
    rest = {k: v for k, v in metrics.items() if k not in {s for s, _ in splits} | {"ci", "threshold_selection"}}
    if rest:
        parts.append("<p><b>Other recorded values:</b></p><ul>" + "".join(
            f"<li><b>{_esc(k)}</b>: {_esc(_short(v))}</li>" for k, v in sorted(rest.items())) + "</ul>")
    return "".join(parts)


def _num(v: Any) -> str:
    try:
        return f"{float(v):.3f}"
    except (TypeError, ValueError):
        return str(v)


def _short(v: Any) -> str:
    """A value for reading: floats to 3 decimals at any depth, long structures cut."""
    def fmt(x: Any) -> Any:
        if isinstance(x, float):
            return round(x, 3)
        if isinstance(x, dict):
            return {k: fmt(y) for k, y in x.items()}
        if isinstance(x, (list, tuple)):
            return [fmt(y) for y in x]
        return x
    text = json.dumps(fmt(v), sort_keys=True, default=str)
    return text if len(text) <= 400 else text[:397] + "..."


def lineage_html(card: Any) -> str:
    """Parent and ancestors (nearest first), or that the model was not trained from another model file."""
    from cxr_desktop.model.lineage import ancestors, lineage_lines

    if not ancestors(card):
        return "<p>Not trained from another CXR Review model file (no parent recorded).</p>"
    return "<ul>" + "".join(f"<li>{_esc(line.strip())}</li>" for line in lineage_lines(card)) + "</ul>"


def weights_status_text(active: Any) -> str:
    """Whether the weights matched the checksum stored in the card when the file was loaded."""
    if active.path is None:
        return "in memory (not loaded from a file)"
    status = getattr(active.engine, "weights_status", None)
    if not status:
        return "unknown"
    return "verified (tensors match the checksum in the model card)" if status == "verified" else str(status)


def card_html(active: Any) -> str:
    """Everything the model card says, readable: facts, warnings, lineage, metrics table, provenance."""
    card = active.card
    rows = [
        ("Name", card.name), ("Version", card.version), ("Classes", ", ".join(card.classes)),
        ("Positive class", card.positive_class or card.classes[-1]),
        ("Decision threshold", f"{float(card.decision_threshold):.3f}"),
        ("Input size", f"{card.input_size} px"), ("Architecture", card.architecture),
        ("Head", json.dumps(card.head)), ("Intended use", card.intended_use),
        ("Demonstration model", "yes" if card.demonstration else "no"),
        ("File", active.path or "(in memory: not saved)"),
        ("SHA-256", getattr(active.engine, "model_sha256", "") or "-"),
        ("Weights", weights_status_text(active)),
    ]
    table = "".join(f"<tr><td valign='top'><b>{_esc(k)}</b></td><td>{_esc(v)}</td></tr>" for k, v in rows)
    warn = "".join(f"<li>{_esc(w)}</li>" for w in (card.warnings or []))
    parts = [f"<h2>{_esc(card.display_name)}</h2>"]
    if active.untrained:
        parts.append("<p style='color:#c00000'><b>Untrained model: its outputs are meaningless.</b></p>")
    parts.append(f"<table cellspacing='4'>{table}</table>")
    if warn:
        parts.append(f"<h3>Warnings</h3><ul>{warn}</ul>")
    parts.append("<h3>Lineage</h3>" + lineage_html(card))
    parts.append("<h3>Metrics</h3>" + metrics_html(card.metrics))
    prov = {k: v for k, v in (card.provenance or {}).items() if k != "lineage"}  # lineage is shown above
    if prov:
        parts.append("<h3>Provenance</h3><table cellspacing='2'>" + "".join(
            f"<tr><td valign='top'><b>{_esc(k)}</b></td><td>{_esc(_short(v))}</td></tr>"
            for k, v in sorted(prov.items())) + "</table>")
    return "".join(parts)


class ModelCardDialog(_TextDialog):
    def __init__(self, active: Any, parent: QWidget | None = None):
        super().__init__(f"Model card - {active.card.display_name}", card_html(active), parent)
