"""The training engine's DistributedDataParallel pieces (a ``torchrun`` job; :mod:`cxr_desktop.distributed`).

Design: a job of W processes trains on exactly the global batches a 1-process run with the
same ``--batch-size`` would use. :class:`ShardedBatchSampler` draws the 1-process order (the
same seeded sampler on every process) and gives process r the items ``batch[r::W]`` of each
global batch; :class:`GlobalMeanLoss` divides by the global batch's (class-weighted) size, so
DDP's gradient average equals the 1-process gradient; :class:`ShardedDropout` draws the
1-process dropout masks; :class:`GlooSyncBatchNorm` (CPU) or ``torch.nn.SyncBatchNorm`` (CUDA),
with ``--sync-batchnorm``, normalises with the global batch's statistics. With all of them a
W-process run matches a 1-process run up to float rounding; without ``--sync-batchnorm`` each
process's BatchNorm layers in training mode see only its share of the batch (usual DDP).

Process 1 (rank 0) scans, splits and decodes the images once (:func:`shared_plan`; the others
wait, kept alive by its heartbeat) and they read the same image cache, so the run folder must be
on a filesystem every machine of the job sees (with ``--nnodes`` > 1). Only rank 0 writes files.
A peer that dies turns into :class:`~cxr_desktop.distributed.DistributedError` (:func:`lost_peer`),
never a silent hang.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable, Generator, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, Sampler

from cxr_desktop.distributed import DistributedError, Session, lost_contact_message
from cxr_desktop.training.config import TrainingError
from cxr_desktop.training.events import Cancelled, TrainEvent
from cxr_desktop.training.loops import DIVERGED
from cxr_desktop.training.relay import relay

__all__ = ["ShardedBatchSampler", "GlobalMeanLoss", "GlooSyncBatchNorm", "ShardedDropout", "convert_for_job",
           "revert_for_file", "check_batch", "wrap", "lost_peer", "shared_plan", "gather_rows",
           "one_process_loss", "stopped_by_launcher"]


class ShardedBatchSampler(BatchSampler):
    """This process's share of the global batches: ``batch[rank::world]`` of each batch of ``sampler``.

    ``sampler`` must give the same order on every process (seeded with the same generator), so
    together the processes see global batch k of a 1-process run as their batch k; every process
    gets the same number of batches (DDP needs that) however the batch divides.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool, session: Session):
        super().__init__(sampler, batch_size, drop_last)
        self.session = session

    def __iter__(self) -> Iterator[list[int]]:
        for batch in super().__iter__():
            yield batch[self.session.rank::self.session.world_size]


class GlobalMeanLoss(nn.Module):
    """Cross-entropy summed over this process's part of the batch, divided by the global batch's weight.

    ``nn.CrossEntropyLoss(weight)`` on one process is ``sum(w_i l_i) / sum(w_i)`` over the batch.
    Each process returns ``W * sum_local(w_i l_i) / sum_global(w_i)``; DDP averages gradients over
    the W processes, which gives exactly the 1-process gradient, for any split of the batch. The
    same all-reduce carries the summed loss, so a NaN in one process's share stops every process
    at the same step with the reason (not one with the reason and the others with a lost peer).
    """

    def __init__(self, weight: torch.Tensor | None, session: Session):
        super().__init__()
        self.weight = weight
        self.session = session

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        per = nn.functional.cross_entropy(logits.float(), y, reduction="none")
        w = self.weight[y] if self.weight is not None else torch.ones_like(per)
        local = (per * w).sum()
        sums = torch.stack([w.sum(), local]).detach()  # the global batch's weight and loss
        dist.all_reduce(sums)
        if not bool(torch.isfinite(sums[1])):
            raise TrainingError(DIVERGED)
        return local * self.session.world_size / sums[0]


class _SumOverJob(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the sum of the processes' gradients (what SyncBatchNorm needs)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        import torch.distributed as dist

        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        import torch.distributed as dist

        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the global batch (all processes), on the CPU.

    ``torch.nn.SyncBatchNorm`` (used on CUDA) refuses CPU tensors ("expected input tensor to be on
    GPU", torch 2.14). Here the per-channel sums and then the squared deviations go through a
    differentiable all-reduce (:class:`_SumOverJob`), so forward and backward are those of one
    BatchNorm over the concatenated batch; the running statistics move as BatchNorm's do (unbiased
    variance). Parameters, buffers and state-dict keys are BatchNorm2d's; in evaluation mode it is
    BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        all_reduce = _SumOverJob.apply
        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), count]))
        n = sums[c].detach()
        mean = sums[:c] / n
        centred = x - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3))) / n  # biased: what normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                self.running_var.mul_(1 - f).add_(var.detach() * (n / max(float(n) - 1, 1.0)), alpha=f)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


class ShardedDropout(nn.Dropout):
    """Dropout whose mask for each row is the one a 1-process run draws for that row of the global batch.

    Every process draws the global batch's whole mask from the same seeded generator and keeps
    its rows ``rank::world``, the positions :class:`ShardedBatchSampler` gave it. On the CPU this
    is exactly the mask ``F.dropout`` draws on one process (``bernoulli_(1 - p) / (1 - p)`` on the
    input's shape); on CUDA torch's fused dropout kernel draws other numbers, so the masks are
    independent per row as dropout needs but not the 1-process ones.
    """

    session: Session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return super().forward(x)
        import torch.distributed as dist

        n = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
        dist.all_reduce(n)
        noise = x.new_empty((int(n.item()),) + tuple(x.shape[1:])).bernoulli_(1 - self.p).div_(1 - self.p)
        return x * noise[self.session.rank::self.session.world_size]


def convert_for_job(model: nn.Module, session: Session, *, cuda: bool, sync_batchnorm: bool) -> nn.Module:
    """Before the DDP wrap: dropout that matches a 1-process run and, with ``sync_batchnorm``, BatchNorm
    with the global batch's statistics (parameters, buffers and state-dict keys do not change)."""
    for m in model.modules():
        if type(m) is nn.Dropout:
            m.__class__ = ShardedDropout  # only forward differs
            m.session = session
        elif sync_batchnorm and not cuda and type(m) is nn.BatchNorm2d:
            m.__class__ = GlooSyncBatchNorm
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if sync_batchnorm and cuda else model


def revert_for_file(model: nn.Module) -> nn.Module:
    """Plain Dropout and BatchNorm2d again, so the saved model is an ordinary ResNet50 classifier."""
    for parent in list(model.modules()):
        for name, m in list(parent.named_children()):
            if type(m) is ShardedDropout:
                m.__class__ = nn.Dropout
                del m.session
            elif type(m) is GlooSyncBatchNorm:
                m.__class__ = nn.BatchNorm2d
            elif isinstance(m, nn.SyncBatchNorm):
                bn = nn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
                bn.load_state_dict(m.state_dict())
                setattr(parent, name, bn.to(m.running_mean.device).train(m.training))
    return model


def check_batch(batch_size: int, n_train: int, session: Session) -> None:
    """``--batch-size`` is the global batch: every process needs at least one image of every batch."""
    if not session.active:
        return
    w = session.world_size
    if batch_size < w:
        raise TrainingError(f"The batch size ({batch_size}) is the batch of the whole job; it must be at least the "
                            f"number of processes ({w}). Raise --batch-size or start fewer processes.")
    if n_train < w:
        raise TrainingError(f"The training split has {n_train} images, fewer than the {w} processes of the job. "
                            "Add images or start fewer processes.")


def wrap(model: nn.Module, session: Session, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel (its parameters and buffers taken from rank 0)."""
    from torch.nn.parallel import DistributedDataParallel

    with lost_peer(session, "starting distributed training"):
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _is_lost_peer(exc: BaseException) -> bool:
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return any(k in text for k in ("gloo", "Gloo", "NCCL", "Connection reset", "Connection closed", "timed out",
                                   "ProcessGroup", "Broken pipe"))


@contextlib.contextmanager
def lost_peer(session: Session, what: str) -> Iterator[None]:
    """Turn a communication failure inside the block (a DDP all-reduce, SyncBatchNorm) into DistributedError."""
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as exc:
        if session.active and _is_lost_peer(exc):
            raise DistributedError(lost_contact_message(session, what, exc)) from None
        raise


def stopped_by_launcher(signum: int, frame: Any) -> None:
    """SIGTERM handler for a torchrun worker: torchrun stops the others when one process dies."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    raise DistributedError(
        f"Stopped by the launcher (torchrun) as process {rank + 1} of {world}, usually because another process of "
        "the job stopped (it crashed, was killed or ran out of memory; torchrun's summary and that process's log say "
        "which). Nothing completed is lost: start the same command again with --resume.")


# --------------------------------------------------------------------------- one data plan for the job


class _Failed:
    """Rank 0 could not build the data plan (its TrainingError message goes to every process)."""

    def __init__(self, message: str):
        self.message = message


class _Working:
    """Rank 0 is still scanning or decoding: the others keep waiting (a first run over many images can
    take longer than one collective's timeout)."""


HEARTBEAT_S = 30.0


def shared_plan(session: Session, build: Callable[[], Generator[TrainEvent, None, Any]]
                ) -> Generator[TrainEvent, None, Any]:
    """Rank 0 runs ``build`` (scan, split, image cache) and sends its result to every process.

    The others wait, renewed by a heartbeat from rank 0 every ``HEARTBEAT_S`` while it works, so only
    a silent rank 0 (``CXR_DIST_TIMEOUT_S``) stops them; then they yield the same milestone events.
    Rank 0's TrainingError or cancel reaches them too.
    """
    what = "waiting for process 1 to scan the folder and prepare the images"
    if session.is_main:
        last = time.monotonic()

        def beat(ev: TrainEvent) -> TrainEvent:
            nonlocal last
            if session.active and time.monotonic() - last > HEARTBEAT_S:
                session.broadcast(_Working(), what)
                last = time.monotonic()
            return ev

        try:
            plan = yield from relay(build(), beat)
        except DistributedError:
            raise
        except TrainingError as exc:
            session.broadcast(_Failed(str(exc)), "sharing why the data cannot be used")
            raise
        except Exception:
            session.broadcast(_Failed("Process 1 could not scan or prepare the data; its log says why."),
                              "sharing why the data cannot be used")
            raise
        return session.broadcast(plan, "sharing the scan, split and image cache")
    plan: Any = _Working()
    while isinstance(plan, _Working):
        plan = session.broadcast(None, what)
    if isinstance(plan, _Failed):
        raise TrainingError(plan.message)
    if plan is None:
        yield Cancelled(0, 0, False, "Process 1 stopped before training; nothing was trained.")
        return None
    if not plan.cache.path.is_file():
        raise TrainingError(
            f"{session.describe().capitalize()} cannot see the image cache process 1 wrote in the run folder. With "
            "several machines, the run folder (--work-dir, default MODEL.run) must be on a filesystem all of them "
            "share.")
    for ev in plan.events():
        yield ev
    return plan


# --------------------------------------------------------------------------- gathering sharded results


def gather_rows(session: Session, arrays: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    """Each process computed ``arrays`` for its shard (``items[rank::world]``); all of them, in item order."""
    parts = session.all_gather([np.asarray(a) for a in arrays], what)
    out = []
    for k in range(len(arrays)):
        pieces = [p[k] for p in parts]
        n = sum(len(p) for p in pieces)
        full = np.empty((n,) + pieces[0].shape[1:], dtype=pieces[0].dtype)
        for r, p in enumerate(pieces):
            full[r::session.world_size] = p
        out.append(full)
    return out


def one_process_loss(probs: np.ndarray, labels: np.ndarray, weight: np.ndarray | None, batch: int) -> float:
    """The validation loss a 1-process run reports: the (class-weighted) mean per batch of ``batch`` items,
    averaged over images, recomputed from gathered probabilities."""
    n = len(labels)
    if n == 0:
        return float("nan")
    p = probs[np.arange(n), labels].astype(np.float64)
    losses = -np.log(np.clip(p, 1e-30, None))
    w = np.ones(n) if weight is None else np.asarray(weight, np.float64)[labels]
    total = 0.0
    for s in range(0, n, batch):
        ws, ls = w[s:s + batch], losses[s:s + batch]
        total += len(ls) * float((ws * ls).sum() / ws.sum())
    return total / n


# --------------------------------------------------------------------------- one model for the job


def state_digest(module: nn.Module) -> str:
    """A short hash of ``module``'s parameters and buffers (names and bytes)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def same_weights(model: nn.Module, session: Session) -> None:
    """Every process continues with rank 0's weights when theirs differ (stage 1 runs on every process)."""
    if not session.active:
        return
    if len(set(session.all_gather(state_digest(model), "comparing the starting weights"))) == 1:
        return
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()} if session.is_main else None
    state = session.broadcast(state, "sending the starting weights")
    model.load_state_dict(state)


def sync_buffers(model: nn.Module, session: Session) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every process: without SyncBatchNorm each
    process's own share of the batches moved them, and validation must score what rank 0 saves."""
    if not session.active:
        return
    import torch.distributed as dist

    with lost_peer(session, "sharing the BatchNorm statistics"):
        for b in model.buffers():
            dist.broadcast(b, src=0)
