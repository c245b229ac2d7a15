"""Folder screening core: one row per file, error rows, heatmaps, journal/resume, safe CSV cells."""

from __future__ import annotations

import csv
import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from cxr_desktop.scope import RULE_CODES, ScopeSettings, rules
from cxr_desktop.screening.results import (
    Journal, JournalHeader, ResultRow, journal_path_for, read_journal, read_results_csv, safe_cell, sort_key,
    unsafe_cell,
)
from cxr_desktop.screening.runner import (
    ResumeMismatch, RowsDone, ScreenFinished, ScreenOptions, ScreenStarted, screen_folder,
)
from cxr_desktop.screening.walk import list_image_files

SIZE = 64


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from cxr_desktop.inference.engine import EngineOptions, load_engine
    from cxr_desktop.model import init_model, save_model

    d = tmp_path_factory.mktemp("screen-model")
    model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal", weights="none",
                             input_size=SIZE, name="screen-test", seed=0)
    with __import__("torch").no_grad():
        for p in model.head.parameters():
            p.mul_(50.0)  # spread the scores so that ranking is visible
    path = d / "model.safetensors"
    save_model(path, model, card)
    eng = load_engine(path, options=EngineOptions(device="cpu", cache_dir=d / "cache"))
    eng.model_path_for_tests = path
    return eng


def _png(path: Path, rows: int, cols: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    img = (rng.random((rows, cols)) * 255).astype(np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 3 + seed % 5)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


#: Synthetic test images are small noise: only the image-geometry/intensity rules would refuse them.
SYNTHETIC_OK = ScopeSettings(enabled_rules=frozenset(RULE_CODES) - {rules.TOO_SMALL, rules.INVERTED, rules.ASPECT})


def _run(folder, engine, out_csv, **kw):
    cancel = kw.pop("cancel", None)
    opts = ScreenOptions(**{"workers": 1, "batch_size": 4, "scope_settings": SYNTHETIC_OK, **kw})
    events = list(screen_folder(folder, engine, out_csv, options=opts, cancel=cancel))
    assert isinstance(events[-1], ScreenFinished)
    return events


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_every_shared_data_file_gets_exactly_one_row(shared_data, engine, tmp_path):
    out = tmp_path / "all.csv"
    events = _run(shared_data, engine, out, workers=2, batch_size=16, scope_settings=ScopeSettings())
    rows = _csv_rows(out)
    paths = [r["path"] for r in rows]
    expected = sorted(
        Path(os.path.relpath(os.path.join(d, f), shared_data)).as_posix()
        for d, _, files in os.walk(shared_data) for f in files
        if Path(f).suffix.lower() in {".png", ".jpg", ".jpeg", ".dcm"}
    )
    assert len(paths) == len(set(paths))  # no duplicates
    assert sorted(paths) == expected  # README.md / metadata.csv are not images: no rows
    by_path = {r["path"]: r for r in rows}
    # the undecodable file is an error row with a reason; real radiographs are scored
    assert by_path["dicom/liver_rle.dcm"]["status"] == "error"
    assert by_path["dicom/liver_rle.dcm"]["reason"] == "unsupported_transfer_syntax"
    for name in ("cxr/00000001_000.png", "cxr/siim_pneumothorax_sample.dcm", "dicom/RG1_J2KI.dcm"):
        assert by_path[name]["status"] == "ok", by_path[name]
        assert 0.0 <= float(by_path[name]["score"]) <= 1.0
    # not chest radiographs: not scored
    assert by_path["dicom/MR2_J2KI.dcm"]["status"] == "out_of_scope"
    assert by_path["dicom/MR2_J2KI.dcm"]["score"] == ""
    assert "modality_not_radiograph" in by_path["dicom/MR2_J2KI.dcm"]["reason"].split(";")
    # its pixels are a positive image under a MONOCHROME1 tag: displayed as a negative, so refused
    assert by_path["cxr/fake_monochrome1.dcm"]["status"] == "out_of_scope"
    assert "inverted_intensity" in by_path["cxr/fake_monochrome1.dcm"]["reason"].split(";")
    # ranked: scored rows by score descending, then out of scope, then errors
    order = {"ok": 0, "out_of_scope": 1, "error": 2}
    keys = [(order[r["status"]], -float(r["score"]) if r["score"] else 0.0) for r in rows]
    assert keys == sorted(keys)
    started = next(e for e in events if isinstance(e, ScreenStarted))
    assert started.total == len(expected)
    assert not journal_path_for(out).exists()  # complete: the CSV holds every row


# --------------------------------------------------------------------------- bad input


def test_unreadable_files_become_error_rows_and_the_rest_is_scored(engine, tmp_path):
    folder = tmp_path / "in"
    for i in range(5):
        _png(folder / f"good{i}.png", 80 + 10 * i, 70, seed=i)
    good = (folder / "good0.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 3])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.dcm").write_text("not a DICOM file")
    (folder / "sub").mkdir()
    (folder / "sub" / "picture.bmp").write_bytes(b"BM" + b"\0" * 64)
    (folder / "readme.txt").write_text("ignored: not an image")
    out = tmp_path / "out.csv"
    _run(folder, engine, out)
    rows = {r["path"]: r for r in _csv_rows(out)}
    assert set(rows) == {f"good{i}.png" for i in range(5)} | {"truncated.png", "empty.png", "notes.dcm",
                                                             "sub/picture.bmp"}
    for i in range(5):
        assert rows[f"good{i}.png"]["status"] == "ok"
        assert rows[f"good{i}.png"]["label"] in ("normal", "abnormal")
    for bad in ("truncated.png", "empty.png", "notes.dcm", "sub/picture.bmp"):
        assert rows[bad]["status"] == "error", rows[bad]
        assert rows[bad]["reason"] in {"truncated", "not_an_image", "unsupported_pixel_format", "unreadable"}
        assert Path(bad).name in rows[bad]["detail"]  # which file, what is wrong
        assert rows[bad]["score"] == "" and rows[bad]["p_abnormal"] == ""
    assert rows["truncated.png"]["reason"] == "truncated"
    ordered = list(_csv_rows(out))
    assert [r["status"] for r in ordered[:5]] == ["ok"] * 5
    scores = [float(r["score"]) for r in ordered[:5]]
    assert scores == sorted(scores, reverse=True)


def crash_on_marked_files(path: str):
    """Loader for the worker-crash test: a native decoder crash, simulated."""
    if "crash" in os.path.basename(path):
        os._exit(3)
    from cxr_desktop.screening.dataset import default_loader

    return default_loader(path)


@pytest.mark.slow
def test_a_decoder_that_kills_its_worker_costs_one_error_row(engine, tmp_path):
    folder = tmp_path / "in"
    for i in range(7):
        _png(folder / f"img{i}.png", 64, 64, seed=i)
    _png(folder / "img3_crash.png", 64, 64, seed=9)
    out = tmp_path / "out.csv"
    events = _run(folder, engine, out, workers=2, batch_size=2, loader=crash_on_marked_files)
    rows = {r["path"]: r for r in _csv_rows(out)}
    assert len(rows) == 8
    assert rows["img3_crash.png"]["status"] == "error"
    assert "stopped unexpectedly" in rows["img3_crash.png"]["detail"]
    assert all(rows[f"img{i}.png"]["status"] == "ok" for i in range(7))
    assert any("stopped unexpectedly" in getattr(e, "message", "") for e in events)


# --------------------------------------------------------------------------- outputs


def test_csv_cells_are_safe_against_formula_injection(engine, tmp_path):
    folder = tmp_path / "in"
    names = ['=HYPERLINK("evil","click").png', "+cmd.png", "-2+3.png", "@SUM(A1).png", "'quoted.png", "plain.png"]
    for i, n in enumerate(names):
        _png(folder / n, 64, 64, seed=i)
    out = tmp_path / "out.csv"
    _run(folder, engine, out, json_path=tmp_path / "out.json")
    rows = _csv_rows(out)
    cells = {r["path"] for r in rows}
    assert cells == {"'" + n for n in names[:5]} | {"plain.png"}
    for r in rows:
        for key, value in r.items():
            assert not value or value[0] not in "=+-@\t\r", (key, value)
        float(r["score"])  # numeric columns stay plain numbers
        float(r["p_normal"])
        assert r["above_threshold"] in ("true", "false")
    classes, back = read_results_csv(out)  # our reader undoes the escaping
    assert classes == ["normal", "abnormal"]
    assert {r.path for r in back} == set(names)
    doc = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert {r["path"] for r in doc["rows"]} == set(names)  # JSON keeps the real names
    assert doc["summary"]["files"] == len(names) and "Decision aid" in doc["notice"]


def test_safe_cell_round_trip():
    for text in ["=1+2", "+x", "-x", "@x", "\tx", "\rx", "'x", "x=1", "", "normal"]:
        escaped = safe_cell(text)
        assert not escaped or escaped[0] not in "=+-@\t\r"
        assert unsafe_cell(escaped) == text


def test_heatmap_png_geometry_equals_image_geometry(engine, tmp_path):
    folder = tmp_path / "in"
    _png(folder / "wide.png", 97, 151, seed=1)
    _png(folder / "deep" / "tall.png", 180, 75, seed=2)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out, heat = tmp_path / "out.csv", tmp_path / "heat"
    _run(folder, engine, out, heatmaps_dir=heat)
    for rel, shape in (("wide.png", (97, 151)), ("deep/tall.png", (180, 75))):
        h = cv2.imread(str(heat / (rel + ".heatmap.png")), cv2.IMREAD_UNCHANGED)
        o = cv2.imread(str(heat / (rel + ".overlay.png")), cv2.IMREAD_UNCHANGED)
        assert h.dtype == np.uint16 and h.shape == shape
        assert o.dtype == np.uint8 and o.shape == shape + (3,)
        assert h.max() == 65535 and h.min() == 0  # Grad-CAM maps are min-max scaled
    assert not (heat / "broken.png.heatmap.png").exists()
    assert not list(heat.rglob("*.tmp"))


# --------------------------------------------------------------------------- journal and resume


def _header():
    return JournalHeader(model="m v1", model_sha256="ab" * 32, classes=["a", "b"], positive_class="b",
                         threshold=0.5)


def test_journal_ignores_a_torn_last_line_and_appends_after_it(tmp_path):
    path = tmp_path / "r.csv.journal"
    with Journal(path, _header(), resume=False) as j:
        j.append([ResultRow("x.png", "ok", "a", 0.2, False, {"a": 0.8, "b": 0.2}),
                  ResultRow("y.png", "error", reason="truncated")])
    with open(path, "ab") as fh:
        fh.write(b'{"path": "z.png", "status": "o')  # killed mid-write
    header, rows = read_journal(path)
    assert header == _header() and [r.path for r in rows] == ["x.png", "y.png"]
    with Journal(path, _header(), resume=True) as j:
        j.append([ResultRow("z.png", "ok", "b", 0.9, True, {"a": 0.1, "b": 0.9})])
    header, rows = read_journal(path)
    assert [r.path for r in rows] == ["x.png", "y.png", "z.png"]
    assert rows[2].score == pytest.approx(0.9) and rows[2].above_threshold is True


def test_sort_key_puts_scores_first_then_out_of_scope_then_errors():
    rows = [ResultRow("e", "error"), ResultRow("lo", "ok", score=0.1), ResultRow("s", "out_of_scope"),
            ResultRow("hi", "ok", score=0.9)]
    assert [r.path for r in sorted(rows, key=sort_key)] == ["hi", "lo", "s", "e"]


def test_cancel_keeps_finished_rows_and_resume_completes(engine, tmp_path):
    folder = tmp_path / "in"
    for i in range(12):
        _png(folder / f"f{i:02d}.png", 64, 64, seed=i)
    out = tmp_path / "out.csv"
    cancel = threading.Event()
    opts = ScreenOptions(workers=1, batch_size=2)
    gen = screen_folder(folder, engine, out, options=opts, cancel=cancel)
    done_rows = []
    for ev in gen:
        if isinstance(ev, RowsDone):
            done_rows.extend(ev.rows)
            cancel.set()
        if isinstance(ev, ScreenFinished):
            fin = ev
    assert fin.cancelled and fin.rows_written == len(done_rows) == 1  # the first batch is one file
    assert {r["path"] for r in _csv_rows(out)} == {r.path for r in done_rows}
    assert journal_path_for(out).exists()  # kept for resume
    events = _run(folder, engine, out, resume=True, batch_size=4)
    started = next(e for e in events if isinstance(e, ScreenStarted))
    assert (started.already_done, started.to_do) == (1, 11)
    paths = [r["path"] for r in _csv_rows(out)]
    assert sorted(paths) == [f"f{i:02d}.png" for i in range(12)]
    # resuming a finished run does no work and keeps every row
    events = _run(folder, engine, out, resume=True)
    started = next(e for e in events if isinstance(e, ScreenStarted))
    assert (started.already_done, started.to_do) == (12, 0)
    assert sorted(r["path"] for r in _csv_rows(out)) == sorted(paths)


def test_resume_refuses_results_of_another_model(engine, tmp_path):
    folder = tmp_path / "in"
    _png(folder / "a.png", 64, 64, seed=1)
    out = tmp_path / "out.csv"
    journal = journal_path_for(out)
    other = JournalHeader(model="other v2", model_sha256="cd" * 32, classes=["normal", "abnormal"],
                          positive_class="abnormal", threshold=0.5)
    Journal(journal, other, resume=False).close()
    with pytest.raises(ResumeMismatch):
        list(screen_folder(folder, engine, out, options=ScreenOptions(workers=0, resume=True)))
    _run(folder, engine, out, workers=0)  # without resume: starts over
    assert [r["path"] for r in _csv_rows(out)] == ["a.png"]


def test_after_model_check_withholds_the_score(engine, tmp_path):
    folder = tmp_path / "in"
    for i in range(3):
        _png(folder / f"x{i}.png", 64, 64, seed=i)
    out = tmp_path / "out.csv"
    seen = []

    def learned(pooled):
        seen.append(pooled.shape)
        return "unlike the training images" if len(seen) == 2 else None

    _run(folder, engine, out, workers=0, after_model=learned, heatmaps_dir=tmp_path / "h")
    rows = _csv_rows(out)
    assert seen == [(2048,)] * 3
    oos = [r for r in rows if r["status"] == "out_of_scope"]
    assert len(oos) == 1 and oos[0]["reason"] == "unlike the training images" and oos[0]["score"] == ""
    assert not (tmp_path / "h" / (oos[0]["path"] + ".heatmap.png")).exists()
    assert len(list((tmp_path / "h").glob("*.heatmap.png"))) == 2


def test_walk_skips_outputs_hidden_files_and_non_images(tmp_path):
    _png(tmp_path / "a.png", 8, 8, seed=0)
    _png(tmp_path / ".hidden.png", 8, 8, seed=0)
    _png(tmp_path / "heat" / "a.png.heatmap.png", 8, 8, seed=0)
    (tmp_path / "noext").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)  # DICOM without extension
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "out.csv").write_text("x")
    found = list_image_files(tmp_path, exclude=[tmp_path / "heat", tmp_path / "out.csv"])
    assert found == ["a.png", "noext"]


# --------------------------------------------------------------------------- files that never end


def sleep_on_marked_files(path: str):
    """Loader for the time-limit test: a decoder stuck on one file (it would sleep for a minute)."""
    import time

    if "stuck" in os.path.basename(path):
        time.sleep(60)
    from cxr_desktop.screening.dataset import default_loader

    return default_loader(path)


@pytest.mark.slow
def test_fifo_is_an_error_row_and_a_stuck_decode_is_stopped_by_the_time_limit(engine, tmp_path):
    import time

    folder = tmp_path / "in"
    for i in range(4):
        _png(folder / f"img{i}.png", 64, 64, seed=i)
    _png(folder / "img2_stuck.png", 64, 64, seed=7)
    os.mkfifo(folder / "pipe.dcm")  # nobody ever writes: opening it for reading would block for ever
    os.mkfifo(tmp_path / "elsewhere-fifo")
    os.symlink(tmp_path / "elsewhere-fifo", folder / "link.dcm")
    out = tmp_path / "out.csv"
    t0 = time.monotonic()
    events = _run(folder, engine, out, workers=1, batch_size=2, loader=sleep_on_marked_files,
                  decode_time_limit_s=1.5)
    took = time.monotonic() - t0
    rows = {r["path"]: r for r in _csv_rows(out)}
    assert set(rows) == {f"img{i}.png" for i in range(4)} | {"img2_stuck.png", "pipe.dcm", "link.dcm"}
    for name in ("pipe.dcm", "link.dcm"):
        assert rows[name]["status"] == "error" and "named pipe (FIFO)" in rows[name]["detail"], rows[name]
    stuck = rows["img2_stuck.png"]
    assert stuck["status"] == "error" and "decoding took longer than 1.5 s" in stuck["detail"], stuck
    assert all(rows[f"img{i}.png"]["status"] == "ok" for i in range(4))  # the run went on
    assert any("took longer than 1.5 s" in getattr(e, "message", "") for e in events)
    assert took < 45  # not the 60 s the stuck decoder wanted (the worker was replaced)


def test_decode_clock_files_of_killed_screenings_are_swept_and_its_own_removed_on_close(tmp_path):
    """A screening killed before closing its clock leaves a small file in the temp folder: the next one removes
    it, and never a live process's file."""
    import subprocess
    import sys

    from cxr_desktop.screening.dataset import DecodeClock

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f"decode-clock-{gone.pid}-abc.bin"
        running = tmp_path / f"decode-clock-{live.pid}-def.bin"
        other = tmp_path / "decode-clock-notes.txt"
        for f in (stale, running, other):
            f.write_bytes(b"x")
        clock = DecodeClock(2.0, 3, tmp_path)
        assert not stale.exists() and running.exists() and other.exists()
        own = Path(clock.path)
        assert own.name.startswith(f"decode-clock-{os.getpid()}-") and own.stat().st_size == 3 * DecodeClock.SLOT.size
        clock.close()
        assert not own.exists()
    finally:
        live.kill()
        live.wait()


def test_first_batches_ramp_up_so_the_first_rows_are_journalled_early():
    from cxr_desktop.screening.runner import ramp_batches

    assert [len(b) for b in ramp_batches(40, 16)] == [1, 2, 4, 8, 16, 9]
    assert sum(ramp_batches(40, 16), []) == list(range(40))  # every position once, in order
    assert ramp_batches(3, 1) == [[0], [1], [2]] and ramp_batches(0, 16) == []
