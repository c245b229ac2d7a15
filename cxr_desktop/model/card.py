"""The model card: everything a model file says about itself."""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
from dataclasses import dataclass, field
from typing import Any

from cxr_desktop.errors import ModelFileError

CARD_FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSING_ID = "cxr-grey-window-stretch"
PREPROCESSING_VERSION = 1


def default_preprocessing(input_size: int = 224) -> dict[str, Any]:
    """Preprocessing description stored on the card (see :mod:`cxr_desktop.preprocess`)."""
    return {
        "id": PREPROCESSING_ID,
        "version": PREPROCESSING_VERSION,
        "input_size": int(input_size),
        "resize": "stretch-area",
        "intensity": "default-window-to-unit-range, MONOCHROME1 inverted",
        "channels": 3,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }


REQUIRED_FIELDS = (
    "format_version",
    "name",
    "version",
    "architecture",
    "head",
    "classes",
    "positive_class",
    "input_size",
    "preprocessing",
    "decision_threshold",
    "provenance",
    "metrics",
)


@dataclass
class ModelCard:
    """Self-description of a model file (stored as JSON in the file's metadata)."""

    name: str
    classes: list[str]
    positive_class: str | None = None
    version: str = "0"
    architecture: str = "resnet50"
    head: dict[str, Any] = field(default_factory=lambda: {"type": "gap_dropout_linear", "dropout": 0.2})
    input_size: int = 224
    preprocessing: dict[str, Any] = field(default_factory=default_preprocessing)
    decision_threshold: float = 0.5
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    demonstration: bool = False
    # The model this one was trained from: {"name", "version", "sha256"} or None; the whole
    # chain of ancestors is in provenance["lineage"] (see cxr_desktop.model.lineage).
    parent: dict[str, Any] | None = None
    intended_use: str = (
        "Decision aid for adult frontal (PA/AP) chest radiographs; not a diagnostic device."
    )
    format_version: int = CARD_FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def positive_index(self) -> int:
        """Index of the class whose probability is the screening score."""
        if self.positive_class is None:
            return len(self.classes) - 1
        return self.classes.index(self.positive_class)

    @property
    def display_name(self) -> str:
        return f"{self.name} v{self.version}"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        """Build and validate a card; raises :class:`ModelFileError` with the reason."""
        if not isinstance(data, dict):
            raise ModelFileError("The model card is not a JSON object.")
        missing = [f for f in REQUIRED_FIELDS if f not in data]
        if missing:
            raise ModelFileError(
                "The model card is missing required fields: " + ", ".join(missing)
                + ". Re-export the model with 'cxr-model' or 'cxr-train'."
            )
        if int(data["format_version"]) > CARD_FORMAT_VERSION:
            raise ModelFileError(
                f"The model file uses card format {data['format_version']}, newer than this "
                f"app understands ({CARD_FORMAT_VERSION}). Update CXR Review."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        card = cls(**kwargs)
        try:
            card.validate()
        except (TypeError, ValueError) as exc:  # a field holds the wrong kind of value
            raise ModelFileError(
                f"The model card has a field of the wrong type ({exc}). "
                "Re-export the model with 'cxr-model' or 'cxr-train'."
            ) from None
        return card

    @classmethod
    def from_json(cls, text: str) -> "ModelCard":
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"The model card is not valid JSON ({exc.__class__.__name__}).") from None
        return cls.from_dict(data)

    def validate(self) -> None:
        """Check internal consistency; raises :class:`ModelFileError`."""
        if self.architecture != "resnet50":
            raise ModelFileError(f"Unsupported architecture {self.architecture!r} (expected resnet50).")
        if not isinstance(self.classes, list) or len(self.classes) < 2:
            raise ModelFileError("The model card must list at least two classes.")
        if not all(isinstance(c, str) and c.strip() for c in self.classes):
            raise ModelFileError("Every class name on the model card must be a non-empty text.")
        if not isinstance(self.head, dict) or not isinstance(self.head.get("type"), str):
            raise ModelFileError("The model card's 'head' must describe the classifier head (a 'type' is required).")
        if len(set(self.classes)) != len(self.classes):
            raise ModelFileError("The model card lists a class twice.")
        if self.positive_class is not None and self.positive_class not in self.classes:
            raise ModelFileError(
                f"The positive class {self.positive_class!r} is not one of the classes {self.classes}."
            )
        if not (isinstance(self.input_size, int) and 32 <= self.input_size <= 1024):
            raise ModelFileError(f"Input size {self.input_size!r} is out of range (32-1024).")
        if not (0.0 <= float(self.decision_threshold) <= 1.0):
            raise ModelFileError("The decision threshold must be between 0 and 1.")
        pre = self.preprocessing
        if not isinstance(pre, dict) or pre.get("id") != PREPROCESSING_ID:
            raise ModelFileError(
                f"Unknown preprocessing {pre.get('id') if isinstance(pre, dict) else pre!r}; "
                f"this app implements {PREPROCESSING_ID!r}."
            )
        if int(pre.get("version", 0)) > PREPROCESSING_VERSION:
            raise ModelFileError("The model needs a newer preprocessing version; update CXR Review.")
        for key in ("mean", "std"):
            vals = pre.get(key)
            if not (isinstance(vals, list) and len(vals) == 3):
                raise ModelFileError(f"The preprocessing '{key}' must have three values.")


def utc_now_iso() -> str:
    """Current UTC time, ISO 8601 to the second (for provenance 'created')."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def software_versions() -> dict[str, str]:
    """Versions recorded in a card's provenance (imports torch lazily)."""
    import torch
    import torchvision

    from cxr_desktop import __version__

    return {
        "cxr_desktop": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }
