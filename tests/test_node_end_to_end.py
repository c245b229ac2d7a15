"""cxr-node end to end (issue 13): 50 objects pushed over loopback, kill -9 mid-way, restart, SIGTERM.

Real processes: the node runs as ``python -m cxr_desktop.cli.node`` and a pynetdicom
SCU pushes real radiographs (the shared CR files, the JPEG 2000 CR RG1_J2KI, PNG/JPEG
radiographs wrapped as DX), a CT, a DX whose pixel data is cut short, and a transfer
aborted mid-way. The node is killed with SIGKILL while it screens, restarted, more is
pushed (including a resend of a whole study), and then it is stopped with SIGTERM.
"""

from __future__ import annotations

import collections
import csv
import json
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from model_builders import untrained_model_file
from node_traffic import (
    SECRET_ACCESSION, SECRET_ID, SECRET_NAME, broken_copy, push, radiograph_sources, send_partial_then_abort,
    sop_uid, start_node, with_new_instance, wrap_as_dx, write,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return untrained_model_file(tmp_path_factory.mktemp("node-model") / "model.safetensors",
                                name="node-test", seed=1, classes=("normal", "pneumonia"))


def _worklist(out: Path) -> list[dict[str, str]]:
    with open(out / "worklist.csv", newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def _journal_paths(out: Path) -> list[str]:
    j = out / "worklist.csv.journal"
    if not j.exists():
        return []
    lines = j.read_bytes().split(b"\n")[1:]
    return [json.loads(x)["path"] for x in lines if x.strip()]


def _scored_events(out: Path) -> list[str]:
    f = out / "screened.jsonl"
    return [json.loads(x)["path"] for x in f.read_bytes().split(b"\n") if x.strip()] if f.exists() else []


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_node_end_to_end_kill_restart_exactly_once(tmp_path, model_file, shared_data, monkeypatch):
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    src = radiograph_sources(shared_data)
    assert len(src) >= 45
    inp = tmp_path / "in"
    made = iter(range(10_000))

    def study(sources: list[Path]) -> list[Path]:
        st, se = generate_uid(), generate_uid()
        return [write(wrap_as_dx(p, st, se, number=i + 1), inp / f"w{next(made):03d}.dcm")
                for i, p in enumerate(sources)]

    real_cr = [shared_data / "cxr" / "siim_pneumothorax_sample.dcm", shared_data / "dicom" / "RG1_J2KI.dcm"]
    batch_a = [study(src[i:i + 5]) for i in (0, 5, 10, 15)]  # 4 studies x 5 DX
    aborted_study = study(src[20:23])  # 2 sent in full, the 3rd cut off mid-transfer
    ct = shared_data / "dicom" / "693_UNCI.dcm"
    s7 = study(src[23:25])
    broken = write(broken_copy(pydicom.dcmread(s7[0])), inp / "broken.dcm")
    later_instance = write(with_new_instance(real_cr[0]), inp / "siim-new-instance.dcm")  # a screened study grows
    batch_b = [study(src[i:i + 5]) for i in (25, 30, 35)]

    out = tmp_path / "node"
    node = start_node(out, model_file, extra=["--study-timeout", "2", "--workers", "1", "--batch-size", "4"])
    sent: list[tuple[Path, int | None]] = []
    sent += push(node.port, real_cr)
    for files in batch_a:
        sent += push(node.port, files)
    sent += push(node.port, aborted_study[:2])
    assert send_partial_then_abort(node.port, aborted_study[2]) >= 2
    assert all(s == 0 for _, s in sent), sent
    n_pushed = len(sent) + 1  # + the aborted one
    # Kill -9 while it screens: after the first durable row, before everything is done.
    _wait(lambda: len(_scored_events(out)) >= 1, 120, "the first scored row")
    node.kill9()
    rows_at_kill = len(set(_journal_paths(out)))
    assert rows_at_kill < 24, "the node finished everything before the kill; the test needs a kill mid-way"

    node = start_node(out, model_file, extra=["--study-timeout", "2", "--workers", "1", "--batch-size", "4"])
    assert "queued again" in node.text()
    sent_b: list[tuple[Path, int | None]] = []
    sent_b += push(node.port, [ct])
    sent_b += push(node.port, s7 + [broken])
    sent_b += push(node.port, [later_instance])
    for files in batch_b:
        sent_b += push(node.port, files)
    sent_b += push(node.port, batch_a[0])  # the sender resends a whole study: nothing is stored or scored twice
    assert all(s == 0 for _, s in sent_b), sent_b
    n_pushed += len(sent_b)
    assert n_pushed == 50

    complete = real_cr + [f for s in batch_a for f in s] + aborted_study[:2] + [ct] + s7 + [broken, later_instance] \
        + [f for s in batch_b for f in s]
    expected = {sop_uid(f): f for f in complete}
    assert len(expected) == 44  # 50 pushed - 1 cut off - 5 resent
    _wait(lambda: len(set(_journal_paths(out))) >= len(expected), 240, "every received image in the worklist")
    code = node.terminate()
    log_b = node.text()
    assert code == 0, log_b
    stop_lines = [ln for ln in log_b.splitlines() if "stopped by" in ln]
    assert len(stop_lines) == 1 and stop_lines[0].startswith("cxr-node: stopped by SIGTERM")
    assert log_b.rstrip().splitlines()[-1] == stop_lines[0]

    # Every complete object: one stored file, one worklist row. The cut-off one: neither.
    received = {}
    for p in (out / "received").rglob("*.dcm"):
        received[str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)] = p.relative_to(out).as_posix()
    assert set(received) == set(expected)
    assert sop_uid(aborted_study[2]) not in received
    rows = _worklist(out)
    by_path = {r["path"]: r for r in rows}
    assert len(rows) == len(by_path) == len(expected)
    assert set(by_path) == set(received.values())
    journal = _journal_paths(out)
    assert len(journal) == len(set(journal))  # nothing journalled twice, across the kill and the resend
    scored = collections.Counter(_scored_events(out))
    assert max(scored.values()) == 1  # the model never produced a row for the same file twice
    assert not list(out.rglob(".*.tmp"))

    def row(f: Path) -> dict[str, str]:
        return by_path[received[sop_uid(f)]]

    for f in real_cr + [f for s in batch_a + batch_b for f in s] + aborted_study[:2] + s7:
        r = row(f)
        assert r["status"] in ("ok", "out_of_scope") and r["reason"] != "modality_not_radiograph", (f.name, r)
    scored_ok = [f for f in expected.values() if row(f)["status"] == "ok"]
    assert len(scored_ok) >= 30  # the radiographs are scored (a few may be flagged by an image rule)
    assert all(row(f)["score"] != "" for f in scored_ok)
    assert row(real_cr[0])["status"] == "ok" and row(real_cr[1])["status"] == "ok"
    ct_row = row(ct)
    assert ct_row["status"] == "out_of_scope" and "modality_not_radiograph" in ct_row["reason"]
    assert ct_row["score"] == ""
    bad = row(broken)
    assert bad["status"] == "error" and bad["detail"], bad
    # The study that grew after it was screened: the new instance is scored, the old one is not again.
    assert row(later_instance)["status"] in ("ok", "out_of_scope")

    # No patient data anywhere the node writes text (logs, CSV, journals, event log, names).
    texts = [log_b, (out / "worklist.csv").read_text(encoding="utf-8-sig"),
             (out / "worklist.csv.journal").read_text(), (out / "screened.jsonl").read_text()]
    texts += [p.read_text() for p in tmp_path.glob("node-node-*.log")]
    texts += [str(p.relative_to(out)) for p in out.rglob("*")]
    uids = {str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in complete} | set(expected)
    for t in texts:
        for secret in (SECRET_NAME, SECRET_ID, SECRET_ACCESSION, "Zzyzx", *uids):
            assert secret not in t
