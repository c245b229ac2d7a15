"""Several processes working as one job (``torch.distributed``, started by ``torchrun``).

``torchrun`` starts one process per GPU (or several on a CPU) and tells each its place
through environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``). :func:`join` turns those into a :class:`Session`; a process started
without ``torchrun`` gets :data:`SINGLE`, whose collectives are no-ops, so the training
engine and screening run the same code either way.

Every collective has a timeout and turns a backend failure into :class:`DistributedError`,
whose message says what to do: a process that dies must stop the job with a clear reason,
never leave the others waiting forever.
"""

from __future__ import annotations

import datetime
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

TIMEOUT_ENV = "CXR_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600.0  # a collective waits this long for a silent peer (first-epoch decode can be slow)


class DistributedError(RuntimeError):
    """Another process of the job stopped or cannot be reached; the job cannot go on."""


def launched_by_torchrun() -> bool:
    """True in a process that ``torchrun`` (or another launcher with its variables) started."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def timeout_s() -> float:
    """Seconds a collective waits for a silent peer: ``CXR_DIST_TIMEOUT_S`` or 600."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise DistributedError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds; set it to e.g. 600.") from None
    if value <= 0:
        raise DistributedError(f"{TIMEOUT_ENV} must be more than 0 seconds (it is {raw}).")
    return value


@dataclass(frozen=True)
class Session:
    """This process's place in the job and the collectives the job needs.

    ``rank`` 0 is the main process: the only one that writes checkpoints, model files,
    reports and result files.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"  # "gloo" (CPU), "nccl" (CUDA) or "none" (one process)

    @property
    def active(self) -> bool:
        """More than one process: collectives really communicate."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        """``"process 2 of 4 (gloo)"`` for messages; nothing about the data."""
        return f"process {self.rank + 1} of {self.world_size} ({self.backend})" if self.active else "single process"

    # -- sharding ------------------------------------------------------------
    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share of ``items``: every ``world_size``-th one from ``rank`` (deterministic)."""
        return list(items[self.rank::self.world_size])

    def unshard(self, parts: Sequence[Sequence[T]]) -> list[T]:
        """Put the shares of all processes (in rank order) back into the original order."""
        out: list[T] = []
        longest = max((len(p) for p in parts), default=0)
        for i in range(longest):
            for p in parts:
                if i < len(p):
                    out.append(p[i])
        return out

    # -- collectives -----------------------------------------------------------
    def barrier(self, what: str) -> None:
        """Wait until every process got here (``what`` names the step for the error message)."""
        if not self.active:
            return
        import torch.distributed as dist

        with self._collective(what):
            if self.backend == "nccl":
                import torch

                dist.barrier(device_ids=[torch.cuda.current_device()])
            else:
                dist.barrier()

    def broadcast(self, obj: T, what: str) -> T:
        """Rank 0's ``obj`` on every process (picklable objects: a split, a file list)."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        with self._collective(what):
            dist.broadcast_object_list(box, src=0, device=self._device())
        return box[0]  # type: ignore[return-value]

    def all_gather(self, obj: T, what: str) -> list[T]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        with self._collective(what):
            dist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool, what: str) -> bool:
        """True on every process when ``flag`` is true on any (a cancel every process agrees on)."""
        if not self.active:
            return bool(flag)
        import torch
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._device())
        with self._collective(what):
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def close(self) -> None:
        """Leave the process group (safe to call more than once)."""
        if not self.active:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception as exc:  # noqa: BLE001 - a peer may already be gone; nothing left to save
                log.debug("destroy_process_group: %s", type(exc).__name__)

    # -- helpers -----------------------------------------------------------------
    def _device(self) -> Any:
        import torch

        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    @contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except DistributedError:
            raise
        except (RuntimeError, ValueError, OSError) as exc:  # DistBackendError / DistNetworkError are RuntimeErrors
            raise DistributedError(lost_contact_message(self, what, exc)) from None


SINGLE = Session()


def lost_contact_message(session: Session, what: str, exc: BaseException) -> str:
    """The message a process gives when a peer stopped answering: what happened and what to do."""
    return (f"{session.describe().capitalize()} lost contact with the other processes of the job while "
            f"{what} ({type(exc).__name__}). Another process stopped (it crashed, was killed or ran out of "
            "memory) or the network between the machines failed; its own log says which. Nothing completed "
            "is lost: start the same command again with --resume.")


def join(*, cuda: bool) -> Session:
    """Join the job ``torchrun`` started (NCCL on CUDA, Gloo on the CPU), or :data:`SINGLE` without it.

    With ``cuda`` each process uses the GPU of its ``LOCAL_RANK``.
    """
    if not launched_by_torchrun():
        return SINGLE
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise DistributedError("RANK, WORLD_SIZE or LOCAL_RANK is not a whole number; start the job with "
                               "torchrun.") from None
    if world <= 1:
        return SINGLE
    import torch
    import torch.distributed as dist

    backend = "gloo"
    if cuda:
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise DistributedError(
                f"Process {rank + 1} of {world} has LOCAL_RANK {local} but this machine has "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} GPU(s). Start at most one process "
                "per GPU (torchrun --nproc-per-node), or train on the CPU (--device cpu).")
        torch.cuda.set_device(local)
        backend = "nccl" if dist.is_nccl_available() else "gloo"
    session = Session(rank=rank, world_size=world, local_rank=local, backend=backend)
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s()))
        except (RuntimeError, ValueError, OSError) as exc:
            raise DistributedError(
                f"{session.describe().capitalize()} could not join the job ({type(exc).__name__}: {exc}). Check that "
                "every launcher uses the same --rdzv-endpoint and --nnodes, and that the port is open.") from None
    log.info("joined the job as %s", session.describe())
    return session
