"""The training engine: ``train(config)`` is a generator of typed progress events.

Steps: scan -> patient-level split -> decode every image once -> stage 1 (new
head, backbone frozen; backbone features computed once and cached) -> stage 2
(fine-tune at a lower learning rate) -> evaluation of the best epoch (threshold
chosen on validation, metrics with bootstrap CIs on test) -> input-safety
statistics -> model file (+ HTML report).

Cancelling: set the ``cancel`` event. Between two batches the engine stops
training, clears the event and still evaluates and saves the best epoch so far;
setting it again stops that too (nothing is saved, the checkpoints remain, so
``resume`` continues later). Every completed epoch is checkpointed atomically;
``config.resume`` continues from the last one after a crash or a kill. A run that finishes
removes its checkpoints and caches once the model file is written (the checkpoints alone are
about three times the model's size, the image cache grows with the data); a stopped one keeps
them, and ``config.keep_run_files`` keeps them always.

Under ``torchrun`` the same ``train(config)`` runs in every process of the job (it joins it
itself, :func:`cxr_desktop.distributed.join`): process 1 builds the data plan, the stages train
with DistributedDataParallel on shares of the same global batches, process 1 alone writes the
checkpoints, evaluates and saves; the others return None (:mod:`cxr_desktop.training.ddp`).

The loops :func:`~cxr_desktop.training.loops.train_one_epoch` and
:func:`~cxr_desktop.training.loops.evaluate` follow torchvision's
``references/classification/train.py``; results live in :mod:`cxr_desktop.training.results`, the
final evaluation and the model card are built in :mod:`cxr_desktop.training.trained_card`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from cxr_desktop.model.architecture import FEATURE_CHANNELS, CxrClassifier
from cxr_desktop.model.card import utc_now_iso
from cxr_desktop.model.lineage import UNTRAINED_PREFIX
from cxr_desktop.atomic import write_bytes_atomic
from cxr_desktop.distributed import SINGLE, Session, join
from cxr_desktop.training import checkpoint as ckpt
from cxr_desktop.training import ddp
from cxr_desktop.training.config import RunWriteError, TrainConfig, TrainingError, resolve_finetune
from cxr_desktop.training.data import CachedImageDataset, augment_spec, class_weights
from cxr_desktop.training.data_plan import DataPlan, build_plan
from cxr_desktop.training.events import (
    BatchProgress, Cancelled, CheckpointSaved, EarlyStopped, EpochDone, EpochStarted, EvaluationDone,
    EvaluationStarted, FeatureProgress, Finished, ModelReady, ModelSaved, ReportSaved, Resumed, StageStarted,
    TrainEvent,
)
from cxr_desktop.training.loops import (
    StandardisedHead, TensorPairs, evaluate, make_optimizer, make_scheduler, set_trainable, train_mode,
    train_one_epoch, zero_init_residual,
)
from cxr_desktop.training.metrics import task_auc
from cxr_desktop.training.results import Evaluation, SplitPredictions, TrainResult, save_with_threshold
from cxr_desktop.training.relay import drain, relay
from cxr_desktop.training.run_state import RunState
from cxr_desktop.training.trained_card import RunFacts, evaluate_best_epoch, trained_card

if TYPE_CHECKING:
    from cxr_desktop.inference.device import DeviceInfo

__all__ = ["train", "run_to_end", "save_with_threshold", "Evaluation", "SplitPredictions", "TrainResult",
           "train_one_epoch", "evaluate"]

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------- helpers


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def cached_features_fit(arr: np.ndarray, rows: int, model: CxrClassifier) -> bool:
    """Whether cached stage-1 features can feed ``model``'s head: one finite float row per image,
    as wide as the pooled backbone output the head's first layer takes (linear or MLP head alike)."""
    first = next(m for m in model.head.layers if isinstance(m, nn.Linear))
    return (arr.ndim == 2 and arr.shape == (rows, first.in_features) and arr.dtype == np.float32
            and bool(np.isfinite(arr).all()))


def _score(monitor: str, val_loss: float, val_auc: float) -> float:
    """Higher is better."""
    return val_auc if monitor == "auc" else -val_loss


# --------------------------------------------------------------------------- the run


class _Run:
    """State of one training run; :meth:`events` is the generator behind :func:`train`.

    What is saved in checkpoints lives in :attr:`state` (:class:`RunState`). The attributes
    below are set by the steps of :meth:`_events`, in this order, and read after them.
    """

    # device and the torchrun job (SINGLE without torchrun)
    device_info: DeviceInfo
    device: torch.device
    cuda: bool
    session: Session
    # scan, patient-level split, decoded images (steps 1-3)
    plan: DataPlan
    # model (step 4)
    class_weight: torch.Tensor | None  # of the loss (balance "weights")
    criterion: nn.Module  # the 1-process loss; sharded_criterion: the same over a job's global batch
    sharded_criterion: nn.Module
    init_card: dict[str, Any]  # warnings and provenance of the starting model
    resumed_optimizer: dict[str, Any] | None
    model: CxrClassifier

    def __init__(self, config: TrainConfig, cancel: threading.Event | None):
        self.cfg = config
        self.cancel = cancel
        self.work = config.resolved_work_dir()
        self.history: list[EpochDone] = []
        self.state = RunState()
        self.started = utc_now_iso()
        self.cancel_ack = False  # the first cancel was turned into "finish with the best epoch"
        self.stopped_training = False

    @staticmethod
    def _threads() -> int:
        """Threads for decoding during scan and preparation (decoders release the GIL)."""
        import os

        return max(2, min(8, os.cpu_count() or 2))

    # -- cancel protocol ---------------------------------------------------
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def agreed_cancel(self) -> bool:
        """Cancel as every process of a torchrun job agrees on it (asked at the same points on each)."""
        return self.session.any(self.cancelled(), "agreeing whether to stop")

    # -- the generator -----------------------------------------------------
    def events(self) -> Generator[TrainEvent, None, TrainResult | None]:
        self.session = SINGLE
        try:
            return (yield from self._events())
        except torch.cuda.OutOfMemoryError:
            raise TrainingError(
                f"The GPU ran out of memory at batch size {self.cfg.batch_size}. Lower the batch size or the "
                "input size (or train on the CPU); resume continues from the last completed epoch.") from None
        except MemoryError:
            raise TrainingError("The computer ran out of memory. Lower the batch size or the input size, close "
                                "other programs, and resume; training continues from the last completed epoch.") from None
        finally:
            self.session.close()

    def _events(self) -> Generator[TrainEvent, None, TrainResult | None]:
        cfg = self.cfg
        cfg.validate()
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        self.work.mkdir(parents=True, exist_ok=True)
        out_parent = Path(cfg.out).resolve().parent
        if not out_parent.is_dir():
            raise TrainingError(f"The output folder {out_parent.name!r} does not exist; create it or choose another.")
        self.device = self._device()
        self.cuda = self.device.type == "cuda"
        self.session = join(cuda=self.cuda)  # a torchrun job, or SINGLE
        if self.cuda and self.session.active:
            self.device = torch.device("cuda", self.session.local_rank)

        # 1-3. scan, patient-level split, decode every image once (process 1; the others receive the plan)
        plan = yield from ddp.shared_plan(self.session, lambda: build_plan(
            cfg, self.work, workers=self._threads(), cancelled=self.cancelled))
        if plan is None:
            return None
        self.plan = plan
        ddp.check_batch(cfg.batch_size, len(plan.split.train), self.session)

        # 4. model (new or resumed)
        yield from self._model()

        # 5. stages
        weights = class_weights([plan.labels[i] for i in plan.split.train], len(plan.classes))
        self.class_weight = torch.from_numpy(weights).to(self.device) if cfg.balance == "weights" else None
        self.criterion = nn.CrossEntropyLoss(weight=self.class_weight)
        self.sharded_criterion = (ddp.GlobalMeanLoss(self.class_weight, self.session) if self.session.active
                                  else self.criterion)
        if not self.stopped_training and not self.state.stage1_done:
            yield from self._stage1()
        if not self.stopped_training and not self.state.stage2_done:
            yield from self._stage2()
        if self.session.active:  # training is over: process 1 alone evaluates and saves
            self.session.barrier("finishing training")
            main = self.session.is_main
            self.session.close()
            self.session = SINGLE
            if not main:
                return None
            ddp.revert_for_file(self.model)

        # 6. evaluate the best epoch, save
        best_file = self.state.best_file
        if not best_file:
            if not self.stopped_training:  # e.g. every validation score was NaN
                yield Cancelled(self.state.stage, self.state.epoch, False,
                                "No epoch produced a valid validation score, so there is no model to save.")
            return TrainResult(work_dir=str(self.work), history=self.history, cancelled=True)
        self.model.load_state_dict(ckpt.load_best(self.work / best_file))
        result = yield from self._finish()
        if result is None:
            return None
        if not (self.cfg.keep_run_files or self.cancel_ack):
            _remove_run_files(self.work)  # nothing left to resume
        yield Finished(result)
        return result

    # -- steps -------------------------------------------------------------
    def _device(self) -> torch.device:
        from cxr_desktop.inference.device import select_device

        info = select_device(self.cfg.device)
        self.device_info = info
        return torch.device("cuda" if info.kind == "cuda" else "cpu")

    def _model(self) -> Generator[TrainEvent, None, None]:
        cfg = self.cfg
        from cxr_desktop.errors import ModelFileError
        from cxr_desktop.model.weights import init_model

        existing = ckpt.load_latest(self.work) if cfg.resume else None
        if len(set(self.session.all_gather(existing and existing.number, "comparing the checkpoints found"))) > 1:
            raise TrainingError("The processes of the job found different checkpoints in the run folder. With several "
                                "machines, the run folder (--work-dir) must be on a filesystem all of them share.")
        if cfg.resume and existing is None:
            log.info("no checkpoint to resume from; starting a new run")
        if existing is not None:
            st = RunState.from_dict(existing.state)
            if st.config != cfg.resume_key():
                diff = [k for k in cfg.resume_key() if st.config.get(k) != cfg.resume_key()[k]]
                raise TrainingError(
                    "The checkpoint in the run folder was made with different settings "
                    f"({', '.join(diff) or 'unknown'}). Resume with the same settings, or start a new run "
                    "without --resume.")
            if st.data != self.plan.fingerprint:
                raise TrainingError("The data folder changed since the interrupted run started (files added, "
                                    "removed or edited), so it cannot be resumed. Start a new run without --resume.")
        if existing is None and self.session.is_main:
            ckpt.clear(self.work)
        problem = None
        try:
            model, card = init_model(classes=self.plan.classes, positive_class=self.plan.classes[self.plan.pos],
                                     weights="none" if existing is not None else cfg.weights,
                                     input_size=cfg.input_size, head=cfg.head, name=cfg.name or "CXR Review model",
                                     seed=cfg.seed, expected_sha256=cfg.weights_sha256 if existing is None else None)
        except ModelFileError as exc:  # weights file missing, damaged, wrong checksum or not a ResNet50
            problem = f"The initial weights cannot be used: {exc}"
        # every process stops when one cannot read the file (e.g. not on its machine), none waits for it
        problems = [p for p in self.session.all_gather(problem, "checking the initial weights") if p]
        if problems:
            raise TrainingError(problems[0])
        if cfg.output_stride != 32:  # same weights, dilated last stage (a finer heatmap)
            from cxr_desktop.model.architecture import with_output_stride

            model = with_output_stride(model, cfg.output_stride)
        if existing is not None:
            model.load_state_dict(existing.model)
            self.state = st
            self.history = [EpochDone(**h) for h in st.history]
            self.init_card = st.initial_card
        else:
            self.init_card = {"warnings": card.warnings, "provenance": card.provenance}
            self.state = RunState(config=cfg.resume_key(), data=self.plan.fingerprint, initial_card=self.init_card,
                                  started=self.started, stage1_done=cfg.epochs_frozen == 0)
        self.started = self.state.started or self.started
        self.resumed_optimizer = existing.optimizer if existing is not None else None
        self.model = model.to(self.device)
        if self.cuda and cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        yield ModelReady(
            device=self.device_info.label, initial_weights=self.init_card["provenance"].get("initial_weights", {}),
            warnings=[w for w in self.init_card["warnings"] if not w.startswith(UNTRAINED_PREFIX)],
            trainable_parameters=sum(p.numel() for p in self.model.parameters()))
        if existing is not None:
            best = self.state.best or {}
            yield Resumed(self.state.stage, self.state.epoch, best.get("score"))
        elif (self.init_card["provenance"].get("initial_weights") or {}).get("source") == "random":
            zero_init_residual(self.model)
            ok = yield from self._calibrate_batchnorm()
            if not ok:
                self.stopped_training = True
        ddp.same_weights(self.model, self.session)  # e.g. a random start drawn differently on another machine

    def _calibrate_batchnorm(self, max_images: int = 256) -> Generator[TrainEvent, None, bool]:
        """Random initial weights: estimate BatchNorm statistics from training images (no learning).

        A fresh network's BatchNorm layers assume mean 0 / variance 1 everywhere, so in
        evaluation mode (frozen stage 1, validation) its activations are wildly off
        scale. One forward pass in training mode over some training images sets the
        running statistics to the data's, like a first epoch would, without changing
        any weight.
        """
        idx = list(self.plan.split.train)[:max_images]
        loader = self._eval_loader(idx)
        bns = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        self.model.train()
        done = 0
        try:
            with torch.no_grad():
                for x, _ in loader:
                    if self.agreed_cancel():  # every process calibrates on the same images
                        yield from self._handle_cancel(0, 0)
                        return False
                    self.model.features(x.to(self.device))
                    done += len(x)
                    yield FeatureProgress("calibration", done, len(idx))
        finally:
            for m, mom in zip(bns, saved):
                m.momentum = mom
            self.model.eval()
        return True

    # -- stage bookkeeping ---------------------------------------------------
    def _epoch_rng(self, stage: int, epoch: int) -> torch.Generator:
        seed = int(self.cfg.seed) * 10007 + stage * 1009 + epoch
        torch.manual_seed(seed)
        return torch.Generator().manual_seed(seed)

    def _record_epoch(self, stage: int, epoch: int, train_loss: float, val_loss: float, val_probs: np.ndarray,
                      val_labels: np.ndarray, seconds: float, lr: float,
                      optimizer: torch.optim.Optimizer, scheduler: Any) -> Generator[TrainEvent, None, bool]:
        """Best tracking, checkpoint, events; returns True when the stage should stop early."""
        cfg, st = self.cfg, self.state
        auc = task_auc(val_labels, val_probs, self.plan.pos) if len(val_labels) else float("nan")
        acc = float(np.mean(val_probs.argmax(1) == val_labels)) if len(val_labels) else float("nan")
        score = self.session.broadcast(_score(self.plan.monitor, val_loss, auc), "agreeing on the validation score")
        best = st.best
        improved = math.isfinite(score) and (best is None or score > best["score"] + 1e-4)
        st.number += 1
        failed: RunWriteError | None = None  # process 1 writes every file; the others learn below whether it could
        if improved:
            if self.session.is_main:
                try:
                    ckpt.save_best(self.work, st.number, self.model)
                except OSError as exc:
                    failed = RunWriteError.of("the best epoch's weights", self.work, exc)
            st.best = {"score": float(score), "stage": stage, "epoch": epoch, "val_auc": auc,
                       "val_loss": val_loss, "monitor": self.plan.monitor}
            st.best_file = ckpt.best_name(st.number)
            st.bad_epochs = 0
        else:
            st.bad_epochs += 1
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(score if math.isfinite(score) else 0.0)
            else:
                scheduler.step()
        ev = EpochDone(stage, epoch, float(train_loss), float(val_loss), float(auc), float(seconds), float(lr),
                       acc, improved)
        self.history.append(ev)
        stage_epochs = cfg.epochs_frozen if stage == 1 else cfg.epochs_finetune
        stop = cfg.patience > 0 and st.bad_epochs >= cfg.patience and epoch < stage_epochs
        st.stage, st.epoch = stage, epoch
        st.history = [h.__dict__ for h in self.history]
        st.scheduler = scheduler.state_dict() if scheduler is not None else None
        if epoch >= stage_epochs or stop:
            if stage == 1:
                st.stage1_done = True
            else:
                st.stage2_done = True
        yield ev
        if self.session.is_main and failed is None:
            try:
                path = ckpt.save_checkpoint(self.work, st.number, self.model, optimizer, st.to_dict())
            except OSError as exc:
                failed = RunWriteError.of("the checkpoint", self.work, exc)
            else:
                yield CheckpointSaved(str(path), stage, epoch)
        why = self.session.broadcast(str(failed) if failed else None, "saving the checkpoint")  # also the barrier
        if why:  # every process stops with process 1's reason, none waits for it in the next collective
            raise RunWriteError(why)
        if stop:
            yield EarlyStopped(stage, epoch, f"no improvement of validation {self.plan.monitor} for {cfg.patience} epochs")
        return stop

    def _handle_cancel(self, stage: int, epoch: int) -> Generator[TrainEvent, None, None]:
        kept = bool(self.state.best_file)
        if self.cancel is not None:
            self.cancel.clear()  # acknowledged: a second cancel stops the evaluation too
        self.cancel_ack = True
        self.stopped_training = True
        msg = ("Training stopped; the best epoch so far is evaluated and saved." if kept
               else "Training stopped before the first epoch completed; there is no model to save.")
        yield Cancelled(stage, epoch, kept, msg)

    def _loader(self, indices: Sequence[int], *, train: bool, augment: str, epoch: int, stage: int,
                batch_size: int, generator: torch.Generator | None = None) -> DataLoader:
        cfg = self.cfg
        ds = CachedImageDataset(self.plan.cache.path, indices, [self.plan.labels[i] for i in indices],
                                augment=augment_spec(augment, hflip=cfg.hflip) if train else None,
                                seed=cfg.seed * 31 + stage)
        ds.set_epoch(epoch)
        sampler = None
        if train:
            if cfg.balance == "sampler":
                labels = np.asarray([self.plan.labels[i] for i in indices])
                w = class_weights(labels, len(self.plan.classes))[labels]
                sampler = WeightedRandomSampler(torch.from_numpy(w).double(), num_samples=len(indices),
                                                replacement=True, generator=generator)
            else:
                sampler = RandomSampler(ds, generator=generator)
        workers = cfg.resolved_workers(self.cuda)
        if train and self.session.active:  # this process's share of the 1-process global batches
            batches = ddp.ShardedBatchSampler(sampler, batch_size, len(indices) > batch_size, self.session)
            return DataLoader(ds, batch_sampler=batches, num_workers=workers, pin_memory=self.cuda)
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                          pin_memory=self.cuda, drop_last=train and len(indices) > batch_size,
                          persistent_workers=False)

    # -- stages -----------------------------------------------------------------
    def _stage1(self) -> Generator[TrainEvent, None, None]:
        """The new head with the backbone frozen. With cached features (the default) every process of a
        job trains the same small head on all the gathered features (no communication: a linear layer
        on a few thousand rows); with ``augment_frozen`` the images are sharded as in stage 2."""
        cfg, st = self.cfg, self.state
        stage, epochs = 1, cfg.epochs_frozen
        cached = not cfg.augment_frozen
        params = set_trainable(self.model, "head")
        resuming = st.stage == 1 and st.epoch > 0 and self.resumed_optimizer is not None
        yield StageStarted(stage, epochs, cfg.lr_head, "head", cached)
        feats: dict[str, np.ndarray] = {}
        std_head: StandardisedHead | None = None
        if cached:
            for name in ("train", "val"):
                f = yield from self._pooled_features(name)
                if f is None:
                    yield from self._handle_cancel(stage, st.epoch if resuming else 0)
                    return
                feats[name] = f
            torch.manual_seed(cfg.seed)  # the new head's initial weights
            std_head = StandardisedHead(self.model.head, feats["train"], fresh=not resuming).to(self.device)
            params = list(std_head.parameters())
        opt = make_optimizer(cfg, params, cfg.lr_head)
        sched = make_scheduler(cfg, opt, epochs, cfg.lr_head)
        start = self._resume_optimizer(opt, sched, resuming)
        plan = self.plan
        val_labels = np.asarray([plan.labels[i] for i in plan.split.val], dtype=np.int64)
        train_labels = np.asarray([plan.labels[i] for i in plan.split.train], dtype=np.int64)

        def batches(epoch: int, gen: torch.Generator) -> Any:
            self.model.eval()
            self.model.head.train()
            if std_head is None:
                return self._loader(plan.split.train, train=True, augment=cfg.augment, epoch=epoch, stage=stage,
                                    batch_size=cfg.batch_size, generator=gen)
            ds = TensorPairs(feats["train"], train_labels)
            if cfg.balance == "sampler":
                w = class_weights(train_labels, len(plan.classes))[train_labels]
                sampler: Any = WeightedRandomSampler(torch.from_numpy(w).double(), len(ds), True, generator=gen)
            else:
                sampler = RandomSampler(ds, generator=gen)
            std_head.train()
            return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=len(ds) > cfg.batch_size)

        def validate(epoch: int) -> Any:
            if std_head is None:
                return (yield from self._evaluate_split("val", stage, epoch))
            std_head.fold_into(self.model.head)
            vl = DataLoader(TensorPairs(feats["val"], val_labels), batch_size=256)
            res = yield from self._evaluate(vl, stage, epoch, pooled_input=True)
            # a cancel seen by one process only: all stop here, or the others would wait in _record_epoch
            return None if self.session.any(res is None, "agreeing whether to stop") else res

        done = yield from self._epochs(stage, start, epochs, opt, sched, batches, validate,
                                       trainer=None if cached else self._distributed(), forward=std_head)
        if done:
            st.stage1_done = True

    def _stage2(self) -> Generator[TrainEvent, None, None]:
        cfg, st = self.cfg, self.state
        stage, epochs = 2, cfg.epochs_finetune
        if epochs <= 0:
            st.stage2_done = True
            return
        resuming = st.stage == 2 and st.epoch > 0 and self.resumed_optimizer is not None
        if not resuming and st.best_file:  # fine-tune from the best stage-1 head
            self.model.load_state_dict(ckpt.load_best(self.work / st.best_file))
        scope = resolve_finetune(cfg.finetune, cuda=self.cuda)
        params = set_trainable(self.model, scope)
        opt = make_optimizer(cfg, params, cfg.lr_finetune)
        sched = make_scheduler(cfg, opt, epochs, cfg.lr_finetune)
        start = self._resume_optimizer(opt, sched, resuming)
        if not resuming:
            st.stage, st.epoch = 2, 0
        scaler = torch.amp.GradScaler("cuda") if self.cuda and cfg.amp else None
        yield StageStarted(stage, epochs, cfg.lr_finetune, "all" if scope == "all" else f"{scope}+", False)

        def batches(epoch: int, gen: torch.Generator) -> Any:
            train_mode(self.model, scope)
            return self._loader(self.plan.split.train, train=True, augment=cfg.augment, epoch=epoch, stage=stage,
                                batch_size=cfg.batch_size, generator=gen)

        done = yield from self._epochs(stage, start, epochs, opt, sched, batches,
                                       lambda epoch: self._evaluate_split("val", stage, epoch),
                                       trainer=self._distributed(), scaler=scaler)
        if done:
            st.stage2_done = True

    def _resume_optimizer(self, opt: torch.optim.Optimizer, sched: Any, resuming: bool) -> int:
        """The checkpoint's optimizer and scheduler when the stage resumes; returns the epoch to continue after."""
        st = self.state
        if not resuming:
            st.bad_epochs = 0
            return 0
        opt.load_state_dict(self.resumed_optimizer)  # type: ignore[arg-type]
        if sched is not None and st.scheduler:
            sched.load_state_dict(st.scheduler)
        return st.epoch

    def _distributed(self) -> nn.Module:
        """The module that trains on this process's shard: the model in DDP in a torchrun job
        (:func:`ddp.convert_for_job` first), else the model itself."""
        if not self.session.active:
            return self.model
        self.model = ddp.convert_for_job(self.model, self.session, cuda=self.cuda, sync_batchnorm=self.cfg.sync_batchnorm)
        return ddp.wrap(self.model, self.session, self.device)

    def _epochs(self, stage: int, start: int, epochs: int, opt: torch.optim.Optimizer, sched: Any,
                batches: Callable[[int, torch.Generator], Any], validate: Callable[[int], Any], *,
                trainer: nn.Module | None, forward: nn.Module | None = None,
                scaler: torch.amp.GradScaler | None = None) -> Generator[TrainEvent, None, bool]:
        """The epoch loop of both stages: train, validate, record (checkpoint). False when cancelled.

        ``trainer``: the module that trains on this process's shard of each global batch (sharded
        loss); None: ``forward`` trains on the whole batch, the same on every process.
        """
        cfg = self.cfg
        sharded = trainer is not None and self.session.active
        for epoch in range(start + 1, epochs + 1):
            gen = self._epoch_rng(stage, epoch)
            lr = opt.param_groups[0]["lr"]
            yield EpochStarted(stage, epoch, epochs, lr)
            t0 = time.perf_counter()
            loader = batches(epoch, gen)
            n_batches = len(loader)
            warm = None
            if stage == 2 and epoch == 1 and cfg.warmup:  # linear warm-up over the first epoch: no early blow-up
                warm = lambda i, n=n_batches: (i + 1) / n  # noqa: E731
            run = train_one_epoch(self.model if trainer is None else trainer, self.sharded_criterion if sharded else self.criterion, opt,
                                  loader, self.device, scaler=scaler, cancelled=self.agreed_cancel, forward=forward,
                                  lr_scale=warm, channels_last=self.cuda and cfg.channels_last)
            with ddp.lost_peer(self.session, f"training stage {stage} epoch {epoch}"):
                train_loss, was_cancelled = yield from relay(
                    run, lambda p: BatchProgress(stage, epoch, "train", p[0], n_batches, p[1], p[2]))
            if sharded and not was_cancelled:
                ddp.sync_buffers(self.model, self.session)
            res = None if was_cancelled else (yield from validate(epoch))
            if res is None:
                yield from self._handle_cancel(stage, epoch - 1)
                return False
            if sharded:  # each process's loss is its share of the global batch's: their mean is the job's
                # (the 1-process figure when all shares have the same size, close to it otherwise)
                train_loss = float(np.mean(self.session.all_gather(train_loss, "gathering the training loss")))
            val_loss, probs, labels, _ = res
            stop = yield from self._record_epoch(stage, epoch, train_loss, val_loss, probs, labels,
                                                 time.perf_counter() - t0, lr, opt, sched)
            if stop:
                break
        return True

    def _eval_loader(self, indices: Sequence[int]) -> DataLoader:
        return self._loader(indices, train=False, augment="none", epoch=0, stage=0,
                            batch_size=max(2, self.cfg.batch_size))

    def _evaluate(self, loader: Any, stage: int, epoch: int, *, pooled_input: bool = False
                  ) -> Generator[TrainEvent, None, tuple[float, np.ndarray, np.ndarray, np.ndarray | None] | None]:
        n = len(loader)
        t0 = time.perf_counter()
        run = evaluate(self.model, self.criterion, loader, self.device, pooled_input=pooled_input,
                       channels_last=self.cuda and self.cfg.channels_last, amp=self.cuda and self.cfg.amp,
                       cancelled=self.cancelled)
        bs = getattr(loader, "batch_size", 1) or 1
        loss, probs, labels, pooled, was_cancelled = yield from relay(run, None if pooled_input else (
            lambda b: BatchProgress(stage, epoch, "val", b, n, None, b * bs / max(time.perf_counter() - t0, 1e-9))))
        if was_cancelled:
            return None
        return loss, probs, labels, pooled

    def _evaluate_split(self, split: str, stage: int, epoch: int
                        ) -> Generator[TrainEvent, None, tuple[float, np.ndarray, np.ndarray, None] | None]:
        """Loss, probabilities and labels of a split; a job's processes each score a shard and share them,
        so that every process reaches the same score and the same best-epoch and early-stop decisions."""
        idx = self.plan.split.indices(split)
        if not self.session.active:
            res = yield from self._evaluate(self._eval_loader(idx), stage, epoch)
            return None if res is None else (res[0], res[1], res[2], None)
        res = yield from self._evaluate(self._eval_loader(self.session.shard(idx)), stage, epoch)
        if self.session.any(res is None, "agreeing whether to stop"):
            return None
        assert res is not None
        probs, labels = ddp.gather_rows(self.session, [res[1], res[2]], f"gathering the {split} results")
        weight = None if self.class_weight is None else self.class_weight.cpu().numpy()
        return ddp.one_process_loss(probs, labels, weight, max(2, self.cfg.batch_size)), probs, labels, None

    def _pooled_features(self, split: str) -> Generator[TrainEvent, None, np.ndarray | None]:
        """Stage-1 backbone features of a split, computed once (in shards, by a job) and kept in the run folder."""
        idx = self.plan.split.indices(split)
        key = hashlib.sha256(f"{self.plan.fingerprint}|{ddp.state_digest(self.model.body)}|{self.cfg.input_size}|"
                             f"{split}".encode()).hexdigest()[:16]
        path = self.work / f"features-{split}-{key}.npy"
        arr = None
        if path.exists():
            with contextlib.suppress(ValueError, OSError):
                arr = np.load(path)
                arr = arr if cached_features_fit(arr, len(idx), self.model) else None
        if not self.session.any(arr is None, "checking the feature cache"):
            yield FeatureProgress(split, len(idx), len(idx))
            return arr
        if self.session.is_main:
            for stale in self.work.glob(f"features-{split}-*.npy"):
                with contextlib.suppress(OSError):
                    stale.unlink()
        loader = self._eval_loader(self.session.shard(idx))
        run = evaluate(self.model, self.criterion, loader, self.device, channels_last=self.cuda and self.cfg.channels_last,
                       amp=self.cuda and self.cfg.amp, cancelled=self.cancelled)
        bs = (loader.batch_size or 1) * self.session.world_size
        _, _, _, pooled, was_cancelled = yield from relay(
            run, lambda b: FeatureProgress(split, min(b * bs, len(idx)), len(idx)))
        if pooled is None and not was_cancelled and not len(loader.dataset):  # a job's process with no share
            pooled = np.zeros((0, FEATURE_CHANNELS), np.float32)
        if self.session.any(was_cancelled or pooled is None, "agreeing whether to stop"):
            return None
        assert pooled is not None
        if self.session.active:
            (pooled,) = ddp.gather_rows(self.session, [pooled], f"gathering the {split} features")
        if self.session.is_main:
            try:
                write_bytes_atomic(path, _npy_bytes(pooled.astype(np.float32)))
            except OSError as exc:  # only a speed-up for a resume: training goes on with the features in memory
                log.warning("the stage-1 feature cache could not be written (%s); training goes on without it",
                            exc.strerror or type(exc).__name__)
        return pooled

    # -- evaluation and output ------------------------------------------------
    def _predict(self, split: str) -> Generator[TrainEvent, None, tuple[SplitPredictions, np.ndarray] | None]:
        idx = self.plan.split.indices(split)
        yield EvaluationStarted(split, len(idx))
        res = yield from self._evaluate(self._eval_loader(idx), 0, 0)
        if res is None:
            return None
        _, probs, labels, pooled = res
        preds = SplitPredictions(split, labels, probs, [self.plan.items[i].rel for i in idx],
                                 [self.plan.items[i].path for i in idx], groups=[self.plan.items[i].group for i in idx],
                                 kinds=[self.plan.items[i].input_kind for i in idx])
        return preds, pooled if pooled is not None else np.zeros((0, 2048), np.float32)

    def _finish(self) -> Generator[TrainEvent, None, TrainResult | None]:
        cfg = self.cfg
        self.model.eval()
        out: dict[str, tuple[SplitPredictions, np.ndarray]] = {}
        for split in ("val", "test", "train"):
            if split == "test" and not self.plan.split.test:
                continue
            r = yield from self._predict(split)
            if r is None:
                yield Cancelled(self.state.stage, self.state.epoch, False,
                                "Stopped during the final evaluation; nothing was saved. Resume to finish.")
                return None
            out[split] = r
        val, test = out["val"][0], out.get("test", (None, None))[0]
        evaluation = evaluate_best_epoch(cfg, self.plan, val, test)
        choice, test_metrics = evaluation.threshold, evaluation.test_metrics
        yield EvaluationDone(evaluation)

        from cxr_desktop.training.ood import fit_ood

        train_preds, train_pooled = out["train"]
        ood_tensors, ood_info = fit_ood(train_pooled, train_preds.labels, out["val"][1],
                                        n_classes=len(self.plan.classes), k=cfg.ood_k, percentile=cfg.ood_percentile,
                                        val_groups=val.groups or None, train_groups=train_preds.groups or None)
        if test is not None and test_metrics is not None:
            extras = yield from self._test_extras(test, choice.threshold, out["test"][1], ood_tensors, ood_info)
            if extras is None:
                yield Cancelled(self.state.stage, self.state.epoch, False,
                                "Stopped during the final evaluation; nothing was saved. Resume to finish.")
                return None
            test_metrics.update(extras)
        card = trained_card(cfg, self.plan, evaluation, ood_info, RunFacts(
            started=self.started, device=self.device_info.label, cuda=self.cuda, history=self.history,
            best=self.state.best, initial_card=self.init_card, stopped_by_user=self.cancel_ack))
        from cxr_desktop.model.modelfile import save_model

        self.model.to("cpu").to(memory_format=torch.contiguous_format)
        try:
            sha = save_model(cfg.out, self.model, card, half=cfg.half, extra_tensors=ood_tensors)
        except OSError as exc:  # the checkpoints stay: a resume evaluates and saves again
            raise RunWriteError.of("the model file", Path(cfg.out).resolve().parent, exc) from None
        yield ModelSaved(str(cfg.out), sha, Path(cfg.out).stat().st_size)
        report_path = None
        result = TrainResult(model_path=str(cfg.out), sha256=sha, card=card, evaluation=evaluation,
                             history=self.history, best=self.state.best, cancelled=self.cancel_ack,
                             work_dir=str(self.work), data=card.provenance.get("data", {}))
        if cfg.report:
            from cxr_desktop.training.report import write_report

            try:
                write_report(cfg.report, result)
                report_path = str(cfg.report)
                result.report_path = report_path
                yield ReportSaved(report_path)
            except Exception as exc:  # a report failure must not lose the trained model
                log.warning("training report failed: %s", exc.__class__.__name__)
                yield ReportSaved(str(cfg.report), error=f"{exc.__class__.__name__}: {exc}")
        return result

    def _test_extras(self, test: SplitPredictions, threshold: float, pooled: np.ndarray, ood_tensors: Any,
                     ood_info: dict[str, Any]) -> Generator[TrainEvent, None, dict[str, Any] | None]:
        """Calibration, metrics per input type, caution rate and the starting model on the test split
        (:mod:`cxr_desktop.training.validation`); None when cancelled."""
        from cxr_desktop.training.ood import ood_distance
        from cxr_desktop.training.validation import compare_models, split_extras

        cfg = self.cfg
        idx = self.plan.split.test
        y = (test.labels == self.plan.pos).astype(np.int64)
        distances = ood_distance(pooled, ood_tensors) if len(pooled) == len(idx) else None
        extras = split_extras(y, test.probs[:, self.plan.pos], threshold, kinds=test.kinds,
                              groups=test.groups, distances=distances, limit=ood_info.get("threshold"),
                              n_boot=cfg.bootstrap, seed=cfg.seed)
        start = yield from self._starting_model_scores(idx)
        if start is False:
            return None
        if isinstance(start, dict):
            extras["starting_model"] = start
            if "scores" in start:
                scores = start.pop("scores")
                start.update(compare_models(y, test.probs[:, self.plan.pos], scores, threshold, start["threshold"],
                                            groups=test.groups, n_boot=cfg.bootstrap, seed=cfg.seed))
        return extras

    def _starting_model_scores(self, idx: Sequence[int]) -> Generator[TrainEvent, None, dict[str, Any] | bool | None]:
        """The model file training started from, scored on the same test images (None: not started from one)."""
        from cxr_desktop.errors import ModelFileError
        from cxr_desktop.model.modelfile import load_model

        w = str(self.cfg.weights)
        if w in ("imagenet", "none") or not Path(w).is_file():
            return None
        try:
            loaded = load_model(w)
        except (ModelFileError, ValueError, OSError):
            return None  # plain backbone weights (e.g. torchvision's): no classifier to compare
        card = loaded.card
        pos_name = self.plan.classes[self.plan.pos]
        info: dict[str, Any] = {"name": card.display_name, "sha256": loaded.sha256,
                                "classes": list(card.classes), "input_size": int(card.input_size)}
        if pos_name not in card.classes:
            info["note"] = (f"the starting model has no class {pos_name!r} (its classes: {', '.join(card.classes)}), "
                            "so it cannot be compared")
            return info
        yield EvaluationStarted("test (starting model)", len(idx))
        model = loaded.model.to(self.device).eval()
        run = evaluate(model, lambda logits, y: torch.zeros(()), self._eval_loader(idx), self.device, amp=self.cuda and self.cfg.amp,
                       cancelled=self.cancelled)
        _, probs, _, _, was_cancelled = yield from relay(run)
        if was_cancelled:
            return False
        info["threshold"] = float(card.decision_threshold)
        info["scores"] = probs[:, list(card.classes).index(pos_name)]
        if int(card.input_size) != int(self.cfg.input_size):
            info["note"] = (f"scored at this run's input size ({self.cfg.input_size} px); the starting model was made "
                            f"for {card.input_size} px")
        return info


def _remove_run_files(work: Path) -> None:
    """Free what only a resume or a rerun in the same folder would use: checkpoints (optimizer state
    included), the stage-1 feature caches and the decoded-image cache; then the folders if empty."""
    ckpt.clear(work)
    ours = [*work.glob("features-*.npy"), *(work / "cache").glob("images-*.npy"), *(work / "cache").glob("images-*.json")]
    for f in ours:  # only the files the run made: a --work-dir of the user's may hold others
        with contextlib.suppress(OSError):
            f.unlink()
    for folder in (work / "cache", work):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when nothing else is in it


def train(config: TrainConfig, cancel: threading.Event | None = None) -> Generator[TrainEvent, None, TrainResult | None]:
    """Run a training; yields typed events (:mod:`cxr_desktop.training.events`), returns the result.

    ``cancel``: set it to stop between two batches (see the module docstring).
    Raises :class:`TrainingError` when the data or settings cannot work.
    """
    return (yield from _Run(config, cancel).events())


def run_to_end(config: TrainConfig, cancel: threading.Event | None = None,
               on_event: Callable[[TrainEvent], None] | None = None) -> TrainResult | None:
    """Drive :func:`train` to the end (scripts, tests, benchmarks)."""
    return drain(train(config, cancel), on_event)
