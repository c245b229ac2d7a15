"""Training as a local torchrun job (training/launch.py): the same events and result as engine.train.

The JSON round trip of every event type runs in milliseconds; the torchrun runs use the
tiny 64 px synthetic folder of test_training_engine (1 frozen + 1 fine-tune epoch) and are slow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path

import numpy as np
import pytest

from cxr_desktop.model.card import ModelCard
from cxr_desktop.model.modelfile import load_model
from cxr_desktop.training import events as E
from cxr_desktop.training.config import TrainConfig, TrainingError
from cxr_desktop.training.engine import train
from cxr_desktop.training.event_json import decode, from_json, to_json
from cxr_desktop.training.launch import _env, local_gpu_count, train_local
from cxr_desktop.training.launch_worker import APP_PID_ENV
from cxr_desktop.training.metrics import ThresholdChoice
from cxr_desktop.training.results import Evaluation, SplitPredictions, TrainResult
from cxr_desktop.training.scan import DuplicateSet, ScanItem, ScanProblem, ScanProgress, ScanResult
from cxr_desktop.training.synthetic import PATIENT_REGEX
from training_helpers import drive, tiny_config, write_tiny_dataset



def same(a, b) -> bool:
    """Deep equality that also holds for numpy arrays (dtype, shape, values) and NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, (float, np.floating)):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def _events() -> list:
    item = ScanItem(path="/data/pneumonia/g1/a.png", rel="pneumonia/g1/a.png", label=1, cls="pneumonia",
                    sha256="ab" * 32, group="g-0123456789ab", group_source="pattern", format="png", rows=64,
                    columns=64, photometric=None, aliases=("g-0123456789ab", "g-ba9876543210"))
    problem = ScanProblem("normal/bad.png", "truncated", "The file ends early.")
    scan = ScanResult(root="/data", classes=["normal", "pneumonia"], items=[item], problems=[problem],
                      duplicates=[DuplicateSet("cd" * 32, ["normal/x.png", "pneumonia/x.png"], ["normal", "pneumonia"],
                                               True, None)],
                      ignored=["notes.txt"], warnings=["few images"], patient_regex=PATIENT_REGEX,
                      patient_conflicts=1, folder_patients=3)
    preds = SplitPredictions("val", np.array([0, 1, 1], np.int64), np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]],
                                                                             np.float32),
                             ["a.png", "b.png", "c.png"], ["/d/a.png", "/d/b.png", "/d/c.png"], groups=["g1", "g2", "g2"],
                             kinds=["PNG", "DICOM", "DICOM MONOCHROME1"])
    metrics = {"auc": np.float64(0.75), "n": 3, "ci": (0.5, float("nan")), "confusion_matrix": [[1, 0], [1, 1]],
               "per_kind": {"PNG": {"n": np.int64(1)}}, "roc": {1: np.linspace(0, 1, 3)}}
    evaluation = Evaluation(["normal", "pneumonia"], 1, ThresholdChoice(0.42, "sensitivity", 0.95, 1.0, 0.5, "note"),
                            preds, None, metrics, None)
    history = [E.EpochDone(1, 1, 0.7, 0.69, float("nan"), 1.5, 1e-3, 0.5, True)]
    card = ModelCard(name="m", classes=["normal", "pneumonia"], positive_class="pneumonia",
                     metrics={"test": {"auc": 0.7}}, warnings=["w"])
    result = TrainResult(work_dir="/w", history=history, model_path="/m.safetensors", sha256="ef" * 32, card=card,
                         evaluation=evaluation, best={"score": 0.7, "stage": 1, "epoch": 1}, report_path=None,
                         data={"folder": "d"})
    return [
        ScanProgress(1, 2, "normal/a.png", "data"),
        E.ScanDone(scan, None),
        E.ScanDone(scan, scan),
        E.SplitDone({"train": {"normal": 4, "groups": 2}}, 0, "split", ["w"]),
        E.PrepareProgress(3, 4),
        E.PrepareDone(4, [problem], 0.25, False),
        E.ModelReady("CPU", {"source": "random"}, [], 23_000_000),
        E.Resumed(2, 1, None),
        E.StageStarted(1, 1, 1e-3, "head", True),
        E.FeatureProgress("train", 8, 16),
        E.EpochStarted(2, 1, 3, 1e-4),
        E.BatchProgress(2, 1, "train", 1, 4, None, 12.5),
        history[0],
        E.CheckpointSaved("/w/ckpt-0001.safetensors", 1, 1),
        E.EarlyStopped(2, 3, "no improvement"),
        E.EvaluationStarted("test (starting model)", 8),
        E.EvaluationDone(evaluation),
        E.ModelSaved("/m.safetensors", "ef" * 32, 94_000_000),
        E.ReportSaved("/r.html", error="OSError: disk full"),
        E.Cancelled(2, 1, True, "Training stopped"),
        E.Finished(result),
    ]


def test_every_event_type_survives_the_json_round_trip():
    events = _events()
    assert {type(e) for e in events} == set(typing.get_args(E.TrainEvent))  # a new event type needs a case here
    for ev in events:
        text = to_json(ev)
        assert "\n" not in text
        back = from_json(text)
        assert same(ev, back), type(ev).__name__
    ev = from_json(to_json(events[-1]))  # the Finished result keeps its arrays' dtype and tuples
    assert ev.result.evaluation.val.probs.dtype == np.float32 and isinstance(ev.result.evaluation.val_metrics["ci"], tuple)
    assert from_json(to_json(None)) is None


def test_the_json_reader_builds_only_training_types():
    with pytest.raises(ValueError, match="unknown type"):
        decode({"__dc__": "Popen", "fields": {"args": ["sh"]}})

    @dataclasses.dataclass
    class Other:
        x: int

    with pytest.raises(TypeError):
        to_json(E.Finished(Other(1)))
    with pytest.raises(TypeError):
        to_json(E.Finished(np.array([object()])))


def test_local_gpu_count_is_a_count():
    n = local_gpu_count()
    assert isinstance(n, int) and n >= 0


# ----------------------------------------------------------------------------- torchrun jobs


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, cxr_dir):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"), cxr_dir)


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    return tiny_config(data, out, **{"epochs_finetune": 1, "report": None, **kw})




def _processes_naming(text: str, *, workers_only: bool = False) -> list[int]:
    """Live processes whose command line holds ``text`` (the run folder is on torchrun's and every worker's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            state = (entry / "stat").read_text().split(") ")[-1][:1]
        except OSError:
            continue
        if text in cmd and state != "Z" and not (workers_only and "torch.distributed.run" in cmd):
            found.append(int(entry.name))
    return found


def _gone_within(text: str, seconds: float) -> bool:
    """Wait until no live process names ``text``; fail naming those left (pid, state, command line)."""
    deadline = time.monotonic() + seconds
    while (left := _processes_naming(text)) and time.monotonic() < deadline:
        time.sleep(0.2)
    described = []
    for pid in left:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue  # it ended meanwhile
        if state != "Z":  # ended meanwhile, not yet reaped
            described.append(f"{pid} [{state}] {cmd[:300]}")
    assert not described, f"processes left after {seconds} s: {described}"
    return True


needs_proc = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc to list processes")
pytestmark = pytest.mark.usefixtures("training_isolation")


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_a_torchrun_job_gives_the_events_and_result_of_train(tiny_data, tmp_path, nproc):
    sync = nproc > 1  # the same BatchNorm statistics as one process (test_ddp_training's setting)
    ref_events, ref = drive(train(_cfg(tiny_data, tmp_path / "ref.safetensors", sync_batchnorm=sync)))
    out = tmp_path / "job.safetensors"
    events, result = drive(train_local(_cfg(tiny_data, out, sync_batchnorm=sync), nproc=nproc))

    if nproc == 1:  # the same process count: the same events, in the same order, with the same counts
        assert [type(e) for e in events] == [type(e) for e in ref_events]
        assert [(e.stage, e.epoch) for e in events if isinstance(e, E.EpochDone)] == [(1, 1), (2, 1)]
    else:  # the batches are split over the processes; the steps are the same
        steps = lambda evs: [type(e) for e in evs if not isinstance(e, (E.BatchProgress, E.FeatureProgress))]  # noqa: E731
        assert steps(events) == steps(ref_events)
    assert isinstance(events[-1], E.Finished) and isinstance(result, TrainResult)
    assert result.model_path == str(out) and not result.cancelled
    loaded = load_model(out)
    assert loaded.sha256 == result.sha256 == next(e for e in events if isinstance(e, E.ModelSaved)).sha256
    # the card train returns (the file's card less the tensor digest save_model adds to the file)
    assert result.card == dataclasses.replace(loaded.card, tensors_sha256=None)
    ev, ref_ev = result.evaluation, ref.evaluation
    assert ev.classes == ref_ev.classes and ev.val.rels == ref_ev.val.rels and ev.test.rels == ref_ev.test.rels
    assert ev.val.probs.shape == ref_ev.val.probs.shape and ev.val.probs.dtype == ref_ev.val.probs.dtype
    # same seed and global batch: the same numbers (2 processes: within test_ddp_training's metric tolerance)
    tol = 1e-5 if nproc == 1 else 1e-3
    np.testing.assert_allclose(ev.test.probs, ref_ev.test.probs, atol=tol)
    assert ev.threshold.threshold == pytest.approx(ref_ev.threshold.threshold, abs=tol)
    assert [h.train_loss for h in result.history] == pytest.approx([h.train_loss for h in ref.history], abs=tol)
    assert ev.at_threshold(loaded.card.decision_threshold, "test") == ev.at_threshold(result.card.decision_threshold,
                                                                                       "test")
    assert result.best["stage"] in (1, 2) and [type(h) for h in result.history] == [E.EpochDone, E.EpochDone]


@pytest.mark.slow
@needs_proc
def test_cancel_finishes_with_the_best_epoch_and_closing_stops_the_job(tiny_data, tmp_path):
    """Two processes: both see the cancel (the engine agrees it across them); closing ends both."""
    cancel = threading.Event()

    def on_event(ev):
        if isinstance(ev, E.EpochStarted) and ev.stage == 2:
            cancel.set()

    out = tmp_path / "cancelled.safetensors"
    events, result = drive(train_local(_cfg(tiny_data, out, epochs_finetune=3), nproc=2, cancel=cancel), on_event)
    stops = [e for e in events if isinstance(e, E.Cancelled)]
    assert len(stops) == 1 and stops[0].kept_best and not cancel.is_set()  # acknowledged like train does
    assert result.cancelled and load_model(out).card.provenance["stopped_early_by_user"] is True
    assert _gone_within(str(out) + ".run", 10.0)  # a worker still exiting when the result came back ends soon after

    # closing the generator mid-run (the wizard going away) ends the launcher and its workers
    out2 = tmp_path / "closed.safetensors"
    gen = train_local(_cfg(tiny_data, out2, epochs_finetune=3), nproc=2)
    for ev in gen:
        if isinstance(ev, E.EpochStarted):
            assert len(_processes_naming(str(out2) + ".run", workers_only=True)) == 2  # the job is running now
            break
    gen.close()  # asks the job to end and returns; the processes are gone a few seconds later
    assert _gone_within(str(out2) + ".run", 60.0) and not out2.exists()


@pytest.mark.slow
def test_a_failing_job_raises_the_message_train_gives(tmp_path):
    cfg = _cfg(tmp_path / "no-such-folder", tmp_path / "m.safetensors")
    with pytest.raises(TrainingError) as direct:
        drive(train(cfg))
    with pytest.raises(TrainingError) as job:
        drive(train_local(cfg, nproc=1))
    assert str(job.value) == str(direct.value)
    assert "Traceback" not in str(job.value)


@pytest.mark.slow
@needs_proc
def test_a_killed_worker_gives_a_clear_reason_and_leaves_no_process(tiny_data, tmp_path):
    out = tmp_path / "killed.safetensors"
    folder = str(out) + ".run"
    gen = train_local(_cfg(tiny_data, out), nproc=1)
    with pytest.raises(TrainingError) as failed:
        for ev in gen:
            if isinstance(ev, E.StageStarted):
                (pid,) = _processes_naming(folder, workers_only=True)
                os.kill(pid, signal.SIGKILL)
    assert "process 1 of 1 was ended by SIGKILL" in str(failed.value) and "resume" in str(failed.value)
    assert "Traceback" not in str(failed.value) and folder not in str(failed.value)
    assert _gone_within(folder, 10.0)


def test_settings_that_cannot_work_are_refused_before_a_job_starts(tmp_path):
    with pytest.raises(TrainingError, match="at least one process"):
        next(train_local(_cfg(tmp_path, tmp_path / "m.safetensors"), nproc=0))
    with pytest.raises(TrainingError, match="batch size"):
        next(train_local(_cfg(tmp_path, tmp_path / "m.safetensors", batch_size=1), nproc=1))
    assert not os.path.exists(tmp_path / "m.safetensors.run")  # refused before anything was written


def test_the_packaged_app_refuses_a_job_it_cannot_start(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "frozen", True, raising=False)  # sys.executable is then the app, not Python
    with pytest.raises(TrainingError, match="packaged app"):
        next(train_local(_cfg(tmp_path, tmp_path / "m.safetensors"), nproc=2))
    assert not os.path.exists(tmp_path / "m.safetensors.run")


@pytest.mark.parametrize("platform, loopback", [("linux", "lo"), ("darwin", "lo0"), ("win32", None)])
def test_the_local_job_uses_gloo_over_loopback_where_its_name_is_known(tmp_path, monkeypatch, platform, loopback):
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    monkeypatch.setattr(sys, "platform", platform)
    env = _env(_cfg(tmp_path, tmp_path / "m.safetensors"), 2)
    assert env.get("GLOO_SOCKET_IFNAME") == loopback and env[APP_PID_ENV] == str(os.getpid())
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "eth7")  # the user's own choice stays
    assert _env(_cfg(tmp_path, tmp_path / "m.safetensors"), 2)["GLOO_SOCKET_IFNAME"] == "eth7"


# ----------------------------------------------------------------------------- the worker's channel and watcher


def _repo_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), **extra)


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], env=_repo_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_stray_prints_of_a_worker_never_reach_the_message_channel():
    code = ("import os, subprocess, sys\n"
            "from cxr_desktop.training.launch_worker import Channel\n"
            "c = Channel(1)\n"
            "print('{\"kind\": \"result\", \"result\": null}')\n"  # a library printing JSON-looking text
            "os.write(1, b'raw fd 1 write\\n')\n"
            "subprocess.run([sys.executable, '-c', 'print(\"a child process\")'])\n"
            "c.send('hello', pid=7)\n")
    p = _python(code)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [{"kind": "hello", "rank": 1, "pid": 7}]
    assert "raw fd 1 write" in err and "a child process" in err and '"kind": "result"' in err


@needs_proc
def test_a_worker_ends_when_the_calling_program_or_torchrun_is_gone(tmp_path):
    watcher = ("import os, sys, threading\n"
               "from pathlib import Path\n"
               "from cxr_desktop.training.launch_worker import watch\n"
               "print(os.getpid(), flush=True)\n"
               "watch(Path(sys.argv[1]), threading.Event(), os.getppid(), int(sys.argv[2]))\n")
    # the calling program (here a sleeping process) dies: the worker ends by itself
    app = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    w = _python(watcher, str(tmp_path), str(app.pid))
    try:
        w.stdout.readline()
        time.sleep(0.5)
        assert w.poll() is None  # both alive: it keeps running
        app.kill()
        app.wait()
        assert w.wait(timeout=10) == 3
    finally:
        for p in (app, w):
            if p.poll() is None:
                p.kill()
            p.wait()
    # its launcher (torchrun) dies: the worker, now someone else's child, ends too
    launcher = _python("import subprocess, sys, time\n"
                       f"w = subprocess.Popen([sys.executable, '-c', {watcher!r}, {str(tmp_path)!r}, '{os.getpid()}'])\n"
                       "time.sleep(120)\n")
    try:
        launcher.stdout.readline()  # the worker runs
        assert _processes_naming(str(tmp_path))
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 10
        while _processes_naming(str(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _processes_naming(str(tmp_path)), "the worker outlived its launcher"
    finally:
        if launcher.poll() is None:
            launcher.kill()
        launcher.wait()


def test_an_unexpected_worker_error_reaches_the_launcher_without_paths(tmp_path):
    folder = tmp_path / "Doe_Jane_1956"  # a run folder without run-config.json: FileNotFoundError naming it
    folder.mkdir()
    p = subprocess.run([sys.executable, "-m", "cxr_desktop.training.launch_worker", str(folder)],
                       env=_repo_env(RANK="0"),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert [m["kind"] for m in lines] == ["hello", "error"]
    assert lines[1]["type"] == "FileNotFoundError" and "Doe_Jane" not in lines[1]["message"]
    assert lines[1]["message"].startswith("FileNotFoundError") and "<path>" in lines[1]["message"]
