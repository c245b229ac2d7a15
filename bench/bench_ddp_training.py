"""Stage-2 epoch time of ``cxr-train``: 1 process vs 2 Gloo processes (torchrun) on this machine's CPU.

Same data, settings and global batch in every row; each row is a fresh run (frozen stage
skipped: ``--epochs-frozen 0``; fine-tuning of layer4 for 3 epochs, no early stop). The epoch
time is the engine's own (EpochDone.seconds: training plus validation of one epoch), read
from the model card's history. Baseline "1 process": one process with all cores as threads.

    .venv/bin/python bench/bench_ddp_training.py [--images-per-source 8] [--size 128] [--batch 16]

On a 2-core CPU two processes cannot be faster than one process using both cores (they
split the same cores and add all-reduce traffic); the point of DDP is more GPUs or machines.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "models" / "demo-cxr.safetensors"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(data: Path, out: Path, a: argparse.Namespace, threads: int) -> list[str]:
    return ["-m", "cxr_desktop.cli.train", str(data), "--out", str(out), "--input-size", str(a.size),
            "--weights", str(DEMO), "--epochs-frozen", "0", "--epochs-finetune", str(a.epochs),
            "--finetune", "layer4", "--batch-size", str(a.batch), "--patient-regex", r"^(src\d+)_",
            "--bootstrap", "20", "--threads", str(threads), "--patience", "0", "--quiet"]


def _epoch_seconds(model: Path) -> list[float]:
    from cxr_desktop.model.modelfile import read_card

    return [float(h["seconds"]) for h in read_card(model).provenance["history"] if h["stage"] == 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=12, help="real radiographs used (../shared/data/cxr)")
    ap.add_argument("--images-per-source", type=int, default=8)
    ap.add_argument("--size", type=int, default=128, help="input size in pixels")
    ap.add_argument("--batch", type=int, default=16, help="global batch")
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()

    from cxr_desktop.training.synthetic import find_sources, write_dataset

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        root = Path(tmp)
        data = root / "data"
        write_dataset(find_sources(REPO.parent / "shared" / "data" / "cxr", max_side=512)[:a.sources], data,
                      variants=a.images_per_source, size=a.size, seed=3)
        n = sum(1 for p in data.rglob("*.png"))
        env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", CXR_CACHE_DIR=str(root / "cache"),
                   PYTHONPATH=str(REPO))
        rows = [
            ("1 process", [sys.executable, *_train_args(data, root / "one.safetensors", a, cores)]),
            ("1 process x 1 thread", [sys.executable, *_train_args(data, root / "one-thread.safetensors", a, 1)]),
            ("2 Gloo processes x 1 thread", [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                                              "--master-addr", "127.0.0.1", "--master-port", str(_port()),
                                              *_train_args(data, root / "two.safetensors", a, 1)]),
        ]
        print(f"{n} images ({a.sources} sources x {a.images_per_source}), {a.size} px, global batch {a.batch}, "
              f"stage 2 fine-tunes layer4, {a.epochs} epochs; CPU cores: {cores}; torch {_torch_version()}")
        results: dict[str, float] = {}
        for name, cmd in rows:
            t0 = time.perf_counter()
            run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if run.returncode != 0:
                print(f"{name}: failed\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
                return 1
            secs = _epoch_seconds(Path(cmd[cmd.index("--out") + 1]))
            results[name] = statistics.median(secs)
            print(f"{name:32s} epochs {' / '.join(f'{s:.1f}' for s in secs)} s (median {results[name]:.1f} s); "
                  f"whole command {wall:.0f} s; load average {os.getloadavg()[0]:.1f}")
        base = results["1 process"]
        for name, secs in results.items():
            print(f"{name:32s} {secs:6.1f} s/epoch (median)   {base / secs:5.2f}x the speed of '1 process'")
    return 0


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    sys.exit(main())
