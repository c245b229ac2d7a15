"""``cxr-screen``: exit codes, outputs, and kill -9 at any point followed by --resume."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest

from cxr_desktop.cli.screen import EXIT_IO, EXIT_MODEL, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE, main
from cxr_desktop.screening.results import journal_path_for, read_journal
from model_builders import untrained_model_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return untrained_model_file(tmp_path_factory.mktemp("cli-model") / "model.safetensors",
                                name="cli-test", seed=1, classes=("normal", "pneumonia"))


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cli-cache"))


def _folder(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = root / ("a" if i % 3 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        img = cv2.GaussianBlur((rng.random((48 + i, 40)) * 255).astype(np.uint8), (0, 0), 2)
        cv2.imwrite(str(sub / f"img{i:03d}.png"), img)
    return root


#: The synthetic images are small blurred noise: switch off the rules that (rightly) refuse them.
SYNTHETIC_OK = ["--disable-rule", "image_too_small", "--disable-rule", "inverted_intensity",
                "--disable-rule", "extreme_aspect_ratio"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def test_missing_bundled_model_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_RESOURCES_DIR", str(tmp_path / "no-resources"))
    _folder(tmp_path / "in", 1)
    err = io.StringIO()
    assert main([str(tmp_path / "in"), "--out", str(tmp_path / "r.csv")], stderr=err) == EXIT_USAGE
    assert "--model" in err.getvalue()
    assert not (tmp_path / "r.csv").exists()


def test_unloadable_model_and_bad_arguments(tmp_path):
    _folder(tmp_path / "in", 1)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04not a model")
    err = io.StringIO()
    assert main([str(tmp_path / "in"), "--out", str(tmp_path / "r.csv"), "--model", str(bad)], stderr=err) == EXIT_MODEL
    assert "cannot be loaded" in err.getvalue()
    err = io.StringIO()
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.csv"), "--model", str(bad)],
                stderr=err) == EXIT_USAGE
    assert "not a folder" in err.getvalue()
    assert main([str(tmp_path / "in"), "--out", str(tmp_path / "missing-dir" / "r.csv"), "--model", str(bad)],
                stderr=io.StringIO()) == EXIT_USAGE
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "in"), "--out", str(tmp_path / "r.csv"), "--batch-size", "0"])
    assert exc.value.code == 2


def test_cli_writes_ranked_csv_json_heatmaps_and_summary(tmp_path, model_file):
    folder = _folder(tmp_path / "in", 6)
    (folder / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    out = tmp_path / "res.csv"
    err = io.StringIO()
    code = main([str(folder), "--out", str(out), "--model", str(model_file), "--json", "--heatmaps",
                 str(tmp_path / "maps"), "--workers", "1", "--batch-size", "4", "--device", "cpu", *SYNTHETIC_OK],
                stderr=err)
    assert code == EXIT_OK, err.getvalue()
    rows = _rows(out)
    assert len(rows) == 7 and rows[-1]["path"] == "a/broken.png" and rows[-1]["status"] == "error"
    assert list(rows[0]) == ["path", "status", "label", "score", "above_threshold", "caution", "feature_distance",
                             "feature_limit", "p_normal", "p_pneumonia", "reason", "detail", "model"]
    assert all(r["model"] == "cli-test v0" for r in rows)
    doc = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert doc["summary"]["status"] == {"ok": 6, "error": 1}
    assert len(list((tmp_path / "maps").rglob("*.heatmap.png"))) == 6
    text = err.getvalue()
    assert "7/7 files" in text and "img/s" in text and "ETA" in text  # progress
    assert "status: error 1, ok 6" in text and "predicted label:" in text  # summary
    assert "Decision aid only" in text


# --------------------------------------------------------------------------- kill -9 and resume


def _journal_rows(path: Path) -> int:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return -1
    return max(0, data.count(b"\n") - 1)  # minus the header line


def _start(folder: Path, out: Path, model: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cxr_desktop.cli.screen", str(folder), "--out", str(out), "--model", str(model),
           "--workers", "1", "--batch-size", "2", "--device", "cpu", *SYNTHETIC_OK, *extra]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> bool:
    """kill -9 the process as soon as ``ready()``; False if it ended first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            return False
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("the screening process did not reach the kill point in time")


def _check_consistent(out: Path, expected: set[str]) -> None:
    """Whatever exists after a kill parses, and never holds a duplicate or a foreign row."""
    if out.exists():
        paths = [r["path"] for r in _rows(out)]
        assert len(paths) == len(set(paths)) and set(paths) <= expected


@pytest.mark.slow
def test_kill_9_at_several_points_then_resume_gives_exactly_one_row_per_file(tmp_path, model_file):
    n = 30
    folder = _folder(tmp_path / "in", n)
    expected = {Path(os.path.relpath(p, folder)).as_posix() for p in folder.rglob("*.png")}
    assert len(expected) == n
    out = tmp_path / "res.csv"
    journal = journal_path_for(out)

    kill_points = [
        ("during start-up, before the journal exists", None, 1.0),
        ("journal created, no row yet", lambda: _journal_rows(journal) >= 0, None),
        ("after 11 rows", lambda: _journal_rows(journal) >= 11, None),
    ]
    for i, (what, ready, after_s) in enumerate(kill_points):
        proc = _start(folder, out, model_file, *(["--resume"] if i else []))
        if ready is None:
            time.sleep(after_s)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        else:
            helpers: list[psutil.Process] = []

            def ready_and_note_helpers(ready=ready) -> bool:
                if not ready():
                    return False
                helpers[:] = psutil.Process(proc.pid).children(recursive=True)  # fork server + decode workers
                return True

            assert _kill_when(proc, ready_and_note_helpers), f"finished before the kill point: {what}"
            assert helpers, "expected decode worker processes"
            gone, alive = psutil.wait_procs(helpers, timeout=20)
            assert not alive, f"processes left behind after kill -9: {[p.pid for p in alive]}"
        _check_consistent(out, expected)
        assert _journal_rows(journal) <= n, what

    # resume and kill right after the final CSV write (if it does not exit first)
    proc = _start(folder, out, model_file, "--resume")
    _kill_when(proc, lambda: out.exists() and len(_rows(out)) == n)
    _check_consistent(out, expected)
    assert len(_rows(out)) == n

    proc = _start(folder, out, model_file, "--resume")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode(errors="replace")
    assert f"{n} files ({n} already done, 0 to do)" in stderr.decode()
    final = _rows(out)
    paths = [r["path"] for r in final]
    assert len(paths) == n and set(paths) == expected  # exactly one row per input file, no duplicates
    assert all(r["status"] == "ok" and 0.0 <= float(r["score"]) <= 1.0 for r in final)
    assert not journal.exists()
    scores = [float(r["score"]) for r in final]
    assert scores == sorted(scores, reverse=True)


# --------------------------------------------------------------------------- exit codes and messages


def _mount_tmpfs(where: Path, options: str) -> None:
    """Mount a small tmpfs (root only; skips elsewhere): the one honest way to get a full or read-only disk."""
    import shutil

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")


@pytest.fixture
def mounts():
    mounted: list[Path] = []

    def mount(where: Path, options: str) -> Path:
        _mount_tmpfs(where, options)
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _args(folder: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [str(folder), "--out", str(out), "--model", str(model), "--workers", "1", "--batch-size", "4",
            "--device", "cpu", *SYNTHETIC_OK, *extra]


def test_read_only_output_folder_is_an_io_error_that_wrote_nothing(tmp_path, model_file, mounts):
    folder = _folder(tmp_path / "in", 3)
    ro = mounts(tmp_path / "ro", "ro,size=1m")
    err = io.StringIO()
    code = main(_args(folder, ro / "r.csv", model_file), stderr=err)
    text = err.getvalue()
    assert code == EXIT_IO, text
    assert "Read-only file system" in text and "No rows were written" in text
    assert "kept" not in text and "Traceback" not in text


@pytest.mark.slow
def test_disk_full_exit_code_says_only_what_is_true_and_resume_finishes(tmp_path, model_file, mounts):
    n = 30  # more rows than one 4 KiB page holds
    folder = _folder(tmp_path / "in", n)
    disk = mounts(tmp_path / "small", "size=256k")
    fillers = []
    k = 0
    while True:  # fill the disk one page at a time
        try:
            (disk / f"fill{k:04d}").write_bytes(b"\0" * 4096)
        except OSError:
            (disk / f"fill{k:04d}").unlink(missing_ok=True)
            break
        fillers.append(disk / f"fill{k:04d}")
        k += 1
    out = disk / "r.csv"
    journal = journal_path_for(out)

    err = io.StringIO()
    assert main(_args(folder, out, model_file), stderr=err) == EXIT_IO, err.getvalue()
    assert "No space left on device" in err.getvalue() and "No rows were written" in err.getvalue()
    assert "kept" not in err.getvalue()

    fillers.pop().unlink()  # one page: room for the journal's header and a few rows, not for all
    err = io.StringIO()
    assert main(_args(folder, out, model_file, "--resume"), stderr=err) == EXIT_IO, err.getvalue()
    kept = len(read_journal(journal)[1])
    assert 0 < kept < n
    assert f"{kept} finished rows are kept in r.csv.journal" in err.getvalue()

    for f in fillers:
        f.unlink()
    err = io.StringIO()
    assert main(_args(folder, out, model_file, "--resume"), stderr=err) == EXIT_OK, err.getvalue()
    assert f"{n} files ({kept} already done, {n - kept} to do)" in err.getvalue()
    paths = [r["path"] for r in _rows(out)]
    assert len(paths) == n == len(set(paths))


@pytest.mark.slow
def test_sigterm_prints_one_line_keeps_rows_and_exits_143(tmp_path, model_file):
    folder = _folder(tmp_path / "in", 40)
    out = tmp_path / "res.csv"
    journal = journal_path_for(out)
    proc = _start(folder, out, model_file)
    t0 = time.monotonic()
    while _journal_rows(journal) < 3:
        assert proc.poll() is None, proc.stderr.read().decode(errors="replace")
        assert time.monotonic() - t0 < 120
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    text = stderr.decode(errors="replace")
    assert proc.returncode == EXIT_TERMINATED == 143, text
    kept = len(read_journal(journal)[1])
    lines = [ln for ln in text.splitlines() if "SIGTERM" in ln]
    assert lines == [f"cxr-screen: stopped by SIGTERM; {kept} rows kept in res.csv.journal; resume with --resume."]
    assert kept >= 3 and "Traceback" not in text and "Warning" not in text


def test_help_documents_every_exit_code(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for code in (EXIT_OK, EXIT_USAGE, EXIT_MODEL, EXIT_IO, EXIT_TERMINATED, 130):
        assert f"\n  {code} " in text


@pytest.mark.slow
def test_every_restart_makes_progress_when_killed_right_after_its_first_durable_row(tmp_path, model_file):
    """kill -9 as soon as a start has journalled one new row, twice; the third start finishes."""
    n = 10
    folder = _folder(tmp_path / "in", n)
    ref = tmp_path / "ref.csv"
    assert main(_args(folder, ref, model_file), stderr=io.StringIO()) == EXIT_OK
    out = tmp_path / "res.csv"
    journal = journal_path_for(out)
    durable = []
    for i in range(2):
        before = _journal_rows(journal)
        proc = _start(folder, out, model_file, *(["--resume"] if i else []))
        assert _kill_when(proc, lambda: _journal_rows(journal) > max(before, 0)), "finished before the kill"
        durable.append(len(read_journal(journal)[1]))
    assert durable == sorted(durable) and durable[0] >= 1 and len(set(durable)) == 2  # each start added rows
    proc = _start(folder, out, model_file, "--resume")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_OK, stderr.decode(errors="replace")
    final, expected = {r["path"]: r for r in _rows(out)}, {r["path"]: r for r in _rows(ref)}
    assert len(_rows(out)) == n and set(final) == set(expected)  # one row per file
    for path, row in final.items():
        assert abs(float(row["score"]) - float(expected[path]["score"])) <= 1.000001e-6, path


def test_unexpected_failure_is_one_line_and_a_crash_report_without_its_message(tmp_path, model_file, monkeypatch):
    """A failure nobody foresaw (injected here into the runner): exit 1, no traceback, no message that may quote data."""
    from cxr_desktop.screening import runner

    secrets = ["SMITH" + "^JOHN", "1945" + "0312", "ACC-" + "5566"]  # not literally in the source lines shown

    def failing_screen_folder(*args, **kwargs):
        yield from ()
        raise ValueError(f"header of {secrets[0]}, born {secrets[1]}, accession {secrets[2]}")

    monkeypatch.setattr(runner, "screen_folder", failing_screen_folder)
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    folder = _folder(tmp_path / "in", 2)
    err = io.StringIO()
    assert main(_args(folder, tmp_path / "r.csv", model_file), stderr=err) == 1
    text = err.getvalue()
    assert "unexpected failure (ValueError); no rows were written; a report without patient data is in" in text
    assert "Traceback" not in text and "19450312" not in text
    (report,) = (tmp_path / "data" / "crash-logs").glob("crash-*.log")
    log = report.read_text(encoding="utf-8")
    assert "failing_screen_folder" in log and "ValueError: <message withheld" in log
    for secret in secrets:
        assert secret not in log


def test_library_warnings_and_decoder_chatter_stay_off_stderr():
    """What the decode workers and cxr-screen itself do to keep stderr for the tool's own lines."""
    noisy = ("import os, warnings, logging, numpy as np\n"
             "np.float32(1) / np.float32(0)\n"  # RuntimeWarning: divide by zero
             "warnings.warn('pydicom: invalid value for VR DS')\n"
             "logging.getLogger('pydicom').warning('a library log record')\n")
    worker = ("from cxr_desktop.screening.dataset import quiet_worker_output\nquiet_worker_output()\n" + noisy
              + "os.write(2, b'Corrupt JPEG data: premature end of data segment\\n')\n")
    cli = ("import sys\nfrom cxr_desktop.cli.screen import quiet_library_output\nquiet_library_output()\n" + noisy
           + "sys.stderr.write('cxr-screen: own line\\n')\n")
    loud = subprocess.run([sys.executable, "-c", noisy], capture_output=True, cwd=REPO)
    assert b"RuntimeWarning" in loud.stderr and b"invalid value" in loud.stderr  # the noise is real
    for code, expected in ((worker, b""), (cli, b"cxr-screen: own line\n")):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO)
        assert done.returncode == 0 and done.stderr == expected, done.stderr.decode(errors="replace")
