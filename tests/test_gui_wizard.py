"""Training wizard: every page, headless, on a tiny folder; ends with a loadable model file."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QWizard  # noqa: E402

from cxr_desktop.gui.training_wizard import TrainingWizard  # noqa: E402
from cxr_desktop.model.modelfile import load_model  # noqa: E402
from cxr_desktop.training.synthetic import PATIENT_REGEX, find_sources, write_dataset  # noqa: E402


@pytest.fixture()
def folder(tmp_path, cxr_dir):
    root = tmp_path / "data"
    write_dataset(find_sources(cxr_dir, max_side=256, limit=10)[:8], root, variants=4, size=64, seed=2)
    (root / "opacity" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # listed as a problem
    return root


@pytest.fixture(autouse=True)
def _no_installed_weights(tmp_path, monkeypatch):
    """No ImageNet weights from this machine: an empty torch hub cache and user data folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "user"))
    monkeypatch.delenv("CXR_WEIGHTS_DIR", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _next(qtbot, wiz, expected_page):
    qtbot.waitUntil(lambda: wiz.button(QWizard.WizardButton.NextButton).isEnabled(), timeout=120_000)
    wiz.next()
    assert wiz.currentPage() is expected_page


@pytest.mark.slow
def test_wizard_walks_all_pages_and_saves_a_loadable_model(qtbot, folder, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "user"))
    wiz = TrainingWizard(overrides={"bootstrap": 50}, gallery_per_kind=1)
    qtbot.addWidget(wiz)
    wiz.show()
    ready = []
    wiz.model_ready.connect(ready.append)

    # folder page: Next stays disabled until the folder exists
    assert not wiz.button(QWizard.WizardButton.NextButton).isEnabled()
    wiz.folder_page.data.setText(str(folder))
    wiz.folder_page.regex.setText(PATIENT_REGEX)
    _next(qtbot, wiz, wiz.scan_page)

    # scan page: summary with the broken file listed; both classes too small for a trustworthy test set
    qtbot.waitUntil(lambda: wiz.scan_page.train_scan is not None, timeout=60_000)
    text = wiz.scan_page.text.toPlainText()
    assert "opacity/broken.png" in text and "32 usable images" in text
    small = wiz.scan_page.small_note.text()
    assert "Class 'normal' is small" in small and "Class 'opacity' is small" in small
    _next(qtbot, wiz, wiz.split_page)

    # split page: a patient-level preview table
    assert wiz.split_page.table.rowCount() == 3
    total = sum(int(wiz.split_page.table.item(r, c).text()) for r in range(3) for c in range(2))
    assert total == 32
    _next(qtbot, wiz, wiz.settings_page)

    # settings: small and fast for the test (no ImageNet weights installed here: not offered)
    s = wiz.settings_page
    assert [s.weights.itemText(i) for i in range(s.weights.count())] == ["none"]
    assert s.positive.currentText() == "opacity"
    s.weights.setCurrentText("none")
    s.input_size.setValue(64)
    s.epochs_frozen.setValue(1)
    s.epochs_finetune.setValue(1)
    s.batch.setValue(8)
    _next(qtbot, wiz, wiz.training_page)

    # training: runs in a worker; the GUI thread keeps processing events meanwhile
    page = wiz.training_page
    assert page.running
    qtbot.waitUntil(lambda: not page.running, timeout=300_000)
    assert page.error is None, page.error
    assert page.result is not None and page.result.model_path
    assert len(page.loss_chart.series["train"]) == 2 and len(page.auc_chart.series["validation AUC"]) == 2
    _next(qtbot, wiz, wiz.evaluation_page)

    # evaluation: metrics, slider changes the displayed trade-off, gallery arrives
    ev = wiz.evaluation_page
    assert "ROC AUC" in ev.metrics.text()
    ev.slider.setValue(0)
    assert "sensitivity 1.000" in ev.slider_label.text()
    qtbot.waitUntil(lambda: getattr(ev, "gallery_done", False), timeout=120_000)
    assert ev.gallery_layout.count() > 0
    ev.slider.setValue(400)
    _next(qtbot, wiz, wiz.save_page)

    # save: model + report; Finish emits model_ready with the path
    out = tmp_path / "saved" / "wizard-model.safetensors"
    wiz.save_page.path.setText(str(out))
    assert wiz.save_page.report.text().endswith("wizard-model-report.html")
    assert not wiz.button(QWizard.WizardButton.FinishButton).isEnabled()
    wiz.save_page.save_btn.click()
    qtbot.waitUntil(lambda: wiz.save_page.saved_path is not None, timeout=120_000)
    loaded = load_model(out)
    assert loaded.card.decision_threshold == pytest.approx(0.4)
    assert loaded.card.classes == ["normal", "opacity"] and loaded.card.input_size == 64
    assert "ood" in loaded.card.extra and "ood.precision" in loaded.extra_tensors
    report = Path(wiz.save_page.report.text()).read_text()
    assert "data:image/png;base64," in report and "0.4000" in report
    # quality gate: a test set this small is refused for the viewer; not pre-ticked; an explicit override
    page = wiz.save_page
    assert not page.gate.passed and "at least 20 are needed" in page.gate_note.text()
    assert not page.make_active.isChecked() and not page.make_active.isEnabled()
    assert page.override.isVisible() and not page.may_activate()
    page.make_active.setChecked(True)  # even ticked programmatically, the refusal holds
    assert not page.may_activate()
    page.override.setChecked(True)
    assert page.make_active.isEnabled() and page.may_activate()
    page.make_active.setChecked(True)
    qtbot.waitUntil(lambda: wiz.button(QWizard.WizardButton.FinishButton).isEnabled(), timeout=10_000)
    wiz.button(QWizard.WizardButton.FinishButton).click()
    assert ready == [str(out)]


@pytest.mark.slow
def test_wizard_resumes_an_interrupted_run(qtbot, folder, tmp_path, monkeypatch):
    """A run stopped after stage 2 epoch 1 (the app closed, the machine restarted) is offered on the
    first page; resuming skips to training, continues at stage 2 epoch 2, and saves the model."""
    from cxr_desktop.training.config import TrainConfig
    from cxr_desktop.training.engine import train
    from cxr_desktop.training.events import CheckpointSaved
    from cxr_desktop.training.runs import interrupted_runs, save_run_config

    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "user"))
    root = tmp_path / "runs"
    run_dir = root / "run-20261124-010000"
    run_dir.mkdir(parents=True)
    cfg = TrainConfig(data_dir=str(folder), out=str(run_dir / "model.safetensors"), weights="none", input_size=64,
                      epochs_frozen=1, epochs_finetune=2, batch_size=8, patient_regex=PATIENT_REGEX, bootstrap=50,
                      seed=0, patience=0)
    save_run_config(run_dir, cfg)
    gen = train(cfg)
    for ev in gen:
        if isinstance(ev, CheckpointSaved) and (ev.stage, ev.epoch) == (2, 1):
            break
    gen.close()  # stopped between epochs, as a killed process would be: no model file
    assert not Path(cfg.out).exists()
    assert [(r.stage, r.epoch) for r in interrupted_runs(root)] == [(2, 1)]

    wiz = TrainingWizard(run_root=root)
    qtbot.addWidget(wiz)
    wiz.show()
    page = wiz.folder_page
    assert page.resume.isVisible() and "stage 2 epoch 1" in page.resume.text()
    assert "data 'data'" in page.resume.text()
    assert not wiz.button(QWizard.WizardButton.NextButton).isEnabled()  # no folder chosen yet
    page.resume.setChecked(True)
    _next(qtbot, wiz, wiz.training_page)  # scan, split and settings are skipped
    training = wiz.training_page
    qtbot.waitUntil(lambda: not training.running, timeout=300_000)
    assert training.error is None, training.error
    assert len(training.loss_chart.series["train"]) == 1  # only stage 2 epoch 2 was left to run
    loaded = load_model(cfg.out)
    assert [(h["stage"], h["epoch"]) for h in loaded.card.provenance["history"]] == [(1, 1), (2, 1), (2, 2)]
    assert interrupted_runs(root) == []  # finished now
    _next(qtbot, wiz, wiz.evaluation_page)
    assert "ROC AUC" in wiz.evaluation_page.metrics.text()
    qtbot.waitUntil(lambda: getattr(wiz.evaluation_page, "gallery_done", False), timeout=120_000)


def test_settings_offer_imagenet_only_once_downloaded(qtbot, monkeypatch, tmp_path):
    """Weights absent: only 'none', a note saying how to get them; the Download button (a worker against a
    loopback server here) installs them, after which 'imagenet' is offered and chosen. Errors are shown."""
    from loopback_weights import NAME, PAYLOAD, LoopbackServer

    from cxr_desktop.model.weights import user_weights_dir

    server = LoopbackServer()
    try:
        monkeypatch.setenv("CXR_WEIGHTS_URL", server.url)
        wiz = TrainingWizard()
        qtbot.addWidget(wiz)
        page = wiz.settings_page
        box = page.weights_box
        assert [page.weights.itemText(i) for i in range(page.weights.count())] == ["none"]
        assert "not installed" in box.note.text() and server.url in box.note.text()
        assert not box.download_btn.isHidden() and not box.import_btn.isHidden()

        server.mode = "500"
        box.download_btn.click()
        qtbot.waitUntil(lambda: not box.busy, timeout=30_000)
        assert "HTTP 500" in box.status.text() and page.weights.currentText() == "none"

        server.mode = "ok"
        box.download_btn.click()
        qtbot.waitUntil(lambda: page.weights.currentText() == "imagenet", timeout=30_000)
        assert (user_weights_dir() / NAME).read_bytes() == PAYLOAD
        assert "checksum verified" in box.status.text() and "installed" in box.note.text()
        assert box.download_btn.isHidden()
        qtbot.waitUntil(lambda: not box.busy, timeout=10_000)
    finally:
        server.close()


def test_import_button_refuses_a_damaged_copy(qtbot, tmp_path):
    from loopback_weights import NAME, PAYLOAD

    wiz = TrainingWizard()
    qtbot.addWidget(wiz)
    page = wiz.settings_page
    bad = tmp_path / NAME
    bad.write_bytes(PAYLOAD[:1000])
    page.weights_box.import_file(str(bad))
    qtbot.waitUntil(lambda: "Nothing was copied" in page.weights_box.status.text(), timeout=30_000)
    assert page.weights.currentText() == "none"
    good = tmp_path / "ok" / NAME
    good.parent.mkdir()
    good.write_bytes(PAYLOAD)
    page.weights_box.import_file(str(good))
    qtbot.waitUntil(lambda: page.weights.currentText() == "imagenet", timeout=30_000)


def _small_run(wiz, folder, *, epochs_frozen=1):
    """Folder and settings of a tiny run (64 px, random weights), without walking the pages."""
    wiz.folder_page.data.setText(str(folder))
    wiz.folder_page.regex.setText(PATIENT_REGEX)
    s = wiz.settings_page
    s.weights.setCurrentText("none")
    s.input_size.setValue(64)
    s.epochs_frozen.setValue(epochs_frozen)
    s.epochs_finetune.setValue(0)
    s.batch.setValue(8)
    s.patience.setValue(0)


@pytest.mark.slow  # a real tiny training run (5.5 s here)
def test_all_gpus_option_only_with_several_gpus_and_it_starts_train_local(qtbot, folder, tmp_path, monkeypatch):
    """One GPU: no option, one process. Two: "Train on all 2 GPUs"; ticked, the run is launch.train_local with
    nproc=2 (here a generator giving the events of a real engine.train run), whose events fill the page as
    engine.train's do, with the same log lines cxr-train prints."""
    import io

    import cxr_desktop.training.launch as launch
    from cxr_desktop.cli.train import Printer
    from cxr_desktop.training import events as E
    from cxr_desktop.training.engine import train

    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    wiz = TrainingWizard(run_root=tmp_path / "runs", overrides={"bootstrap": 20, "threads": 1,
                                                                "gallery_per_kind": 0})
    qtbot.addWidget(wiz)
    s = wiz.settings_page
    monkeypatch.setattr(launch, "local_gpu_count", lambda: 1)
    s.initializePage()
    assert s.ddp.isHidden() and s.ddp_note.isHidden() and s.processes() == 1
    monkeypatch.setattr(launch, "local_gpu_count", lambda: 2)
    s.initializePage()
    assert not s.ddp.isHidden() and s.ddp.text() == "Train on all 2 GPUs (DistributedDataParallel)"
    assert s.processes() == 1  # offered, not chosen
    s.ddp.setChecked(True)
    assert s.processes() == 2
    s.device.setCurrentText("cpu")  # the GPUs are not used on the CPU
    assert not s.ddp.isEnabled() and s.processes() == 1
    s.device.setCurrentText("auto")
    assert s.ddp.isEnabled() and s.processes() == 2
    monkeypatch.setattr(launch, "local_gpu_count", lambda: 1)  # a ticked box that is no longer offered: ignored
    s.initializePage()
    assert s.ddp.isHidden() and s.processes() == 1
    monkeypatch.setattr(launch, "local_gpu_count", lambda: 2)
    s.initializePage()
    assert s.processes() == 2

    calls, seen = [], []

    def train_local(cfg, *, nproc, cancel=None):
        calls.append((nproc, cancel))
        gen = train(cfg, cancel)
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                return stop.value
            seen.append(ev)
            yield ev

    monkeypatch.setattr(launch, "train_local", train_local)
    _small_run(wiz, folder)
    page = wiz.training_page
    page.initializePage()
    assert page.running
    qtbot.waitUntil(lambda: not page.running, timeout=300_000)
    assert page.error is None, page.error
    assert calls == [(2, page.cancel)]
    assert page.result is not None and page.result.model_path and len(page.loss_chart.series["train"]) == 1
    log = page.log.toPlainText().splitlines()
    assert log[0] == "Training on 2 GPUs (DistributedDataParallel)."
    buf = io.StringIO()
    printer = Printer(buf, quiet=True)
    for ev in seen:
        if isinstance(ev, (E.SplitDone, E.StageStarted, E.EpochDone, E.ModelSaved)):
            printer(ev)
    printed = buf.getvalue().splitlines()
    assert printed and all(line in log for line in printed)  # one formatter for both

    # resuming an interrupted run (the settings page and its GPU choice skipped) uses one process, as its note says
    import cxr_desktop.training.engine as engine
    from cxr_desktop.training.runs import InterruptedRun

    resumed = []

    def one_process(cfg, cancel=None):
        resumed.append(cfg.resume)
        return None
        yield  # a generator that ends at once

    monkeypatch.setattr(engine, "train", one_process)
    wiz.folder_page.runs = [InterruptedRun(tmp_path, page.cfg, stage=1, epoch=1)]
    wiz.folder_page.resume.setChecked(True)
    assert s.processes() == 2 and "one process" in wiz.folder_page.resume_note.text()
    page.initializePage()
    qtbot.waitUntil(lambda: not page.running, timeout=30_000)
    assert resumed == [True] and len(calls) == 1  # engine.train in this process, not train_local


def test_main_window_shutdown_drains_the_wizards_workers(qtbot, main_window, folder, tmp_path, monkeypatch):
    """The wizard's workers run on its WorkerRunner, which MainWindow.shutdown drains (a run is stopped)."""
    window = main_window(show=False)
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "user"))  # the window's is tmp_path/data: the image folder
    window.open_training()
    wiz = window._dialogs[-1]
    assert isinstance(wiz, TrainingWizard)
    _small_run(wiz, folder, epochs_frozen=200)
    wiz.overrides.update(bootstrap=20, threads=1, gallery_per_kind=0)
    page = wiz.training_page
    page.initializePage()
    assert page.error is None, page.error
    qtbot.waitUntil(lambda: page.n_epoch >= 1 or not page.running, timeout=120_000)
    assert page.running, (page.error, page.status.text(), page.log.toPlainText())
    assert wiz.runner.active == 1
    wiz.hide()  # closed or not, the window finds it
    assert window.shutdown(60_000)
    assert wiz.runner.pool.activeThreadCount() == 0 and page.cancel.is_set()  # the run stopped, its thread done
    assert page.n_epoch < 200


def test_evaluation_page_shows_the_reports_texts(qtbot):
    """The evaluation page's metric cells, counts, intervals, prevalence and confusion labels are the texts
    report.render_html's table uses (one source: the Evaluation), with the decision-aid notice."""
    import html

    import numpy as np

    from cxr_desktop import DECISION_AID_NOTICE
    from cxr_desktop.model.card import ModelCard, default_preprocessing
    from cxr_desktop.training.metrics import ThresholdChoice, binary_report
    from cxr_desktop.training.report import _metrics_table
    from cxr_desktop.training.results import Evaluation, SplitPredictions, TrainResult

    labels = np.array([i % 2 for i in range(40)])
    scores = np.clip(labels * 0.3 + np.random.default_rng(0).uniform(0, 0.6, 40), 0, 1)
    preds = SplitPredictions("val", labels, np.stack([1 - scores, scores], 1), [f"{i}.png" for i in range(40)],
                             [""] * 40, groups=[f"p{i // 2}" for i in range(40)])
    val = binary_report(labels, scores, 0.5, n_boot=50, groups=preds.groups)
    test = binary_report(labels, scores, 0.5, n_boot=50, groups=preds.groups, prevalence=0.05)
    ev = Evaluation(["normal", "opacity"], 1, ThresholdChoice(0.5, "fixed", None, 0.5, 0.5), preds, preds, val, test)
    card = ModelCard(name="m", classes=["normal", "opacity"], positive_class="opacity", input_size=64,
                     preprocessing=default_preprocessing(64), decision_threshold=0.5, warnings=["a warning"])
    wiz = TrainingWizard(gallery_per_kind=0)
    qtbot.addWidget(wiz)
    wiz.training_page.result = TrainResult(work_dir="", history=[], card=card, evaluation=ev)
    page = wiz.evaluation_page
    page.initializePage()
    shown, table = page.metrics.text(), _metrics_table(ev)
    for m in (val, test):
        for t in ev.metric_texts(m):
            assert f"{html.escape(t.label)}: {html.escape(t.brief)}" in shown
            assert f"<td>{html.escape(t.value)} " in table
        assert html.escape(ev.counts_text(m)) in shown and html.escape(ev.counts_text(m)) in table
        assert html.escape(ev.prevalence_text(m)) in shown
    assert html.escape(ev.interval_text()) in shown and html.escape(ev.interval_text()) in table
    assert "a warning" in shown
    assert [page.confusion.horizontalHeaderItem(c).text() for c in range(2)] == [
        f"predicted {x}" for x in ev.confusion_labels()] == ["predicted normal", "predicted opacity"]
    assert any(DECISION_AID_NOTICE in w.text() for w in page.findChildren(type(page.metrics)))
    qtbot.waitUntil(lambda: wiz.runner.active == 0, timeout=30_000)  # the gallery job (no model file) ends
