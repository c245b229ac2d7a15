"""PACS in the app (issue 13) against a REAL Orthanc: Tools > PACS settings (test connection, secrets),
File > Query PACS (search, retrieve into the cache, open in the study list, no second fetch), send
results from the viewer (SC + SR land in the source's study), File > Export as DICOM.

One Orthanc per module (tests/orthanc_fixture.py); skipped with a clear message only where the Orthanc
binary is absent (CI installs it).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pydicom
import pytest
from PySide6.QtCore import QSettings

from orthanc_fixture import OrthancServer, free_port
from test_dicom_results import dciodvfy_errors

from cxr_desktop.gui.main_window import MainWindow
from cxr_desktop.gui.pacs_settings import SERVERS_KEY, PacsSettings, PacsSettingsDialog
from cxr_desktop.gui.settings import AppSettings
from cxr_desktop.pacs import DimseServer, SecretStore, send_files
from dicom_builders import sr_measurement
from model_builders import untrained_model_file

TIMEOUT = 60_000
OUR_AE = "CXRGUI"
RADIOGRAPHS = ("cxr/siim_pneumothorax_sample.dcm", "dicom/RG1_J2KI.dcm")


@pytest.fixture()
def qsettings(tmp_path, monkeypatch) -> QSettings:
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def _dimse(pacs: OrthancServer, method: str = "get") -> DimseServer:
    return DimseServer("Orthanc", "127.0.0.1", pacs.dicom_port, pacs.aet, our_ae=OUR_AE,
                       our_port=pacs.our_port if method == "move" else 0, retrieve=method, timeout_s=10)


def _identifiers(path: Path) -> list[str]:
    """Patient name, ID, accession number and birth date of a file (what must never reach a log)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    out = [str(ds.get(k, "") or "") for k in ("PatientName", "PatientID", "AccessionNumber", "PatientBirthDate")]
    return [v for v in out if len(v) >= 3]


@pytest.fixture()
def uploaded(pacs, shared_data) -> list[Path]:
    files = [shared_data / p for p in RADIOGRAPHS]
    last = None
    for last in send_files(_dimse(pacs), files):
        pass
    assert last is not None and last.sent == len(files)
    return files


@pytest.fixture
def window(main_window, qsettings):
    w = main_window(settings=AppSettings(qsettings))
    yield w
    assert w.shutdown()


# ------------------------------------------------------------------ settings


def test_settings_dialog_tests_connection_in_a_worker_and_keeps_secrets_out_of_qsettings(qtbot, pacs, qsettings,
                                                                                         tmp_path):
    secrets = SecretStore(use_keyring=False)
    dlg = PacsSettingsDialog(settings=qsettings, secrets=secrets)
    qtbot.addWidget(dlg)
    dlg.add_server("dimse")
    dlg.name_edit.setText("Orthanc")
    dlg.host_edit.setText("127.0.0.1")
    dlg.port_spin.setValue(pacs.dicom_port)
    dlg.called_edit.setText(pacs.aet)
    dlg.our_ae_edit.setText(OUR_AE)

    with qtbot.waitSignal(dlg.connection_tested, timeout=TIMEOUT) as ok:
        dlg.test_current()
        assert not dlg.test_button.isEnabled()  # the echo runs in a worker: the dialog is live meanwhile
    assert ok.args[0] is True and "OK" in dlg.test_label.text() and pacs.aet in dlg.test_label.text()

    dlg.port_spin.setValue(free_port())  # nothing listens there
    with qtbot.waitSignal(dlg.connection_tested, timeout=TIMEOUT) as bad:
        dlg.test_current()
    assert bad.args[0] is False
    text = dlg.test_label.text()
    assert text.startswith("Connection failed") and str(dlg.port_spin.value()) in text
    assert "Traceback" not in text
    dlg.port_spin.setValue(pacs.dicom_port)

    dlg.called_edit.setText("NOTORTHANC")  # Orthanc checks the called AE: the association is rejected
    with qtbot.waitSignal(dlg.connection_tested, timeout=TIMEOUT) as rejected:
        dlg.test_current()
    assert rejected.args[0] is False and "NOTORTHANC" in rejected.args[1], rejected.args[1]
    dlg.called_edit.setText(pacs.aet)

    dlg.add_server("dicomweb")
    dlg.name_edit.setText("Orthanc web")
    dlg.url_edit.setText(pacs.dicomweb_url)
    dlg.auth_combo.setCurrentIndex(dlg.auth_combo.findData("basic"))
    dlg.user_edit.setText("reader")
    dlg.secret_edit.setText("s3cret-pass")
    with qtbot.waitSignal(dlg.connection_tested, timeout=TIMEOUT) as web:
        dlg.test_current()
    assert web.args[0] is True, dlg.test_label.text()  # Orthanc here has no authentication: basic is accepted

    dlg.cache_spin.setValue(750)
    assert dlg.save()
    qsettings.sync()
    assert PacsSettings(qsettings, secrets).cache_limit_bytes == 750 * 1024 ** 2
    assert PacsSettings(qsettings, secrets).cache().limit_bytes == 750 * 1024 ** 2
    stored = Path(qsettings.fileName()).read_text()
    assert "s3cret-pass" not in stored
    assert secrets.get("Orthanc web") == "s3cret-pass"
    servers = PacsSettings(qsettings, secrets).servers()
    assert [s.name for s in servers] == ["Orthanc", "Orthanc web"]
    assert servers[0].port == pacs.dicom_port and servers[1].auth == "basic"
    assert "s3cret-pass" not in repr(servers)

    # a wrong value is refused with a sentence, nothing saved
    dlg.server_list.setCurrentRow(0)
    dlg.called_edit.setText("")
    assert not dlg.save()
    assert "AE title" in dlg.error_label.text()
    assert json.loads(PacsSettings(qsettings, secrets).q.value(SERVERS_KEY))["servers"][0]["called_ae"] == pacs.aet


# ------------------------------------------------------------------ query and retrieve


@pytest.mark.parametrize("method", ["get", "move"])
def test_query_retrieve_opens_studies_and_cached_ones_are_not_fetched_again(qtbot, window, pacs, uploaded,
                                                                           qsettings, caplog, method):
    caplog.set_level(logging.DEBUG)
    store = PacsSettings(qsettings)
    store.set_servers([_dimse(pacs, method)])
    dlg = window.pacs.open_query()
    qtbot.addWidget(dlg)
    assert dlg.server_combo.count() == 1

    with qtbot.waitSignal(dlg.search_finished, timeout=TIMEOUT) as found:
        dlg.search_button.click()
    assert found.args[0] is True, dlg.last_status
    assert dlg.table.rowCount() == len(uploaded)
    names = {dlg.table.item(r, 1).text() for r in range(dlg.table.rowCount())}
    assert names == {str(pydicom.dcmread(f, stop_before_pixels=True).PatientID) for f in uploaded}
    assert all(dlg.table.item(r, 5).text() == "1" for r in range(dlg.table.rowCount()))

    dlg.table.selectAll()
    with qtbot.waitSignal(window.study_list.scan_finished, timeout=TIMEOUT):
        with qtbot.waitSignal(dlg.retrieve_finished, timeout=TIMEOUT) as got:
            dlg.retrieve_button.click()
    assert got.args[0] is True, got.args[1]
    cache = store.cache()
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in uploaded]
    assert all(cache.has(u) for u in uids)
    assert dlg.progress.value() == dlg.progress.maximum()
    opened = {Path(e.path).parent for e in window.study_list.entries()}
    assert opened == {cache.folder(u) for u in uids}

    # again: both come from the cache (nothing fetched: the cached files are untouched)
    before = {p: p.stat().st_mtime_ns for u in uids for p in cache.files(u)}
    with qtbot.waitSignal(dlg.retrieve_finished, timeout=TIMEOUT) as again:
        dlg.retrieve_button.click()
    assert again.args[0] is True and "2 already in the local cache" in again.args[1]
    assert {p: p.stat().st_mtime_ns for p in before} == before

    logged = caplog.text
    for f in uploaded:
        for value in _identifiers(f):
            assert value not in logged
    dlg.close()


def test_search_failure_is_a_sentence_and_a_cancelled_retrieve_leaves_nothing(qtbot, pacs, uploaded, qsettings):
    from cxr_desktop.gui.pacs_query import QueryPacsDialog

    store = PacsSettings(qsettings)
    wrong = DimseServer("Nowhere", "127.0.0.1", free_port(), "ORTHANC", timeout_s=5)
    store.set_servers([wrong, _dimse(pacs)])
    dlg = QueryPacsDialog(settings=qsettings)
    qtbot.addWidget(dlg)
    with qtbot.waitSignal(dlg.search_finished, timeout=TIMEOUT) as failed:
        dlg.search()
    assert failed.args[0] is False and failed.args[1].startswith("Search failed: ") and "Nowhere" in failed.args[1]
    assert dlg.search_button.isEnabled()

    dlg.server_combo.setCurrentIndex(1)
    with qtbot.waitSignal(dlg.search_finished, timeout=TIMEOUT):
        dlg.search()
    rows = list(dlg.rows)
    with qtbot.waitSignal(dlg.retrieve_finished, timeout=TIMEOUT) as cut:
        dlg.retrieve(rows)
        dlg.cancel()  # before the worker got far: nothing (or only whole studies) in the cache
    cache = store.cache()
    assert [p.name for p in cache.root.iterdir() if p.name.startswith(".staging")] == []
    assert all((d / ".complete").is_file() for d in cache.root.iterdir())
    if not cut.args[0]:
        assert "Cancelled" in cut.args[1]
    with qtbot.waitSignal(dlg.retrieve_finished, timeout=TIMEOUT) as retry:
        dlg.retrieve(rows)
    assert retry.args[0] is True


# ------------------------------------------------------------------ send results


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return untrained_model_file(tmp_path_factory.mktemp("pacs-model") / "model.safetensors",
                                name="gui-pacs-test", seed=5, head_scale=20.0)


def _open_and_predict(qtbot, window: MainWindow, model: Path, image: Path) -> None:
    with qtbot.waitSignal(window.models.ready, timeout=TIMEOUT):
        window.open_model(str(model))
    with qtbot.waitSignal(window.prediction_shown, timeout=TIMEOUT):
        window.open_paths([str(image)])


def test_send_from_viewer_puts_sc_and_sr_into_the_same_study_and_export_writes_them(
        qtbot, window, pacs, uploaded, qsettings, model_file, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    PacsSettings(qsettings).set_servers([_dimse(pacs)])
    source = uploaded[0]
    _open_and_predict(qtbot, window, model_file, source)
    score = window.current_outcome.result.prediction.score

    dlg = window.pacs.send_current()
    assert dlg is not None
    qtbot.addWidget(dlg)
    with qtbot.waitSignal(dlg.sent, timeout=TIMEOUT) as sent:
        dlg.send_button.click()
    assert sent.args[0] is True, sent.args[1]
    assert sent.args[1] == "Sent: 2 objects accepted by the PACS."

    study_uid = str(pydicom.dcmread(source, stop_before_pixels=True).StudyInstanceUID)
    studies = pacs.rest("/tools/find", method="POST",
                        data={"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})
    assert len(studies) == 1
    series = pacs.rest(f"/studies/{studies[0]}/series")
    modalities = sorted(s["MainDicomTags"].get("Modality", "") for s in series)
    assert len(series) == 3 and "SR" in modalities
    sr_series = next(s for s in series if s["MainDicomTags"].get("Modality") == "SR")
    sr_id = sr_series["Instances"][0]
    sr = pydicom.dcmread(io.BytesIO(pacs.rest(f"/instances/{sr_id}/file")))
    assert sr.StudyInstanceUID == study_uid
    assert sr_measurement(sr, "CXR001") == pytest.approx(score, abs=5e-7)  # the probability the viewer showed
    sc_series = [s for s in series if "AI heatmap" in s["MainDicomTags"].get("SeriesDescription", "")]
    assert len(sc_series) == 1

    out = tmp_path / "dicom-out"
    worker = window.pacs.export_dicom(out)
    assert worker is not None
    qtbot.waitUntil(lambda: window.pacs.last_export is not None, timeout=TIMEOUT)
    sc_path, sr_path = window.pacs.last_export
    assert sc_path.is_file() and sr_path.is_file()
    assert pydicom.dcmread(sc_path).StudyInstanceUID == study_uid
    assert dciodvfy_errors(sc_path) == [] and dciodvfy_errors(sr_path) == []

    for value in _identifiers(source):
        assert value not in caplog.text


def test_send_without_a_dicom_result_says_what_to_do(qtbot, window, cxr_dir):
    window.pacs.send_current()
    assert window.last_message == ("Send results to PACS", "Open an image first.")


def test_worklist_sends_selected_rows_by_stow_rs(qtbot, window, pacs, uploaded, qsettings, model_file, tmp_path):
    import shutil

    from cxr_desktop.dicom_results import SR_SERIES_DESCRIPTION
    from cxr_desktop.pacs import DicomWebServer

    PacsSettings(qsettings).set_servers([DicomWebServer("Orthanc web", pacs.dicomweb_url, timeout_s=10)])
    folder = tmp_path / "screen"
    folder.mkdir()
    for i, f in enumerate(uploaded):
        shutil.copy(f, folder / f"img{i}.dcm")
    dialog = window.new_screening_dialog()
    dialog.set_model_path(model_file)
    dialog.set_folder(folder)
    window.pacs.attach_to_screening(dialog)
    qtbot.addWidget(dialog)
    assert dialog.send_selected_button.text() == "Send selected to PACS..."
    with qtbot.waitSignal(dialog.run_finished, timeout=TIMEOUT):
        assert dialog.start()
    assert dialog.model.rowCount() == len(uploaded)
    dialog.table.selectAll()
    send = window.pacs.send_worklist(dialog, above_only=False)
    assert send is not None
    qtbot.addWidget(send)
    with qtbot.waitSignal(send.sent, timeout=TIMEOUT) as sent:
        send.send_button.click()
    assert sent.args[0] is True, sent.args[1]
    assert sent.args[1] == f"Sent: {2 * len(uploaded)} objects accepted by the PACS."
    scores = {r.path: r.score for r in dialog.model.rows()}
    for i, f in enumerate(uploaded):
        study_uid = str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID)
        found = pacs.rest("/tools/lookup", method="POST", data=study_uid.encode())
        study_id = [x["ID"] for x in found if x["Type"] == "Study"][0]
        series = pacs.rest(f"/studies/{study_id}/series")
        assert len(series) == 3
        sr_series = [s for s in series if s["MainDicomTags"].get("SeriesDescription") == SR_SERIES_DESCRIPTION]
        sr = pydicom.dcmread(io.BytesIO(pacs.rest(f"/instances/{sr_series[0]['Instances'][0]}/file")))
        if scores[f"img{i}.dcm"] is not None:
            assert sr_measurement(sr, "CXR001") == pytest.approx(scores[f"img{i}.dcm"], abs=5e-7)
    dialog.close()


def test_dicomweb_search_and_wado_retrieve(qtbot, pacs, uploaded, qsettings):
    from cxr_desktop.gui.pacs_query import QueryPacsDialog
    from cxr_desktop.pacs import DicomWebServer

    store = PacsSettings(qsettings)
    store.set_servers([DicomWebServer("Orthanc web", pacs.dicomweb_url, timeout_s=10)])
    dlg = QueryPacsDialog(settings=qsettings)
    qtbot.addWidget(dlg)
    rg1 = pydicom.dcmread(uploaded[1], stop_before_pixels=True)
    dlg.patient_id_edit.setText(str(rg1.PatientID))  # one of the two studies
    with qtbot.waitSignal(dlg.search_finished, timeout=TIMEOUT) as found:
        dlg.search()
    assert found.args[0] is True and dlg.table.rowCount() == 1
    assert dlg.table.item(0, 2).text() == f"{rg1.StudyDate[:4]}-{rg1.StudyDate[4:6]}-{rg1.StudyDate[6:8]}"
    with qtbot.waitSignal(dlg.retrieve_finished, timeout=TIMEOUT) as got:
        dlg.retrieve(dlg.rows)
    assert got.args[0] is True, got.args[1]
    assert store.cache().has(dlg.rows[0].study_uid)


def test_export_as_dicom_of_an_out_of_scope_image_carries_the_reason_not_a_score(qtbot, window, model_file,
                                                                                 dicom_dir, tmp_path):
    with qtbot.waitSignal(window.models.ready, timeout=TIMEOUT):
        window.open_model(str(model_file))
    with qtbot.waitSignal(window.image_displayed, timeout=TIMEOUT):
        window.open_paths([str(dicom_dir / "MR2_UNCR.dcm")])  # an MR: out of scope, never scored
    assert not window.scope.before_model(window.current_image).in_scope
    window.pacs.export_dicom(tmp_path / "out")
    qtbot.waitUntil(lambda: window.pacs.last_export is not None, timeout=TIMEOUT)
    sc_path, sr_path = window.pacs.last_export
    sr = pydicom.dcmread(sr_path)
    assert sr_measurement(sr, "CXR001") is None  # no probability
    texts = []

    def walk(items):
        for it in items:
            if it.ValueType == "TEXT":
                texts.append(str(it.TextValue))
            if "ContentSequence" in it:
                walk(it.ContentSequence)

    walk(sr.ContentSequence)
    assert any(t.startswith("Out of scope (") for t in texts), texts
    assert dciodvfy_errors(sc_path) == [] and dciodvfy_errors(sr_path) == []


def test_send_to_an_unreachable_pacs_says_what_to_do(qtbot, qsettings, shared_data):
    from cxr_desktop.gui.send_results import SendResultsDialog, _send

    PacsSettings(qsettings).set_servers([DimseServer("Down", "127.0.0.1", free_port(), "ORTHANC", timeout_s=5)])
    files = [shared_data / RADIOGRAPHS[0]]

    def job(server, secrets, cancel):
        yield from _send(server, files, secrets, cancel)

    dlg = SendResultsDialog(job, "One file.", settings=qsettings)
    qtbot.addWidget(dlg)
    with qtbot.waitSignal(dlg.sent, timeout=TIMEOUT) as sent:
        dlg.send_button.click()
    assert sent.args[0] is False
    assert sent.args[1].startswith("Not sent: PACS Down (127.0.0.1:") and "check the host and port" in sent.args[1]
    assert dlg.send_button.isEnabled() and not dlg.cancel_button.isEnabled()  # ready to retry
