"""``cxr-train DATA --out MODEL``: train a classifier on a folder with one subfolder per class.

Same engine as the training wizard (:func:`cxr_desktop.training.engine.train`).
Prints one line per epoch (stage, epoch, train loss, val loss, val AUC, time) and
the final test metrics. Ctrl+C once stops training and still saves the best
epoch so far; twice stops at once (``--resume`` continues later).
"""

from __future__ import annotations

import argparse
import math
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
    ap.add_argument("--batch-size", type=int, default=32)
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
        threshold_method=args.threshold, target_sensitivity=args.target_sensitivity, half=args.half,
        report=args.report, name=args.name, version=args.model_version, demonstration=args.demonstration,
        extra_warnings=list(args.warning), intended_use=args.intended_use, decode_check=not args.no_decode_check,
        bootstrap=args.bootstrap, prevalence=args.prevalence,
    )


def _fmt(x: float, nd: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _ci(m: dict[str, Any], key: str) -> str:
    """Value with its 95 % CI, or with the note saying why the interval is degenerate."""
    from cxr_desktop.training.metrics import format_value_ci

    return format_value_ci(m, key, brief=True)


class Printer:
    """Turns engine events into terminal lines."""

    def __init__(self, out: TextIO, quiet: bool = False):
        self.out = out
        self.quiet = quiet
        self._last_progress = 0.0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def progress(self, text: str, done: int, total: int) -> None:
        now = time.monotonic()
        if self.quiet or (done < total and now - self._last_progress < 5.0):
            return
        self._last_progress = now
        self.say(text)

    def __call__(self, ev: Any) -> None:  # noqa: C901 - a flat dispatch on event types
        from cxr_desktop.training import events as E
        from cxr_desktop.training.scan import ScanProgress

        if isinstance(ev, ScanProgress):
            self.progress(f"scan {ev.folder}: {ev.done}/{ev.total} files", ev.done, ev.total)
        elif isinstance(ev, E.ScanDone):
            if not self.quiet:
                for line in ev.train.summary_lines():
                    self.say(line)
                if ev.test is not None:
                    self.say("test folder:")
                    for line in ev.test.summary_lines():
                        self.say("  " + line)
        elif isinstance(ev, E.PrepareProgress):
            self.progress(f"preparing images: {ev.done}/{ev.total}", ev.done, ev.total)
        elif isinstance(ev, E.PrepareDone):
            how = "reused from the interrupted run" if ev.reused else f"{ev.seconds:.1f} s"
            self.say(f"images prepared ({how}); {len(ev.skipped)} could not be decoded")
            for p in ev.skipped:
                self.say(f"  skipped {p.rel}: {p.message} [{p.reason}]")
        elif isinstance(ev, E.SplitDone):
            src = "separate test folder" if ev.test_source == "folder" else f"held out, seed {ev.seed}"
            self.say(f"split (patient-level; test {src}):")
            for name, row in ev.counts.items():
                per = ", ".join(f"{k} {v}" for k, v in row.items() if k != "groups")
                self.say(f"  {name:5s}: {per}; {row['groups']} patients")
            for w in ev.warnings:
                self.say(f"  warning: {w}")
        elif isinstance(ev, E.ModelReady):
            iw = ev.initial_weights or {}
            self.say(f"device: {ev.device}; initial weights: {iw.get('source', '?')}"
                     + (f" ({iw.get('file_name')})" if iw.get("file_name") else ""))
            for w in ev.warnings:
                self.say(f"  warning: {w}")
        elif isinstance(ev, E.Resumed):
            self.say(f"resuming after stage {ev.stage} epoch {ev.epoch}")
        elif isinstance(ev, E.StageStarted):
            what = "head only, backbone frozen" if ev.stage == 1 else f"fine-tuning {ev.trainable}"
            cache = ", cached backbone features" if ev.cached_features else ""
            self.say(f"stage {ev.stage}: {what}{cache}; {ev.epochs} epochs at lr {ev.lr:g}")
        elif isinstance(ev, E.FeatureProgress):
            self.progress(f"  backbone features ({ev.split}): {ev.done}/{ev.total}", ev.done, ev.total)
        elif isinstance(ev, E.BatchProgress):
            if ev.phase == "train":
                self.progress(f"  stage {ev.stage} epoch {ev.epoch}: batch {ev.batch}/{ev.batches} "
                              f"loss {_fmt(ev.loss)} ({ev.images_per_second:.1f} img/s)", ev.batch, ev.batches + 1)
        elif isinstance(ev, E.EpochDone):
            best = "  *best" if ev.is_best else ""
            self.say(f"stage {ev.stage} epoch {ev.epoch:3d}  train_loss {_fmt(ev.train_loss)}  "
                     f"val_loss {_fmt(ev.val_loss)}  val_auc {_fmt(ev.val_auc)}  time {ev.seconds:.1f}s{best}")
        elif isinstance(ev, E.EarlyStopped):
            self.say(f"stage {ev.stage}: early stop after epoch {ev.epoch} ({ev.reason})")
        elif isinstance(ev, E.Cancelled):
            self.say(f"cancelled: {ev.message}")
        elif isinstance(ev, E.EvaluationStarted):
            if not self.quiet:
                self.say(f"evaluating the best epoch on {ev.split} ({ev.images} images)")
        elif isinstance(ev, E.EvaluationDone):
            self._evaluation(ev.evaluation)
        elif isinstance(ev, E.ModelSaved):
            self.say(f"model saved: {ev.path} ({ev.size_bytes / 1e6:.1f} MB, sha256 {ev.sha256[:16]}...)")
        elif isinstance(ev, E.Finished):
            self._validation(ev.result)
            self._shortcuts(ev.result)
        elif isinstance(ev, E.ReportSaved):
            self.say(f"report: {ev.path}" if ev.error is None else f"report could not be written: {ev.error}")

    def _evaluation(self, ev: Any) -> None:
        th = ev.threshold
        pos = ev.classes[ev.positive_index]
        self.say(f"decision threshold {th.threshold:.4f} for {pos!r} (chosen on validation by {th.method}"
                 + (f", target sensitivity {th.target:.2f}" if th.target else "")
                 + f": sensitivity {_fmt(th.sensitivity, 3)}, specificity {_fmt(th.specificity, 3)})")
        for split, m in (("validation", ev.val_metrics), ("test", ev.test_metrics)):
            if m is None:
                continue
            pats = f", {m['n_patients']} patients" if "n_patients" in m else ""
            self.say(f"{split} metrics ({m['n']} images{pats}, {m['n_positive']} {pos}; 95% CI over "
                     f"{m.get('ci_unit', 'images')}):")
            self.say(f"  ROC AUC     {_ci(m, 'auc')}")
            for k in ("accuracy", "sensitivity", "specificity", "precision", "f1"):
                self.say(f"  {k:11s} {_ci(m, k)}")
            if "ppv" in m:
                at = (f"at prevalence {m['prevalence']:.3g} (stated)" if m.get("prevalence_source") == "stated"
                      else f"at the {split} set's own prevalence {_fmt(m['prevalence'], 3)} (none stated)")
                self.say(f"  PPV / NPV {at}: {_ci(m, 'ppv')} / {_ci(m, 'npv')}")
            cm = m["confusion_matrix"]
            self.say(f"  confusion (rows true, cols predicted; neg/pos): [[{cm[0][0]}, {cm[0][1]}], "
                     f"[{cm[1][0]}, {cm[1][1]}]]")
            mc = m.get("multiclass")
            if mc:
                self.say(f"  multi-class: accuracy {_fmt(mc['accuracy'], 3)}, macro AUC {_fmt(mc['macro']['auc'], 3)}, "
                         f"macro F1 {_fmt(mc['macro']['f1'], 3)}")
                for c, row in mc["per_class"].items():
                    self.say(f"    {c}: AUC {_fmt(row['auc'], 3)} sens {_fmt(row['sensitivity'], 3)} "
                             f"spec {_fmt(row['specificity'], 3)} F1 {_fmt(row['f1'], 3)}")
        from cxr_desktop.training.gates import viewer_gate  # the wizard's "use in the viewer" rule

        self.say(viewer_gate(ev.test_metrics, pos).summary())


    def _shortcuts(self, result: Any) -> None:
        """Shortcut check (training/shortcuts.py): heatmap mass on the border and on burned-in marks."""
        if result is None or getattr(result, "model_path", None) is None:
            return
        check = getattr(result, "shortcut_check", None)  # computed with the report, if one was written
        if check is None:
            from cxr_desktop.training.shortcuts import check_result

            check = check_result(result)
        for line in check.lines() if check is not None else []:
            self.say(line)

    def _validation(self, result: Any) -> None:
        """Patients per split, starting model, calibration, input types and caution rate, briefly."""
        check = (result.data or {}).get("patient_check") or {}
        per = check.get("per_split") or {}
        if per:
            self.say("patients per split: " + ", ".join(
                f"{k} {v['patients']}" + (f" (subfolders suggest {v['folder_patients']})"
                                          if v.get("folder_patients") is not None else "") for k, v in per.items()))
        for w in check.get("warnings") or []:
            self.say(f"  warning: {w}")
        ev = result.evaluation
        m = ev.test_metrics if ev is not None else None
        if not m:
            return
        start = m.get("starting_model")
        if isinstance(start, dict) and "trained" in start:
            lo, hi = start.get("auc_difference_ci95", [float("nan")] * 2)
            self.say(f"starting model {start.get('name')!r} on the same test images: AUC "
                     f"{_fmt(start['starting']['auc'], 3)} -> {_fmt(start['trained']['auc'], 3)} (difference "
                     f"{_fmt(start['auc_difference'], 3)}, 95% CI {_fmt(lo, 3)} to {_fmt(hi, 3)})")
        if isinstance(start, dict) and start.get("note"):
            self.say(f"  starting model: {start['note']}")
        cal = m.get("calibration")
        if cal:
            self.say(f"calibration (test): ECE {_fmt(cal['ece'], 3)} ({cal['n_bins']} bins)")
        if m.get("by_input"):
            self.say("per input type (test, at the decision threshold):")
        for kind, r in (m.get("by_input") or {}).items():
            self.say(f"  {kind}: {r['n']} images, {r['n_positive']} positive; AUC {_ci(r, 'auc')}, "
                     f"sensitivity {_ci(r, 'sensitivity')}, specificity {_ci(r, 'specificity')}")
        c = m.get("caution")
        if c:
            pos, neg = c.get("positives") or {}, c.get("negatives") or {}
            self.say(f"caution rate (test, distance above {c['limit']:.2f}): {c['above']}/{c['n']} "
                     f"({_fmt(100 * c['rate'], 1)} %); positives {pos.get('above', 0)}/{pos.get('n', 0)}, "
                     f"negatives {neg.get('above', 0)}/{neg.get('n', 0)} (Fisher p = "
                     f"{_fmt(c.get('p_positive_vs_negative'), 3)})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cxr_desktop.training.config import TrainingError
    from cxr_desktop.training.engine import run_to_end

    cfg = config_from_args(args)
    printer = Printer(sys.stdout, quiet=args.quiet)
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
        result = run_to_end(cfg, cancel, printer)
    except TrainingError as exc:
        print(f"cxr-train: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxr-train: interrupted; run again with --resume to continue", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, old)
    if result is None or result.model_path is None:
        return 1
    printer.say(DECISION_AID_NOTICE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
