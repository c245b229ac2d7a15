"""Distributed screening benchmark: ``cxr-screen`` in 1 process (baseline) vs N Gloo processes (torchrun).

Both screen the same folder with the same model, batch size and decode workers per process.
Two figures per run:

- end to end: files / wall seconds of the whole command (start-up, model load, walk, merge);
- screening: the ``files_per_s`` the command records in its JSON summary (from the start of the
  screening loop to the written results; for N processes, rank 0's clock over all processes' files).

The ratio is N processes / 1 process (> 1: faster). On a CPU the processes share its cores:
with 2 cores (inference already uses them) expect no gain; the figure that matters on a GPU
server is 1 process per GPU. The merged CSV is checked to be the 1-process CSV.

The folder is built in a temp dir from ../shared/data/cxr (real PNG/JPEG/DICOM radiographs,
cycled with symlinks to ``--files``).

Usage: python bench/bench_screening_distributed.py [--files 48] [--nproc 2] [--batch-size 16]
       [--workers 1] [--model resources/models/demo-cxr.safetensors] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _folder(data: Path, root: Path, n: int) -> Path:
    sources = sorted(p for p in (data / "cxr").rglob("*") if p.is_file() and p.suffix.lower() in
                     (".png", ".jpg", ".jpeg", ".dcm"))
    if not sources:
        raise SystemExit(f"no radiographs under {data / 'cxr'}")
    folder = root / "studies"
    folder.mkdir(parents=True)
    for i, src in zip(range(n), itertools.cycle(sources)):
        os.symlink(src.resolve(), folder / f"{i:05d}_{src.name}")
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(nproc: int, folder: Path, out: Path, args: argparse.Namespace, env: dict[str, str]) -> tuple[float, float]:
    """(end-to-end img/s, screening img/s) of one ``cxr-screen`` run."""
    screen = ["-m", "cxr_desktop.cli.screen", str(folder), "--out", str(out), "--model", str(args.model),
              "--json", "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--device", "cpu"]
    if nproc == 1:
        cmd = [sys.executable, *screen]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *screen]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{nproc} process(es) failed ({p.returncode}):\n{p.stderr[-3000:]}")
    doc = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    files = doc["summary"]["files"]
    return files / wall, float(doc["summary"]["files_per_s"])


def _csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.reader(fh))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=48)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1, help="decode workers per process")
    ap.add_argument("--model", type=Path, default=REPO / "resources" / "models" / "demo-cxr.safetensors")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dist-screen-") as tmp:
        root = Path(tmp)
        folder = _folder(args.data, root, args.files)
        env = dict(os.environ, CXR_CACHE_DIR=str(root / "cache"))
        _run(1, folder, root / "warm.csv", args, env)  # exports the ONNX graph once; not timed
        one_e2e, one_screen = _run(1, folder, root / "one.csv", args, env)
        many_e2e, many_screen = _run(args.nproc, folder, root / "many.csv", args, env)
        one_rows, many_rows = _csv_rows(root / "one.csv"), _csv_rows(root / "many.csv")
        same = [r[0] for r in one_rows] == [r[0] for r in many_rows]
        identical = one_rows == many_rows
        worst = max((abs(float(a) - float(b)) for r1, r2 in zip(one_rows[1:], many_rows[1:])
                     for a, b, h in zip(r1, r2, one_rows[0]) if a and b and (h == "score" or h.startswith("p_"))),
                    default=0.0)
    print(f"cxr-screen, {args.files} files (real radiographs, cycled), model {args.model.name}, CPU "
          f"({os.cpu_count()} cores), batch {args.batch_size}, {args.workers} decode worker(s) per process, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset (torchrun sets 1 per process)')}")
    print(f"{'':24}{'end to end img/s':>18}{'screening img/s':>18}")
    print(f"{'1 process (baseline)':24}{one_e2e:18.2f}{one_screen:18.2f}")
    print(f"{f'{args.nproc} Gloo processes':24}{many_e2e:18.2f}{many_screen:18.2f}")
    print(f"{'ratio vs 1 process':24}{many_e2e / one_e2e:17.2f}x{many_screen / one_screen:17.2f}x")
    print(f"merged CSV: same rows in the same order as 1 process: {same}; text-identical: {identical}; "
          f"largest score difference {worst:.1e}")


if __name__ == "__main__":
    main()
