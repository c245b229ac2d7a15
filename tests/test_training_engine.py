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

from cxr_desktop.model.modelfile import load_model
from cxr_desktop.training import events as E
from cxr_desktop.training.config import TrainingError
from cxr_desktop.training.engine import train
from cxr_desktop.training.synthetic import PATIENT_REGEX, find_sources, write_dataset
from training_helpers import SIZE, drive, tiny_config, write_tiny_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sources(cxr_dir):
    return find_sources(cxr_dir, max_side=256)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, cxr_dir):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"), cxr_dir)





pytestmark = pytest.mark.usefixtures("training_isolation")


@pytest.mark.slow
def test_cancel_between_batches_keeps_and_saves_the_best_epoch(tiny_data, tmp_path):
    cancel = threading.Event()
    out = tmp_path / "m.safetensors"

    def on_event(ev):
        if isinstance(ev, E.EpochDone) and ev.stage == 2 and ev.epoch == 1:
            cancel.set()

    events, result = drive(train(tiny_config(tiny_data, out, epochs_finetune=4), cancel), on_event)
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
    # a stopped run keeps its checkpoints, so that it can be resumed to its planned end
    kept = sorted(p.name for p in Path(result.work_dir).glob("*.safetensors"))
    assert len(kept) == 2 and kept[0].startswith("best-") and kept[1] == "ckpt-0002.safetensors", kept


def test_cancel_before_any_epoch_saves_nothing(tiny_data, tmp_path):
    cancel = threading.Event()
    out = tmp_path / "m.safetensors"

    def on_event(ev):
        if isinstance(ev, E.StageStarted):
            cancel.set()

    events, result = drive(train(tiny_config(tiny_data, out), cancel), on_event)
    assert [type(e) for e in events].count(E.Cancelled) == 1
    assert not [e for e in events if isinstance(e, E.Cancelled)][0].kept_best
    assert result.model_path is None and not out.exists()
    assert not any(isinstance(e, E.EpochDone) for e in events)


def _cli(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cxr_desktop.cli.train", str(data), "--out", str(out), "--input-size", str(SIZE),
            "--weights", "none", "--epochs-frozen", "1", "--epochs-finetune", "3", "--batch-size", "8",
            "--patient-regex", PATIENT_REGEX, "--bootstrap", "50", "--augment", "light", "--patience", "0",
            "--val-fraction", "0.25", "--test-fraction", "0.25", "--threads", "1", "--quiet", *extra]


@pytest.mark.slow
def test_resume_after_sigkill_continues_at_the_right_epoch(tiny_data, tmp_path):
    env = dict(os.environ, CXR_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    out = tmp_path / "resumed.safetensors"
    work = Path(str(out) + ".run")
    proc = subprocess.Popen(_cli(tiny_data, out), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    try:
        # two checkpoints = stage 1 epoch 1 and stage 2 epoch 1; kill during stage 2 epoch 2
        while not (work / "ckpt-0002.safetensors").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no second checkpoint in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL and not out.exists()

    report = tmp_path / "report.html"
    second = subprocess.run(_cli(tiny_data, out, "--resume", "--report", str(report)), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    lines = second.stdout.splitlines()
    assert "resuming after stage 2 epoch 1" in lines
    epoch_lines = [ln.split()[:4] for ln in lines if ln.startswith("stage ") and " epoch " in ln and "train_loss" in ln]
    assert epoch_lines == [["stage", "2", "epoch", "2"], ["stage", "2", "epoch", "3"]]
    loaded = load_model(out)
    hist = [(h["stage"], h["epoch"]) for h in loaded.card.provenance["history"]]
    assert hist == [(1, 1), (2, 1), (2, 2), (2, 3)]
    assert not work.exists()  # finished: its checkpoints and caches were removed, and the emptied folder
    html = report.read_text()
    for section in ("Training curves", "Threshold and metrics", "Grad-CAM gallery", "true positive",
                    "false negative", "Input safety statistics"):
        assert section in html
    assert html.count("data:image/png;base64,") >= 4  # curves, ROC, confusion matrix, gallery

    # an uninterrupted run with the same settings reaches the same numbers: nothing was lost or redone
    _, ref = drive(train(tiny_config(tiny_data, tmp_path / "reference.safetensors", epochs_frozen=1, epochs_finetune=3,
                               patience=0, keep_run_files=True)))
    kept = {p.name for p in Path(ref.work_dir).glob("*.safetensors")}
    assert "ckpt-0004.safetensors" in kept and any(n.startswith("best-") for n in kept), kept
    assert list((Path(ref.work_dir) / "cache").glob("images-*.npy")) and list(Path(ref.work_dir).glob("features-*"))
    assert [(h.stage, h.epoch) for h in ref.history] == hist
    for a, b in zip(ref.history, loaded.card.provenance["history"]):
        assert a.val_loss == pytest.approx(b["val_loss"], abs=2e-3)


@pytest.mark.slow
def test_second_cancel_stops_evaluation_and_resume_refuses_changed_settings(tiny_data, tmp_path):
    out = tmp_path / "m.safetensors"
    cancel = threading.Event()

    def on_event(ev):  # cancel after the first checkpoint, and again when the engine acknowledges it
        if isinstance(ev, (E.CheckpointSaved, E.Cancelled)):
            cancel.set()

    events, result = drive(train(tiny_config(tiny_data, out, epochs_frozen=2, epochs_finetune=0), cancel), on_event)
    kinds = [type(e) for e in events]
    assert kinds.count(E.Cancelled) == 2 and E.ModelSaved not in kinds and result is None and not out.exists()
    assert (Path(str(out) + ".run") / "ckpt-0001.safetensors").exists()
    with pytest.raises(TrainingError, match="different settings"):
        drive(train(tiny_config(tiny_data, out, epochs_frozen=2, epochs_finetune=0, seed=5, resume=True)))
    # the same settings resume: epoch 2 of stage 1 only, then the model is saved
    events, result = drive(train(tiny_config(tiny_data, out, epochs_frozen=2, epochs_finetune=0, resume=True)))
    assert [(e.stage, e.epoch) for e in events if isinstance(e, E.EpochDone)] == [(1, 2)]
    assert load_model(out).card.classes == ["normal", "opacity"]


def test_unusable_settings_and_folders_are_explained(tiny_data, tmp_path):
    with pytest.raises(TrainingError, match="positive class"):
        drive(train(tiny_config(tiny_data, tmp_path / "m.safetensors", positive_class="nodule")))
    with pytest.raises(TrainingError, match="at least one epoch"):
        drive(train(tiny_config(tiny_data, tmp_path / "m.safetensors", epochs_frozen=0, epochs_finetune=0)))
    with pytest.raises(TrainingError, match="does not exist"):
        drive(train(tiny_config(tmp_path / "missing", tmp_path / "m.safetensors")))


@pytest.mark.slow
def test_a_new_head_learns_the_opacity_task_from_the_demo_backbone(tmp_path, sources):
    """Learning check: start from the demonstration model's backbone with a NEW (random) head,
    train on freshly generated synthetic-opacity data (other seed) and require a clearly
    better-than-chance validation AUC. Training ResNet50 from random weights needs far more
    than a unit test's two minutes on a CPU (the demo build does that and reports its test AUC)."""
    from cxr_desktop.paths import default_model_path

    demo = default_model_path()
    if not demo.exists():
        pytest.skip("the demonstration model is not built yet (training/build_demo_model.sh)")
    from cxr_desktop.model.modelfile import read_card

    size = read_card(demo).input_size
    data = tmp_path / "fresh"
    write_dataset(sources[-20:], data, variants=6, size=size, seed=123, contrast=(0.35, 0.6), radius=(0.07, 0.13))
    cfg = tiny_config(data, tmp_path / "m.safetensors", weights=str(demo), input_size=size, epochs_frozen=15,
               epochs_finetune=0, batch_size=16, val_fraction=0.3, test_fraction=0.2, patience=0)
    events, result = drive(train(cfg))
    ready = next(e for e in events if isinstance(e, E.ModelReady))
    assert ready.initial_weights["source"] == "file" and ready.initial_weights["file_name"] == demo.name
    aucs = [e.val_auc for e in events if isinstance(e, E.EpochDone)]
    assert result.best["val_auc"] >= 0.75, aucs
    assert result.evaluation.val_metrics["auc"] == pytest.approx(result.best["val_auc"], abs=1e-6)


@pytest.mark.slow
def test_three_classes_and_a_separate_test_folder(tmp_path, sources):
    import cv2

    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    write_dataset(sources[:6], train_dir, variants=4, size=SIZE, seed=7)
    write_dataset(sources[6:9], test_dir, variants=4, size=SIZE, seed=8)
    for f in test_dir.rglob("src0*.png"):  # other patients than the training folder's src000-src005
        f.rename(f.with_name("src1" + f.name[4:]))
    for d in (train_dir, test_dir):  # a third class: negatives of the normal images
        (d / "inverted").mkdir()
        for f in sorted((d / "normal").glob("*.png")):
            cv2.imwrite(str(d / "inverted" / f.name), 255 - cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))
    leak = sorted((train_dir / "opacity").glob("*.png"))[0]
    (test_dir / "opacity" / leak.name).write_bytes(leak.read_bytes())  # a training patient in the test folder
    out = tmp_path / "three.safetensors"
    events, result = drive(train(tiny_config(train_dir, out, test_dir=str(test_dir), test_fraction=0.0,
                                       val_fraction=0.3, epochs_frozen=2, epochs_finetune=1)))
    split = next(e for e in events if isinstance(e, E.SplitDone))
    assert split.test_source == "folder" and any("test folder" in w for w in split.warnings)
    assert sum(v for k, v in split.counts["test"].items() if k != "groups") == 12 + 6 + 1
    left_out = sum(v for k, v in split.counts["train"].items() if k != "groups") + sum(
        v for k, v in split.counts["val"].items() if k != "groups")
    assert left_out == 24 + 12 - 6  # the leaking patient's 6 training images were left out
    card = load_model(out).card
    assert card.classes == ["inverted", "normal", "opacity"] and card.positive_class == "opacity"
    calib = card.extra["ood"]["calibration"]  # the caution limit comes from held-out validation patients
    assert calib["split"] == "validation" and calib["groups"] == split.counts["val"]["groups"]
    assert calib["excluded_images_of_training_groups"] == 0 and calib["images"] == 12
    mc = card.metrics["test"]["multiclass"]
    assert set(mc["per_class"]) == {"inverted", "normal", "opacity"}
    assert np.asarray(mc["confusion_matrix"]).sum() == card.metrics["test"]["n"]
    assert 0.0 <= mc["macro"]["auc"] <= 1.0
    assert card.provenance["data"]["test_source"] == "folder"
    assert result.evaluation.test.rels and all(not r.startswith("/") for r in result.evaluation.test.rels)


def test_a_full_disk_while_saving_an_epoch_stops_with_the_reason_and_leaves_no_partial_file(tiny_data, tmp_path,
                                                                                           small_disk):
    """The run folder on a real 8 MiB filesystem: the image cache fits, the best epoch's weights (about 94 MB)
    do not. Training stops with what could not be written, where, why and what to do; no temporary file is
    left to fill the disk further."""
    from cxr_desktop.training.config import RunWriteError

    work = small_disk(8 * 1024)
    out = tmp_path / "m.safetensors"
    with pytest.raises(RunWriteError) as info:
        drive(train(tiny_config(tiny_data, out, work_dir=str(work), epochs_finetune=0)))
    text = str(info.value)
    assert text.startswith("Could not write the best epoch's weights in the folder") and "No space left" in text
    assert "--resume" in text and "the epochs already saved are kept" in text
    assert not out.exists()
    left = [p.name for p in work.rglob("*")]
    assert "cache" in left and not [n for n in left if n.startswith((".", "best-", "ckpt-"))], left  # no half file


@pytest.mark.slow
def test_a_disk_too_small_for_the_image_cache_exits_74_with_the_reason_instead_of_dying(tiny_data, tmp_path,
                                                                                        small_disk):
    """The decoded-image cache is written through a memory map: on a full disk that would kill the process with
    SIGBUS and no word. Its space is reserved first, so cxr-train says why and exits 74 (as cxr-screen)."""
    work = small_disk(64)  # the cache needs about 260 KiB
    env = dict(os.environ, CXR_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    run = subprocess.run(_cli(tiny_data, tmp_path / "m.safetensors", "--work-dir", str(work)), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 74, run.stdout[-2000:] + run.stderr[-2000:]
    assert "cxr-train: Could not write the decoded-image cache in the folder 'cache' (No space left on device)" \
        in run.stderr
    assert "Traceback" not in run.stderr
    assert not [p for p in (work / "cache").iterdir()]  # the reserved temp file was removed



def test_a_finished_run_removes_only_its_own_files_from_a_folder_the_user_gave(tiny_data, tmp_path):
    """--work-dir may be a folder holding the user's files, even a 'cache' subfolder: the end-of-run clean-up
    removes the checkpoints and caches the run made, and nothing else."""
    work = tmp_path / "mine"
    (work / "cache").mkdir(parents=True)
    (work / "notes.txt").write_text("mine")
    (work / "cache" / "images-list.txt").write_text("mine too")
    _, result = drive(train(tiny_config(tiny_data, tmp_path / "m.safetensors", work_dir=str(work), epochs_finetune=0)))
    assert result.model_path and Path(result.model_path).is_file()
    left = sorted(str(p.relative_to(work)) for p in work.rglob("*"))
    assert left == ["cache", "cache/images-list.txt", "notes.txt"], left
