"""Write the result objects (Secondary Capture + Structured Report) of DICOM sources to files.

:func:`write_result_objects` does one image (the viewer's "Export as DICOM",
the node); :func:`export_screening_results` does every scored or out-of-scope
DICOM row of a screening run (``cxr-screen --dicom-out DIR``), as a generator,
one :class:`ExportedResult` per row, never stopping on a bad file. Files mirror
the source's relative path: ``<relpath>.sc.dcm`` and ``<relpath>.sr.dcm``,
written atomically. The SR's probability is the row's score (the CSV's), and
the heatmap is computed again with the same engine only where it is drawn
(in scope, at or above the threshold).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from pydicom.dataset import Dataset

from cxr_desktop.dicom_results.finding import ImageFinding, ModelInfo, finding_from_row
from cxr_desktop.dicom_results.secondary_capture import compose_picture, make_secondary_capture
from cxr_desktop.dicom_results.structured_report import make_structured_report
from cxr_desktop.inference.protocol import Engine
from cxr_desktop.paths import path_inside

SC_SUFFIX = ".sc.dcm"
SR_SUFFIX = ".sr.dcm"


@dataclass(frozen=True)
class ExportedResult:
    """One source's outcome: both files written, or ``error`` (a sentence naming only the file)."""

    relpath: str
    sc_path: Path | None = None
    sr_path: Path | None = None
    error: str = ""


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """Whether the file is DICOM (by its content, like the loader)."""
    from cxr_desktop.imaging.loader import sniff_format

    try:
        with open(path, "rb") as fh:
            return sniff_format(fh.read(4096)) == "dicom"
    except OSError:
        return False


def save_dataset_atomic(ds: Dataset, path: str | os.PathLike[str]) -> None:
    from cxr_desktop.atomic import write_bytes_atomic

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    write_bytes_atomic(path, buf.getvalue())


def result_datasets(source: Dataset, display: np.ndarray, heat: np.ndarray | None, finding: ImageFinding,
                    model: ModelInfo) -> tuple[Dataset, Dataset]:
    """(SC, SR) for one image: ``display`` grey uint8 as shown; ``heat`` its map (or None)."""
    sc = make_secondary_capture(source, compose_picture(display, heat, finding, model), model)
    sr = make_structured_report(source, finding, model)
    return sc, sr


def write_result_objects(source_path: str | os.PathLike[str], finding: ImageFinding, model: ModelInfo,
                         sc_path: str | os.PathLike[str], sr_path: str | os.PathLike[str], *,
                         engine: Engine | None = None, heat: np.ndarray | None = None) -> tuple[Dataset, Dataset]:
    """Write the SC and SR of one DICOM source; the map comes from ``heat`` or is computed with ``engine``.

    The map is used only when it is drawn (in scope, scored, at or above the threshold).
    """
    import pydicom

    from cxr_desktop.imaging import load_image
    from cxr_desktop.imaging.display import to_uint8

    source = pydicom.dcmread(source_path, stop_before_pixels=True)
    image = load_image(source_path)
    drawn = finding.in_scope and finding.scored and bool(finding.above_threshold)
    if drawn and heat is None and engine is not None:
        heat = engine.predict(image, cam=True).heatmap
    display = to_uint8(image)
    sc, sr = result_datasets(source, display, heat if drawn else None, finding, model)
    for p in (sc_path, sr_path):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    save_dataset_atomic(sc, sc_path)
    save_dataset_atomic(sr, sr_path)
    return sc, sr


def result_paths(out_dir: str | os.PathLike[str], relpath: str) -> tuple[Path, Path]:
    """(SC, SR) paths for a source's relative path, inside ``out_dir``."""
    target = path_inside(out_dir, relpath, "DICOM output folder")
    return target.with_name(target.name + SC_SUFFIX), target.with_name(target.name + SR_SUFFIX)


def export_screening_results(folder: str | os.PathLike[str], rows: Iterable[Any], engine: Engine,
                             out_dir: str | os.PathLike[str]) -> Iterator[ExportedResult]:
    """SC + SR for every scored or out-of-scope DICOM row under ``folder`` (rows of ``cxr-screen``)."""
    from cxr_desktop.errors import CxrError
    from cxr_desktop.screening.results import STATUS_OK, STATUS_OUT_OF_SCOPE

    model = ModelInfo.from_engine(engine)
    root = Path(folder)
    for row in rows:
        if row.status not in (STATUS_OK, STATUS_OUT_OF_SCOPE):
            continue
        src = root / row.path
        if not is_dicom_file(src):
            continue
        name = Path(row.path).name
        try:
            sc_path, sr_path = result_paths(out_dir, row.path)
            write_result_objects(src, finding_from_row(row), model, sc_path, sr_path, engine=engine)
        except (CxrError, ValueError, AttributeError, KeyError) as exc:
            yield ExportedResult(row.path, error=f"{name}: no DICOM result written ({exc.__class__.__name__}: "
                                                 "the source lacks attributes a result object needs, or cannot be "
                                                 "decoded again).")
            continue
        except OSError as exc:
            yield ExportedResult(row.path, error=f"{name}: the DICOM result cannot be written "
                                                 f"({exc.strerror or exc.__class__.__name__}); check the folder.")
            continue
        yield ExportedResult(row.path, sc_path, sr_path)
