"""Small model files for tests that need a real CXR Review model but not a trained one."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def untrained_model_file(path: Path, *, name: str, seed: int, classes: Sequence[str] = ("normal", "abnormal"),
                         head_scale: float = 1.0) -> Path:
    """Save a randomly initialised 64 px model (last class positive) to ``path``.

    ``head_scale`` multiplies the head's weights: larger values spread the scores, so some
    images land above the threshold.
    """
    import torch

    from cxr_desktop.model import init_model, save_model

    model, card = init_model(classes=list(classes), positive_class=classes[-1], weights="none", input_size=64,
                             name=name, seed=seed)
    if head_scale != 1.0:
        with torch.no_grad():
            for p in model.head.parameters():
                p.mul_(head_scale)
    save_model(path, model, card)
    return path
