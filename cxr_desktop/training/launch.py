"""Run a training as a local ``torchrun`` job (one process per GPU) and relay it as :func:`engine.train` does.

The wizard trains in its own process with :func:`cxr_desktop.training.engine.train`;
on a computer with several GPUs it can instead call :func:`train_local`, which starts
``python -m torch.distributed.run --standalone --nproc-per-node N -m
cxr_desktop.training.launch_worker RUN_FOLDER`` and yields the same typed events and
returns the same :class:`TrainResult`, rebuilt from the JSON lines the job's rank-0
process writes (:mod:`cxr_desktop.training.launch_worker`, no pickle).

Cancel works as with ``train``: the first ``cancel.set()`` makes the job finish with the
best epoch so far (the event is cleared when the job acknowledges it), a second one
stops the final evaluation too; a job that does not stop within
:data:`SECOND_CANCEL_GRACE_S` after that, or a generator the caller closes, is
terminated, launcher and workers alike (closing does not wait for them: the GUI thread
may be the one that drops the generator). The workers also end when the calling
program dies. A job that fails raises :class:`TrainingError`
with the message its process gave, never a traceback.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Generator

from cxr_desktop.atomic import write_text_atomic
from cxr_desktop.training.config import TrainConfig, TrainingError
from cxr_desktop.training.event_json import decode
from cxr_desktop.training.events import Cancelled, Finished, TrainEvent
from cxr_desktop.training.launch_worker import APP_PID_ENV, CANCEL_FILE, without_paths
from cxr_desktop.training.results import TrainResult
from cxr_desktop.training.runs import save_run_config

log = logging.getLogger(__name__)

POLL_S = 0.2
SECOND_CANCEL_GRACE_S = 30.0  # after a second cancel the job must end by itself within this, or is terminated
STOP_GRACE_S = 15.0  # torchrun's own shutdown (it stops its workers) before everything is killed
EXIT_WAIT_S = 60.0  # after the job's last message, for its processes to end
_EOF = object()


def local_gpu_count() -> int:
    """CUDA GPUs this process can use (0 without CUDA or when the driver cannot be reached)."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken driver means no GPU training, not a crash
        return 0


class _Job:
    """The ``torchrun`` process, its message lines (parsed, on a queue) and its last error output."""

    def __init__(self, folder: Path, nproc: int, env: dict[str, str]):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
               "--nproc-per-node", str(nproc), "--max-restarts", "0",
               "-m", "cxr_desktop.training.launch_worker", str(folder)]
        posix = os.name == "posix"
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=posix,
            creationflags=0 if posix else getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0))
        self.messages: queue.Queue[Any] = queue.Queue()
        self.stderr: collections.deque[str] = collections.deque(maxlen=200)
        self.worker_pids: set[int] = set()
        self._readers = [threading.Thread(target=self._read_messages, name="train-job-messages", daemon=True),
                         threading.Thread(target=self._read_stderr, name="train-job-stderr", daemon=True)]
        for t in self._readers:
            t.start()

    def _read_messages(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # not one of ours
            if isinstance(msg, dict) and "kind" in msg:
                if msg["kind"] == "hello" and isinstance(msg.get("pid"), int):
                    self.worker_pids.add(msg["pid"])
                self.messages.put(msg)
        self.messages.put(_EOF)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.decode("utf-8", "replace").rstrip())

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """End the job: torchrun stops its workers on SIGTERM; whatever is left after the grace is killed."""
        if self.running():
            self._signal(signal.SIGTERM)
            if self.wait(STOP_GRACE_S) is None:
                self._signal(signal.SIGKILL if os.name == "posix" else signal.SIGTERM)
                self.wait(STOP_GRACE_S)
        deadline = time.monotonic() + 5.0
        for pid in self.worker_pids:  # own sessions: torchrun's signal does not reach them if torchrun was killed
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)  # they notice their launcher is gone within a poll
            if os.name != "posix" or _alive(pid):  # elsewhere no probe: terminating an ended pid only fails
                try:
                    os.kill(pid, signal.SIGKILL if os.name == "posix" else signal.SIGTERM)
                except OSError:
                    pass
        for t in self._readers:
            t.join(timeout=5.0)

    def stop_soon(self) -> None:
        """Ask the job to end now and finish stopping it on a thread (a closed generator may be on the GUI thread)."""
        self._signal(signal.SIGTERM)
        threading.Thread(target=self.stop, name="train-job-stop", daemon=True).start()

    def _signal(self, sig: int) -> None:
        try:
            if os.name == "posix":
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.terminate()
        except OSError:
            pass  # already gone

    def error_text(self, nproc: int) -> str:
        """What the job's standard error says stopped it: torchrun's root cause (which process, which
        exit code or signal), else the last exception line; quoted paths are left out (they may name a patient)."""
        lines = list(self.stderr)
        start = next((i for i, line in enumerate(lines) if "Root Cause" in line), None)
        if start is not None:
            cause = "\n".join(lines[start:start + 12])
            rank = re.search(r"^\s*rank\s*:\s*(\d+)", cause, re.M)
            code = re.search(r"^\s*exitcode\s*:\s*(-?\d+)", cause, re.M)
            sig = re.search(r"Signal \d+ \((SIG\w+)\)", cause)
            who = f"process {int(rank.group(1)) + 1} of {nproc}" if rank else "a process of the job"
            if sig:
                return (f"{who} was ended by {sig.group(1)} (the system does this to a process that runs out of "
                        "memory, or it was stopped from outside)")
            if code:
                return f"{who} ended with exit code {code.group(1)}"
        for line in reversed(lines):
            m = re.match(r"^\s*(?:\[[^\]]*\]:?\s*)?((?:\w+\.)*\w*(?:Error|Exception|Interrupt)\b.*)$", line)
            if m and "ChildFailedError" not in line:
                return without_paths(m.group(1))[:300]
        return ""


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (POSIX; on Windows ``os.kill(pid, 0)`` would send a Ctrl-C, so False)."""
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:  # a zombie waiting for its reaper has stopped already
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True  # no /proc (macOS): it answered the probe


def _env(config: TrainConfig, nproc: int) -> dict[str, str]:
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:  # torchrun would set 1; give each process its share of the cores
        env["OMP_NUM_THREADS"] = str(int(config.threads) if config.threads else max(1, (os.cpu_count() or 1) // nproc))
    package_root = str(Path(__file__).resolve().parents[2])  # the workers import this same copy of the package
    loopback = {"linux": "lo", "darwin": "lo0"}.get(sys.platform)  # Windows: Gloo picks by host name
    if loopback:  # a job on this computer talks over loopback only
        env.setdefault("GLOO_SOCKET_IFNAME", loopback)
    env[APP_PID_ENV] = str(os.getpid())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


def _failure(errors: list[dict[str, Any]], job: _Job, rc: int | None, nproc: int) -> TrainingError:
    """The job's own reason: a real error first (rank 0's if it has one), lost contact only when nothing else."""
    own = [e for e in errors if e.get("kind") == "error"] or errors
    if own:
        first = next((e for e in own if e.get("rank") == 0), own[0])
        text = str(first.get("message") or first.get("type") or "unknown error")
        if nproc > 1 and first.get("rank") not in (0, None) and first.get("type") != "TrainingError":
            text = f"Process {int(first['rank']) + 1} of {nproc}: {text}"
        return TrainingError(text)
    why = job.error_text(nproc)
    return TrainingError("The training job stopped before it finished" + (f": {why}." if why else f" (exit code {rc}).")
                         + " Nothing completed is lost: resume the run to continue.")


def train_local(config: TrainConfig, *, nproc: int, cancel: threading.Event | None = None
                ) -> Generator[TrainEvent, None, TrainResult | None]:
    """Train as a ``torchrun`` job of ``nproc`` processes on this computer; the events and result of ``train``.

    ``cancel``: as for :func:`cxr_desktop.training.engine.train`. Raises
    :class:`TrainingError` when the settings cannot work or the job fails.
    """
    if int(nproc) < 1:
        raise TrainingError("A training job needs at least one process.")
    if getattr(sys, "frozen", False):  # sys.executable is the app itself, which cannot run torchrun
        raise TrainingError("The packaged app trains in one process: untick 'Train on all GPUs'. Training on "
                            "several GPUs needs CXR Review installed with Python (pip).")
    gpus = local_gpu_count()
    if gpus and config.device != "cpu" and nproc > gpus:
        raise TrainingError(f"{nproc} processes were asked for but this computer has {gpus} GPU(s); "
                            "start at most one process per GPU.")
    config.validate()
    folder = config.resolved_work_dir()
    folder.mkdir(parents=True, exist_ok=True)
    save_run_config(folder, config)
    cancel_file = folder / CANCEL_FILE
    cancel_file.unlink(missing_ok=True)
    job = _Job(folder, int(nproc), _env(config, int(nproc)))
    errors: list[dict[str, Any]] = []
    finished: TrainResult | None = None
    result: Any = _EOF
    requested, forwarded, kill_at = 0, False, None
    try:
        while True:
            if cancel is not None and cancel.is_set() and not forwarded:
                requested += 1
                forwarded = True
                write_text_atomic(cancel_file, str(requested))
                if requested >= 2:
                    kill_at = time.monotonic() + SECOND_CANCEL_GRACE_S
            try:
                msg = job.messages.get(timeout=POLL_S)
            except queue.Empty:
                if kill_at is not None and time.monotonic() > kill_at:
                    log.info("the training job did not stop after the second cancel; terminating it")
                    job.stop()
                    return None
                continue
            if msg is _EOF:
                break
            kind = msg["kind"]
            if kind == "event":
                ev = decode(msg["event"])
                if isinstance(ev, Finished):
                    finished = ev.result
                if isinstance(ev, Cancelled) and forwarded and cancel is not None:
                    cancel.clear()  # acknowledged, as train does: setting it again stops the evaluation too
                    forwarded = False
                yield ev
            elif kind == "result":
                result = finished if msg.get("same_as_finished") else decode(msg.get("result"))
            elif kind in ("error", "lost_contact"):
                errors.append(msg)
        rc = job.wait(EXIT_WAIT_S)
        if errors or rc != 0:
            raise _failure(errors, job, rc, int(nproc))
        if result is _EOF:
            raise TrainingError("The training job ended without a result; resume the run to continue.")
        return result
    finally:  # ended, failed, or the caller closed the generator (GeneratorExit): no process stays behind
        if job.running():
            job.stop_soon()
        else:
            job.stop()
        cancel_file.unlink(missing_ok=True)
