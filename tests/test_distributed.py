"""cxr_desktop.distributed: one process is a no-op session; two Gloo processes on loopback really
share, gather and agree; a process that dies gives the others a clear error, not a hang."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cxr_desktop.distributed import SINGLE, DistributedError, Session, join, timeout_s

PROBE = Path(__file__).with_name("distributed_probe.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_pair(tmp_path: Path, mode: str, timeout: float = 120) -> list[subprocess.CompletedProcess]:
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), CXR_DIST_TIMEOUT_S="60", OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(PROBE), str(tmp_path), mode], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = []
    for p in procs:
        so, se = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, so, se))
    return out


def test_single_process_session_is_a_no_op(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    s = join(cuda=False)
    assert s is SINGLE and not s.active and s.is_main
    assert s.broadcast([1, 2], "x") == [1, 2]
    assert s.all_gather("a", "x") == ["a"]
    assert s.any(True, "x") is True and s.any(False, "x") is False
    assert s.shard([5, 6, 7]) == [5, 6, 7]


def test_shard_and_unshard_restore_the_order():
    items = list(range(11))
    sessions = [Session(rank=r, world_size=3, local_rank=r, backend="gloo") for r in range(3)]
    parts = [s.shard(items) for s in sessions]
    assert sorted(sum(parts, [])) == items and parts[1] == [1, 4, 7, 10]
    assert sessions[0].unshard(parts) == items


def test_timeout_setting_is_checked(monkeypatch):
    monkeypatch.setenv("CXR_DIST_TIMEOUT_S", "soon")
    with pytest.raises(DistributedError, match="CXR_DIST_TIMEOUT_S"):
        timeout_s()
    monkeypatch.setenv("CXR_DIST_TIMEOUT_S", "45")
    assert timeout_s() == 45.0


@pytest.mark.slow
def test_two_gloo_processes_share_gather_and_agree(tmp_path):
    procs = _run_pair(tmp_path, "ok")
    assert [p.returncode for p in procs] == [0, 0], [p.stderr[-2000:] for p in procs]
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, s in enumerate(seen):
        assert s["rank"] == r and s["world"] == 2 and s["backend"] == "gloo"
        assert s["broadcast"] == {"split": [3, 1, 2]}  # rank 1 got rank 0's object
        assert s["unshard"] == list(range(7))
        assert s["any_rank1"] is True and s["any_none"] is False
        assert "error" not in s
    assert seen[0]["shard"] == [0, 2, 4, 6] and seen[1]["shard"] == [1, 3, 5]


@pytest.mark.slow
def test_a_dead_process_gives_the_other_a_clear_error(tmp_path):
    procs = _run_pair(tmp_path, "die", timeout=150)
    assert procs[1].returncode == 3
    seen = json.loads((tmp_path / "rank0.json").read_text())
    msg = seen.get("error", "")
    assert "lost contact" in msg and "--resume" in msg, msg
    assert "Process 1 of 2" in msg
