"""The model card: everything a model file says about itself."""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
from dataclasses import dataclass, field
from typing import Any

from cxr_desktop.errors import ModelFileError
from cxr_desktop.model.bounded_json import loads_bounded
from cxr_desktop.model.card_checks import REMEDY as CARD_REMEDY
from cxr_desktop.model.card_checks import CardFieldError, check_card, check_format_version

CARD_FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSING_ID = "cxr-grey-window-stretch"
PREPROCESSING_VERSION = 1
ARCHITECTURES = ("resnet50",)
MAX_CARD_BYTES = 2 * 1024 * 1024  # a trained model's card is ~10 kB
MAX_CARD_DEPTH = 16  # nesting of the card's JSON (metrics' confusion matrices are 4 deep)


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
    output_stride: int = 32  # 16: last stage dilated, a 14 x 14 map at 224 px (model/architecture.py)
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
    # sha256 of the tensors (names, types, shapes and bytes; see modelfile.tensors_digest), written
    # by save_model and checked by load_model; None in files saved before it existed.
    tensors_sha256: str | None = None

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
        check_format_version(data["format_version"], CARD_FORMAT_VERSION)
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        card = cls(**kwargs)
        try:
            card.validate()
        except CardFieldError as exc:  # in a file: say what to do about it
            raise ModelFileError(f"{exc.message} {CARD_REMEDY}") from None
        except (TypeError, ValueError) as exc:  # a field holds the wrong kind of value
            raise ModelFileError(
                f"The model card has a field of the wrong type ({exc}). "
                "Re-export the model with 'cxr-model' or 'cxr-train'."
            ) from None
        return card

    @classmethod
    def from_json(cls, text: str) -> "ModelCard":
        """Parse (within :data:`MAX_CARD_BYTES` and :data:`MAX_CARD_DEPTH`) and validate a card."""
        if not isinstance(text, str):
            raise ModelFileError("The model card is not text.")
        data = loads_bounded(text, what="the model card", max_bytes=MAX_CARD_BYTES, max_depth=MAX_CARD_DEPTH)
        return cls.from_dict(data)

    def validate(self) -> None:
        """Check every field's type and range; raises :class:`ModelFileError` naming the field."""
        check_card(self, format_version=CARD_FORMAT_VERSION, architectures=ARCHITECTURES,
                   preprocessing_id=PREPROCESSING_ID, preprocessing_version=PREPROCESSING_VERSION)


def new_card(
    *, name: str, classes: list[str], positive_class: str | None, head: dict[str, Any], input_size: int,
    provenance: dict[str, Any] | None = None, warnings: list[str] | None = None,
) -> ModelCard:
    """The card of a model made here (initialised or converted, not yet trained here): default
    preprocessing for ``input_size``, threshold 0.5, no metrics. Checked at once: a bad argument
    (classes, positive class, sizes) is the caller's, so it raises ``ValueError``."""
    card = ModelCard(
        name=name,
        classes=list(classes),
        positive_class=positive_class,
        head=head,
        input_size=int(input_size),
        preprocessing=default_preprocessing(int(input_size)),
        decision_threshold=0.5,
        provenance=dict(provenance or {}),
        metrics={},
        warnings=list(warnings or []),
    )
    try:
        card.validate()
    except ModelFileError as exc:
        raise ValueError(exc.message) from None
    return card


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
