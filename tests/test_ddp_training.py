"""``torchrun … -m cxr_desktop.cli.train``: DistributedDataParallel with Gloo on loopback.

Two processes (one launcher, and ``--nnodes 2`` as two launchers with a c10d rendezvous)
train the same model as one process with the same global batch; a killed process stops
the job with a message instead of a hang, and ``--resume`` completes it.

Data: 8 real radiographs x 4 synthetic-opacity variants at 64 px (16 train / 8 val / 8 test
images, 2 batches of 8 per epoch), the shipped demonstration weights, 1 frozen epoch (the
feature cache is built in shards and gathered) and fine-tuning of layer4 (DDP, sharded
batches). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cxr_desktop.model.modelfile import load_model
from cxr_desktop.training.config import TrainConfig
from cxr_desktop.training.engine import run_to_end
from cxr_desktop.training.synthetic import PATIENT_REGEX, find_sources, write_dataset

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "models" / "demo-cxr.safetensors"
SIZE = 64
# Tolerances, measured (2 Gloo processes vs 1 process, --sync-batchnorm, SGD): identical global batches,
# dropout masks and BatchNorm statistics, so only the order of float sums differs (DDP's bucketed
# all-reduce, convolutions over shards). Stage 1 and the gathered features come out bit-identical;
# after stage 2's steps the largest weight gap was 6e-8 and the largest running-statistics gap 5e-8
# of the tensor's largest value. What the bounds catch (measured): each process drawing its own
# dropout masks gives weight gaps of 5e-4, plain DDP BatchNorm (no --sync-batchnorm) 1.6e-4 in the
# weights and 0.3 of scale in a running variance. SGD, not AdamW: AdamW moves every weight by about
# lr (1e-4) per step whatever its gradient, which would hide such differences in a few steps; the
# optimizer itself runs on the same averaged gradients in every process either way.
WEIGHT_TOL = 1e-6
RELATIVE_TOL = 1e-6
METRIC_TOL = 1e-3  # AUC, threshold and losses on the card (they came out equal to 5 decimals)

@pytest.mark.parametrize("n, batch, world", [(16, 8, 2), (23, 8, 2), (17, 6, 4), (5, 8, 2), (3, 3, 3)])
def test_the_processes_share_out_exactly_the_global_batches_of_one_process(n, batch, world):
    from torch.utils.data import BatchSampler, RandomSampler

    from cxr_desktop.distributed import Session
    from cxr_desktop.training.ddp import ShardedBatchSampler

    def sampler() -> RandomSampler:  # the same seeded order on every process
        return RandomSampler(range(n), generator=torch.Generator().manual_seed(7))

    drop = n > batch
    one = list(BatchSampler(sampler(), batch, drop))
    shares = [list(ShardedBatchSampler(sampler(), batch, drop, Session(rank=r, world_size=world)))
              for r in range(world)]
    assert all(len(s) == len(one) for s in shares)  # DDP needs the same number of steps everywhere
    for k, global_batch in enumerate(one):
        parts = [s[k] for s in shares]
        assert all(parts) and sorted(sum(parts, [])) == sorted(global_batch)
        assert [global_batch[r::world] for r in range(world)] == parts  # the rows ShardedDropout keeps


def test_the_validation_loss_of_gathered_shards_is_the_one_process_loss():
    from cxr_desktop.training.ddp import one_process_loss

    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(11, 3, generator=g), torch.randint(0, 3, (11,), generator=g)
    weight = torch.tensor([0.5, 2.0, 1.0])
    loss = torch.nn.CrossEntropyLoss(weight=weight)
    expected = sum(float(loss(logits[s:s + 4], labels[s:s + 4])) * len(labels[s:s + 4]) for s in range(0, 11, 4)) / 11
    got = one_process_loss(torch.softmax(logits, 1).numpy(), labels.numpy(), weight.numpy(), 4)
    assert got == pytest.approx(expected, rel=1e-5)


def test_a_global_batch_smaller_than_the_job_is_refused():
    from cxr_desktop.distributed import Session
    from cxr_desktop.training.config import TrainingError
    from cxr_desktop.training.ddp import check_batch

    check_batch(3, 10, Session(rank=0, world_size=3))  # any size from the number of processes up
    with pytest.raises(TrainingError, match="at least the number of processes"):
        check_batch(2, 10, Session(rank=0, world_size=3))
    with pytest.raises(TrainingError, match="fewer than the 3 processes"):
        check_batch(8, 2, Session(rank=1, world_size=3))


@pytest.mark.parametrize("cuda", [False, True])
def test_layers_swapped_for_the_job_are_plain_again_for_the_file(cuda):
    """On CUDA torch's SyncBatchNorm (NCCL), on the CPU GlooSyncBatchNorm; either way the saved model has
    plain BatchNorm2d/Dropout layers with the same keys and values (no process group needed to convert)."""
    from torch import nn

    from cxr_desktop.distributed import Session
    from cxr_desktop.training.ddp import GlooSyncBatchNorm, ShardedDropout, convert_for_job, revert_for_file

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Dropout(0.2), nn.LazyLinear(2))
    model(torch.randn(2, 3, 5, 5))  # materialise the lazy layer, move the running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    job = convert_for_job(model, Session(rank=1, world_size=2), cuda=cuda, sync_batchnorm=True)
    assert type(job[1]) is (nn.SyncBatchNorm if cuda else GlooSyncBatchNorm)
    assert type(job[3]) is ShardedDropout and job[3].session.rank == 1
    saved = revert_for_file(job)
    assert [type(m) for m in saved] == [nn.Conv2d, nn.BatchNorm2d, nn.Flatten, nn.Dropout, nn.Linear]
    after = saved.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


PARTS_DRIVER = """
import json
import sys
import torch
import torch.distributed as dist
from torch import nn
from cxr_desktop.distributed import Session
from cxr_desktop.training.ddp import GlobalMeanLoss, convert_for_job
from cxr_desktop.training.config import TrainingError

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
session = Session(rank=rank, world_size=world, backend="gloo")
diff = {}


def rows(t):  # this process's share of a global batch, as ShardedBatchSampler gives it
    return t[rank::world]


def summed(t):
    t = t.clone()
    dist.all_reduce(t)
    return t


def note(name, a, b):
    diff[name] = max(diff.get(name, 0.0), float((a - b).abs().max()))


g = torch.Generator().manual_seed(0)
ref = nn.BatchNorm2d(3, momentum=0.3)
with torch.no_grad():
    ref.weight.uniform_(0.5, 1.5, generator=g)
    ref.bias.uniform_(-1, 1, generator=g)
job = convert_for_job(nn.Sequential(nn.BatchNorm2d(3, momentum=0.3)), session, cuda=False, sync_batchnorm=True)[0]
job.load_state_dict(ref.state_dict())
diff["layer"] = type(job).__name__
for step in range(2):  # the running statistics move twice
    ref.zero_grad()
    job.zero_grad()
    x = torch.randn(5, 3, 4, 4, generator=g) * 3 + 1  # 5 rows: shares of 3 and 2
    up = torch.randn(5, 3, 4, 4, generator=g)  # the gradient arriving from the layers above
    xr, xj = x.clone().requires_grad_(), rows(x).clone().requires_grad_()
    out_r, out_j = ref(xr), job(xj)
    (out_r * up).sum().backward()
    (out_j * rows(up)).sum().backward()
    note("output", out_j, rows(out_r))
    note("input gradient", xj.grad, rows(xr.grad))  # through the global mean and variance
    note("weight gradient", summed(job.weight.grad), ref.weight.grad)
    note("bias gradient", summed(job.bias.grad), ref.bias.grad)
    note("running mean", job.running_mean, ref.running_mean)
    note("running var", job.running_var, ref.running_var)
ref.eval()
job.eval()
note("evaluation output", job(rows(x)), rows(ref(x)))

drop = convert_for_job(nn.Sequential(nn.Dropout(0.4)), session, cuda=False, sync_batchnorm=False)[0]
x = torch.randn(7, 6, generator=g)
torch.manual_seed(3)
one = nn.functional.dropout(x, 0.4, training=True)
torch.manual_seed(3)
note("dropout", drop(rows(x)), rows(one))

w, y = torch.tensor([0.5, 2.0]), torch.tensor([0, 1, 1, 0, 1, 0, 0])
logits = torch.randn(7, 2, generator=g)
lr, lj = logits.clone().requires_grad_(), rows(logits).clone().requires_grad_()
one = nn.CrossEntropyLoss(weight=w)(lr, y)
one.backward()
share = GlobalMeanLoss(w, session)(lj, rows(y))
(share / world).backward()  # DistributedDataParallel averages the gradients over the processes
note("loss", summed(share.detach()) / world, one.detach())
note("loss gradient", lj.grad, rows(lr.grad))
bad = rows(logits).clone()
bad[0, 0] = float("nan") if rank == 1 else bad[0, 0]  # process 2's share diverged
try:
    GlobalMeanLoss(w, session)(bad, rows(y))
    diff["diverged"] = "went on"
except TrainingError as exc:
    diff["diverged"] = str(exc)
sys.stdout.write(f"PARTS {json.dumps(diff)}\\n")  # one write: the two processes share the pipe
sys.stdout.flush()
session.close()  # leaving a Gloo group undestroyed can abort the process at exit
"""


@pytest.mark.slow
def test_sync_batchnorm_dropout_and_loss_over_two_processes_equal_one_process_on_the_whole_batch(tmp_path):
    """CPU SyncBatchNorm (forward, backward through the global mean and variance, running statistics),
    the sharded dropout masks and the global-mean loss, against torch's BatchNorm2d, F.dropout and
    CrossEntropyLoss on the concatenated batch (5 and 7 rows: unequal shares); a NaN in one share stops both."""
    import json

    driver = tmp_path / "parts.py"
    driver.write_text(PARTS_DRIVER)
    run = _run(_torchrun("--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_port()),
                         str(driver)), _env(tmp_path), timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = [json.loads(line.split(" ", 1)[1]) for line in run.stdout.splitlines() if line.startswith("PARTS ")]
    assert len(results) == 2
    for diff in results:
        assert diff.pop("layer") == "GlooSyncBatchNorm"
        assert diff.pop("dropout") == 0.0  # the very mask one process draws
        assert "NaN or infinite" in diff.pop("diverged")  # on both processes, at the same step
        assert set(diff) == {"output", "input gradient", "weight gradient", "bias gradient", "running mean",
                             "running var", "evaluation output", "loss", "loss gradient"}
        assert all(v <= 1e-5 for v in diff.values()), diff  # float32 rounding of the sums


@pytest.fixture(scope="module")
def data(tmp_path_factory, cxr_dir):
    if not DEMO.is_file():
        pytest.skip("the demonstration model is not built (training/build_demo_model.sh)")
    root = tmp_path_factory.mktemp("ddp-data")
    write_dataset(find_sources(cxr_dir, max_side=256)[:8], root, variants=4, size=SIZE, seed=1)
    return root


SETTINGS = dict(input_size=SIZE, weights=str(DEMO), epochs_frozen=1, epochs_finetune=1, finetune="layer4",
                batch_size=8, patient_regex=PATIENT_REGEX, bootstrap=50, threads=1, val_fraction=0.25,
                test_fraction=0.25, patience=0, optimizer="sgd", keep_run_files=True)


def _cli(data: Path, out: Path, *extra: str, epochs_finetune: int = 1) -> list[str]:
    s = SETTINGS
    return ["-m", "cxr_desktop.cli.train", str(data), "--out", str(out), "--input-size", str(SIZE),
            "--weights", str(DEMO), "--epochs-frozen", "1", "--epochs-finetune", str(epochs_finetune),
            "--finetune", "layer4", "--batch-size", "8", "--patient-regex", PATIENT_REGEX, "--bootstrap", "50",
            "--threads", "1", "--val-fraction", str(s["val_fraction"]), "--test-fraction", str(s["test_fraction"]),
            "--patience", "0", "--optimizer", "sgd", "--keep-run-files", "--quiet", *extra]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
                CXR_DIST_TIMEOUT_S="90", CXR_CACHE_DIR=str(tmp_path / "cache"))


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def _run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    """The reference: the same settings in this process (no torchrun)."""
    out = tmp_path_factory.mktemp("one") / "m.safetensors"
    threads = torch.get_num_threads()
    try:
        result = run_to_end(TrainConfig(data_dir=str(data), out=str(out), **SETTINGS))
    finally:
        torch.set_num_threads(threads)
    assert result is not None and result.model_path == str(out)
    return out


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(path)).items() if v.is_floating_point()}


def _assert_close(a: Path, b: Path) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        scale = float(ta[k].float().abs().max()) if ta[k].numel() else 0.0
        assert float((ta[k].float() - tb[k].float()).abs().max()) <= WEIGHT_TOL + RELATIVE_TOL * scale, k


def _assert_same_training(reference: Path, other: Path) -> None:
    """The model files and the last checkpoints (the fine-tuned weights) of two runs agree."""
    _assert_close(reference, other)  # the best epoch's weights
    last = "ckpt-0002.safetensors"  # stage 2 epoch 1: trained with DDP on sharded global batches
    _assert_close(Path(f"{reference}.run") / last, Path(f"{other}.run") / last)
    ca, cb = load_model(reference).card, load_model(other).card
    for split in ("validation", "test"):
        assert cb.metrics[split]["auc"] == pytest.approx(ca.metrics[split]["auc"], abs=METRIC_TOL)
    assert cb.decision_threshold == pytest.approx(ca.decision_threshold, abs=METRIC_TOL)
    ha, hb = ca.provenance["history"], cb.provenance["history"]
    assert [(h["stage"], h["epoch"]) for h in hb] == [(h["stage"], h["epoch"]) for h in ha] == [(1, 1), (2, 1)]
    for x, y in zip(ha, hb):
        assert y["train_loss"] == pytest.approx(x["train_loss"], abs=METRIC_TOL)
        assert y["val_loss"] == pytest.approx(x["val_loss"], abs=METRIC_TOL)
    assert cb.provenance["best_epoch"]["stage"] == ca.provenance["best_epoch"]["stage"]


@pytest.mark.slow
@pytest.mark.usefixtures("training_isolation")
def test_two_gloo_processes_train_the_model_one_process_trains(data, one_process, tmp_path):
    out = tmp_path / "m.safetensors"
    run = _run(_torchrun("--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_port()),
                         *_cli(data, out, "--sync-batchnorm")), _env(tmp_path))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("model saved:") == 1  # process 1 alone prints and writes
    assert "stage 2 epoch   1" in run.stdout
    _assert_same_training(one_process, out)


@pytest.mark.slow
@pytest.mark.usefixtures("training_isolation")
def test_two_launchers_with_a_c10d_rendezvous_train_the_same_model(data, one_process, tmp_path):
    out = tmp_path / "m.safetensors"
    port, env = _port(), _env(tmp_path)
    launcher = _torchrun("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                         f"127.0.0.1:{port}", "--rdzv-id", "cxr-test", "--local-addr", "127.0.0.1",
                         *_cli(data, out, "--sync-batchnorm"))
    first = subprocess.Popen(launcher, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        second = _run(launcher, env)
        first_out, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    outputs = first_out + second.stdout + second.stderr
    assert first.returncode == 0 and second.returncode == 0, outputs[-5000:]
    assert outputs.count("model saved:") == 1
    _assert_same_training(one_process, out)


def _worker_of(launcher_pid: int, rank: int) -> int | None:
    """The pid of the torchrun worker with ``RANK=rank`` started by ``launcher_pid``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher_pid and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.usefixtures("training_isolation")
def test_a_killed_process_stops_the_job_with_a_message_and_resume_completes(data, tmp_path):
    out = tmp_path / "m.safetensors"
    work = Path(f"{out}.run")
    env = _env(tmp_path)
    cmd = _torchrun("--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_port()),
                    *_cli(data, out, epochs_finetune=2))
    job = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (work / "ckpt-0001.safetensors").exists():  # stage 1 done: kill process 2 in stage 2
            assert job.poll() is None, job.stdout.read()
            assert time.monotonic() < deadline, "no first checkpoint in time"
            time.sleep(0.02)
        victim = _worker_of(job.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        output, _ = job.communicate(timeout=120)  # a hang fails here
        stopped_after = time.monotonic() - t0
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode != 0 and not out.exists(), output[-3000:]
    assert stopped_after < 60
    assert "cxr-train (process 1 of 2):" in output and "--resume" in output, output[-3000:]
    assert "Signal 9 (SIGKILL)" in output  # torchrun's summary names the process that died

    resumed = _run(_torchrun("--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_port()),
                             *_cli(data, out, "--resume", epochs_finetune=2)), env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming after stage 1 epoch 1" in resumed.stdout
    history = [(h["stage"], h["epoch"]) for h in load_model(out).card.provenance["history"]]
    assert history == [(1, 1), (2, 1), (2, 2)]


@pytest.mark.slow
@pytest.mark.usefixtures("training_isolation")
def test_a_full_disk_on_process_1_stops_every_process_with_its_reason(data, tmp_path, small_disk):
    """Process 1 alone writes the run's files; when the disk is full (a real 8 MiB filesystem: the best
    epoch's weights do not fit) every process stops with its reason and exit 74, none waits in the next
    collective for a process 1 that has gone (on several machines: until the timeout)."""
    work = small_disk(8 * 1024)
    run = _run(_torchrun("--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_port()),
                         *_cli(data, tmp_path / "m.safetensors", "--work-dir", str(work))),
               dict(_env(tmp_path), CXR_DIST_TIMEOUT_S="300"), timeout=240)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    reason = "Could not write the best epoch's weights in the folder"
    for process in ("process 1 of 2", "process 2 of 2"):
        assert f"cxr-train ({process}): {reason}" in output, output[-3000:]
    assert "No space left on device" in output and "exitcode  : 74" in output
    assert not (tmp_path / "m.safetensors").exists()


CANCEL_DRIVER = """
import json, os, sys, threading
from cxr_desktop.training import events as E
from cxr_desktop.training.config import TrainConfig
from cxr_desktop.training.engine import run_to_end

cancel, rank, seen = threading.Event(), int(os.environ["RANK"]), []
at = tuple(json.loads(sys.argv[2]))

def on_event(ev):
    seen.append(type(ev).__name__)
    if rank == 1 and isinstance(ev, E.BatchProgress) and (ev.stage, ev.epoch, ev.phase, ev.batch) == at:
        cancel.set()  # process 2 alone is asked to stop

config = TrainConfig(**json.loads(sys.argv[1].replace("{RANK}", str(rank))))  # e.g. a file one machine lacks
result = run_to_end(config, cancel, on_event)
line = json.dumps({"rank": rank, "none": result is None, "cancelled": getattr(result, "cancelled", None),
                   "epochs": [e for e in seen if e == "EpochDone"], "stops": seen.count("Cancelled")})
sys.stdout.write(f"RESULT {line}\\n")  # one write: the two processes share the pipe (print writes in pieces)
sys.stdout.flush()
"""


@pytest.mark.slow
@pytest.mark.usefixtures("training_isolation")
@pytest.mark.parametrize("at, epochs, saved", [
    ((2, 1, "train", 1), ["EpochDone"], [(1, 1)]),  # agreed between two batches: the stage-1 epoch is saved
    ((1, 1, "train", 2), [], None),  # after the last batch: process 2 alone sees it in the stage-1 validation
], ids=["during-stage-2", "before-stage-1-validation"])
def test_a_cancel_on_one_process_stops_every_process_and_the_best_epoch_is_saved(data, tmp_path, at, epochs, saved):
    import json

    driver = tmp_path / "driver.py"
    driver.write_text(CANCEL_DRIVER)
    out = tmp_path / "m.safetensors"
    cfg = dict(SETTINGS, data_dir=str(data), out=str(out), epochs_finetune=2)
    run = _run(_torchrun("--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_port()),
                         str(driver), json.dumps(cfg), json.dumps(at)), _env(tmp_path))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = sorted((json.loads(line.split(" ", 1)[1]) for line in run.stdout.splitlines()
                      if line.startswith("RESULT ")), key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["stops"] == 1 and r["epochs"] == epochs for r in results)  # both stopped at the same point
    assert results[0]["cancelled"] is True and results[1]["none"]
    if saved is None:  # no epoch completed: nothing to save
        assert not out.exists()
    else:
        assert [(h["stage"], h["epoch"]) for h in load_model(out).card.provenance["history"]] == saved


@pytest.mark.slow
@pytest.mark.usefixtures("training_isolation")
@pytest.mark.parametrize("case, reason", [
    ("data", "The folder 'missing' does not exist"),  # process 1 alone scans: its error is sent to the others
    ("weights", "The initial weights cannot be used"),  # every process reads the file; process 1 lacks it
])
def test_a_failure_of_process_1_alone_stops_every_process_with_its_reason(data, tmp_path, case, reason):
    """Both processes stop at once with process 1's reason, instead of process 2 waiting in the next
    collective until the launcher stops it with no reason of its own (as a weights file missing on
    one machine did)."""
    import json
    import shutil

    driver = tmp_path / "driver.py"
    driver.write_text(CANCEL_DRIVER)
    shutil.copy(DEMO, tmp_path / "w1.safetensors")  # process 2 has it; process 1's w0 does not exist
    cfg = dict(SETTINGS, data_dir=str(data), out=str(tmp_path / "m.safetensors"))
    if case == "data":
        cfg["data_dir"] = str(tmp_path / "missing")
    else:
        cfg["weights"] = str(tmp_path / "w{RANK}.safetensors")
    run = _run(_torchrun("--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_port()),
                         str(driver), json.dumps(cfg), json.dumps([0, 0, "", 0])), _env(tmp_path), timeout=180)
    assert run.returncode != 0
    assert run.stderr.count(f"TrainingError: {reason}") == 2, run.stderr[-3000:]
    assert "lost contact" not in run.stderr
