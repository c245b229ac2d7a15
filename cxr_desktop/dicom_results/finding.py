"""What a result object says about one image: the model that scored it and what it found (no pixels).

:class:`ModelInfo` (name, version, file sha256, classes, threshold) comes from
the inference engine; :class:`ImageFinding` from a screening row
(:func:`finding_from_row`) or a single prediction. The Secondary Capture caption
and the Structured Report are both written from these, so they always agree
with the CSV.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cxr_desktop.inference.protocol import Engine
from cxr_desktop.scope.learned import Caution

DECISION_AID_SHORT = "Decision aid - not a diagnosis"


@dataclass(frozen=True)
class ModelInfo:
    """The model behind a result: what the SR's algorithm identification and the caption name."""

    name: str
    version: str
    sha256: str
    positive_class: str
    threshold: float
    cam_method: str = "Grad-CAM"

    @property
    def display_name(self) -> str:
        return f"{self.name} v{self.version}"

    @classmethod
    def from_engine(cls, engine: Engine) -> "ModelInfo":
        card = engine.card
        method = str(engine.options.cam_method or "gradcam")
        pretty = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM",
                  "layercam": "LayerCAM"}.get(method, method)
        return cls(name=str(card.name), version=str(card.version), sha256=str(engine.model_sha256 or ""),
                   positive_class=str(card.classes[card.positive_index]),
                   threshold=float(card.decision_threshold), cam_method=pretty)


@dataclass(frozen=True)
class ImageFinding:
    """One image's outcome: scored (``score`` set) or out of scope (``reason_codes`` / ``reason_text``).

    An out-of-scope image scored on request keeps its reasons and also has a score.
    """

    score: float | None
    above_threshold: bool | None
    in_scope: bool = True
    reason_codes: str = ""
    reason_text: str = ""
    caution: Caution | None = None

    @property
    def scored(self) -> bool:
        return self.score is not None


def finding_from_row(row: Any) -> ImageFinding:
    """From a :class:`cxr_desktop.screening.results.ResultRow` (status ok or out_of_scope)."""
    from cxr_desktop.screening.results import STATUS_OK, STATUS_OUT_OF_SCOPE

    if row.status not in (STATUS_OK, STATUS_OUT_OF_SCOPE):
        raise ValueError("only scored or out-of-scope rows have result objects")
    return ImageFinding(score=row.score, above_threshold=row.above_threshold, in_scope=row.status == STATUS_OK,
                        reason_codes=row.reason if row.status == STATUS_OUT_OF_SCOPE else "",
                        reason_text=_reason_sentence(row.detail) if row.status == STATUS_OUT_OF_SCOPE else "",
                        caution=row.caution)


def _reason_sentence(detail: str) -> str:
    """The row's detail without the leading file name (``name: not scored: ...``)."""
    text = str(detail or "")
    for marker in (": not scored: ", ": out of scope: "):
        if marker in text:
            return text.split(marker, 1)[1]
    return text


def ascii_text(text: str) -> str:
    """Caption text for the Hershey font (ASCII only): common symbols spelled out."""
    table = {"\u2014": "-", "\u2013": "-", "\u2265": ">=", "\u2264": "<=", "\u00d7": "x", "\u2019": "'"}
    return "".join(table.get(ch, ch) if ord(ch) > 126 else ch for ch in text).encode("ascii", "replace").decode()
