"""Training wizard: a thin Qt layer over :func:`cxr_desktop.training.engine.train`.

Pages: folder -> scan summary -> split -> settings -> training (live curves,
progress with ETA, cancel keeping the best epoch) -> evaluation (metrics, ROC,
confusion matrix, threshold slider, Grad-CAM gallery) -> save (model file +
report, optionally made the active model through :attr:`TrainingWizard.model_ready`:
never by default, and only when the test set passes the quality gate of
:mod:`cxr_desktop.training.gates` or the user explicitly overrides it).

All work (scan, training, gallery, saving) runs on the wizard's
:class:`~cxr_desktop.gui.workers.WorkerRunner` (drained when the main window
closes); the pages only read the form, call the core (:mod:`cxr_desktop.training.runs`,
:mod:`~cxr_desktop.training.results`, :mod:`~cxr_desktop.training.event_text`) and
turn its events into widgets. With more than one GPU the run can use all of them
(:func:`cxr_desktop.training.launch.train_local`, DistributedDataParallel).
"""

from __future__ import annotations

import html
import math
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGridLayout, QHBoxLayout,
    QHeaderView, QLabel, QMessageBox,
    QLineEdit, QPlainTextEdit, QProgressBar, QPushButton, QScrollArea, QSlider, QSpinBox, QTableWidget,
    QTableWidgetItem, QVBoxLayout, QWidget, QWizard, QWizardPage,
)

from cxr_desktop import DECISION_AID_NOTICE
from cxr_desktop.gui.curve_chart import CurveChart
from cxr_desktop.gui.workers import WorkerRunner


def _folder_row(edit: QLineEdit, parent: QWidget, title: str) -> QWidget:
    row = QWidget(parent)
    lay = QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(edit, 1)
    btn = QPushButton("Browse...", row)
    btn.clicked.connect(lambda: _browse_dir(edit, parent, title))
    lay.addWidget(btn)
    return row


def _browse_dir(edit: QLineEdit, parent: QWidget, title: str) -> None:
    d = QFileDialog.getExistingDirectory(parent, title, edit.text() or str(Path.home()))
    if d:
        edit.setText(d)


def _explain(text: str) -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setStyleSheet("color: palette(mid); font-size: 90%;")
    return lab


# --------------------------------------------------------------------------- pages


class _Page(QWizardPage):
    """A wizard page that knows its wizard, with its title and the sentence under it."""

    def __init__(self, wizard: "TrainingWizard", title: str, subtitle: str):
        super().__init__()
        self.wiz = wizard
        self.setTitle(title)
        self.setSubTitle(subtitle)


class FolderPage(_Page):
    def __init__(self, wizard: "TrainingWizard"):
        super().__init__(wizard, "Choose the images", "A folder with one subfolder per class (for example normal/ "
                         "and abnormal/); files may be nested at any depth and mix PNG, JPEG and DICOM. The folders "
                         "are only read, never changed.")
        self.data, self.test, self.regex = (QLineEdit(self) for _ in range(3))  # training, test folder; pattern
        self.regex.setPlaceholderText(r"e.g. ^(\d+)_  (first group = patient)")
        form = QFormLayout(self)
        form.addRow("Training folder:", _folder_row(self.data, self, "Training folder"))
        form.addRow("", _explain("Images of each class in its own subfolder."))
        form.addRow("Test folder (optional):", _folder_row(self.test, self, "Test folder"))
        form.addRow("", _explain("A separate set with the same subfolders, used only for the final evaluation. "
                                 "Without it, a share of the patients is held out for testing."))
        form.addRow("Patient pattern (optional):", self.regex)
        form.addRow("", _explain("DICOM PatientID groups images of one patient. For other files a regular "
                                 "expression on the file name can; otherwise each file is its own patient."))
        self.runs: list[Any] = []  # interrupted runs (cxr_desktop.training.runs.InterruptedRun), newest first
        self.resume = QCheckBox(self)
        self.resume.setVisible(False)
        form.addRow("", self.resume)
        self.resume_note = _explain("Continues from its last completed epoch with the settings it was started "
                                    "with; the scan, split and settings pages are skipped. It trains in one "
                                    "process (one GPU or the CPU), also when it was started on all GPUs: the "
                                    "batch size is unchanged, so that one GPU holds the whole batch.")
        self.resume_note.setVisible(False)
        form.addRow("", self.resume_note)
        self.data.textChanged.connect(self.completeChanged)
        self.test.textChanged.connect(self.completeChanged)
        self.resume.toggled.connect(self.completeChanged)
        if wizard.settings is not None:
            self.data.setText(str(wizard.settings.value("training/last_folder", "") or ""))

    def initializePage(self) -> None:  # noqa: N802
        from cxr_desktop.training.runs import interrupted_runs

        try:
            self.runs = interrupted_runs(self.wiz.run_root())
        except OSError:
            self.runs = []
        if self.runs:
            self.resume.setText("Resume the interrupted run " + self.runs[0].describe())
        self.resume.setVisible(bool(self.runs))
        self.resume_note.setVisible(bool(self.runs))
        self.resume.setChecked(False)

    def resume_run(self) -> Any:
        """The interrupted run to resume, or None for a new run."""
        return self.runs[0] if self.runs and self.resume.isChecked() else None

    def nextId(self) -> int:  # noqa: N802
        if self.resume_run() is not None:
            return self.wiz.training_page_id
        return super().nextId()

    def isComplete(self) -> bool:  # noqa: N802
        if self.resume_run() is not None:
            return True
        ok = bool(self.data.text().strip()) and Path(self.data.text().strip()).is_dir()
        t = self.test.text().strip()
        return ok and (not t or Path(t).is_dir())


class ScanPage(_Page):
    def __init__(self, wizard: "TrainingWizard"):
        super().__init__(wizard, "Scan", "Counting images per class, checking every file, finding duplicates and "
                         "patients.")
        self.bar, self.status, self.text = QProgressBar(self), QLabel(self), QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.small_note = QLabel(self)  # classes too small for a trustworthy test set (quality gate)
        self.small_note.setWordWrap(True)
        self.small_note.setStyleSheet("color: #b06000;")
        lay = QVBoxLayout(self)
        lay.addWidget(self.bar)
        lay.addWidget(self.status)
        lay.addWidget(self.text, 1)
        lay.addWidget(self.small_note)
        self.train_scan: Any = None
        self.test_scan: Any = None
        self.error: str | None = None
        self._running = False

    def initializePage(self) -> None:  # noqa: N802
        from cxr_desktop.training.scan import iter_scan

        self.train_scan = self.test_scan = None
        self.error = None
        self.text.clear()
        self.small_note.clear()
        self.bar.setValue(0)
        folder = self.wiz.folder_page
        data, test = folder.data.text().strip(), folder.test.text().strip()
        regex = folder.regex.text().strip() or None
        if self.wiz.settings is not None:
            self.wiz.settings.setValue("training/last_folder", data)
        self.cancel = threading.Event()

        def job() -> Any:
            tr = yield from iter_scan(data, patient_regex=regex, cancelled=self.cancel.is_set)
            te = None
            if test:
                te = yield from iter_scan(test, classes=tr.classes, patient_regex=regex, cancelled=self.cancel.is_set)
            return tr, te

        self._running = True
        self.completeChanged.emit()
        self.worker = self.wiz.runner.start_generator(job, yielded=self._progress, returned=self._done,
                                                      errored=self._failed, finished=self._finished)

    def _progress(self, ev: Any) -> None:
        from cxr_desktop.training.event_text import progress

        self.bar.setMaximum(max(1, ev.total))
        self.bar.setValue(ev.done)
        self.status.setText(progress(ev).text)

    def _done(self, value: Any) -> None:
        from cxr_desktop.training.runs import scan_text

        self.train_scan, self.test_scan = value
        self.text.setPlainText("\n".join(scan_text(self.train_scan, self.test_scan)))
        self.status.setText("Scan complete." + ("" if self.usable() else " Not enough images to train: each class "
                                                "needs at least 3 usable images."))
        self._warn_small_classes()

    def _warn_small_classes(self) -> None:
        from cxr_desktop.training.gates import small_class_warnings

        test = self.test_scan.counts() if self.test_scan is not None else None
        self.small_note.setText("\n".join(small_class_warnings(self.train_scan.counts(), test_counts=test)))

    def _failed(self, exc: BaseException) -> None:
        self.error = str(exc)
        self.status.setText("The folder cannot be used.")
        self.text.setPlainText(self.error)

    def _finished(self) -> None:
        self._running = False
        self.completeChanged.emit()

    def usable(self) -> bool:
        from cxr_desktop.training.runs import can_train

        return can_train(self.train_scan)

    def isComplete(self) -> bool:  # noqa: N802
        return not self._running and self.usable()

    def cleanupPage(self) -> None:  # noqa: N802
        if getattr(self, "cancel", None) is not None:
            self.cancel.set()


class SplitPage(_Page):
    def __init__(self, wizard: "TrainingWizard"):
        super().__init__(wizard, "Split", "Patients, not images, are divided between training, validation and "
                         "test, so no patient is ever evaluated on after being trained on. The split is stratified "
                         "by class and repeatable with the same seed.")
        self.val = QDoubleSpinBox(self)
        self.val.setRange(0.05, 0.5)
        self.val.setSingleStep(0.05)
        self.val.setValue(0.15)
        self.test = QDoubleSpinBox(self)
        self.test.setRange(0.0, 0.5)
        self.test.setSingleStep(0.05)
        self.test.setValue(0.15)
        self.seed = QSpinBox(self)
        self.seed.setRange(0, 2**31 - 1)
        self.table = QTableWidget(self)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.note = QLabel(self)
        self.note.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Validation share:", self.val)
        form.addRow("", _explain("Chooses the best epoch and the decision threshold."))
        form.addRow("Test share:", self.test)
        form.addRow("", _explain("Held out until the end for an honest estimate (not used with a test folder)."))
        form.addRow("Seed:", self.seed)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.note)
        for w in (self.val, self.test, self.seed):
            w.valueChanged.connect(self.refresh)

    def initializePage(self) -> None:  # noqa: N802
        has_test = self.wiz.scan_page.test_scan is not None
        self.test.setEnabled(not has_test)
        self.refresh()

    def refresh(self) -> None:
        from cxr_desktop.training.runs import preview_split

        scan = self.wiz.scan_page
        if scan.train_scan is None:
            return
        try:
            preview = preview_split(scan.train_scan, scan.test_scan, val_fraction=self.val.value(),
                                    test_fraction=self.test.value(), seed=self.seed.value())
        except ValueError as exc:
            self.note.setText(str(exc))
            return
        cols = preview.classes + ["patients"]
        self.table.setColumnCount(len(cols))
        self.table.setHorizontalHeaderLabels(cols)
        self.table.setRowCount(3)
        self.table.setVerticalHeaderLabels(["training", "validation",
                                            "test" + (" (folder)" if preview.test_folder else "")])
        for r, name in enumerate(("train", "val", "test")):
            row = preview.counts[name]
            values = [row.get(cls, 0) for cls in preview.classes] + [row["groups"]]
            for c, value in enumerate(values):
                self.table.setItem(r, c, QTableWidgetItem(str(value)))
        self.note.setText("\n".join(preview.warnings))


class SettingsPage(_Page):
    def __init__(self, wizard: "TrainingWizard"):
        super().__init__(wizard, "Settings", "The defaults suit most data sets; each setting says what it does.")
        inner = QWidget(self)
        form = QFormLayout(inner)

        def add(label: str, widget: QWidget, help_text: str) -> QWidget:
            form.addRow(label, widget)
            form.addRow("", _explain(help_text))
            return widget

        def spin(lo: int, hi: int, val: int) -> QSpinBox:
            s = QSpinBox(inner)
            s.setRange(lo, hi)
            s.setValue(val)
            return s

        def dspin(lo: float, hi: float, val: float, decimals: int = 5, step: float = 0.0001) -> QDoubleSpinBox:
            s = QDoubleSpinBox(inner)
            s.setDecimals(decimals)
            s.setRange(lo, hi)
            s.setSingleStep(step)
            s.setValue(val)
            return s

        def combo(items: Sequence[str], current: str) -> QComboBox:
            c = QComboBox(inner)
            c.addItems(list(items))
            c.setCurrentText(current)
            return c

        self.positive = add("Positive class:", QComboBox(inner), "Its probability is the score compared with "
                            "the decision threshold.")
        self.weights = add("Initial weights:", combo(["none"], "none"),
                           "ImageNet weights make training far faster and better; 'none' starts from random "
                           "weights. ImageNet is offered once its weights are installed.")
        self.weights_box = _WeightsBox(inner, wizard.runner)
        form.addRow("", self.weights_box)
        self.weights_box.changed.connect(self.refresh_weights)
        self.input_size = add("Input size (px):", spin(64, 512, 224), "Images are resized to this square; "
                              "224 is the ResNet50 standard, smaller is faster.")
        self.epochs_frozen = add("Stage 1 epochs:", spin(0, 200, 5), "Trains only the new classifier head, "
                                 "the backbone frozen (fast: its features are computed once).")
        self.epochs_finetune = add("Stage 2 epochs:", spin(0, 500, 10), "Fine-tunes the network at a lower "
                                   "learning rate (slow on a CPU).")
        self.finetune = add("Stage 2 trains:", combo(["auto", "all", "layer3", "layer4"], "auto"),
                            "All blocks, or only the last blocks (faster, less prone to over-fitting on small "
                            "data). Auto: the last block on a CPU, all blocks on a GPU.")
        self.batch = add("Batch size:", spin(2, 512, 32), "Images per step; lower it if memory runs out.")
        self.lr_head = add("Stage 1 learning rate:", dspin(1e-6, 1.0, 1e-3), "Step size for the head.")
        self.lr_finetune = add("Stage 2 learning rate:", dspin(1e-7, 1.0, 1e-4, 6, 0.00001),
                               "Smaller, so pretrained features are refined rather than overwritten.")
        self.optimizer = add("Optimizer:", combo(["adam", "sgd"], "adam"), "adam = AdamW (robust default); "
                             "sgd = SGD with momentum.")
        self.scheduler = add("Learning-rate schedule:", combo(["cosine", "plateau", "none"], "cosine"),
                             "Cosine decays smoothly; plateau lowers it when validation stops improving.")
        self.monitor = add("Best epoch by:", combo(["auc", "loss"], "auc"), "Validation metric that picks the "
                           "saved epoch and drives early stopping.")
        self.patience = add("Early-stop patience:", spin(0, 100, 5), "Epochs without improvement before a stage "
                            "stops (0: never).")
        self.balance = add("Class imbalance:", combo(["weights", "sampler", "none"], "weights"),
                           "Weight the loss by inverse class frequency, or sample classes equally.")
        self.augment = add("Augmentation:", combo(["none", "light", "standard"], "standard"), "Small rotations, "
                           "zoom, shifts, exposure and sharpness changes during stage 2.")
        self.hflip = add("Horizontal flips:", QCheckBox("allow", inner), "Off by default: a flipped chest puts the "
                         "heart on the wrong side.")
        self.threshold = add("Threshold rule:", combo(["sensitivity", "youden", "fixed"], "sensitivity"),
                             "How the decision threshold is chosen on the validation split.")
        self.target = add("Target sensitivity:", dspin(0.5, 1.0, 0.95, 2, 0.01), "The threshold is the highest one "
                          "reaching this sensitivity on validation.")
        self.device = add("Device:", combo(["auto", "cpu", "cuda"], "auto"), "auto uses a CUDA GPU if present "
                          "(mixed precision), else the CPU.")
        self.gpus = 0  # GPUs on this computer (cxr_desktop.training.launch.local_gpu_count), known on the page
        self.ddp = QCheckBox(inner)
        self.ddp_note = _explain("Starts one training process per GPU on this computer (torchrun); the batch size "
                                 "above is split between them. The result is the same model file and report.")
        for w in (self.ddp, self.ddp_note):
            form.addRow("", w)
            w.setVisible(False)  # until the page is shown: counting GPUs loads torch
        self.device.currentTextChanged.connect(lambda text: self.ddp.setEnabled(text != "cpu"))
        self.half = add("Half-size file:", QCheckBox("store fp16 weights", inner), "Halves the model file; "
                        "predictions change by well under 0.1 %.")
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        lay = QVBoxLayout(self)
        lay.addWidget(scroll)

        self.refresh_weights()

    def refresh_weights(self) -> None:
        """Offer 'imagenet' only when its weights are installed (else the box says how to get them)."""
        from cxr_desktop.model.weights import find_imagenet_weights

        found = find_imagenet_weights()
        choices = ["imagenet", "none"] if found is not None else ["none"]
        if [self.weights.itemText(i) for i in range(self.weights.count())] != choices:
            self.weights.clear()
            self.weights.addItems(choices)
        self.weights.setCurrentText(choices[0])
        self.weights_box.show_state(found)

    def refresh_gpus(self) -> None:
        """Offer "Train on all N GPUs" only when this computer has more than one."""
        from cxr_desktop.training.launch import local_gpu_count

        self.gpus = local_gpu_count()
        self.ddp.setText(f"Train on all {self.gpus} GPUs (DistributedDataParallel)")
        for w in (self.ddp, self.ddp_note):
            w.setVisible(self.gpus > 1)

    def processes(self) -> int:
        """Training processes to start: the number of GPUs when the user chose them all (not on the CPU), else 1."""
        chosen = self.gpus > 1 and self.ddp.isChecked() and self.device.currentText() != "cpu"
        return self.gpus if chosen else 1

    def initializePage(self) -> None:  # noqa: N802
        self.refresh_weights()
        self.refresh_gpus()
        wanted = getattr(self.wiz, "pending_form", {}).get("settings.weights")
        if wanted and self.weights.findText(str(wanted)) >= 0:  # chosen earlier this session
            self.weights.setCurrentText(str(wanted))
        scan = self.wiz.scan_page.train_scan
        if scan is not None and self.positive.count() != len(scan.classes):
            self.positive.clear()
            self.positive.addItems(scan.classes)
            self.positive.setCurrentIndex(len(scan.classes) - 1)
            wanted = getattr(self.wiz, "pending_form", {}).get("settings.positive")
            if wanted and self.positive.findText(str(wanted)) >= 0:  # chosen earlier this session
                self.positive.setCurrentText(str(wanted))

    def values(self) -> dict[str, Any]:
        return dict(
            positive_class=self.positive.currentText() or None, weights=self.weights.currentText(),
            input_size=self.input_size.value(), epochs_frozen=self.epochs_frozen.value(),
            epochs_finetune=self.epochs_finetune.value(), finetune=self.finetune.currentText(),
            batch_size=self.batch.value(), lr_head=self.lr_head.value(), lr_finetune=self.lr_finetune.value(),
            optimizer=self.optimizer.currentText(), scheduler=self.scheduler.currentText(),
            monitor=self.monitor.currentText(), patience=self.patience.value(), balance=self.balance.currentText(),
            augment=self.augment.currentText(), hflip=self.hflip.isChecked(),
            threshold_method=self.threshold.currentText(), target_sensitivity=self.target.value(),
            device=self.device.currentText(), half=self.half.isChecked(),
        )

    def validatePage(self) -> bool:  # noqa: N802
        if self.epochs_frozen.value() + self.epochs_finetune.value() == 0:
            self.epochs_finetune.setFocus()
            return False
        return True


class _WeightsBox(QWidget):
    """Where the ImageNet weights are, or how to get them: download (in a worker, cancellable) or import."""

    changed = Signal()

    def __init__(self, parent: QWidget, runner: WorkerRunner):
        super().__init__(parent)
        self.runner = runner
        self.note = _explain("")
        self.download_btn = QPushButton("Download ImageNet weights", self)
        self.import_btn = QPushButton("Import file...", self)
        self.cancel_btn = QPushButton("Cancel download", self)
        self.bar = QProgressBar(self)
        self.bar.setRange(0, 1000)
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        buttons = QHBoxLayout()
        for b in (self.download_btn, self.import_btn, self.cancel_btn):
            buttons.addWidget(b)
        buttons.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.note)
        lay.addLayout(buttons)
        lay.addWidget(self.bar)
        lay.addWidget(self.status)
        self.download_btn.clicked.connect(self.start_download)
        self.import_btn.clicked.connect(self._choose_import)
        self.cancel_btn.clicked.connect(self.cancel)
        self.busy = False
        self._cancel = threading.Event()
        self._set_busy(False)

    def show_state(self, found: Path | None) -> None:
        from cxr_desktop.model.weights import user_weights_dir
        from cxr_desktop.model.weights_download import weights_url

        self.note.setStyleSheet("color: palette(mid); font-size: 90%;" if found is not None else "color: #b06000;")
        if found is not None:
            self.note.setText(f"ImageNet weights installed: {found}")
        else:
            self.note.setText(
                "ImageNet weights are not installed, so only random initial weights can be chosen (training "
                f"then needs far more images and time). Download them (about 100 MB from {weights_url()}; "
                "the checksum is verified) or import a copy of resnet50-11ad3fa6.pth brought in by other means. "
                f"They are kept in {user_weights_dir()}. On the command line: cxr-model weights --download.")
        for b in (self.download_btn, self.import_btn):
            b.setVisible(found is None)

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.download_btn.setEnabled(not busy)
        self.import_btn.setEnabled(not busy)
        self.cancel_btn.setVisible(busy)
        self.bar.setVisible(busy)

    def start_download(self) -> None:
        from cxr_desktop.model.weights_download import download_weights

        self._cancel = threading.Event()
        cancel = self._cancel

        def job() -> Any:
            return (yield from download_weights(cancelled=cancel.is_set))

        self._set_busy(True)
        self.bar.setValue(0)
        self.status.setText("Connecting...")
        self.runner.start_generator(job, yielded=self._progress, returned=self._done, errored=self._failed,
                                    finished=lambda: self._set_busy(False))

    def cancel(self) -> None:
        self._cancel.set()
        self.status.setText("Cancelling...")

    def _progress(self, p: Any) -> None:
        if p.total:
            self.bar.setValue(int(1000 * p.done / p.total))
            resumed = f", resumed at {p.resumed_from / 1e6:.1f} MB" if p.resumed_from else ""
            self.status.setText(f"Downloading: {p.done / 1e6:.1f} of {p.total / 1e6:.1f} MB{resumed}")
        else:
            self.status.setText(f"Downloading: {p.done / 1e6:.1f} MB")

    def _done(self, path: Any) -> None:
        if path is None:
            self.status.setText("Download cancelled; the part received is kept, so the next download resumes.")
            return
        self.status.setText(f"Installed {Path(path).name} (checksum verified).")
        self.changed.emit()

    def _failed(self, exc: BaseException) -> None:
        self.status.setText(f"<span style='color:#b00000'>{html.escape(str(exc))}</span>")

    def _choose_import(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Import ImageNet weights", str(Path.home()),
                                           "PyTorch weights (*.pth *.pt);;All files (*)")
        if p:
            self.import_file(p)

    def import_file(self, path: str) -> None:
        """Verify and install ``path`` in a worker (hashing 100 MB takes a moment)."""
        from cxr_desktop.model.weights_download import import_weights

        self._set_busy(True)
        self.cancel_btn.setVisible(False)
        self.status.setText(f"Checking {Path(path).name}...")
        self.runner.start_function(import_weights, path, returned=self._done, errored=self._failed,
                                   finished=lambda: self._set_busy(False))


class TrainingPage(_Page):
    def __init__(self, wizard: "TrainingWizard"):
        super().__init__(wizard, "Training", "Curves update after every epoch. Cancel keeps the best epoch so far.")
        self.loss_chart = CurveChart("loss (train / validation)", parent=self)
        self.auc_chart = CurveChart("validation AUC", y_range=(0.0, 1.0), parent=self)
        self.bar = QProgressBar(self)
        self.bar.setRange(0, 1000)
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        self.log = QPlainTextEdit(self)
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.cancel_btn = QPushButton("Cancel training (keep the best epoch)", self)
        self.cancel_btn.clicked.connect(self.request_cancel)
        charts = QHBoxLayout()
        charts.addWidget(self.loss_chart)
        charts.addWidget(self.auc_chart)
        lay = QVBoxLayout(self)
        lay.addLayout(charts, 2)
        lay.addWidget(self.bar)
        lay.addWidget(self.status)
        lay.addWidget(self.cancel_btn)
        lay.addWidget(self.log, 1)
        self.result: Any = None
        self.error: str | None = None
        self.running = False
        self.cancel = threading.Event()
        self.worker: Any = None

    # -- start ----------------------------------------------------------------
    def config(self) -> Any:
        """The interrupted run's settings, or a new run (folder and run-config.json) from the form."""
        from cxr_desktop.training.runs import start_run

        folder, split = self.wiz.folder_page, self.wiz.split_page
        interrupted = folder.resume_run()
        if interrupted is not None:  # exactly the settings it was started with
            return interrupted.resume_config()
        return start_run(self.wiz.run_root(), data_dir=folder.data.text().strip(),
                         test_dir=folder.test.text().strip() or None, patient_regex=folder.regex.text().strip(),
                         val_fraction=split.val.value(), test_fraction=split.test.value(), seed=split.seed.value(),
                         settings=self.wiz.settings_page.values(), overrides=self.wiz.overrides)

    def initializePage(self) -> None:  # noqa: N802
        self.result, self.error = None, None
        self.loss_chart.series.clear()
        self.auc_chart.series.clear()
        self.log.clear()
        self.cancel = threading.Event()
        try:
            cfg = self.config()
            cfg.validate()
        except Exception as exc:  # settings that cannot work: say so on the page
            self.error = str(exc)
            self.status.setText(f"Cannot start: {exc}")
            return
        self.cfg = cfg
        self.t0 = time.monotonic()
        self.epoch_times: list[float] = []
        self.stage_epochs = {1: cfg.epochs_frozen, 2: cfg.epochs_finetune}
        self.n_epoch = 0
        self.running = True
        self.cancel_btn.setEnabled(True)
        self.completeChanged.emit()
        signals = dict(yielded=self.on_event, returned=self._returned, errored=self._failed, finished=self._finished)
        # a resumed run skipped the settings page (and its GPU choice): one process, as its note says
        nproc = 1 if self.wiz.folder_page.resume_run() is not None else self.wiz.settings_page.processes()
        if nproc > 1:  # one process per GPU (torchrun); the same events and result
            from cxr_desktop.training.launch import train_local

            self._say(f"Training on {nproc} GPUs (DistributedDataParallel).")
            self.worker = self.wiz.runner.start_generator(train_local, cfg, nproc=nproc, cancel=self.cancel,
                                                          **signals)
        else:
            from cxr_desktop.training.engine import train

            self.worker = self.wiz.runner.start_generator(train, cfg, self.cancel, **signals)

    def request_cancel(self) -> None:
        self.cancel.set()
        self.cancel_btn.setEnabled(False)
        self.status.setText("Stopping after this batch; the best epoch so far will be evaluated and saved...")

    def stop_now(self) -> None:
        """Wizard closed: stop everything (the second cancel also stops the final evaluation)."""
        if self.running:
            self.cancel.set()
            if self.worker is not None:
                self.worker.quit()

    # -- events -----------------------------------------------------------------
    def _say(self, text: str) -> None:
        self.log.appendPlainText(text)

    def on_event(self, ev: Any) -> None:
        """Log lines and status texts from :mod:`cxr_desktop.training.event_text` (as cxr-train prints them);
        charts, progress bar and time left from the events themselves."""
        from cxr_desktop.training import events as E
        from cxr_desktop.training import event_text

        p = event_text.progress(ev)
        if p is not None:
            left = ""
            if isinstance(ev, E.BatchProgress):
                self._progress(ev.stage, ev.epoch, ev.batch / max(1, ev.batches))
                left = event_text.time_left(ev, self.stage_epochs, self.cfg.batch_size)
            self.status.setText(p.text[:1].upper() + p.text[1:] + left)
            return
        for line in event_text.lines(ev, quiet=True, summaries=False,  # the evaluation has its own page
                                     patient_regex=self.cfg.patient_regex):
            self._say(line)
        if isinstance(ev, E.StageStarted) and ev.stage == 2 and self.n_epoch:
            self.loss_chart.vlines = [self.n_epoch + 0.5]
            self.auc_chart.vlines = [self.n_epoch + 0.5]
        elif isinstance(ev, E.EpochDone):
            self.n_epoch += 1
            self.epoch_times.append(ev.seconds)
            self.loss_chart.add_point("train", self.n_epoch, ev.train_loss)
            self.loss_chart.add_point("validation", self.n_epoch, ev.val_loss)
            self.auc_chart.add_point("validation AUC", self.n_epoch, ev.val_auc)
            self._progress(ev.stage, ev.epoch, 1.0)
        elif isinstance(ev, E.EvaluationStarted):
            self.status.setText(f"Evaluating the best epoch on the {ev.split} split ({ev.images} images)...")

    def _progress(self, stage: int, epoch: int, frac: float) -> None:
        from cxr_desktop.training.event_text import run_fraction

        self.bar.setValue(int(1000 * run_fraction(stage, epoch, frac, self.stage_epochs)))

    def _returned(self, result: Any) -> None:
        self.result = result
        if result is not None and result.model_path:
            self.status.setText("Training finished." if not result.cancelled else
                                "Training stopped by you; the best epoch so far was evaluated.")
            self.bar.setValue(1000)
        else:
            self.status.setText("No model was produced.")

    def _failed(self, exc: BaseException) -> None:
        self.error = str(exc)
        self.status.setText(f"Training failed: {exc}")
        self._say(f"Error: {exc}")

    def _finished(self) -> None:
        self.running = False
        self.cancel_btn.setEnabled(False)
        self.completeChanged.emit()

    def isComplete(self) -> bool:  # noqa: N802
        return not self.running and self.result is not None and self.result.model_path is not None

    def cleanupPage(self) -> None:  # noqa: N802 - Back pressed: stop the run
        self.stop_now()


class EvaluationPage(_Page):
    def __init__(self, wizard: "TrainingWizard"):
        super().__init__(wizard, "Evaluation", "The threshold was chosen on the validation split; the test split "
                         "gives the honest estimate. Move the slider to see the sensitivity / specificity trade-off.")
        self.metrics = QLabel(self)
        self.metrics.setTextFormat(Qt.TextFormat.RichText)
        self.metrics.setWordWrap(True)
        self.roc = CurveChart("ROC (sensitivity vs 1 - specificity)", y_range=(0.0, 1.0), parent=self, diagonal=True)
        self.confusion = QTableWidget(self)
        self.confusion.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        # headers sized to their whole text (a stretched column cut "predicted" to "redicte")
        self.confusion.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.confusion.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(0, 1000)
        self.slider_label = QLabel(self)
        self.gallery = QWidget(self)
        self.gallery_layout = QGridLayout(self.gallery)
        self.gallery_status = QLabel("Grad-CAM examples are being prepared...", self)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.gallery)
        metrics_box = QScrollArea(self)  # a card's warnings can make the text longer than the page
        metrics_box.setWidgetResizable(True)
        metrics_box.setFrameShape(QScrollArea.Shape.NoFrame)
        metrics_box.setWidget(self.metrics)
        top = QHBoxLayout()
        top.addWidget(metrics_box, 2)
        top.addWidget(self.roc, 2)
        top.addWidget(self.confusion, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(f"<i>{html.escape(DECISION_AID_NOTICE)}</i>"))
        lay.addLayout(top, 2)
        lay.addWidget(self.slider)
        lay.addWidget(self.slider_label)
        lay.addWidget(self.gallery_status)
        lay.addWidget(scroll, 2)
        self.slider.valueChanged.connect(self._threshold_moved)
        self.threshold = 0.5

    def initializePage(self) -> None:  # noqa: N802
        from cxr_desktop.training.metrics import roc_curve

        result = self.wiz.training_page.result
        ev = result.evaluation
        card = result.card
        esc = html.escape
        rows = []
        for name, m in ev.split_metrics():  # the report's texts (a degenerate interval named, never "(1.000-1.000)")
            cells = [f"{esc(t.label)}: {esc(t.brief)}" for t in ev.metric_texts(m)]
            prev = "" if "prevalence" not in m else f"<br><small>PPV/NPV {esc(ev.prevalence_text(m))}</small>"
            rows.append(f"<b>{name}</b> ({esc(ev.counts_text(m))})<br>" + "<br>".join(cells) + prev)
        warn = "".join(f"<br><span style='color:#b06000'>{esc(w)}</span>" for w in card.warnings)
        self.metrics.setText("<br><br>".join(rows) + f"<br><small>{esc(ev.interval_text())}.</small>" + warn)
        self.roc.series.clear()
        for split in ("val", "test"):
            y, s = ev.positive_scores(split)
            if len(set(y.tolist())) == 2:
                fpr, tpr, _ = roc_curve(y, s)
                self.roc.set_series("validation" if split == "val" else "test", list(zip(fpr, tpr)))
        cm = ev.final_metrics["confusion_matrix"]
        labels = ev.confusion_labels()  # as the report names them
        self.confusion.setRowCount(2)
        self.confusion.setColumnCount(2)
        self.confusion.setHorizontalHeaderLabels([f"predicted {x}" for x in labels])
        self.confusion.setVerticalHeaderLabels([f"true {x}" for x in labels])
        for i in range(2):
            for j in range(2):
                item = QTableWidgetItem(str(cm[i][j]))
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.confusion.setItem(i, j, item)
        self._fit_confusion()
        self.slider.setValue(int(round(card.decision_threshold * 1000)))
        self._threshold_moved(self.slider.value())
        self._load_gallery(result)

    def _fit_confusion(self) -> None:
        """The table asks for the room its headers and counts need, so the layout never cuts them."""
        t = self.confusion
        t.resizeColumnsToContents()
        t.resizeRowsToContents()
        width = t.verticalHeader().sizeHint().width() + sum(t.columnWidth(c) for c in range(t.columnCount()))
        height = t.horizontalHeader().sizeHint().height() + sum(t.rowHeight(r) for r in range(t.rowCount()))
        t.setMinimumSize(width + 2 * t.frameWidth() + 4, height + 2 * t.frameWidth() + 4)
        t.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        t.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def _threshold_moved(self, value: int) -> None:
        result = self.wiz.training_page.result
        if result is None or result.evaluation is None:
            return
        self.threshold = value / 1000.0
        ev = result.evaluation
        v = ev.at_threshold(self.threshold, "val")
        self.roc.markers = [(1 - v["specificity"], v["sensitivity"], "val")] if math.isfinite(v["sensitivity"]) else []
        self.slider_label.setText(ev.threshold_text(self.threshold, result.card.decision_threshold))
        self.roc.update()

    def _load_gallery(self, result: Any) -> None:
        from cxr_desktop.training.report import gallery

        ev = result.evaluation
        split = "test" if ev.test is not None else "val"
        preds = ev.test if ev.test is not None else ev.val
        y, s = ev.positive_scores(split)
        while self.gallery_layout.count():
            w = self.gallery_layout.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.gallery_status.setText("Grad-CAM examples are being prepared...")
        self.wiz.runner.start_function(gallery, result.model_path, preds.paths, preds.rels, y, s,
                                       result.card.decision_threshold, self.wiz.gallery_per_kind,
                                       result.card.positive_class, 160, returned=self._show_gallery,
                                       errored=lambda e: self.gallery_status.setText(f"No gallery: {e}"))

    def _show_gallery(self, cells: Any) -> None:
        import base64

        self.gallery_status.setText(f"Grad-CAM of '{self.wiz.training_page.result.card.positive_class}' on "
                                    "examples from the evaluation split:")
        label_w = 0
        for row, (kind, items) in enumerate(cells):
            kind_label = QLabel(f"<b>{html.escape(kind)}</b>")
            kind_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
            label_w = max(label_w, kind_label.sizeHint().width())
            self.gallery_layout.addWidget(kind_label, row, 0, Qt.AlignmentFlag.AlignTop)
            for col, (b64, cap) in enumerate(items):
                pix = QPixmap()
                pix.loadFromData(base64.b64decode(b64))
                cell = QWidget()
                box = QVBoxLayout(cell)
                box.setContentsMargins(2, 2, 2, 2)
                lab = QLabel()
                lab.setPixmap(pix)
                lab.setFixedSize(pix.size())
                lab.setToolTip(cap)
                text = QLabel(cap.rsplit(" - ", 1)[-1])
                box.addWidget(lab)
                box.addWidget(text)
                self.gallery_layout.addWidget(cell, row, col + 1,
                                              Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        # the label column keeps its width (images used to straddle the labels), the images sit right of it
        self.gallery_layout.setColumnMinimumWidth(0, label_w + 8)
        self.gallery_layout.setColumnStretch(self.gallery_layout.columnCount(), 1)
        self.gallery_done = True


class SavePage(_Page):
    def __init__(self, wizard: "TrainingWizard"):
        super().__init__(wizard, "Save", "Write the model file (with its card: classes, threshold, metrics, data "
                         "summary) and the training report.")
        self.path, self.report = QLineEdit(self), QLineEdit(self)  # model file, its HTML report
        self.make_active = QCheckBox("Use this model in the viewer now", self)
        self.make_active.setChecked(False)  # never by default: a decision the user makes
        self.gate_note = QLabel(self)
        self.gate_note.setWordWrap(True)
        self.override = QCheckBox("Override: use it in the viewer anyway - I understand its test results do not "
                                  "show it can be relied on", self)
        self.override.toggled.connect(self._apply_gate)
        self.gate: Any = None  # cxr_desktop.training.gates.GateResult
        self.save_btn = QPushButton("Save", self)
        self.save_btn.clicked.connect(self.save)
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        browse = QPushButton("Browse...", self)
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        form = QFormLayout(self)
        form.addRow("Model file:", row)
        form.addRow("Report (HTML):", self.report)
        for w in (self.make_active, self.gate_note, self.override, self.save_btn, self.status):
            form.addRow("", w)
        self.saved_path: str | None = None
        self.saving = False
        self.path.textChanged.connect(self._path_changed)

    def _browse(self) -> None:
        p, _ = QFileDialog.getSaveFileName(self, "Save model", self.path.text(), "Model files (*.safetensors)")
        if p:
            self.path.setText(p if p.endswith(".safetensors") else p + ".safetensors")

    def _path_changed(self, text: str) -> None:
        from cxr_desktop.training.results import report_path_for

        report = report_path_for(text)
        if report is not None:
            self.report.setText(report)
        self.saved_path = None
        self.completeChanged.emit()

    def initializePage(self) -> None:  # noqa: N802
        from cxr_desktop.paths import data_dir
        from cxr_desktop.training.results import default_model_path

        result = self.wiz.training_page.result
        cfg = getattr(self.wiz.training_page, "cfg", None)
        data = cfg.data_dir if cfg is not None else self.wiz.folder_page.data.text().strip()
        if not self.path.text():
            self.path.setText(str(default_model_path(data, data_dir() / "models")))
        self.saved_path = None
        from cxr_desktop.training.gates import viewer_gate

        self.gate = viewer_gate(result.evaluation.test_metrics if result.evaluation is not None else None,
                                result.card.positive_class)
        self.make_active.setChecked(False)
        self.override.setChecked(False)
        self._apply_gate()
        self.status.setText(f"Decision threshold: {self.wiz.evaluation_page.threshold:.3f}"
                            + (" (changed on the evaluation page)"
                               if abs(self.wiz.evaluation_page.threshold - result.card.decision_threshold) > 5e-4 else ""))

    def _apply_gate(self) -> None:
        """Below the gate the checkbox is refused (unticked, disabled) unless the override is ticked."""
        passed = self.gate is None or self.gate.passed
        self.gate_note.setText("" if self.gate is None else self.gate.summary())
        self.gate_note.setStyleSheet("" if passed else "color: #b06000;")
        self.override.setVisible(not passed)
        allowed = self.may_activate()
        self.make_active.setEnabled(allowed)
        if not allowed:
            self.make_active.setChecked(False)

    def may_activate(self) -> bool:
        """Whether the saved model may become the viewer's model (gate met, or explicitly overridden)."""
        return self.gate is None or self.gate.passed or self.override.isChecked()

    def save(self) -> None:
        from cxr_desktop.training.results import save_model_and_report

        result = self.wiz.training_page.result
        path = Path(self.path.text().strip())
        report = self.report.text().strip() or None
        threshold = self.wiz.evaluation_page.threshold
        if not path.name:
            self.status.setText("Choose where to save the model file.")
            return
        self.saving = True
        self.save_btn.setEnabled(False)
        self.status.setText("Saving...")
        self.completeChanged.emit()
        self.wiz.runner.start_function(save_model_and_report, result, str(path), threshold, report,
                                       returned=self._saved, errored=self._failed, finished=self._finished)

    def _saved(self, path: str) -> None:
        self.saved_path = path
        self.status.setText(f"Saved {Path(path).name}" + (f" and {Path(self.report.text()).name}"
                                                           if self.report.text().strip() else "") + ".")

    def _failed(self, exc: BaseException) -> None:
        self.status.setText(f"Could not save: {exc}")

    def _finished(self) -> None:
        self.saving = False
        self.save_btn.setEnabled(True)
        self.completeChanged.emit()

    def isComplete(self) -> bool:  # noqa: N802
        return self.saved_path is not None and not self.saving


# --------------------------------------------------------------------------- the wizard

def _value(widget: QWidget) -> Any:
    if isinstance(widget, QLineEdit):
        return widget.text()
    if isinstance(widget, (QSpinBox, QDoubleSpinBox)):
        return widget.value()
    if isinstance(widget, QComboBox):
        return widget.currentText()
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    raise TypeError(type(widget).__name__)


def _set_value(widget: QWidget, value: Any) -> None:
    if isinstance(widget, QLineEdit):
        widget.setText(str(value))
    elif isinstance(widget, (QSpinBox, QDoubleSpinBox)):
        widget.setValue(value)
    elif isinstance(widget, QComboBox):
        if widget.findText(str(value)) >= 0:  # choices that depend on the scan are set again there
            widget.setCurrentText(str(value))
    elif isinstance(widget, QCheckBox):
        widget.setChecked(bool(value))


class TrainingWizard(QWizard):
    """Folder -> scan -> split -> settings -> training -> evaluation -> save.

    ``model_ready(path)`` is emitted on Finish when the user chose to make the
    saved model the active one.
    """

    model_ready = Signal(str)

    def __init__(self, parent: QWidget | None = None, settings: QSettings | None = None, *,
                 overrides: dict[str, Any] | None = None, run_root: str | Path | None = None,
                 gallery_per_kind: int = 3, session: dict[str, Any] | None = None):
        super().__init__(parent)
        # What the user set, kept for the session: reopening the wizard from the same window shows it
        # again (folder paths and training settings only; never patient data). ``session``: a dict to
        # keep it in; by default one held by ``parent`` (the main window) for as long as it lives.
        if session is None:
            session = parent.__dict__.setdefault("_training_wizard_session", {}) if parent is not None else {}
        self.session = session
        self.setWindowTitle("Train a model - CXR Review")
        self.setOption(QWizard.WizardOption.NoBackButtonOnLastPage, True)
        self.settings = settings
        self.overrides = dict(overrides or {})  # TrainConfig fields fixed by the caller (tests, administrators)
        self._run_root = Path(run_root) if run_root else None
        self.gallery_per_kind = gallery_per_kind
        self.runner = WorkerRunner("training-wizard", threads=2)  # e.g. the gallery and saving at once
        self.folder_page = FolderPage(self)
        self.scan_page = ScanPage(self)
        self.split_page = SplitPage(self)
        self.settings_page = SettingsPage(self)
        self.training_page = TrainingPage(self)
        self.evaluation_page = EvaluationPage(self)
        self.save_page = SavePage(self)
        ids = [self.addPage(page) for page in (self.folder_page, self.scan_page, self.split_page,
                                                self.settings_page, self.training_page, self.evaluation_page,
                                                self.save_page)]
        self.training_page_id = ids[4]
        self.resize(980, 760)
        self._defaults = self.form_state()  # what "changed" is measured against
        self.restore_form(self.session)
        self.close_box: QMessageBox | None = None
        self._close_confirmed = False

    # -- settings kept for the session ------------------------------------------
    def form_widgets(self) -> dict[str, QWidget]:
        """Every field the user sets (folders, split, training settings), by a stable name."""
        f, sp, st = self.folder_page, self.split_page, self.settings_page
        out: dict[str, QWidget] = {"folder.data": f.data, "folder.test": f.test, "folder.regex": f.regex,
                                   "split.val": sp.val, "split.test": sp.test, "split.seed": sp.seed}
        for name in ("positive", "weights", "input_size", "epochs_frozen", "epochs_finetune", "finetune", "batch",
                     "lr_head", "lr_finetune", "optimizer", "scheduler", "monitor", "patience", "balance",
                     "augment", "hflip", "threshold", "target", "device", "ddp", "half"):
            out[f"settings.{name}"] = getattr(st, name)
        return out

    def form_state(self) -> dict[str, Any]:
        return {k: _value(w) for k, w in self.form_widgets().items()}

    def restore_form(self, state: dict[str, Any]) -> None:
        widgets = self.form_widgets()
        for k, v in state.items():
            if k in widgets:
                _set_value(widgets[k], v)
        self.pending_form = dict(state)  # combo choices known only after the scan are applied then

    def form_changed(self) -> bool:
        """True when the user changed a field from what the wizard opened with."""
        return self.form_state() != self._defaults

    def work_running(self) -> bool:
        return bool(self.training_page.running or getattr(self.scan_page, "_running", False)
                    or getattr(self.save_page, "saving", False))

    def ask_close(self, text: str) -> None:
        """Ask before closing (Escape, the close button, Cancel); Yes closes. Never blocks the event loop."""
        if self.close_box is not None and self.close_box.isVisible():
            return
        box = QMessageBox(QMessageBox.Icon.Question, "Close the training wizard?", text,
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setDefaultButton(QMessageBox.StandardButton.No)

        def answered(_result: int) -> None:
            if box.clickedButton() is box.button(QMessageBox.StandardButton.Yes):
                self._close_confirmed = True
                self.reject()

        box.finished.connect(answered)
        self.close_box = box
        box.open()

    def done(self, result: int) -> None:  # noqa: D102 - every way of closing keeps the settings
        self.session.clear()
        self.session.update(self.form_state())
        self._close_confirmed = False
        super().done(result)

    def stop_work(self) -> None:
        """Ask the wizard's work to stop (a run keeps its last checkpoint), without waiting."""
        self.training_page.stop_now()
        if getattr(self.scan_page, "cancel", None) is not None:
            self.scan_page.cancel.set()
        if self.settings_page.weights_box.busy:
            self.settings_page.weights_box.cancel()

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Stop the wizard's work and wait up to ``timeout_ms`` for its workers (app closing)."""
        self.stop_work()
        return self.runner.shutdown(timeout_ms)

    def run_root(self) -> Path:
        """Where runs keep their checkpoints (the user data folder unless given)."""
        from cxr_desktop.paths import data_dir

        root = self._run_root or (data_dir() / "training-runs")
        root.mkdir(parents=True, exist_ok=True)
        return root

    def accept(self) -> None:
        page = self.save_page
        if page.saved_path and page.make_active.isChecked() and page.may_activate():
            self.model_ready.emit(self.save_page.saved_path)
        super().accept()

    def reject(self) -> None:
        if not self._close_confirmed:
            if self.work_running():
                self.ask_close("Training is running. Closing stops it; the run's last completed epoch is kept "
                               "as a checkpoint and can be resumed from this wizard.\n\nClose anyway?")
                return
            if self.form_changed() and self.save_page.saved_path is None:
                self.ask_close("Close the wizard? Your folders and settings are kept for this session: "
                               "reopening the wizard shows them again.")
                return
        self.training_page.stop_now()
        if getattr(self.scan_page, "cancel", None) is not None:
            self.scan_page.cancel.set()
        super().reject()
