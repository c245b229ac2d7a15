"""DICOM traffic for the cxr-node tests and bench: real radiographs as DX, a broken one, a cut-off transfer.

Used by tests/test_node*.py and bench/bench_node.py. Every object is a real DICOM
file; the sender is a pynetdicom SCU over loopback. :func:`send_partial_then_abort`
sends the first part of a C-STORE's data set on a real association and then aborts
it, so the receiver sees a transfer cut off in the middle (what a crashed modality or
a dropped network does).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parents[1]
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
#: Patient attributes of every synthetic wrapper: tests check that none of them leaks into logs, paths or CSV.
SECRET_NAME = "Zzyzx^Secretpatient"
SECRET_ID = "PID-SECRET-4711"
SECRET_ACCESSION = "ACC-SECRET-99"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def radiograph_sources(shared: Path) -> list[Path]:
    """Real chest radiographs as plain images (PNG/JPEG), in a stable order."""
    cxr = sorted(p for p in (shared / "cxr").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    fig = sorted((shared / "cxr" / "figure1").glob("*.jp*g"))
    return cxr + fig


def wrap_as_dx(image_path: Path, study_uid: str, series_uid: str, *, max_side: int = 640,
               number: int = 1) -> Dataset:
    """A DX For Presentation data set holding ``image_path``'s pixels (grey, 8 bit, longest side <= max_side)."""
    img = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"cannot read {image_path.name}")
    scale = max_side / max(img.shape)
    if scale < 1:
        img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    img = np.ascontiguousarray(img, dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientName, ds.PatientID, ds.AccessionNumber = SECRET_NAME, SECRET_ID, SECRET_ACCESSION
    ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = "19600101", "O", "060Y"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.ReferringPhysicianName = "20260101", "120000", "1", ""
    ds.Modality, ds.PresentationIntentType = "DX", "FOR PRESENTATION"
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ViewPosition, ds.BodyPartExamined, ds.PatientOrientation = "PA", "CHEST", ["L", "F"]
    ds.Manufacturer = "cxr-node test"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = int(img.shape[0]), int(img.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelIntensityRelationship, ds.RescaleIntercept, ds.RescaleSlope = "LIN", 0, 1
    ds.PixelData = img.tobytes()
    return ds


def broken_copy(ds: Dataset) -> Dataset:
    """The same DX with its pixel data cut to a third (a file damaged on the way, still valid DICOM syntax)."""
    bad = pydicom.Dataset(ds)
    bad.file_meta = ds.file_meta
    bad.SOPInstanceUID = bad.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    data = bytes(ds.PixelData)
    bad.PixelData = data[: (len(data) // 3) & ~1]
    return bad


def with_new_instance(path: Path) -> Dataset:
    """A real file re-sent as a new instance of the same study (new SOP Instance UID)."""
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)


# --------------------------------------------------------------------------- sending


def _contexts_for(files: Sequence[Path]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        pair = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        if pair not in seen:
            seen.append(pair)
    return seen


def push(port: int, files: Sequence[Path], *, called_ae: str = "CXRREVIEW", calling_ae: str = "CXRTESTSCU",
         timeout_s: float = 60.0) -> list[tuple[Path, int | None]]:
    """Send ``files`` in one association (released at the end); (file, status or None) per file."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = timeout_s
    for sop, ts in _contexts_for(files):
        ae.add_requested_context(sop, [ts])
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        return [(f, None) for f in files]
    out: list[tuple[Path, int | None]] = []
    try:
        for f in files:
            st = assoc.send_c_store(f)
            out.append((f, int(st.Status) if st and "Status" in st else None))
    finally:
        if assoc.is_established:
            assoc.release()
    return out


def send_partial_then_abort(port: int, path: Path, *, fraction: float = 0.4, called_ae: str = "CXRREVIEW") -> int:
    """Start a C-STORE of ``path`` on a real association, send ``fraction`` of its P-DATA PDUs, then abort.

    Returns how many of the message's PDUs were sent (fewer than all: the data set is incomplete).
    """
    from pynetdicom import AE
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import encode
    from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
    from pynetdicom.pdu_primitives import A_ABORT

    ds = pydicom.dcmread(path)
    ae = AE(ae_title="CXRTESTSCU")
    ae.add_requested_context(ds.SOPClassUID, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        raise RuntimeError("the node refused the association")
    cx = assoc.accepted_contexts[0]
    req = C_STORE()
    req.MessageID, req.Priority = 1, 2
    req.AffectedSOPClassUID, req.AffectedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    req.DataSet = BytesIO(encode(ds, False, True))
    msg = C_STORE_RQ()
    msg.primitive_to_message(req)
    pdus = []
    # PDUs smaller than the receiver's limit are valid: 16 KiB ones, so that there is a middle to cut at.
    for primitive in msg.encode_msg(cx.context_id, min(assoc.acceptor.maximum_length or 16382, 16382)):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        pdus.append(pdu.encode())
    n = max(2, int(len(pdus) * fraction))
    if n >= len(pdus):
        raise ValueError("the data set is too small to be cut off mid-transfer")
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    for data in pdus[:n]:
        raw.sendall(data)
    time.sleep(0.2)  # the receiver is now holding a partial data set
    abort = A_ABORT_RQ()
    prim = A_ABORT()
    prim.abort_source = 0
    abort.from_primitive(prim)
    raw.sendall(abort.encode())
    time.sleep(0.1)
    assoc.abort()
    return n


# --------------------------------------------------------------------------- the node process


@dataclass
class NodeProcess:
    proc: subprocess.Popen
    port: int
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"cxr-node exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"cxr-node did not print {needle!r} within {timeout} s:\n{self.text()[-3000:]}")

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


def start_node(out: Path, model: Path, *, port: int | None = None, log: Path | None = None,
               extra: Iterable[str] = (), env: dict[str, str] | None = None) -> NodeProcess:
    """``python -m cxr_desktop.cli.node`` on a free loopback port; returns once it listens."""
    port = port or free_port()
    log = log or out.parent / f"{out.name}-node-{time.time_ns()}.log"
    cmd = [sys.executable, "-m", "cxr_desktop.cli.node", "--port", str(port), "--out", str(out), "--model",
           str(model), *extra]
    e = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    fh = open(log, "ab")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=e)
    fh.close()
    node = NodeProcess(proc, port, log)
    node.wait_for(f"listening on 127.0.0.1:{port}")
    return node
