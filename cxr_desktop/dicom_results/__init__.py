"""DICOM result objects of the decision aid, Qt-free: a Secondary Capture and a Structured Report per image.

Public API:

- :class:`ModelInfo` (``ModelInfo.from_engine(engine)``), :class:`ImageFinding` (``finding_from_row(row)``);
- :func:`result_datasets` (in memory) and :func:`write_result_objects` (files, atomic) for one image;
- :func:`export_screening_results`: every DICOM row of a screening run (``cxr-screen --dicom-out``);
- :func:`make_secondary_capture`, :func:`compose_picture`, :func:`make_structured_report`: the parts.

Both objects go into new series of the source's study and reference the source image.
"""

from cxr_desktop.dicom_results.export import (
    SC_SUFFIX, SR_SUFFIX, ExportedResult, export_screening_results, is_dicom_file, result_datasets, result_paths,
    save_dataset_atomic, write_result_objects,
)
from cxr_desktop.dicom_results.finding import DECISION_AID_SHORT, ImageFinding, ModelInfo, finding_from_row
from cxr_desktop.dicom_results.secondary_capture import (
    SC_SERIES_DESCRIPTION, caption_lines, compose_picture, make_secondary_capture,
)
from cxr_desktop.dicom_results.structured_report import SR_SERIES_DESCRIPTION, make_structured_report

__all__ = [
    "DECISION_AID_SHORT", "ExportedResult", "ImageFinding", "ModelInfo", "SC_SERIES_DESCRIPTION", "SC_SUFFIX",
    "SR_SERIES_DESCRIPTION", "SR_SUFFIX", "caption_lines", "compose_picture", "export_screening_results",
    "finding_from_row", "is_dicom_file", "make_secondary_capture", "make_structured_report", "result_datasets",
    "result_paths", "save_dataset_atomic", "write_result_objects",
]
