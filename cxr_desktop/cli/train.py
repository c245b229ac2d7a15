"""``cxr-train DATA --out MODEL``: train a classifier on a folder with one subfolder per class.

Same engine as the training wizard (:func:`cxr_desktop.training.engine.train`).
Prints one line per epoch (stage, epoch, train loss, val loss, val AUC, time) and
the final test metrics. Ctrl+C once stops training and still saves the best
epoch so far; twice stops at once (``--resume`` continues later).

Several processes: ``torchrun --nproc-per-node N -m cxr_desktop.cli.train DATA --out MODEL``
trains with DistributedDataParallel (:mod:`cxr_desktop.training.ddp`); process 1 prints and
writes the files. With ``--nnodes`` > 1 the run folder and DATA must be on a shared filesystem.
A process that dies stops the others with a message (exit 75, as ``cxr-screen``); ``--resume`` continues.

Exit status: 0 model saved; 1 stopped with nothing saved; 2 the data or settings cannot work;
74 a file of the run cannot be written (disk full, read-only, permissions; the epochs already
saved are kept); 75 another process of the job was lost; 130 interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any, TextIO

from cxr_desktop import DECISION_AID_NOTICE


def build_parser() -> argparse.ArgumentParser:
    from cxr_desktop.training.config import (
        AUGMENT_PRESETS, BALANCING, FINETUNE_SCOPES, MONITORS, OPTIMIZERS, SCHEDULERS, THRESHOLD_METHODS,
    )

    ap = argparse.ArgumentParser(
        prog="cxr-train",
        description="Fine-tune the ResNet50 classifier on a folder with one subfolder per class "
                    "(PNG/JPEG/DICOM, nested at any depth) and write a model file.",
    )
    ap.add_argument("data", help="folder with one subfolder per class")
    ap.add_argument("--out", required=True, help="model file to write (.safetensors)")
    ap.add_argument("--test", help="separate test folder (same class subfolders); else a test split is held out")
    ap.add_argument("--epochs-frozen", type=int, default=5, help="stage 1 epochs: new head, backbone frozen")
    ap.add_argument("--epochs-finetune", type=int, default=10, help="stage 2 epochs: fine-tuning")
    ap.add_argument("--finetune", choices=FINETUNE_SCOPES, default="auto",
                    help="what stage 2 trains: all blocks, or layer3/layer4 onwards; auto (default): layer4 on a "
                         "CPU, all on CUDA")
    ap.add_argument("--batch-size", type=int, default=32,
                    help="images per optimisation step; under torchrun the batch of the whole job, shared out over "
                         "the processes (any size from the number of processes up)")
    ap.add_argument("--lr-head", type=float, default=1e-3, help="stage 1 learning rate")
    ap.add_argument("--lr-finetune", type=float, default=1e-4, help="stage 2 learning rate")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="adam = AdamW; sgd = SGD with momentum")
    ap.add_argument("--scheduler", choices=SCHEDULERS, default="cosine")
    ap.add_argument("--monitor", choices=MONITORS, default="auc", help="validation metric for best epoch / early stop")
    ap.add_argument("--patience", type=int, default=5, help="epochs without improvement before a stage stops (0: off)")
    ap.add_argument("--balance", choices=BALANCING, default="weights",
                    help="class imbalance: weighted loss, balanced sampling, or none")
    ap.add_argument("--augment", choices=AUGMENT_PRESETS, default="standard", help="stage 2 augmentation")
    ap.add_argument("--augment-frozen", action="store_true",
                    help="augment in stage 1 too (slower: no backbone feature cache)")
    ap.add_argument("--hflip", action="store_true", help="allow horizontal flips (off: the heart is on the left)")
    ap.add_argument("--weights", default="imagenet",
                    help="initial weights: imagenet (offline cache), none (random), or a weights/model file")
    ap.add_argument("--weights-sha256", help="expected sha256 of the --weights file (checked before use)")
    ap.add_argument("--head", choices=("linear", "mlp"), default="linear")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--output-stride", type=int, choices=(16, 32), default=32,
                    help="16: dilated last stage, a finer heatmap (14 x 14 at 224 px) at about 2x the CPU time")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--test-fraction", type=float, default=0.15)
    ap.add_argument("--positive", help="positive class (its probability is the score); default: the last class")
    ap.add_argument("--classes", help="comma-separated class order (default: subfolders, sorted)")
    ap.add_argument("--patient-regex", help="file-name pattern whose first group is the patient "
                    "(used where DICOM PatientID is absent), e.g. '^(\\d+)_'")
    ap.add_argument("--threshold", choices=THRESHOLD_METHODS, default="sensitivity",
                    help="how the decision threshold is chosen on the validation split")
    ap.add_argument("--target-sensitivity", type=float, default=0.95)
    ap.add_argument("--threads", type=int, help="CPU threads for PyTorch (on a busy shared machine 1 can be "
                    "much faster than oversubscribing the cores)")
    ap.add_argument("--workers", type=int, help="DataLoader worker processes (default: 0 on CPU, several on CUDA)")
    ap.add_argument("--work-dir", help="checkpoints and caches (default: MODEL.run beside the model file)")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint of an interrupted run")
    ap.add_argument("--keep-run-files", action="store_true",
                    help="keep the run folder's checkpoints and caches after the model file is written (a later run "
                         "with the same run folder then reuses the decoded images); by default a finished run removes "
                         "them (checkpoints alone are about 3x the model's size); a stopped run always keeps them")
    ap.add_argument("--report", help="write an HTML training report to this file")
    ap.add_argument("--half", action="store_true", help="store fp16 weights (half the file size)")
    ap.add_argument("--name", help="model name on the card")
    ap.add_argument("--model-version", default="1")
    ap.add_argument("--demonstration", action="store_true", help="mark the model as a demonstration model")
    ap.add_argument("--warning", action="append", default=[], help="extra warning for the model card (repeatable)")
    ap.add_argument("--intended-use", help="intended-use sentence for the card")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs (over patients)")
    ap.add_argument("--prevalence", type=float,
                    help="prevalence of the finding where the model will be used (e.g. 0.05): PPV and NPV are "
                         "reported at it; default: the test set's own prevalence (labelled as such)")
    ap.add_argument("--no-decode-check", action="store_true",
                    help="scan reads headers only (faster; broken files are then found while preparing)")
    ap.add_argument("--quiet", action="store_true", help="only epoch lines and the result")
    job = ap.add_argument_group(
        "several processes (torchrun)",
        "torchrun --nproc-per-node N -m cxr_desktop.cli.train DATA --out MODEL ... trains with DistributedDataParallel "
        "(NCCL on GPUs, Gloo on the CPU); several machines: --nnodes M --rdzv-backend c10d --rdzv-endpoint HOST:PORT "
        "--rdzv-id ID on each. Process 1 scans, splits and decodes the images once and alone writes the checkpoints, "
        "model and report; with several machines the run folder (--work-dir) must be on a filesystem all of them "
        "share, and so must DATA. --batch-size is the batch of the whole job.")
    job.add_argument("--sync-batchnorm", action="store_true",
                     help="BatchNorm statistics over the whole job's batch (the same training as one process)")
    job.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                     help="how long a process waits for a silent peer before the job stops with a message "
                          "(sets CXR_DIST_TIMEOUT_S; default 600)")
    return ap


def config_from_args(args: argparse.Namespace) -> Any:
    from cxr_desktop.training.config import TrainConfig

    return TrainConfig(
        data_dir=args.data, out=args.out, test_dir=args.test, work_dir=args.work_dir,
        classes=[c.strip() for c in args.classes.split(",")] if args.classes else None,
        positive_class=args.positive, patient_regex=args.patient_regex, val_fraction=args.val_fraction,
        test_fraction=0.0 if args.test else args.test_fraction, seed=args.seed, weights=args.weights, weights_sha256=args.weights_sha256,
        input_size=args.input_size, output_stride=args.output_stride, head=args.head,
        epochs_frozen=args.epochs_frozen,
        epochs_finetune=args.epochs_finetune, finetune=args.finetune, batch_size=args.batch_size,
        lr_head=args.lr_head, lr_finetune=args.lr_finetune, weight_decay=args.weight_decay,
        optimizer=args.optimizer, scheduler=args.scheduler, monitor=args.monitor, patience=args.patience,
        balance=args.balance, augment=args.augment, augment_frozen=args.augment_frozen, hflip=args.hflip,
        device=args.device, amp=not args.no_amp, workers=args.workers, threads=args.threads, resume=args.resume,
        keep_run_files=args.keep_run_files,
        threshold_method=args.threshold, target_sensitivity=args.target_sensitivity, half=args.half,
        report=args.report, name=args.name, version=args.model_version, demonstration=args.demonstration,
        extra_warnings=list(args.warning), intended_use=args.intended_use, decode_check=not args.no_decode_check,
        bootstrap=args.bootstrap, prevalence=args.prevalence, sync_batchnorm=args.sync_batchnorm,
    )


class Printer:
    """Turns engine events into terminal lines (the texts: :mod:`cxr_desktop.training.event_text`)."""

    def __init__(self, out: TextIO, quiet: bool = False, patient_regex: str | None = None):
        self.out = out
        self.quiet = quiet
        self.patient_regex = patient_regex  # its match in a file name is not printed
        self._last_progress = 0.0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def progress(self, text: str, done: int, total: int) -> None:
        now = time.monotonic()
        if self.quiet or (done < total and now - self._last_progress < 5.0):
            return
        self._last_progress = now
        self.say(text)

    def __call__(self, ev: Any) -> None:
        from cxr_desktop.training import event_text

        p = event_text.progress(ev)
        if p is not None:
            self.progress("  " * p.level + p.text, p.done, p.total)
            return
        for line in event_text.lines(ev, quiet=self.quiet, patient_regex=self.patient_regex):
            self.say(line)

    def _evaluation(self, ev: Any) -> None:
        from cxr_desktop.training.event_text import evaluation_lines

        for line in evaluation_lines(ev):
            self.say(line)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import os

    from cxr_desktop.distributed import TIMEOUT_ENV, DistributedError, launched_by_torchrun
    from cxr_desktop.training.config import RunWriteError, TrainingError
    from cxr_desktop.training.ddp import stopped_by_launcher
    from cxr_desktop.training.engine import run_to_end

    cfg = config_from_args(args)
    if args.dist_timeout is not None:
        os.environ[TIMEOUT_ENV] = str(args.dist_timeout)
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if launched_by_torchrun() else (0, 1)
    who = f"cxr-train (process {rank + 1} of {world})" if world > 1 else "cxr-train"
    printer = Printer(sys.stdout, quiet=args.quiet, patient_regex=cfg.patient_regex)
    if world > 1:  # torchrun stops the others with SIGTERM when one process dies: say so, never die silently
        signal.signal(signal.SIGTERM, stopped_by_launcher)
    cancel = threading.Event()
    presses = {"n": 0}

    def on_sigint(signum: int, frame: Any) -> None:
        presses["n"] += 1
        if presses["n"] >= 3:
            raise KeyboardInterrupt
        printer.say("stopping after this batch; the best epoch so far will be evaluated and saved "
                    "(Ctrl+C again: stop without saving)" if presses["n"] == 1 else "stopping without saving")
        cancel.set()

    old = signal.signal(signal.SIGINT, on_sigint)
    result = None
    try:
        result = run_to_end(cfg, cancel, printer if rank == 0 else None)  # process 1 alone prints progress
    except RunWriteError as exc:
        print(f"{who}: {exc}", file=sys.stderr)
        return 74  # EX_IOERR, as cxr-screen: free space or choose a writable folder, then --resume
    except TrainingError as exc:
        print(f"{who}: {exc}", file=sys.stderr)
        return 2
    except DistributedError as exc:
        print(f"{who}: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: run the same command again with --resume
    except KeyboardInterrupt:
        print("cxr-train: interrupted; run again with --resume to continue", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, old)
    if rank != 0:
        return 0  # trained its share; process 1 evaluates and saves
    if result is None or result.model_path is None:
        return 1
    printer.say(DECISION_AID_NOTICE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
