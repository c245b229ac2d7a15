"""Building DICOM test files: the file meta and SOP identity every written dataset needs.

Tests and bench scripts (which put ``tests/`` on ``sys.path``) set the attributes and pixels they test.
"""

from __future__ import annotations

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
