"""cxr-node --forward against a real Orthanc: SC + SR land in the source study; an unreachable PACS is retried.

The study goes to Orthanc first (as in a hospital: the PACS routes it to the node),
then to the node; the node screens it and sends the results back with C-STORE. The
PACS is down when the first results are due: they are owed, and sent once it is up.
Checked through Orthanc's REST API: the new SR and SC series sit in the same study,
the SR's probability equals the worklist's score, and dciodvfy finds no error in them.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from node_traffic import push, radiograph_sources, sop_uid, start_node, wrap_as_dx, write
from orthanc_fixture import OrthancServer, orthanc_binary
from model_builders import untrained_model_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return untrained_model_file(tmp_path_factory.mktemp("node-fwd-model") / "model.safetensors",
                                name="node-test", seed=1, classes=("normal", "pneumonia"))


def _probability(sr: pydicom.Dataset) -> float:
    """The 'Probability of finding' NUM item of the SR (searched through the content tree)."""
    stack = list(sr.ContentSequence)
    while stack:
        item = stack.pop()
        name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
        if item.get("ValueType") == "NUM" and name == "Probability of finding":
            return float(item.MeasuredValueSequence[0].NumericValue)
        stack.extend(item.get("ContentSequence", []))
    raise AssertionError("no probability in the SR")


def _wait_log(node, needle: str, timeout: float) -> None:
    node.wait_for(needle, timeout=timeout)


def test_forward_sends_sc_and_sr_into_the_source_study_and_retries_when_the_pacs_is_down(
        tmp_path, model_file, shared_data, monkeypatch):
    if orthanc_binary() is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb); CI installs it")
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    pacs = OrthancServer(tmp_path / "orthanc", our_ae="CXRREVIEW")
    cfg = tmp_path / "pacs.json"
    cfg.write_text(json.dumps({"format": "cxr-pacs-servers", "version": 1, "servers": [
        {"kind": "dimse", "name": "orthanc", "host": "127.0.0.1", "port": pacs.dicom_port, "called_ae": pacs.aet,
         "our_ae": "CXRREVIEW", "timeout_s": 10}]}))
    st = generate_uid()
    files = [write(wrap_as_dx(p, st, generate_uid(), number=i + 1), tmp_path / f"in/{i}.dcm")
             for i, p in enumerate(radiograph_sources(shared_data)[:2])]
    out = tmp_path / "node"
    node = start_node(out, model_file, extra=["--study-timeout", "2", "--workers", "0", "--forward", "orthanc",
                                              "--pacs-config", str(cfg), "--forward-retry", "1"])
    try:
        assert [s for _, s in push(node.port, files)] == [0, 0]
        _wait_log(node, "results not sent", 120)  # the PACS is down: owed, not lost
        assert not (out / "forwarded.jsonl").exists()
        with pacs:
            assert [s for _, s in push(pacs.dicom_port, files, called_ae=pacs.aet)] == [0, 0]
            _wait_log(node, "results of 2 image(s) sent to orthanc", 60)  # the retry delivers them
            found = pacs.rest("/tools/lookup", method="POST", data=st.encode())
            study_id = [x["ID"] for x in found if x["Type"] == "Study"][0]
            series = pacs.rest(f"/studies/{study_id}/series")
            modalities = sorted(s["MainDicomTags"].get("Modality", "") for s in series)
            assert modalities.count("SR") == 1 and len(series) == 4, modalities  # 2 source series + SC + SR
            with open(out / "worklist.csv", newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.DictReader(fh))
            scores = {}
            for r in rows:
                scores[sop_uid(out / r["path"])] = float(r["score"])
            checked = 0
            for s in series:
                for inst in pacs.rest(f"/series/{s['ID']}/instances"):
                    ds = pydicom.dcmread(pacs_file(pacs, inst["ID"], tmp_path))
                    assert ds.StudyInstanceUID == st
                    if ds.Modality == "SR":
                        ref = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
                            .ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                        assert _probability(ds) == pytest.approx(scores[ref], abs=1e-6)
                        checked += 1
                    elif ds.SOPClassUID.startswith("1.2.840.10008.5.1.4.1.1.7"):
                        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in scores
                        checked += 1
            assert checked == 4  # an SC and an SR for each of the 2 images
            assert _dciodvfy_errors(tmp_path / "from-pacs") == []
            # A clean stop and a restart send nothing twice.
            assert node.terminate() == 0
            node = start_node(out, model_file, extra=["--study-timeout", "2", "--workers", "0", "--forward",
                                                      "orthanc", "--pacs-config", str(cfg)])
            time.sleep(1.0)
            assert "sent to orthanc" not in node.text()
            sent = [json.loads(x)["path"] for x in (out / "forwarded.jsonl").read_text().splitlines()]
            assert len(sent) == len(set(sent)) == 2
    finally:
        if node.proc.poll() is None:
            node.terminate()


def pacs_file(pacs: OrthancServer, instance_id: str, tmp_path: Path) -> Path:
    d = tmp_path / "from-pacs"
    d.mkdir(exist_ok=True)
    p = d / f"{instance_id}.dcm"
    p.write_bytes(pacs.rest(f"/instances/{instance_id}/file"))
    return p


def _dciodvfy_errors(folder: Path) -> list[str]:
    """dciodvfy's error lines for the result objects (SC and SR) fetched from the PACS."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools); CI installs it")
    errors = []
    for p in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        if ds.Modality != "SR" and not ds.SOPClassUID.startswith("1.2.840.10008.5.1.4.1.1.7"):
            continue
        res = subprocess.run([tool, str(p)], capture_output=True, text=True, timeout=60)
        errors += [f"{p.name}: {ln}" for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
    return errors
