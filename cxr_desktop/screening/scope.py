"""Is an image something the classifier may score? (hook for the input-safety check)

:func:`scope_check` is called once per decoded image by the screening workers;
it returns ``None`` when the image may be scored, else a short reason that goes
into the ``reason`` column of an ``out_of_scope`` row (the model is not run on
it). This version only looks at the DICOM modality: a CT slice, an MR or an
ultrasound frame is not a chest radiograph. The fuller input-safety check
(issue 7) replaces the body of :func:`scope_check`; callers need not change.
"""

from __future__ import annotations

from cxr_desktop.imaging.types import StudyImage

#: DICOM modalities a projection radiograph may carry (OT/SC: scanned or exported films).
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "OT", "SC"})


def scope_check(image: StudyImage) -> str | None:
    """``None`` if the image may be scored, else why not (for the ``reason`` column)."""
    modality = str(image.metadata.get("modality") or "").strip().upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        return f"modality {modality} is not a radiograph"
    return None
