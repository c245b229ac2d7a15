"""Should the classifier score the image on screen? (no Qt)

The viewer shows every image it can decode, but the classifier is only for
chest radiographs: a CT slice, an MR or an ultrasound frame is shown without a
score, with the reason. The rule itself belongs to the screening package's
scope hook (shared with batch screening, so both refuse the same images); this
module only adds the viewer's own fallback for builds without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cxr_desktop.imaging.types import StudyImage

_RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "OT", "SC"})


def _fallback(image: StudyImage) -> str | None:
    modality = str(image.metadata.get("modality") or "").strip().upper()
    if modality and modality not in _RADIOGRAPH_MODALITIES:
        return f"modality {modality} is not a radiograph"
    return None


def out_of_scope_reason(image: StudyImage) -> str | None:
    """None when the image may be scored, else a short reason for the user (no patient data)."""
    try:
        from cxr_desktop.screening.scope import scope_check
    except ImportError:
        return _fallback(image)
    try:
        return scope_check(image)
    except Exception:  # a broken rule must not stop the viewer; fall back to the modality rule
        return _fallback(image)
