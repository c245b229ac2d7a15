"""Peak memory and time of one ``load_image``, per decoded pixel byte: bombs and real files.

Budget (the stated multiple): a load's peak RSS growth stays within
``MAX_MULTIPLE`` x the decoded pixel bytes (rows x columns x samples x bytes per
sample as the decoder outputs them). The worst legitimate case is 8-bit grey: the
decoder's buffer (1 B/px), Pillow's export copy (1 B/px) and the float32 result
(4 B/px) make 6 B/px; every pixel stage works in row bands, so no full-size float64
or int64 temporaries are allowed on top.

Each file is loaded in a fresh child process (its RSS before the load, after imports
and a warm-up, is the baseline; ``ru_maxrss`` after the load is the peak). Bombs are
12000 x 12000 PNGs of a flat image (a few hundred KB to ~1 MB on disk): 8-bit grey,
8-bit RGB, 16-bit RGB and 16-bit RGBA; real files are from ../shared/data.

Usage: python bench/bench_load_memory.py [--data ../shared/data] [--side 12000] [--only bombs|real]
Baseline: run it with PYTHONPATH pointing at an older checkout (the script imports
``cxr_desktop`` from PYTHONPATH first, else from this repository).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_MULTIPLE = 6.0

_CHILD = r"""
import json, os, resource, sys, time
sys.path.append(sys.argv[2])
from cxr_desktop.imaging import load_image
from cxr_desktop.errors import ImageError
import numpy as np
warm = sys.argv[3]
load_image(warm)
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before = rss_mb()
peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
try:
    img = load_image(sys.argv[1])
    outcome = f"decoded {img.shape[0]}x{img.shape[1]}" + (" +rgb" if img.rgb is not None else "")
except ImageError as exc:
    outcome = f"refused ({exc.reason.value})"
took = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rss_before_mb": before, "peak_mb": peak, "peak_before_mb": peak_before,
                  "seconds": took, "outcome": outcome}))
"""

_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_bomb(path: Path, side: int, bit_depth: int, colour_type: int) -> Path:
    """A side x side PNG of one flat colour, compressed row by row (never held in memory whole)."""
    row_bytes = side * _CHANNELS[colour_type] * bit_depth // 8
    comp = zlib.compressobj(9)
    row = b"\x00" + bytes([0x40]) * row_bytes  # filter byte 0, a flat mid-dark grey
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, bit_depth, colour_type, 0, 0, 0)))
        pending = bytearray()
        for _ in range(side):
            pending += comp.compress(row)
            if len(pending) > 1 << 20:
                f.write(_chunk(b"IDAT", bytes(pending)))
                pending.clear()
        pending += comp.flush()
        f.write(_chunk(b"IDAT", bytes(pending)))
        f.write(_chunk(b"IEND", b""))
    return path


def decoded_bytes(path: Path) -> int:
    """Pixel bytes the decoder outputs for frame 0, from the header."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"\x89PNG"):
        w, h, depth, colour = struct.unpack(">IIBB", head[16:26])
        return w * h * _CHANNELS.get(colour, 1) * max(depth, 8) // 8
    sys.path.insert(0, str(REPO))
    from cxr_desktop.imaging import probe

    info = probe(path)
    meta = info.metadata
    samples = int(meta.get("samples_per_pixel") or 1)
    bits = int(meta.get("bits_allocated") or 8)
    return info.rows * info.columns * samples * max(bits, 8) // 8


def measure(path: Path, warm: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(REPO), str(warm)],
                         capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:] or [f"exit {out.returncode}"]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--side", type=int, default=12000)
    ap.add_argument("--only", choices=("bombs", "real"))
    args = ap.parse_args()
    warm = args.data / "cxr" / "00000001_000.png"
    cases: list[tuple[str, Path]] = []
    tmp = Path(tempfile.mkdtemp(prefix="cxr-bomb-"))
    if args.only != "real":
        for name, depth, colour in (("grey8", 8, 0), ("rgb8", 8, 2), ("rgb16", 16, 2), ("rgba16", 16, 6)):
            p = write_png_bomb(tmp / f"bomb_{name}_{args.side}.png", args.side, depth, colour)
            cases.append((f"PNG bomb {name} {args.side}px ({p.stat().st_size / 1e6:.2f} MB)", p))
    if args.only != "bombs":
        for rel in ("cxr/covid-19-pneumonia-58-prior.jpg", "cxr/00000001_000.png", "cxr/16747_3_1.jpg",
                    "cxr/siim_pneumothorax_sample.dcm", "dicom/RG1_J2KI.dcm", "dicom/MR2_UNCR.dcm",
                    "dicom/SC_rgb_16bit.dcm", "dicom/US1_UNCR.dcm"):
            if (args.data / rel).exists():
                cases.append((rel, args.data / rel))
    print(f"stated budget: peak RSS growth <= {MAX_MULTIPLE:g} x decoded pixel bytes")
    print(f"{'file':<44} {'decoded MB':>10} {'peak+ MB':>9} {'x decoded':>9} {'/budget':>8} {'s':>6}  outcome")
    worst = 0.0
    try:
        for label, path in cases:
            dec = decoded_bytes(path) / 2**20
            r = measure(path, warm)
            if "error" in r:
                print(f"{label:<44} {dec:>10.1f}  ERROR {r['error']}")
                continue
            growth = max(r["peak_mb"] - r["rss_before_mb"], 0.0)
            ratio = growth / dec if dec else 0.0
            worst = max(worst, ratio / MAX_MULTIPLE)
            print(f"{label:<44} {dec:>10.1f} {growth:>9.1f} {ratio:>9.2f} {ratio / MAX_MULTIPLE:>8.2f} "
                  f"{r['seconds']:>6.2f}  {r['outcome']}")
    finally:
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
    print(f"worst peak / budget: {worst:.2f} ({'within' if worst <= 1.0 else 'OVER'} the stated multiple)")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
