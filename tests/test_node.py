"""cxr-node's parts: when a study is complete, how received objects are named and written, the live SCP."""

from __future__ import annotations

import os
import time

import pydicom
import pytest
from pydicom.uid import generate_uid

from cxr_desktop.node.scp import StorageSCP
from cxr_desktop.node.storage import ReceivedStore
from cxr_desktop.node.tracker import StudyTracker

from node_traffic import (
    SECRET_ID, SECRET_NAME, push, radiograph_sources, send_partial_then_abort, wrap_as_dx, write,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_tracker_quiet_period_release_and_abort():
    clock = FakeClock()
    tr = StudyTracker(quiet_s=5.0, clock=clock)
    tr.arrived("a", association=1)
    tr.arrived("b", association=2)
    assert tr.take_ready(timeout=0) is None  # both still arriving
    tr.association_ended(2, released=True)  # b's sender finished normally: complete at once
    assert tr.take_ready(timeout=0) == "b"
    assert tr.take_ready(timeout=0) is None
    tr.association_ended(1, released=False)  # aborted: a waits for its quiet period
    assert tr.take_ready(timeout=0) is None
    clock.t += 4.9
    assert tr.take_ready(timeout=0) is None
    clock.t += 0.2
    assert tr.take_ready(timeout=0) == "a"
    assert tr.pending() == []
    tr.arrived("a", association=3)  # more images of a screened study: pending again
    assert tr.pending() == ["a"]
    clock.t += 6
    assert tr.take_ready(timeout=0) == "a"


def test_tracker_forgets_screened_studies_after_an_hour_so_a_long_running_node_stays_small():
    clock = FakeClock()
    tr = StudyTracker(quiet_s=5.0, clock=clock)
    for i in range(50):
        tr.arrived(f"s{i}", association=i)
        tr.association_ended(i, released=True)
    assert sorted(tr.take_ready(timeout=0) for _ in range(50)) == sorted(f"s{i}" for i in range(50))
    tr.arrived("open", association=99)  # still arriving, over an open association
    tr.arrived("late", association=None)  # pending, not yet screened
    assert len(tr) == 52
    clock.t += 3000
    assert tr.take_ready(timeout=0) == "late" and len(tr) == 52  # within the hour: kept
    clock.t += 700
    assert tr.take_ready(timeout=0) == "open"  # quiet for long enough, though its association never ended
    assert len(tr) == 1  # the 51 screened an hour ago are gone; the one with an open association is kept
    tr.arrived("s3", association=7)  # more images of a forgotten study: it is simply new again
    tr.association_ended(7, released=True)
    assert tr.take_ready(timeout=0) == "s3"


def test_tracker_release_waits_for_other_open_associations_and_requeue_is_ready():
    clock = FakeClock()
    tr = StudyTracker(quiet_s=60.0, clock=clock)
    tr.arrived("s", association=1)
    tr.arrived("s", association=2)
    tr.association_ended(1, released=True)
    assert tr.take_ready(timeout=0) is None  # association 2 still brings images of s
    tr.association_ended(2, released=True)
    assert tr.take_ready(timeout=0) == "s"
    tr.requeue("old")
    assert tr.take_ready(timeout=0) == "old"


def test_store_names_are_keyed_hashes_written_once(tmp_path):
    st = ReceivedStore(tmp_path / "node")
    study, sop = "1.2.3.4.5", "1.2.3.4.5.6"
    first = st.store(study, sop, b"first", image=True)
    again = st.store(study, sop, b"second", image=True)
    assert first.new and not again.new
    assert (tmp_path / "node" / first.relpath).read_bytes() == b"first"  # the first copy is kept, never replaced
    assert study not in first.relpath and sop not in first.relpath
    assert first.relpath == f"received/{first.study}/{st.key_for(sop)}.dcm"
    assert st.instances(first.study) == [first.relpath]
    other = st.store(study, "1.2.3.9", b"sr", image=False)
    assert other.relpath.startswith("other/") and st.instances(first.study) == [first.relpath]
    key = tmp_path / "node" / "node-key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    # The same folder keeps its key (names are stable across restarts); another folder has its own.
    assert ReceivedStore(tmp_path / "node").key_for(study) == st.key_for(study)
    assert ReceivedStore(tmp_path / "other").key_for(study) != st.key_for(study)


def test_leftover_temp_files_are_removed_never_listed(tmp_path):
    st = ReceivedStore(tmp_path)
    s = st.store("1.2", "1.2.3", b"x", image=True)
    tmp = tmp_path / "received" / s.study / ".abc.dcm.123.tmp"
    tmp.write_bytes(b"half")
    assert st.instances(s.study) == [s.relpath]
    assert st.remove_temp_files() == 1 and not tmp.exists()


@pytest.fixture
def scp(tmp_path):
    store = ReceivedStore(tmp_path / "node")
    tracker = StudyTracker(quiet_s=30.0)
    unreadable = []
    aborted = []
    server = StorageSCP(store, tracker, ae_title="CXRREVIEW", host="127.0.0.1", port=0,
                        on_unreadable=unreadable.append, on_aborted=aborted.append)
    server.start()
    yield server, store, tracker, unreadable, aborted
    server.stop(grace_s=1)


def test_scp_stores_complete_objects_and_drops_a_cut_off_transfer(tmp_path, scp, cxr_dir):
    server, store, tracker, _unreadable, aborted = scp
    study = generate_uid()
    srcs = radiograph_sources(cxr_dir.parent)[:3]
    files = [write(wrap_as_dx(p, study, generate_uid(), number=i), tmp_path / f"in/{i}.dcm")
             for i, p in enumerate(srcs)]
    assert [s for _, s in push(server.port, files[:2])] == [0, 0]
    key = store.key_for(study)
    assert tracker.take_ready(timeout=5) == key  # released: complete without waiting for the quiet period
    sent = send_partial_then_abort(server.port, files[2])
    assert sent >= 2
    deadline = time.monotonic() + 5
    while not aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert aborted == [0]
    kept = store.instances(key)
    assert len(kept) == 2  # the cut-off object never became a file, not even a temp one
    assert {pydicom.dcmread(tmp_path / "node" / p).SOPInstanceUID for p in kept} == {
        pydicom.dcmread(f).SOPInstanceUID for f in files[:2]}
    leftovers = [n for _, _, names in os.walk(tmp_path / "node" / "received") for n in names if n.startswith(".")]
    assert leftovers == []
    # Stored bytes are what was sent (no re-encoding): the pixel data round-trips exactly.
    assert pydicom.dcmread(tmp_path / "node" / kept[0]).PixelData in {pydicom.dcmread(f).PixelData for f in files[:2]}
    assert tracker.take_ready(timeout=0) is None  # the aborted association brought nothing new


def test_scp_rejects_a_wrong_called_ae_and_reports_an_object_without_uids(tmp_path, scp, cxr_dir):
    server, store, _tracker, unreadable, _aborted = scp
    f = write(wrap_as_dx(radiograph_sources(cxr_dir.parent)[0], generate_uid(), generate_uid()), tmp_path / "a.dcm")
    assert push(server.port, [f], called_ae="SOMEONEELSE") == [(f, None)]  # association rejected
    ds = pydicom.dcmread(f)
    del ds.StudyInstanceUID
    g = tmp_path / "nostudy.dcm"
    ds.save_as(g, enforce_file_format=True)
    assert push(server.port, [g]) == [(g, 0xC210)]  # the sender learns it was not understood
    assert len(unreadable) == 1 and "Study Instance UID" in unreadable[0].why
    kept = tmp_path / "node" / unreadable[0].relpath
    assert kept.read_bytes()[128:132] == b"DICM"  # kept for inspection
    assert store.studies() == []


def test_no_patient_data_in_names(tmp_path, scp, cxr_dir):
    server, store, *_ = scp
    f = write(wrap_as_dx(radiograph_sources(cxr_dir.parent)[0], generate_uid(), generate_uid()), tmp_path / "a.dcm")
    assert push(server.port, [f]) == [(f, 0)]
    names = [str(p.relative_to(tmp_path / "node")) for p in (tmp_path / "node").rglob("*")]
    ds = pydicom.dcmread(f)
    for secret in (SECRET_NAME, SECRET_ID, str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)):
        assert not any(secret in n for n in names)
    stored = pydicom.dcmread(tmp_path / "node" / store.instances(store.studies()[0])[0])
    assert stored.PatientID == SECRET_ID  # the file itself is the sender's object, unchanged


# --------------------------------------------------------------------------- the command line


def _model(path):
    from cxr_desktop.model import init_model, save_model

    model, card = init_model(classes=["normal", "pneumonia"], positive_class="pneumonia", weights="none",
                             input_size=64, name="node-cli", seed=2)
    save_model(path, model, card)
    return path


def test_cli_usage_errors_and_help_document_exit_codes(tmp_path, capsys):
    import io

    from cxr_desktop.cli.node import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "SIGTERM" in text and f"  {EXIT_OK} " in text and f"  {EXIT_UNAVAILABLE} " in text
    err = io.StringIO()
    assert main(["--ae-title", "WAY-TOO-LONG-AE-TITLE", "--out", str(tmp_path / "n")], stderr=err) == EXIT_USAGE
    assert "AE title" in err.getvalue()
    err = io.StringIO()
    assert main(["--forward", "pacs", "--out", str(tmp_path / "n")], stderr=err) == EXIT_USAGE
    assert "--pacs-config" in err.getvalue()
    cfg = tmp_path / "pacs.json"
    cfg.write_text('{"servers": [{"kind": "dimse", "name": "a", "host": "127.0.0.1", "port": 104, '
                   '"called_ae": "PACS"}]}')
    err = io.StringIO()
    assert main(["--forward", "b", "--pacs-config", str(cfg), "--out", str(tmp_path / "n")], stderr=err) == EXIT_USAGE
    assert "no such server" in err.getvalue() and "a" in err.getvalue()


@pytest.mark.slow
def test_cli_refuses_a_busy_port_a_busy_folder_and_another_models_worklist(tmp_path, monkeypatch):
    import io
    import socket

    from cxr_desktop.cli.node import EXIT_UNAVAILABLE, EXIT_USAGE, main
    from cxr_desktop.node.service import NodeBusy, _lock_folder
    from cxr_desktop.screening.results import Journal, JournalHeader

    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    model = _model(tmp_path / "m.safetensors")
    out = tmp_path / "node"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        err = io.StringIO()
        code = main(["--port", str(busy.getsockname()[1]), "--out", str(out), "--model", str(model), "--workers", "0"],
                    stderr=err)
        assert code == EXIT_UNAVAILABLE and "choose another --port" in err.getvalue()
    lock = _lock_folder(out / "node.lock")  # another node holds the folder
    try:
        with pytest.raises(NodeBusy):
            _lock_folder(out / "node.lock")
        err = io.StringIO()
        assert main(["--port", "0", "--out", str(out), "--model", str(model), "--workers", "0"],
                    stderr=err) == EXIT_USAGE
        assert "another cxr-node" in err.getvalue()
    finally:
        lock.close()
    other = JournalHeader(model="someone else v1", model_sha256="0" * 64, classes=["normal", "pneumonia"],
                          positive_class="pneumonia", threshold=0.5)
    (out / "worklist.csv.journal").unlink(missing_ok=True)
    Journal(out / "worklist.csv.journal", other, resume=False).close()
    err = io.StringIO()
    assert main(["--port", "0", "--out", str(out), "--model", str(model), "--workers", "0"], stderr=err) == EXIT_USAGE
    assert "someone else v1" in err.getvalue() and "another --out" in err.getvalue()


def test_disk_full_answers_out_of_resources_keeps_what_was_stored_and_goes_on(tmp_path, cxr_dir):
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs (the one honest way to get a full disk)")
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        store = ReceivedStore(where / "node")
        server = StorageSCP(store, StudyTracker(quiet_s=30), ae_title="CXRREVIEW", host="127.0.0.1", port=0)
        server.start()
        try:
            study = generate_uid()
            files = [write(wrap_as_dx(p, study, generate_uid(), number=i), tmp_path / f"in/{i}.dcm")
                     for i, p in enumerate(radiograph_sources(cxr_dir.parent)[:5])]
            statuses = [s for _, s in push(server.port, files)]
            assert 0 in statuses and 0xA700 in statuses  # stored until the disk was full, then "out of resources"
            kept = store.instances(store.key_for(study))
            assert len(kept) == statuses.count(0)
            for rel in kept:  # every file that exists is complete
                assert pydicom.dcmread(where / "node" / rel).PixelData
            assert not [n for _, _, names in os.walk(where / "node") for n in names if n.endswith(".tmp")]
            from pynetdicom import AE

            ae = AE(ae_title="CHECK")
            ae.add_requested_context("1.2.840.10008.1.1")
            assoc = ae.associate("127.0.0.1", server.port, ae_title="CXRREVIEW")
            assert assoc.is_established and assoc.send_c_echo().Status == 0  # the node is still there
            assoc.release()
        finally:
            server.stop(grace_s=1)
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
