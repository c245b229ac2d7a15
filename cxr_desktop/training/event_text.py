"""Training events in words: one formatter for ``cxr-train``'s terminal and the wizard's log.

:func:`progress` turns a progress event (scan, preparing, backbone features, batches)
into a :class:`Progress` line that a caller may throttle or show in a status bar;
:func:`lines` turns every other event into the log lines it gives. The end-of-run
summaries (:func:`evaluation_lines`, :func:`validation_lines`, :func:`shortcut_lines`)
are separate so a caller that shows the evaluation otherwise (the wizard's pages)
can leave them out. Qt-free; file names only as relative paths, no patient data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cxr_desktop.training import events as E
from cxr_desktop.training.metrics import format_value_ci


@dataclass(frozen=True)
class Progress:
    """A progress line: its text, how far (done of total), and its indent level in a log."""

    text: str
    done: int
    total: int
    level: int = 0


def fmt(x: float | None, nd: int = 4) -> str:
    """A number with ``nd`` decimals, or "n/a" when there is none."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def value_ci(m: dict[str, Any], key: str) -> str:
    """Value with its 95 % CI, or with the note saying why the interval is degenerate."""
    return format_value_ci(m, key, brief=True)


def progress(ev: Any) -> Progress | None:
    """The progress line of a progress event; None for any other event."""
    from cxr_desktop.training.scan import ScanProgress

    if isinstance(ev, ScanProgress):
        return Progress(f"scan {ev.folder}: {ev.done}/{ev.total} files", ev.done, ev.total)
    if isinstance(ev, E.PrepareProgress):
        return Progress(f"preparing images: {ev.done}/{ev.total}", ev.done, ev.total)
    if isinstance(ev, E.FeatureProgress):
        return Progress(f"backbone features ({ev.split}): {ev.done}/{ev.total}", ev.done, ev.total, level=1)
    if isinstance(ev, E.BatchProgress) and ev.phase == "train":
        # one more than the batches: the last batch is not "done" until the epoch line says so
        return Progress(f"stage {ev.stage} epoch {ev.epoch}: batch {ev.batch}/{ev.batches} loss {fmt(ev.loss)} "
                        f"({ev.images_per_second:.1f} img/s)", ev.batch, ev.batches + 1, level=1)
    return None


def run_fraction(stage: int, epoch: int, frac: float, stage_epochs: dict[int, int]) -> float:
    """How much of the whole run (both stages' planned epochs) is done at ``frac`` of ``epoch`` of ``stage``."""
    total = sum(stage_epochs.values()) or 1
    done = (stage_epochs.get(1, 0) if stage == 2 else 0) + epoch - 1 + frac
    return min(1.0, done / total)


def time_left(ev: Any, stage_epochs: dict[int, int], batch_size: int) -> str:
    """", about 3 minutes left" in this stage from a training batch's speed; stage 1 says when it is known
    (stage 2 dominates); "" without a speed."""
    from cxr_desktop.durations import rough

    if ev.images_per_second <= 0:
        return ""
    if ev.stage == 1 and stage_epochs.get(2):
        return " (time left: known once fine-tuning starts)"
    per_batch = batch_size / ev.images_per_second
    left = (ev.batches - ev.batch) * per_batch + (stage_epochs[ev.stage] - ev.epoch) * ev.batches * per_batch
    return f", about {rough(left)} left"


def lines(ev: Any, *, quiet: bool = False, summaries: bool = True,  # noqa: C901 - flat dispatch
          patient_regex: str | None = None) -> list[str]:
    """The log lines of a (non-progress) event.

    ``quiet``: no scan summary and no "evaluating" line; ``summaries``: the evaluation and the
    end-of-run validation and shortcut summaries (False: the caller shows them otherwise);
    ``patient_regex``: the run's patient pattern, whose match in a file name is hidden (as the scan summary does).
    """
    out: list[str] = []
    say = out.append
    if isinstance(ev, E.ScanDone):
        if not quiet:
            out += ev.train.summary_lines()
            if ev.test is not None:
                say("test folder:")
                out += ["  " + line for line in ev.test.summary_lines()]
    elif isinstance(ev, E.PrepareDone):
        how = "reused from the interrupted run" if ev.reused else f"{ev.seconds:.1f} s"
        say(f"images prepared ({how}); {len(ev.skipped)} could not be decoded")
        from cxr_desktop.training.scan import redact_patient

        out += [f"  skipped {redact_patient(p.rel, patient_regex)}: {p.message} [{p.reason}]" for p in ev.skipped]
    elif isinstance(ev, E.SplitDone):
        src = "separate test folder" if ev.test_source == "folder" else f"held out, seed {ev.seed}"
        say(f"split (patient-level; test {src}):")
        for name, row in ev.counts.items():
            per = ", ".join(f"{k} {v}" for k, v in row.items() if k != "groups")
            say(f"  {name:5s}: {per}; {row['groups']} patients")
        out += [f"  warning: {w}" for w in ev.warnings]
    elif isinstance(ev, E.ModelReady):
        iw = ev.initial_weights or {}
        say(f"device: {ev.device}; initial weights: {iw.get('source', '?')}"
            + (f" ({iw.get('file_name')})" if iw.get("file_name") else ""))
        out += [f"  warning: {w}" for w in ev.warnings]
    elif isinstance(ev, E.Resumed):
        say(f"resuming after stage {ev.stage} epoch {ev.epoch}")
    elif isinstance(ev, E.StageStarted):
        what = "head only, backbone frozen" if ev.stage == 1 else f"fine-tuning {ev.trainable}"
        cache = ", cached backbone features" if ev.cached_features else ""
        say(f"stage {ev.stage}: {what}{cache}; {ev.epochs} epochs at lr {ev.lr:g}")
    elif isinstance(ev, E.EpochDone):
        best = "  *best" if ev.is_best else ""
        say(f"stage {ev.stage} epoch {ev.epoch:3d}  train_loss {fmt(ev.train_loss)}  "
            f"val_loss {fmt(ev.val_loss)}  val_auc {fmt(ev.val_auc)}  time {ev.seconds:.1f}s{best}")
    elif isinstance(ev, E.EarlyStopped):
        say(f"stage {ev.stage}: early stop after epoch {ev.epoch} ({ev.reason})")
    elif isinstance(ev, E.Cancelled):
        say(f"cancelled: {ev.message}")
    elif isinstance(ev, E.EvaluationStarted):
        if not quiet:
            say(f"evaluating the best epoch on {ev.split} ({ev.images} images)")
    elif isinstance(ev, E.EvaluationDone):
        if summaries:
            out += evaluation_lines(ev.evaluation)
    elif isinstance(ev, E.ModelSaved):
        say(f"model saved: {ev.path} ({ev.size_bytes / 1e6:.1f} MB, sha256 {ev.sha256[:16]}...)")
    elif isinstance(ev, E.Finished):
        if summaries:
            out += validation_lines(ev.result) + shortcut_lines(ev.result)
    elif isinstance(ev, E.ReportSaved):
        say(f"report: {ev.path}" if ev.error is None else f"report could not be written: {ev.error}")
    return out


def evaluation_lines(ev: Any) -> list[str]:
    """The threshold, the metrics of each split with their intervals, and the viewer's quality gate."""
    from cxr_desktop.training.gates import viewer_gate  # the wizard's "use in the viewer" rule

    out: list[str] = []
    say = out.append
    th = ev.threshold
    pos = ev.classes[ev.positive_index]
    say(f"decision threshold {th.threshold:.4f} for {pos!r} (chosen on validation by {th.method}"
        + (f", target sensitivity {th.target:.2f}" if th.target else "")
        + f": sensitivity {fmt(th.sensitivity, 3)}, specificity {fmt(th.specificity, 3)})")
    for split, m in (("validation", ev.val_metrics), ("test", ev.test_metrics)):
        if m is None:
            continue
        pats = f", {m['n_patients']} patients" if "n_patients" in m else ""
        say(f"{split} metrics ({m['n']} images{pats}, {m['n_positive']} {pos}; 95% CI over "
            f"{m.get('ci_unit', 'images')}):")
        say(f"  ROC AUC     {value_ci(m, 'auc')}")
        for k in ("accuracy", "sensitivity", "specificity", "precision", "f1"):
            say(f"  {k:11s} {value_ci(m, k)}")
        if "ppv" in m:
            at = (f"at prevalence {m['prevalence']:.3g} (stated)" if m.get("prevalence_source") == "stated"
                  else f"at the {split} set's own prevalence {fmt(m['prevalence'], 3)} (none stated)")
            say(f"  PPV / NPV {at}: {value_ci(m, 'ppv')} / {value_ci(m, 'npv')}")
        cm = m["confusion_matrix"]
        say(f"  confusion (rows true, cols predicted; neg/pos): [[{cm[0][0]}, {cm[0][1]}], "
            f"[{cm[1][0]}, {cm[1][1]}]]")
        mc = m.get("multiclass")
        if mc:
            say(f"  multi-class: accuracy {fmt(mc['accuracy'], 3)}, macro AUC {fmt(mc['macro']['auc'], 3)}, "
                f"macro F1 {fmt(mc['macro']['f1'], 3)}")
            for c, row in mc["per_class"].items():
                say(f"    {c}: AUC {fmt(row['auc'], 3)} sens {fmt(row['sensitivity'], 3)} "
                    f"spec {fmt(row['specificity'], 3)} F1 {fmt(row['f1'], 3)}")
    say(viewer_gate(ev.test_metrics, pos).summary())
    return out


def shortcut_lines(result: Any) -> list[str]:
    """Shortcut check (training/shortcuts.py): heatmap mass on the border and on burned-in marks.

    Computed here (Grad-CAM of the test images) unless the report already did it.
    """
    if result is None or getattr(result, "model_path", None) is None:
        return []
    check = getattr(result, "shortcut_check", None)  # computed with the report, if one was written
    if check is None:
        from cxr_desktop.training.shortcuts import check_result

        check = check_result(result)
    return list(check.lines()) if check is not None else []


def validation_lines(result: Any) -> list[str]:
    """Patients per split, starting model, calibration, input types and caution rate, briefly."""
    out: list[str] = []
    say = out.append
    check = (result.data or {}).get("patient_check") or {}
    per = check.get("per_split") or {}
    if per:
        say("patients per split: " + ", ".join(
            f"{k} {v['patients']}" + (f" (subfolders suggest {v['folder_patients']})"
                                      if v.get("folder_patients") is not None else "") for k, v in per.items()))
    out += [f"  warning: {w}" for w in check.get("warnings") or []]
    ev = result.evaluation
    m = ev.test_metrics if ev is not None else None
    if not m:
        return out
    start = m.get("starting_model")
    if isinstance(start, dict) and "trained" in start:
        lo, hi = start.get("auc_difference_ci95", [float("nan")] * 2)
        say(f"starting model {start.get('name')!r} on the same test images: AUC "
            f"{fmt(start['starting']['auc'], 3)} -> {fmt(start['trained']['auc'], 3)} (difference "
            f"{fmt(start['auc_difference'], 3)}, 95% CI {fmt(lo, 3)} to {fmt(hi, 3)})")
    if isinstance(start, dict) and start.get("note"):
        say(f"  starting model: {start['note']}")
    cal = m.get("calibration")
    if cal:
        say(f"calibration (test): ECE {fmt(cal['ece'], 3)} ({cal['n_bins']} bins)")
    if m.get("by_input"):
        say("per input type (test, at the decision threshold):")
    for kind, r in (m.get("by_input") or {}).items():
        say(f"  {kind}: {r['n']} images, {r['n_positive']} positive; AUC {value_ci(r, 'auc')}, "
            f"sensitivity {value_ci(r, 'sensitivity')}, specificity {value_ci(r, 'specificity')}")
    c = m.get("caution")
    if c:
        pos, neg = c.get("positives") or {}, c.get("negatives") or {}
        say(f"caution rate (test, distance above {c['limit']:.2f}): {c['above']}/{c['n']} "
            f"({fmt(100 * c['rate'], 1)} %); positives {pos.get('above', 0)}/{pos.get('n', 0)}, "
            f"negatives {neg.get('above', 0)}/{neg.get('n', 0)} (Fisher p = "
            f"{fmt(c.get('p_positive_vs_negative'), 3)})")
    return out
