"""Building DICOM test files: the file meta and SOP identity every written dataset needs.

Tests and bench scripts (which put ``tests/`` on ``sys.path``) set the attributes and pixels they test.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def new_dataset(sop_class: str = SecondaryCaptureImageStorage) -> Dataset:
    """An empty dataset of ``sop_class`` (Secondary Capture by default) with a fresh SOP Instance UID and
    file meta for explicit VR little endian, ready for ``set_pixel_data`` and ``save_as``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def study_copies(src: Path, folder: Path, n: int, *, new_study: bool = False) -> list[Path]:
    """``n`` instances of one study made from the DICOM file ``src`` (new SOP Instance UIDs, numbered 1..n).

    With ``new_study`` they get a fresh Study and Series Instance UID (a study the PACS has not seen);
    otherwise they keep ``src``'s. Written as ``folder/0000.dcm`` …
    """
    import pydicom

    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(n):
        ds = pydicom.dcmread(src)
        if new_study:
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        p = folder / f"{i:04d}.dcm"
        ds.save_as(p)
        out.append(p)
    return out


def sr_measurement(sr: Dataset, code: str) -> float | None:
    """The value of the SR's NUM content item whose concept has code value ``code`` (searched at any depth)."""
    stack = list(sr.ContentSequence)
    while stack:
        item = stack.pop(0)
        if item.get("ValueType") == "NUM" and item.ConceptNameCodeSequence[0].CodeValue == code:
            return float(item.MeasuredValueSequence[0].NumericValue)
        stack[:0] = list(item.get("ContentSequence", []))
    return None
