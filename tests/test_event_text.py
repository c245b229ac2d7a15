"""training.event_text: the one formatter of training events for cxr-train and the wizard (Qt-free)."""

from __future__ import annotations

import io

from cxr_desktop.cli.train import Printer
from cxr_desktop.training import event_text
from cxr_desktop.training import events as E


def test_progress_events_give_a_progress_line_others_none():
    p = event_text.progress(E.BatchProgress(stage=2, epoch=3, phase="train", batch=4, batches=10, loss=0.5,
                                            images_per_second=12.34))
    assert p == event_text.Progress("stage 2 epoch 3: batch 4/10 loss 0.5000 (12.3 img/s)", 4, 11, level=1)
    assert event_text.progress(E.PrepareProgress(done=3, total=9)) == event_text.Progress(
        "preparing images: 3/9", 3, 9)
    assert event_text.progress(E.BatchProgress(2, 3, "val", 1, 2, None, 5.0)) is None  # validation: no line
    assert event_text.progress(E.EpochDone(1, 1, 0.5, 0.6, 0.7, 1.0)) is None


def test_log_lines_keep_cxr_trains_wording():
    assert event_text.lines(E.Resumed(stage=2, epoch=1, best_score=None)) == ["resuming after stage 2 epoch 1"]
    epoch = E.EpochDone(stage=2, epoch=3, train_loss=0.25, val_loss=float("nan"), val_auc=0.75, seconds=1.25,
                        is_best=True)
    assert event_text.lines(epoch) == ["stage 2 epoch   3  train_loss 0.2500  val_loss n/a  val_auc 0.7500  "
                                       "time 1.2s  *best"]
    split = E.SplitDone(counts={"train": {"a": 3, "b": 4, "groups": 5}}, seed=0, test_source="split",
                        warnings=["few patients"])
    assert event_text.lines(split) == ["split (patient-level; test held out, seed 0):", "  train: a 3, b 4; 5 patients",
                                       "  warning: few patients"]
    started = E.EvaluationStarted(split="test", images=12)
    assert event_text.lines(started) == ["evaluating the best epoch on test (12 images)"]
    assert event_text.lines(started, quiet=True) == []
    assert event_text.lines(E.EvaluationDone(evaluation=None), summaries=False) == []  # shown elsewhere
    assert event_text.lines(E.CheckpointSaved(path="x", stage=1, epoch=1)) == []


def test_cli_printer_prints_the_formatters_lines_and_throttles_progress():
    buf = io.StringIO()
    printer = Printer(buf)
    events = [E.Resumed(2, 1, None), E.StageStarted(2, 5, 1e-4, "layer4+", False),
              E.EarlyStopped(2, 4, "no improvement for 2 epochs"), E.Cancelled(2, 4, True, "stopped by you")]
    for ev in events:
        printer(ev)
    assert buf.getvalue().splitlines() == [line for ev in events for line in event_text.lines(ev)]
    buf.truncate(0)
    buf.seek(0)
    for i in range(1, 4):  # the first line, then at most one per 5 s until the last
        printer(E.PrepareProgress(done=i, total=3))
    assert buf.getvalue().splitlines() == ["preparing images: 1/3", "preparing images: 3/3"]
    quiet = io.StringIO()
    Printer(quiet, quiet=True)(E.PrepareProgress(done=3, total=3))
    assert quiet.getvalue() == ""


def test_run_fraction_and_time_left():
    stages = {1: 2, 2: 3}
    assert event_text.run_fraction(1, 1, 0.5, stages) == 0.1
    assert event_text.run_fraction(2, 3, 1.0, stages) == 1.0
    batch = E.BatchProgress(stage=2, epoch=2, phase="train", batch=5, batches=10, loss=0.1, images_per_second=8.0)
    # 5 batches left in this epoch + 1 more epoch of 10, at 8 images per batch and 8 images/s: 15 s
    assert event_text.time_left(batch, stages, 8) == ", about 15 s left"
    first = E.BatchProgress(1, 1, "train", 1, 10, 0.1, 8.0)
    assert "known once fine-tuning starts" in event_text.time_left(first, stages, 8)
    assert event_text.time_left(E.BatchProgress(2, 1, "train", 1, 10, 0.1, 0.0), stages, 8) == ""


def test_a_skipped_file_is_named_without_its_patient_part():
    """The run's patient pattern is hidden in a skipped file's name, in cxr-train's output and the wizard's log
    (as the scan summary does): a file named for its patient must not print the patient id."""
    from cxr_desktop.training.scan import ScanProblem

    ev = E.PrepareDone(total=4, skipped=[ScanProblem("opacity/123456_chest.png", "undecodable", "cannot be read")],
                       seconds=1.0, reused=False)
    line = event_text.lines(ev, patient_regex=r"^(\d+)_")[1]
    assert line == "  skipped opacity/[patient]_chest.png: cannot be read [undecodable]"
    buf = io.StringIO()
    Printer(buf, patient_regex=r"^(\d+)_")(ev)
    assert "123456" not in buf.getvalue() and "[patient]_chest.png" in buf.getvalue()
