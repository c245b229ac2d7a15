"""Distributed screening: shards and merging (fast), and ``torchrun`` with 2 Gloo processes on loopback
giving the same CSV as 1 process, resuming per shard (and after a change of process count), and a
process that dies making the other stop with a clear message (slow)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cxr_desktop.cli.screen import EXIT_PEER_LOST
from cxr_desktop.cli.screen import main as screen_main
from cxr_desktop.distributed import SINGLE, Session
from cxr_desktop.scope import Caution
from cxr_desktop.screening.distributed import (
    journals_of, merge_parts, owners, shard_journal_path, stale_journals,
)
from cxr_desktop.screening.results import (
    Journal, JournalHeader, ResultRow, journal_path_for, read_journal, sorted_rows,
)

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "resources" / "models" / "demo-cxr.safetensors"


def _sessions(world: int) -> list[Session]:
    return [Session(rank=r, world_size=world, local_rank=r, backend="gloo") for r in range(world)]


# --------------------------------------------------------------------------- fast: names, shards, merge


def test_journal_names_per_process_and_which_are_stale(tmp_path):
    out = tmp_path / "results.csv"
    two = _sessions(2)
    assert shard_journal_path(out, SINGLE) == journal_path_for(out)
    assert shard_journal_path(out, two[1]).name == "results.csv.rank1-of-2.journal"
    for name in ("results.csv.rank1-of-2.journal", "results.csv.rank0-of-2.journal", "results.csv.rank0-of-3.journal",
                 "results.csv.journal", "other.csv.rank0-of-2.journal", "results.csv.rank0-of-2.journal.tmp"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in journals_of(out)] == [
        "results.csv.journal", "results.csv.rank0-of-2.journal", "results.csv.rank1-of-2.journal",
        "results.csv.rank0-of-3.journal"]
    assert [p.name for p in stale_journals(out, two[0])] == ["results.csv.journal", "results.csv.rank0-of-3.journal"]
    assert [p.name for p in stale_journals(out, SINGLE)] == [
        "results.csv.rank0-of-2.journal", "results.csv.rank1-of-2.journal", "results.csv.rank0-of-3.journal"]


def _row(path: str, score: float | None, status: str = "ok", caution: bool = False) -> ResultRow:
    return ResultRow(path=path, status=status, label=None if score is None else "x", score=score,
                     above_threshold=None if score is None else score > 0.5,
                     caution=Caution(distance=12.0, limit=10.0) if caution else None)


def test_merging_the_shards_ranks_exactly_like_one_process():
    rows = [_row("a.png", 0.2), _row("b.png", 0.9, caution=True), _row("c.png", None, status="error"),
            _row("d.png", None, status="out_of_scope"), _row("e.png", 0.2), _row("f.png", 0.05, caution=True),
            _row("g.png", 0.7)]
    one = sorted_rows(rows)
    for world in (2, 3):
        parts = [s.shard(rows) for s in _sessions(world)]
        merged = merge_parts(parts, [r.path for r in rows])
        assert [r.path for r in merged] == [r.path for r in one]
    merged = merge_parts([rows[:4], rows[3:]])  # a row in two parts (a resumed file) appears once
    assert [r.path for r in merged] == ["b.png", "g.png", "a.png", "e.png", "f.png", "d.png", "c.png"]
    # cautioned rows rank by their score among the scored ones, never below them
    assert [r.path for r in merged if r.caution is not None] == ["b.png", "f.png"]
    assert merged.index(rows[5]) < merged.index(rows[3])
    # files no longer in the folder are left out
    assert [r.path for r in merge_parts([rows], ["a.png", "c.png"])] == ["a.png", "c.png"]


def test_each_done_file_has_exactly_one_owner():
    owner = owners([["a", "b"], ["b", "c"], ["c", "d", "a"]])
    assert owner == {"a": 0, "b": 0, "c": 1, "d": 2}
    sessions = _sessions(3)
    todo = [p for p in "abcdefgh" if p not in owner]
    shards = [s.shard(todo) for s in sessions]
    assert sorted(sum(shards, [])) == ["e", "f", "g", "h"] and sessions[0].unshard(shards) == todo


def test_help_documents_the_exit_code_of_a_lost_process(capsys):
    with pytest.raises(SystemExit):
        screen_main(["--help"])
    text = capsys.readouterr().out
    assert f"\n  {EXIT_PEER_LOST}   (torchrun) another process of the job stopped" in text and "--resume" in text


# --------------------------------------------------------------------------- slow: real processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def folder(cxr_dir, tmp_path_factory) -> Path:
    """A dozen real chest X-rays (PNG, JPEG, DICOM) in two folders, plus two files that cannot be read."""
    if not MODEL.is_file():
        pytest.skip(f"the shipped model {MODEL.name} is missing")
    root = tmp_path_factory.mktemp("dist-screen") / "studies"
    (root / "sub").mkdir(parents=True)
    tops = sorted(p for p in cxr_dir.iterdir() if p.is_file() and p.stat().st_size < 1_000_000)
    for p in tops:
        shutil.copy(p, root / p.name)
    for p in sorted((cxr_dir / "figure1").glob("*.jpg"))[:12 - len(tops) + 2]:
        if p.stat().st_size < 1_000_000:
            shutil.copy(p, root / "sub" / p.name)
    (root / "sub" / "broken.png").write_bytes(b"not an image")
    (root / "truncated.png").write_bytes((cxr_dir / "00000001_000.png").read_bytes()[:3000])
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", CXR_CACHE_DIR=str(tmp_path_factory.mktemp("dist-cache")),
                CXR_DIST_TIMEOUT_S="60", MASTER_ADDR="127.0.0.1")


def _screen_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "cxr_desktop.cli.screen", str(folder), "--out", str(out), "--model", str(MODEL), "--json",
            "--batch-size", "4", *extra]


def _torchrun(folder: Path, out: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), *_screen_args(folder, out, *extra)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def one_process(folder, env, tmp_path_factory) -> Path:
    """The reference: the same folder screened by one plain process."""
    out = tmp_path_factory.mktemp("dist-one") / "results.csv"
    p = subprocess.run([sys.executable, *_screen_args(folder, out)], env=env, capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def _csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _assert_same_results(got: Path, want: Path) -> None:
    """Same columns, same rows in the same order; scores within 1e-6 (the JSON's full floats; the CSV's
    6-decimal text may then differ by one in the last digit), every other cell identical."""
    header, rows = _csv(got)
    want_header, want_rows = _csv(want)
    assert header == want_header
    assert [r[0] for r in rows] == [r[0] for r in want_rows]
    numeric = {i for i, h in enumerate(header) if h in ("score", "feature_distance", "feature_limit")
               or h.startswith("p_")}
    for r, w in zip(rows, want_rows):
        for i, (a, b) in enumerate(zip(r, w)):
            if i in numeric and a and b:
                assert abs(float(a) - float(b)) <= 1.000001e-6, (header[i], r[0], a, b)
            else:
                assert a == b, (header[i], r[0], a, b)
    got_doc = json.loads(got.with_suffix(".json").read_text(encoding="utf-8"))
    want_doc = json.loads(want.with_suffix(".json").read_text(encoding="utf-8"))
    assert [r["path"] for r in got_doc["rows"]] == [r["path"] for r in want_doc["rows"]]
    for g, w in zip(got_doc["rows"], want_doc["rows"]):
        assert (g["score"] is None) == (w["score"] is None) and abs((g["score"] or 0) - (w["score"] or 0)) <= 1e-6
        assert g["probabilities"].keys() == w["probabilities"].keys()
        assert all(abs(g["probabilities"][k] - w["probabilities"][k]) <= 1e-6 for k in w["probabilities"])
        assert g["status"] == w["status"] and (g["caution"] is None) == (w["caution"] is None)
        if w["caution"] is not None:  # a distance over pooled features: float noise of another batch is ~1e-6
            assert g["caution"]["limit"] == w["caution"]["limit"]
            assert abs(g["caution"]["distance"] - w["caution"]["distance"]) <= 1e-4 * w["caution"]["distance"]
    for key in ("files", "status", "labels", "above_threshold", "cautioned", "input_check"):
        assert got_doc["summary"][key] == want_doc["summary"][key], key
    assert got_doc["model"] == want_doc["model"]


@pytest.mark.slow
def test_two_gloo_processes_write_the_same_worklist_as_one(folder, env, one_process, tmp_path):
    out = tmp_path / "results.csv"
    header, ref = _reference_rows(one_process)
    old = [_marked(r) for r in ref if r.score is not None][:2]
    _seed_journal(tmp_path / "results.csv.rank0-of-3.journal", old, header)  # left by an earlier 3-process run
    p = _torchrun(folder, out, env)  # a fresh run (no --resume): screens everything again
    assert p.returncode == 0, p.stderr[-4000:]
    assert f"{len(ref)} files (0 already done, {len(ref)} to do)" in p.stderr
    _assert_same_results(out, one_process)
    doc = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert not {(r["path"], r["score"]) for r in doc["rows"]} & {(r.path, r.score) for r in old}
    _, rows = _csv(out)
    assert len(rows) == len({r[0] for r in rows}) == sum(1 for f in folder.rglob("*") if f.is_file())
    assert {r[1] for r in rows} >= {"ok", "error"}
    assert journals_of(out) == []  # complete: every journal removed
    assert p.stderr.count("cxr-screen: done:") == 1  # only process 0 prints the summary
    assert "2 processes" in p.stderr


def _seed_journal(path: Path, rows: list[ResultRow], header: JournalHeader, torn: bool = False) -> None:
    with Journal(path, header, resume=False) as j:
        j.append(rows)
    if torn:
        with open(path, "ab") as fh:
            fh.write(b'{"path": "half a row')


def _reference_rows(one_process: Path) -> tuple[JournalHeader, list[ResultRow]]:
    doc = json.loads(one_process.with_suffix(".json").read_text(encoding="utf-8"))
    m = doc["model"]
    header = JournalHeader(model=m["name"], model_sha256=m["sha256"], classes=m["classes"],
                           positive_class=m["positive_class"], threshold=m["threshold"])
    return header, [ResultRow.from_dict(r) for r in doc["rows"]]


def _marked(row: ResultRow) -> ResultRow:
    """The row with its score moved by 1e-9: invisible in the CSV (6 decimals), exact in the JSON."""
    assert row.score is not None
    return ResultRow.from_dict({**row.to_dict(), "score": row.score + 1e-9})


@pytest.mark.slow
def test_resume_continues_each_shard_and_re_shards_a_changed_process_count(folder, env, one_process, tmp_path):
    header, ref = _reference_rows(one_process)
    scored = sorted((r for r in ref if r.score is not None), key=lambda r: r.path)
    own, stale = [_marked(r) for r in scored[:3]], [_marked(r) for r in scored[3:5]]
    out = tmp_path / "results.csv"
    _seed_journal(tmp_path / "results.csv.rank1-of-2.journal", own, header, torn=True)  # this job's process 1
    _seed_journal(tmp_path / "results.csv.rank0-of-3.journal", stale, header)  # a 3-process run before
    p = _torchrun(folder, out, env, "--resume")
    assert p.returncode == 0, p.stderr[-4000:]
    total = len(ref)
    assert f"{total} files (5 already done, {total - 5} to do)" in p.stderr
    _assert_same_results(out, one_process)
    doc = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    by_path = {r["path"]: r for r in doc["rows"]}
    for r in own + stale:  # kept from the journals exactly, not screened again
        assert by_path[r.path]["score"] == r.score
    assert journals_of(out) == []


@pytest.mark.slow
def test_one_process_resumes_the_journals_of_a_two_process_run(folder, env, one_process, tmp_path):
    header, ref = _reference_rows(one_process)
    seeded = [_marked(r) for r in sorted((r for r in ref if r.score is not None), key=lambda r: r.path)[:4]]
    out = tmp_path / "results.csv"
    _seed_journal(tmp_path / "results.csv.rank0-of-2.journal", seeded[:2], header)
    _seed_journal(tmp_path / "results.csv.rank1-of-2.journal", seeded[2:], header)
    p = subprocess.run([sys.executable, *_screen_args(folder, out, "--resume")], env=env, capture_output=True,
                       text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "(4 already done," in p.stderr
    _assert_same_results(out, one_process)
    doc = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert {r["path"]: r["score"] for r in doc["rows"] if r["path"] in {s.path for s in seeded}} == {
        s.path: s.score for s in seeded}
    assert journals_of(out) == []


@pytest.mark.slow
def test_a_process_that_dies_stops_the_other_with_a_clear_message_and_resume_completes(
        folder, env, one_process, tmp_path):
    out = tmp_path / "results.csv"
    port = str(_free_port())
    procs = []
    for rank in range(2):  # what torchrun does, without its agent (which would stop process 0 itself)
        penv = dict(env, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_PORT=port,
                    CXR_DIST_TIMEOUT_S="30")
        procs.append(subprocess.Popen([sys.executable, *_screen_args(folder, out)], env=penv, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      start_new_session=True))
    victim_journal = tmp_path / "results.csv.rank1-of-2.journal"
    try:
        deadline = time.monotonic() + 120
        while not victim_journal.exists() and time.monotonic() < deadline and procs[1].poll() is None:
            time.sleep(0.05)
        assert victim_journal.exists(), procs[1].communicate(timeout=30)[1][-3000:]
        os.killpg(procs[1].pid, signal.SIGKILL)  # process 1 and its decode workers
        t0 = time.monotonic()
        _, err0 = procs[0].communicate(timeout=120)
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    assert procs[0].returncode == 75, err0[-3000:]
    assert "process 1 of 2" in err0 and "lost contact" in err0 and "--resume" in err0
    assert waited < 90
    assert (tmp_path / "results.csv.rank0-of-2.journal").exists()  # nothing completed is lost
    done_before = len(read_journal(tmp_path / "results.csv.rank0-of-2.journal")[1])
    assert done_before > 0
    p = _torchrun(folder, out, env, "--resume")
    assert p.returncode == 0, p.stderr[-4000:]
    resumed = re.search(r"\((\d+) already done,", p.stderr)
    assert resumed and int(resumed.group(1)) >= done_before  # process 0's rows (and any of process 1's) kept
    _assert_same_results(out, one_process)
    assert journals_of(out) == []


def _two_processes(folder: Path, out: Path, env: dict[str, str], models: list[Path]) -> list[subprocess.Popen]:
    """Two processes with torchrun's variables (no agent), each with its own --model."""
    port = str(_free_port())
    procs = []
    for rank, model in enumerate(models):
        penv = dict(env, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_PORT=port)
        args = _screen_args(folder, out)
        args[args.index("--model") + 1] = str(model)
        procs.append(subprocess.Popen([sys.executable, *args], env=penv, cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


@pytest.mark.slow
def test_fewer_files_than_processes_and_a_resume_with_nothing_left_to_do(cxr_dir, env, tmp_path):
    """Process 2's shard is empty (1 file), then both are (everything done): every process still meets the
    others at each step, and the worklist is the 1-process one."""
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(cxr_dir / "00000001_000.png", studies / "a.png")
    one = tmp_path / "one" / "results.csv"
    one.parent.mkdir()
    p = subprocess.run([sys.executable, *_screen_args(studies, one)], env=env, capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "results.csv"
    p = _torchrun(studies, out, env)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "1 files (0 already done, 1 to do)" in p.stderr
    _assert_same_results(out, one)
    first = out.read_bytes()
    p = _torchrun(studies, out, env, "--resume")
    assert p.returncode == 0, p.stderr[-4000:]
    assert "1 files (1 already done, 0 to do)" in p.stderr and p.stderr.count("cxr-screen: done:") == 1
    assert out.read_bytes() == first and journals_of(out) == []


@pytest.mark.slow
def test_a_model_that_one_process_cannot_load_stops_both(folder, env, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(MODEL.read_bytes()[:5000])
    out = tmp_path / "results.csv"
    procs = _two_processes(folder, out, env, [MODEL, broken])
    try:
        errs = [p.communicate(timeout=240)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert [p.returncode for p in procs] == [3, 3]  # both stop, neither waits for the other
    assert "cxr-screen (process 2 of 2): the model cannot be loaded" in errs[1] and "truncated" in errs[1]
    assert "cannot be loaded" not in errs[0]  # the process that failed says why, once
    assert not out.exists() and journals_of(out) == []
