"""The model: architecture, card, model files and initial weights.

Names are re-exported lazily, so ``import cxr_desktop.model.card`` (used by the
light preprocessing code) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load on first use
    from cxr_desktop.model.architecture import (
        DEFAULT_HEAD, ClassifierHead, CxrClassifier, FeatureExtractor, build_classifier,
    )
    from cxr_desktop.model.card import ModelCard, default_preprocessing
    from cxr_desktop.model.checkpoint_convert import ConversionResult, convert_checkpoint
    from cxr_desktop.model.modelfile import (
        HEAD_PRESETS, LoadedModel, file_sha256, load_model, read_card, resolve_head, save_model,
    )
    from cxr_desktop.model.weights import (
        IMAGENET_FILES, InitialWeights, find_imagenet_weights, init_model, load_imagenet_into,
    )

_EXPORTS = {
    "architecture": ("CxrClassifier", "ClassifierHead", "FeatureExtractor", "build_classifier", "DEFAULT_HEAD"),
    "card": ("ModelCard", "default_preprocessing"),
    "modelfile": (
        "LoadedModel", "save_model", "load_model", "read_card", "file_sha256", "resolve_head", "HEAD_PRESETS",
    ),
    "checkpoint_convert": ("ConversionResult", "convert_checkpoint"),
    "weights": ("InitialWeights", "find_imagenet_weights", "load_imagenet_into", "init_model", "IMAGENET_FILES"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
