"""Training engine: learning, cancel (keeps the best epoch), resume after SIGKILL, outputs.

Small inputs (64 px) and tiny synthetic-opacity folders generated from the real
radiographs, so the whole module runs in a couple of minutes on 2 CPU cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cxr_desktop.model.modelfile import load_model
from cxr_desktop.training import events as E
from cxr_desktop.training.config import TrainConfig, TrainingError
from cxr_desktop.training.engine import train
from cxr_desktop.training.synthetic import PATIENT_REGEX, find_sources, write_dataset

REPO = Path(__file__).resolve().parents[1]
SIZE = 64


@pytest.fixture(scope="module")
def sources(cxr_dir):
    return find_sources(cxr_dir, max_side=256)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, sources):
    """8 sources x 4 variants at 64 px: enough for mechanics, not for learning."""
    root = tmp_path_factory.mktemp("tiny")
    write_dataset(sources[:8], root, variants=4, size=SIZE, seed=1)
    return root


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data_dir=str(data), out=str(out), input_size=SIZE, weights="none", epochs_frozen=1,
                epochs_finetune=2, batch_size=8, patient_regex=PATIENT_REGEX, bootstrap=50, seed=0,
                val_fraction=0.25, test_fraction=0.25, augment="light")
    base.update(kw)
    return TrainConfig(**base)


def _drive(gen, on_event=None):
    events = []
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return events, stop.value
        events.append(ev)
        if on_event is not None:
            on_event(ev)


@pytest.fixture(autouse=True)
def _cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))


def test_cancel_between_batches_keeps_and_saves_the_best_epoch(tiny_data, tmp_path):
    cancel = threading.Event()
    out = tmp_path / "m.safetensors"

    def on_event(ev):
        if isinstance(ev, E.EpochDone) and ev.stage == 2 and ev.epoch == 1:
            cancel.set()

    events, result = _drive(train(_cfg(tiny_data, out, epochs_finetune=4), cancel), on_event)
    cancelled = [e for e in events if isinstance(e, E.Cancelled)]
    assert len(cancelled) == 1 and cancelled[0].kept_best and (cancelled[0].stage, cancelled[0].epoch) == (2, 1)
    epochs = [(e.stage, e.epoch) for e in events if isinstance(e, E.EpochDone)]
    assert epochs == [(1, 1), (2, 1)]  # stopped before stage 2 epoch 2 finished
    assert isinstance(events[-1], E.Finished) and result.cancelled and result.model_path == str(out)
    loaded = load_model(out)
    best = result.best
    assert (loaded.card.provenance["best_epoch"]["stage"], loaded.card.provenance["best_epoch"]["epoch"]) == (
        best["stage"], best["epoch"])
    assert any("stopped early" in w for w in loaded.card.warnings)
    assert loaded.card.provenance["stopped_early_by_user"] is True


def test_cancel_before_any_epoch_saves_nothing(tiny_data, tmp_path):
    cancel = threading.Event()
    out = tmp_path / "m.safetensors"

    def on_event(ev):
        if isinstance(ev, E.StageStarted):
            cancel.set()

    events, result = _drive(train(_cfg(tiny_data, out), cancel), on_event)
    assert [type(e) for e in events].count(E.Cancelled) == 1
    assert not [e for e in events if isinstance(e, E.Cancelled)][0].kept_best
    assert result.model_path is None and not out.exists()
    assert not any(isinstance(e, E.EpochDone) for e in events)


def _cli(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cxr_desktop.cli.train", str(data), "--out", str(out), "--input-size", str(SIZE),
            "--weights", "none", "--epochs-frozen", "2", "--epochs-finetune", "3", "--batch-size", "8",
            "--patient-regex", PATIENT_REGEX, "--bootstrap", "50", "--augment", "light", "--patience", "0",
            "--val-fraction", "0.25", "--test-fraction", "0.25", "--quiet", *extra]


def test_resume_after_sigkill_continues_at_the_right_epoch(tiny_data, tmp_path):
    env = dict(os.environ, CXR_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    out = tmp_path / "resumed.safetensors"
    work = Path(str(out) + ".run")
    proc = subprocess.Popen(_cli(tiny_data, out), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    try:
        # three checkpoints = stage 1 epochs 1-2 and stage 2 epoch 1; kill during stage 2 epoch 2
        while not (work / "ckpt-0003.safetensors").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no third checkpoint in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL and not out.exists()

    second = subprocess.run(_cli(tiny_data, out, "--resume"), cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    lines = second.stdout.splitlines()
    assert "resuming after stage 2 epoch 1" in lines
    epoch_lines = [ln.split()[:4] for ln in lines if ln.startswith("stage ") and " epoch " in ln and "train_loss" in ln]
    assert epoch_lines == [["stage", "2", "epoch", "2"], ["stage", "2", "epoch", "3"]]
    loaded = load_model(out)
    hist = [(h["stage"], h["epoch"]) for h in loaded.card.provenance["history"]]
    assert hist == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]

    # an uninterrupted run with the same settings reaches the same numbers: nothing was lost or redone
    ref_out = tmp_path / "reference.safetensors"
    ref = subprocess.run(_cli(tiny_data, ref_out), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    ref_hist = load_model(ref_out).card.provenance["history"]
    for a, b in zip(ref_hist, loaded.card.provenance["history"]):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=2e-3)


def test_resume_refuses_changed_settings(tiny_data, tmp_path):
    out = tmp_path / "m.safetensors"
    cancel = threading.Event()
    _drive(train(_cfg(tiny_data, out, epochs_finetune=0), cancel))
    with pytest.raises(TrainingError, match="different settings"):
        _drive(train(_cfg(tiny_data, out, epochs_finetune=0, input_size=96, resume=True)))


def test_unusable_settings_and_folders_are_explained(tiny_data, tmp_path):
    with pytest.raises(TrainingError, match="positive class"):
        _drive(train(_cfg(tiny_data, tmp_path / "m.safetensors", positive_class="nodule")))
    with pytest.raises(TrainingError, match="at least one epoch"):
        _drive(train(_cfg(tiny_data, tmp_path / "m.safetensors", epochs_frozen=0, epochs_finetune=0)))
    with pytest.raises(TrainingError, match="does not exist"):
        _drive(train(_cfg(tmp_path / "missing", tmp_path / "m.safetensors")))
