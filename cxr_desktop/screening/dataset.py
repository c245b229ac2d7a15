"""Decode + preprocess in worker processes: a torch Dataset whose items never raise.

Each item is a :class:`DecodedItem`: the model input for a scorable image, or
the reason it is not one (``error`` with a :class:`~cxr_desktop.errors.Reason`
code, ``out_of_scope`` with the scope check's reason). The collate function
stacks the inputs of the good items and passes the others through, so one bad
file becomes one row and never stops a batch. Preprocessing is the app's one
:func:`~cxr_desktop.preprocess.preprocess_for_card`.

Only regular files are opened: a named pipe, device or socket gets an ``error``
row without being opened (reading one could block the run for ever). In a worker
process each file is decoded under a time limit (:class:`DecodeClock`): a decode
that takes longer is stopped by the kernel (``SIGALRM``, which no stuck decoder
can ignore), and the runner replaces the worker and lists the file as an error.
"""

from __future__ import annotations

import functools
import logging
import mmap
import os
import select
import signal
import stat
import struct
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cxr_desktop.errors import ImageError, Reason
from cxr_desktop.redaction import redact_file_values
from cxr_desktop.imaging.types import StudyImage
from cxr_desktop.preprocess import load_for_model, preprocess_for_card
from cxr_desktop.screening.results import STATUS_ERROR, STATUS_OK, STATUS_OUT_OF_SCOPE
from cxr_desktop.screening.scope import reason_parts, scope_check

ImageLoader = Callable[[str], StudyImage]
#: Before-model input check: None when the image may be scored, else a ScopeResult (or plain text).
ScopeCheck = Callable[[StudyImage], Any]


def default_loader(path: str) -> StudyImage:
    """The app's image loader (first frame, full resolution)."""
    from cxr_desktop.imaging import load_image

    return load_image(path)


def model_input_loader(input_size: int) -> ImageLoader:
    """First frame as the model sees it (:func:`~cxr_desktop.preprocess.load_for_model`): what screening uses."""
    return functools.partial(load_for_model, input_size=int(input_size))


@dataclass
class DecodedItem:
    """One file after decoding: ``input`` (3, S, S) float32 only when ``status`` is ok."""

    index: int
    status: str
    input: np.ndarray | None = None
    rows: int = 0
    columns: int = 0
    reason: str = ""
    detail: str = ""
    out_of_scope: bool = False  # scored anyway ("show anyway"): status ok for batching, row out_of_scope
    scope_message: str = ""  # the out-of-scope reasons as sentences (before-model check)


def out_of_scope_detail(name: str, message: str, *, scored: bool) -> str:
    """The ``detail`` sentence of an out-of-scope row (scored on request, or not)."""
    message = message.rstrip(".")
    if scored:
        return (f"{name}: out of scope: {message}. Scored anyway on request; the score is not reliable for "
                "this image.")
    return (f"{name}: not scored: {message}. The model is meant for adult frontal chest radiographs; "
            "review this image without the decision aid.")


def decode_item(index: int, path: str, preprocessing: dict[str, Any], *,
                loader: ImageLoader = default_loader, scope: ScopeCheck = scope_check,
                show_anyway: bool = False) -> DecodedItem:
    """Load, scope-check and preprocess one file; every failure becomes a status, never an exception.

    An out-of-scope image is not preprocessed unless ``show_anyway``: then it gets its
    input (and so a score) but stays marked ``out_of_scope`` with its reasons.
    """
    name = Path(path).name
    why_not = not_a_regular_file(path)
    if why_not:
        return DecodedItem(index, STATUS_ERROR, reason=Reason.UNREADABLE.value, detail=f"{name}: {why_not}")
    item = _decode_regular(index, path, name, preprocessing, loader, scope, show_anyway)
    if item.detail:
        # Messages name the file and the problem; should a decoder ever quote a header value,
        # patient data (PS3.15 Annex E attributes of this file) never reaches the CSV or journal.
        item.detail = redact_file_values(path, item.detail)
    return item


def not_a_regular_file(path: str) -> str:
    """Why ``path`` is not screened (not a regular file, or gone), or "" for a regular file. Never opens it."""
    try:
        st = os.stat(path)  # follows symlinks; does not open (a FIFO would block)
    except FileNotFoundError:
        return ("the file (or the file its link points to) no longer exists; check the folder and screen "
                "it again.")
    except OSError as exc:
        return f"the file cannot be examined ({exc.strerror or exc.__class__.__name__}); check its permissions."
    if stat.S_ISREG(st.st_mode):
        return ""
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else
            "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
            "a socket" if stat.S_ISSOCK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode) else
            "not a regular file")
    return (f"this is {kind}, not an image file; screening reads only regular files. Copy the image "
            "into the folder as a file.")


def _decode_regular(index: int, path: str, name: str, preprocessing: dict[str, Any], loader: ImageLoader,
                    scope: ScopeCheck, show_anyway: bool) -> DecodedItem:
    try:
        image = loader(path)
    except ImageError as exc:
        return DecodedItem(index, STATUS_ERROR, reason=exc.reason.value, detail=exc.user_message())
    except MemoryError:
        return DecodedItem(index, STATUS_ERROR, reason=Reason.TOO_LARGE.value,
                           detail=f"{name}: not enough memory to decode this image; screen it on a "
                                  "computer with more memory or fewer workers.")
    except Exception as exc:  # a decoder bug must not stop the run
        return DecodedItem(index, STATUS_ERROR, reason=Reason.UNREADABLE.value,
                           detail=f"{name}: the file could not be read ({exc.__class__.__name__}); "
                                  "check it opens in another viewer, or re-export it.")
    try:
        why = scope(image)
    except Exception as exc:
        why = f"the input check failed ({exc.__class__.__name__})"
    codes, message = reason_parts(why) if why else ("", "")
    rows, columns = image.full_shape  # the stored size, also when decoded smaller
    if why and not show_anyway:
        return DecodedItem(index, STATUS_OUT_OF_SCOPE, rows=rows, columns=columns, reason=codes,
                           detail=out_of_scope_detail(name, message, scored=False), scope_message=message)
    try:
        x = preprocess_for_card(image, preprocessing)
    except Exception as exc:
        return DecodedItem(index, STATUS_ERROR, rows=rows, columns=columns,
                           reason=Reason.UNSUPPORTED_PIXEL_FORMAT.value,
                           detail=f"{name}: the image could not be prepared for the model "
                                  f"({exc.__class__.__name__}).")
    if not np.all(np.isfinite(x)):
        return DecodedItem(index, STATUS_ERROR, rows=rows, columns=columns,
                           reason=Reason.UNSUPPORTED_PIXEL_FORMAT.value,
                           detail=f"{name}: the pixel values are not finite numbers; re-export the image.")
    if why:
        return DecodedItem(index, STATUS_OK, input=x, rows=rows, columns=columns, reason=codes,
                           detail=out_of_scope_detail(name, message, scored=True), out_of_scope=True,
                           scope_message=message)
    return DecodedItem(index, STATUS_OK, input=x, rows=rows, columns=columns)


class DecodeClock:
    """The per-file decode time limit of the worker processes, and what each worker is decoding.

    A small shared file holds one slot per worker: (dataset index, start time on the
    system-wide monotonic clock), index -1 when idle. A worker arms ``ITIMER_REAL``
    before each file, so the kernel ends a worker stuck in any decoder (even one that
    holds the GIL) after ``limit_s``; the runner then reads the slots to learn which
    file it was (:meth:`overdue`). Create one clock per DataLoader (its workers' ids
    index the slots).
    """

    SLOT = struct.Struct("<qd")

    PREFIX = "decode-clock-"

    def __init__(self, limit_s: float, workers: int, folder: str | os.PathLike[str]):
        import tempfile

        self.limit_s = float(limit_s)
        sweep_stale_clocks(folder)
        fd, self.path = tempfile.mkstemp(prefix=f"{self.PREFIX}{os.getpid()}-", suffix=".bin", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"".join(self.SLOT.pack(-1, 0.0) for _ in range(max(1, workers))))

    def overdue(self) -> list[int]:
        """Dataset indices whose decode has run for the time limit (the workers the kernel stopped)."""
        try:
            data = Path(self.path).read_bytes()
        except OSError:
            return []
        now = time.monotonic()
        out = []
        for off in range(0, len(data) - self.SLOT.size + 1, self.SLOT.size):
            index, started = self.SLOT.unpack_from(data, off)
            if index >= 0 and now - started >= self.limit_s - 0.05:
                out.append(int(index))
        return out

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


def sweep_stale_clocks(folder: str | os.PathLike[str]) -> int:
    """Remove the clock files of screening processes that no longer run (killed before :meth:`DecodeClock.close`);
    returns how many. A file's name holds the pid of the process that made it."""
    removed = 0
    for f in Path(folder).glob(f"{DecodeClock.PREFIX}*-*.bin"):
        pid = f.name[len(DecodeClock.PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running (or another user's: not ours to judge)
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            f.unlink()
            removed += 1
        except OSError:
            pass
    return removed


_SLOT_MAPS: dict[str, mmap.mmap] = {}  # per worker process: the clock file, mapped once


def _slot_map(path: str) -> mmap.mmap | None:
    m = _SLOT_MAPS.get(path)
    if m is None:
        try:
            with open(path, "r+b") as fh:
                m = mmap.mmap(fh.fileno(), 0)
        except (OSError, ValueError):
            return None
        _SLOT_MAPS[path] = m
    return m


class _TimeLimit:
    """Context: mark this worker's slot busy and arm the kernel timer; disarm and mark idle after."""

    def __init__(self, clock_path: str | None, limit_s: float | None, index: int):
        self.armed = False
        self.slot: tuple[mmap.mmap, int] | None = None
        if not clock_path or not limit_s or limit_s <= 0 or not hasattr(signal, "setitimer"):
            return
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is None:  # decoding in the screening process itself (workers=0): never stop it
            return
        m = _slot_map(clock_path)
        if m is not None and (info.id + 1) * DecodeClock.SLOT.size <= len(m):
            self.slot = (m, info.id * DecodeClock.SLOT.size)
        self.index, self.limit_s = index, float(limit_s)
        self.armed = True

    def __enter__(self) -> "_TimeLimit":
        if self.armed:
            if self.slot is not None:
                m, off = self.slot
                DecodeClock.SLOT.pack_into(m, off, self.index, time.monotonic())
            signal.setitimer(signal.ITIMER_REAL, self.limit_s)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if self.slot is not None:
                m, off = self.slot
                DecodeClock.SLOT.pack_into(m, off, -1, 0.0)


class ScreeningDataset(Dataset):
    """Item ``i`` = :func:`decode_item` of ``root / relpaths[i]`` (kept small to pickle to workers).

    ``clock_path`` / ``time_limit_s`` (set by the runner per DataLoader, see
    :class:`DecodeClock`): the per-file decode time limit in worker processes.
    """

    def __init__(self, root: str | os.PathLike[str], relpaths: Sequence[str], preprocessing: dict[str, Any],
                 *, loader: ImageLoader = default_loader, scope: ScopeCheck = scope_check,
                 show_anyway: bool = False, time_limit_s: float | None = None):
        self.root = str(root)
        self.show_anyway = bool(show_anyway)
        self.relpaths = list(relpaths)
        self.preprocessing = dict(preprocessing)
        self.loader = loader
        self.scope = scope
        self.time_limit_s = time_limit_s
        self.clock_path: str | None = None

    def __len__(self) -> int:
        return len(self.relpaths)

    def __getitem__(self, i: int) -> DecodedItem:
        with _TimeLimit(self.clock_path, self.time_limit_s, i):
            return decode_item(i, os.path.join(self.root, self.relpaths[i]), self.preprocessing,
                               loader=self.loader, scope=self.scope, show_anyway=self.show_anyway)


@dataclass
class DecodedBatch:
    """A collated batch: every item (inputs stripped), and the good inputs stacked in ``inputs``.

    ``ok_positions[j]`` is the position in ``items`` of ``inputs[j]``.
    """

    items: list[DecodedItem]
    inputs: torch.Tensor | None
    ok_positions: list[int] = field(default_factory=list)

    def pin_memory(self) -> "DecodedBatch":
        """Called by the DataLoader when ``pin_memory=True`` (CUDA only)."""
        if self.inputs is not None:
            self.inputs = self.inputs.pin_memory()
        return self


def collate_decoded(items: Sequence[DecodedItem]) -> DecodedBatch:
    """Stack the good inputs; pass error / out-of-scope items through."""
    arrays = []
    positions = []
    for pos, item in enumerate(items):
        if item.status == STATUS_OK and item.input is not None:
            arrays.append(item.input)
            positions.append(pos)
            item.input = None
    inputs = torch.from_numpy(np.stack(arrays)) if arrays else None
    return DecodedBatch(list(items), inputs, positions)


def worker_init(_worker_id: int, parent_pid: int | None = None) -> None:
    """One thread per decode worker (the workers are the parallelism); exit with the screening process.

    Workers started by a fork server are the server's children, so torch's own
    check (has my parent changed?) cannot see the screening process die (e.g.
    ``kill -9``); a watcher thread does, so no worker is left behind.
    """
    if parent_pid is not None and os.name == "posix":
        threading.Thread(target=_exit_with, args=(parent_pid,), name="cxr-parent-watch", daemon=True).start()
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the decode time limit ends the worker (DecodeClock)
    quiet_worker_output()
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:
        pass


def quiet_worker_output() -> None:
    """Keep the user's terminal free of decoder chatter: library warnings and C-level messages.

    Decoders print to stderr on damaged files (libjpeg's "Corrupt JPEG data", numpy
    RuntimeWarnings); each file's outcome already reaches the results as its row, so a
    worker's own stderr goes to the null device and Python warnings to a silent logger
    (a decoder that records warnings with ``warnings.catch_warnings(record=True)`` still sees them).
    """
    logging.captureWarnings(True)
    wlog = logging.getLogger("py.warnings")
    wlog.propagate = False
    if not wlog.handlers:
        wlog.addHandler(logging.NullHandler())
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        pass


def _exit_with(pid: int) -> None:
    """Block until process ``pid`` has ended, then end this process at once."""
    try:
        fd = os.pidfd_open(pid)  # Linux >= 5.3: readable when the process exits
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
        os._exit(0)
    while True:  # other POSIX systems: poll
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass
