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


def card_html(active: Any) -> str:
    """Everything the model card says, readable."""
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
    ]
    table = "".join(f"<tr><td valign='top'><b>{_esc(k)}</b></td><td>{_esc(v)}</td></tr>" for k, v in rows)
    warn = "".join(f"<li>{_esc(w)}</li>" for w in (card.warnings or []))
    parts = [f"<h2>{_esc(card.display_name)}</h2>"]
    if active.untrained:
        parts.append("<p style='color:#c00000'><b>Untrained model: its outputs are meaningless.</b></p>")
    parts.append(f"<table cellspacing='4'>{table}</table>")
    if warn:
        parts.append(f"<h3>Warnings</h3><ul>{warn}</ul>")
    parts.append("<h3>Metrics</h3><pre>" + _esc(json.dumps(card.metrics, indent=2, sort_keys=True) or "{}")
                 + "</pre>")
    parts.append("<h3>Provenance</h3><pre>" + _esc(json.dumps(card.provenance, indent=2, sort_keys=True,
                                                             default=str)) + "</pre>")
    return "".join(parts)


class ModelCardDialog(_TextDialog):
    def __init__(self, active: Any, parent: QWidget | None = None):
        super().__init__(f"Model card - {active.card.display_name}", card_html(active), parent)
