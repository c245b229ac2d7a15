"""Hospital integration against a REAL Orthanc (issue 13): echo, C-STORE, C-FIND, C-MOVE / C-GET /
WADO-RS retrieve into the cache, screening, SC + SR sent back (C-STORE, STOW-RS), failure paths.

One Orthanc per module (tests/orthanc_fixture.py); skipped with a clear message only where the
Orthanc binary is absent (CI installs it).
"""

from __future__ import annotations

import csv
import io
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_builders import sr_measurement, study_copies
from orthanc_fixture import free_port

from cxr_desktop.pacs import (
    DicomWebServer, DimseServer, PacsError, PacsProblem, RetrieveDone, RetrieveProgress, StudyCache, StudyQuery,
    echo, find_studies, retrieve_study, send_files,
)

RADIOGRAPHS = ("cxr/siim_pneumothorax_sample.dcm", "dicom/RG1_J2KI.dcm")
OUR_AE = "CXRTEST"


@pytest.fixture()
def dimse(pacs) -> DimseServer:
    return DimseServer("orthanc", "127.0.0.1", pacs.dicom_port, pacs.aet, our_ae=OUR_AE, our_port=pacs.our_port,
                       timeout_s=10)


@pytest.fixture()
def web(pacs) -> DicomWebServer:
    return DicomWebServer("orthanc-web", pacs.dicomweb_url, timeout_s=10)


@pytest.fixture()
def sources(shared_data) -> list[Path]:
    return [shared_data / p for p in RADIOGRAPHS]


def _upload(server: DimseServer, files: list[Path]) -> None:
    last = None
    for last in send_files(server, files):
        pass
    assert last is not None and last.sent == len(files) and not last.failed


def _uid(path: Path, keyword: str = "StudyInstanceUID") -> str:
    return str(getattr(pydicom.dcmread(path, stop_before_pixels=True), keyword))


def _cache_entries(cache: StudyCache) -> list[str]:
    return sorted(p.name for p in cache.root.iterdir())


def _run(gen):
    events = list(gen)
    assert isinstance(events[-1], RetrieveDone)
    return events


# --------------------------------------------------------------------------- the whole path


def test_echo_dimse_and_dicomweb(dimse, web):
    assert 0 < echo(dimse) < 10
    assert 0 < echo(web) < 10


@pytest.mark.slow
def test_store_find_retrieve_screen_and_send_back(dimse, web, pacs, sources, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "app-cache"))
    _upload(dimse, sources)
    rows = find_studies(dimse, StudyQuery())  # CR / DX by default
    assert sorted(r.study_uid for r in rows) == sorted(_uid(p) for p in sources)
    assert all(r.images == 1 and "CR" in r.modalities for r in rows)
    assert "patient" not in repr(rows[0]).lower() and rows[0].patient_id not in repr(rows[0])
    web_rows = find_studies(web, StudyQuery())
    assert sorted(r.study_uid for r in web_rows) == sorted(r.study_uid for r in rows)

    # C-MOVE, C-GET and WADO-RS each retrieve every study completely, as the PACS holds it
    got = {}
    for method, server in (("move", dimse), ("get", dimse), ("wado", web)):
        cache = StudyCache(tmp_path / f"cache-{method}")
        for row in rows:
            events = _run(retrieve_study(server, row.study_uid, cache=cache, method=method))
            done = events[-1]
            assert not done.from_cache and len(done.files) == 1
            assert any(isinstance(e, RetrieveProgress) and e.received == 1 for e in events)
            assert _uid(done.files[0], "SOPInstanceUID") in {_uid(p, "SOPInstanceUID") for p in sources}
            got.setdefault(method, []).append(done.files[0])
        assert (cache.root.stat().st_mode & 0o777) == 0o700
        again = _run(retrieve_study(server, rows[0].study_uid, cache=cache, method=method))
        assert again[-1].from_cache and len(again) == 1  # a cached study is not fetched again

    # screen what C-MOVE brought, with the bundled model; SC + SR for each DICOM
    from cxr_desktop.cli.screen import main as screen_main

    folder = tmp_path / "retrieved"
    folder.mkdir()
    for i, f in enumerate(got["move"]):
        shutil.copy(f, folder / f"study{i}.dcm")
    shutil.copy(sources[0].parents[1] / "cxr" / "00000001_000.png", folder / "plain.png")  # not DICOM: no SC/SR
    out_csv, dicom_out = tmp_path / "results.csv", tmp_path / "dicom-results"
    err = io.StringIO()
    assert screen_main([str(folder), "--out", str(out_csv), "--workers", "0", "--dicom-out", str(dicom_out)],
                       stderr=err) == 0, err.getvalue()
    with open(out_csv, encoding="utf-8-sig") as fh:
        csv_rows = {r["path"]: r for r in csv.DictReader(fh)}
    assert set(csv_rows) == {"study0.dcm", "study1.dcm", "plain.png"}
    del csv_rows["plain.png"]
    assert "DICOM results (SC + SR): 2 written" in err.getvalue()
    sc_files = sorted(dicom_out.glob("*.sc.dcm"))
    sr_files = sorted(dicom_out.glob("*.sr.dcm"))
    assert len(sc_files) == len(sr_files) == 2

    # dciodvfy: no error on any object we write
    for f in sc_files + sr_files:
        report = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True, timeout=60)
        text = report.stdout + report.stderr
        assert not [ln for ln in text.splitlines() if ln.startswith("Error")], f"{f.name}:\n{text}"

    # send back: SC by C-STORE, SR by STOW-RS
    list(send_files(dimse, sc_files))
    list(send_files(web, sr_files))

    # Orthanc's REST API: the new series sit in the same studies; the SR's probability is the CSV's score
    for name, row in csv_rows.items():
        src = folder / name
        study_uid = _uid(src)
        found = pacs.rest("/tools/lookup", method="POST", data=study_uid.encode())
        study_id = [x["ID"] for x in found if x["Type"] == "Study"][0]
        series = pacs.rest(f"/studies/{study_id}/series")
        descs = sorted(s["MainDicomTags"].get("SeriesDescription", "") for s in series)
        assert len(series) == 3, descs
        assert any("AI heatmap" in d for d in descs) and any("AI report" in d for d in descs)
        sr_series = [s for s in series if "AI report" in s["MainDicomTags"].get("SeriesDescription", "")][0]
        sr_bytes = pacs.rest(f"/instances/{sr_series['Instances'][0]}/file")
        sr = pydicom.dcmread(io.BytesIO(sr_bytes))
        assert sr.StudyInstanceUID == study_uid
        prob = sr_measurement(sr, "CXR001")
        assert prob is not None, "no CXR001 measurement in the SR"
        assert prob == pytest.approx(float(row["score"]), abs=5e-7)
        assert sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
            .ReferencedSOPSequence[0].ReferencedSOPInstanceUID == _uid(src, "SOPInstanceUID")


# --------------------------------------------------------------------------- failures


def test_unreachable_port_is_clear(tmp_path):
    dead = free_port()
    for server in (DimseServer("gone", "127.0.0.1", dead, "ORTHANC", timeout_s=3),
                   DicomWebServer("gone-web", f"http://127.0.0.1:{dead}/dicom-web", timeout_s=3)):
        with pytest.raises(PacsError) as info:
            echo(server)
        assert info.value.kind == PacsProblem.UNREACHABLE
        assert "unreachable" in str(info.value) and "check" in str(info.value)
    cache = StudyCache(tmp_path / "cache")
    with pytest.raises(PacsError):
        list(retrieve_study(DimseServer("gone", "127.0.0.1", dead, "ORTHANC", timeout_s=3), "1.2.3", cache=cache))
    assert _cache_entries(cache) == []


def test_wrong_called_ae_is_rejected(dimse):
    wrong = DimseServer("orthanc", dimse.host, dimse.port, "NOTORTHANC", our_ae=OUR_AE, timeout_s=5)
    with pytest.raises(PacsError) as info:
        echo(wrong)
    assert info.value.kind == PacsProblem.REJECTED
    assert "'NOTORTHANC'" in str(info.value) and "AE title" in str(info.value)
    assert echo(dimse) > 0  # the right title works


def test_silent_server_times_out(tmp_path):
    """A port that accepts connections but never answers (not a DICOM service, or a hung PACS)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        with pytest.raises(PacsError) as info:
            find_studies(DimseServer("hung", "127.0.0.1", port, "ORTHANC", timeout_s=1), StudyQuery())
        assert info.value.kind == PacsProblem.TIMEOUT
        assert "did not answer within 1 s" in str(info.value)
    finally:
        stop.set()
        t.join(5)
        for s in held:
            s.close()
        listener.close()


def test_unknown_move_destination_then_retry(dimse, sources, tmp_path):
    _upload(dimse, sources[:1])
    study = _uid(sources[0])
    cache = StudyCache(tmp_path / "cache")
    stranger = DimseServer("orthanc", dimse.host, dimse.port, dimse.called_ae, our_ae="STRANGER",
                           our_port=free_port(), retrieve="move", timeout_s=10)
    with pytest.raises(PacsError) as info:
        list(retrieve_study(stranger, study, cache=cache))
    assert info.value.kind == PacsProblem.MOVE_DESTINATION_UNKNOWN
    assert "'STRANGER'" in str(info.value) and "C-GET" in str(info.value)
    assert _cache_entries(cache) == []  # nothing partial
    done = _run(retrieve_study(dimse, study, cache=cache, method="move"))[-1]
    assert len(done.files) == 1 and cache.has(study)


@pytest.mark.parametrize("method", ["get", "move", "wado"])
def test_study_deleted_between_find_and_get(method, dimse, web, pacs, sources, tmp_path):
    _upload(dimse, sources[:1])
    row = find_studies(dimse, StudyQuery())[0]
    pacs.clear()  # someone deletes the study after our search
    cache = StudyCache(tmp_path / "cache")
    server = web if method == "wado" else dimse
    with pytest.raises(PacsError) as info:
        list(retrieve_study(server, row.study_uid, cache=cache, method=method))
    assert info.value.kind == PacsProblem.NOT_FOUND, str(info.value)
    assert "search again" in str(info.value)
    assert _cache_entries(cache) == []
    _upload(dimse, sources[:1])  # back on the PACS: the retry completes
    assert len(_run(retrieve_study(server, row.study_uid, cache=cache, method=method))[-1].files) == 1


def test_partial_retrieve_keeps_nothing_and_retry_completes(dimse, sources, tmp_path):
    """A study with an object C-GET cannot take (Raw Data: no storage context offered) arrives in part."""
    images = study_copies(sources[0], tmp_path, 2)
    raw = pydicom.dcmread(images[0], stop_before_pixels=True)
    raw.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66"  # Raw Data Storage
    raw.SOPInstanceUID = generate_uid()
    raw.file_meta.MediaStorageSOPClassUID = raw.SOPClassUID
    raw.file_meta.MediaStorageSOPInstanceUID = raw.SOPInstanceUID
    raw.Modality = "OT"
    raw.SeriesInstanceUID = generate_uid()
    raw.save_as(tmp_path / "raw.dcm")
    _upload(dimse, images + [tmp_path / "raw.dcm"])
    study = _uid(sources[0])
    (row,) = find_studies(dimse, StudyQuery(modalities=()))
    assert row.images == 3
    cache = StudyCache(tmp_path / "cache")
    with pytest.raises(PacsError) as info:
        list(retrieve_study(dimse, study, cache=cache, method="get", expected=row.images))
    assert info.value.kind == PacsProblem.PARTIAL
    assert "of 3 images" in str(info.value) and "retry" in str(info.value), str(info.value)
    assert _cache_entries(cache) == []
    done = _run(retrieve_study(dimse, study, cache=cache, method="move", expected=row.images))[-1]  # any class
    assert len(done.files) == 3


def test_cancel_keeps_nothing(dimse, sources, tmp_path):
    _upload(dimse, study_copies(sources[0], tmp_path, 2))
    study = _uid(sources[0])
    cache = StudyCache(tmp_path / "cache")
    gen = retrieve_study(dimse, study, cache=cache, method="get")
    first = next(gen)
    assert isinstance(first, RetrieveProgress)
    gen.close()  # the GUI's Cancel
    assert _cache_entries(cache) == []
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(PacsError) as info:
        list(retrieve_study(dimse, study, cache=cache, method="move", cancel=cancel))
    assert info.value.kind == PacsProblem.CANCELLED
    assert _cache_entries(cache) == []
    assert len(_run(retrieve_study(dimse, study, cache=cache))[-1].files) == 2


# --------------------------------------------------------------------------- command line


def test_dicom_out_must_be_a_folder(tmp_path):
    from cxr_desktop.cli.screen import main as screen_main

    (tmp_path / "in").mkdir()
    (tmp_path / "taken").write_text("x")
    err = io.StringIO()
    code = screen_main([str(tmp_path / "in"), "--out", str(tmp_path / "r.csv"), "--dicom-out",
                        str(tmp_path / "taken")], stderr=err)
    assert code == 2 and "--dicom-out" in err.getvalue() and "give a folder" in err.getvalue()


def test_cxr_pacs_command_line(dimse, pacs, sources, tmp_path):
    from cxr_desktop.cli.pacs import EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, main

    flags = ["--host", "127.0.0.1", "--port", str(dimse.port), "--called-ae", dimse.called_ae,
             "--our-ae", OUR_AE, "--timeout", "10"]

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        return main([*args], stdout=out, stderr=err), out.getvalue(), err.getvalue()

    assert run(*flags, "echo")[0] == EXIT_OK
    code, out, err = run(*flags, "send", *map(str, sources))
    assert code == EXIT_OK and "2 files sent" in err
    code, out, err = run(*flags, "find", "--json")
    assert code == EXIT_OK and "2 studies found" in err
    ds = pydicom.dcmread(sources[0], stop_before_pixels=True)
    assert str(ds.PatientID) not in out + err  # no patient data unless --show-patient
    code, out, _ = run(*flags, "find", "--show-patient", "--patient-id", str(ds.PatientID))
    assert code == EXIT_OK and str(ds.PatientID) in out and len(out.splitlines()) == 1
    code, out, err = run(*flags, "get", "--out", str(tmp_path / "got"))
    assert code == EXIT_OK and len(list((tmp_path / "got").glob("*/*.dcm"))) == 2
    assert str(ds.PatientID) not in err
    config = tmp_path / "servers.json"
    from cxr_desktop.pacs import save_servers

    save_servers(config, [DicomWebServer("web", pacs.dicomweb_url, timeout_s=10), dimse])
    code, out, err = run("--config", str(config), "--server", "web", "get", "--cache", str(tmp_path / "c"))
    assert code == EXIT_OK and "2/2" in err
    assert run("--config", str(config), "--server", "orthanc", "get", "1.2.3.4", "--out",
               str(tmp_path / "none"))[0] == EXIT_NOT_FOUND
    assert run("--host", "127.0.0.1", "--port", str(free_port()), "--called-ae", "X", "echo")[0] == EXIT_UNREACHABLE
    code, _, err = run("--host", "127.0.0.1", "--port", str(dimse.port), "--called-ae", "WRONG", "echo")
    assert code == EXIT_REFUSED and "rejected" in err
