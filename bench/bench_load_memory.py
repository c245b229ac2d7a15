"""Peak memory and time of one ``load_image``, per decoded pixel byte: bombs and real files.

Budget (the stated multiple): a load's peak RSS growth stays within
``MAX_MULTIPLE`` x the decoded pixel bytes (rows x columns x samples x bytes per
sample as the decoder outputs them) + ``FIXED_MB``. The worst legitimate case is 8-bit grey: the
decoder's buffer (1 B/px), Pillow's export copy (1 B/px) and the float32 result
(4 B/px) make 6 B/px; every pixel stage works in row bands, so no full-size float64
or int64 temporaries are allowed on top.

Each file is loaded in a fresh child process (its RSS before the load, after imports
and a warm-up, is the baseline; its peak RSS, VmHWM, reset just before the load through
/proc/self/clear_refs, is the peak). Bombs are
12000 x 12000 PNGs of a flat image (a few hundred KB to ~1 MB on disk): 8-bit grey,
8-bit RGB, 16-bit RGB and 16-bit RGBA; real files are from ../shared/data.

Usage: python bench/bench_load_memory.py [--data ../shared/data] [--side 12000] [--only bombs|real]
                                        [--code DIR]
Baseline: ``--code DIR`` loads ``cxr_desktop`` from DIR (e.g. ``git archive <commit> cxr_desktop``
unpacked there) instead of this repository.
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
#: Fixed allowance on top (decoder libraries' own buffers, the file's bytes, allocator slack):
#: it dominates only for small images.
FIXED_MB = 16.0

_CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[2])
from cxr_desktop.imaging import load_image
from cxr_desktop.errors import ImageError
import numpy as np
warm = sys.argv[3]
load_image(warm)
def status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset this process's peak RSS (VmHWM) to its current RSS
before = status_mb("VmRSS")
peak_before = status_mb("VmHWM")
t0 = time.perf_counter()
try:
    img = load_image(sys.argv[1])
    outcome = f"decoded {img.shape[0]}x{img.shape[1]}" + (" +rgb" if img.rgb is not None else "")
except ImageError as exc:
    outcome = f"refused ({exc.reason.value})"
took = time.perf_counter() - t0
peak = status_mb("VmHWM")
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


def write_big_dicom(path: Path, side: int) -> Path:
    """A side x side 12-bit CR-like native DICOM with a rescale (exercises the modality stage)."""
    import numpy as np
    import pydicom  # noqa: F401

    sys.path.insert(0, str(REPO / "tests"))
    from dicom_builders import new_dataset

    ds = new_dataset()
    ds.Modality = "CR"
    ramp = np.arange(side, dtype=np.uint32)
    ds.set_pixel_data(((ramp[:, None] * 7 + ramp[None, :]) & 4095).astype(np.uint16), "MONOCHROME2", 12)
    ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-100"
    ds.save_as(path, enforce_file_format=True)
    return path


def measure(path: Path, warm: Path, code: Path = REPO) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(code), str(warm)],
                         capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:] or [f"exit {out.returncode}"]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--side", type=int, default=12000)
    ap.add_argument("--only", choices=("bombs", "real"))
    ap.add_argument("--code", type=Path, default=REPO, help="folder holding the cxr_desktop package to measure")
    args = ap.parse_args()
    warm = args.data / "cxr" / "00000001_000.png"
    cases: list[tuple[str, Path]] = []
    tmp = Path(tempfile.mkdtemp(prefix="cxr-bomb-"))
    if args.only != "real":
        for name, depth, colour in (("grey8", 8, 0), ("rgb8", 8, 2), ("rgb16", 16, 2), ("rgba16", 16, 6)):
            p = write_png_bomb(tmp / f"bomb_{name}_{args.side}.png", args.side, depth, colour)
            cases.append((f"PNG bomb {name} {args.side}px ({p.stat().st_size / 1e6:.2f} MB)", p))
        big = write_big_dicom(tmp / "big_cr_6000.dcm", 6000)
        cases.append(("DICOM native 16-bit 6000px + rescale", big))
    if args.only != "bombs":
        for rel in ("cxr/covid-19-pneumonia-58-prior.jpg", "cxr/00000001_000.png", "cxr/16747_3_1.jpg",
                    "cxr/siim_pneumothorax_sample.dcm", "dicom/RG1_J2KI.dcm", "dicom/MR2_UNCR.dcm",
                    "dicom/SC_rgb_16bit.dcm", "dicom/US1_UNCR.dcm"):
            if (args.data / rel).exists():
                cases.append((rel, args.data / rel))
    print(f"code: {args.code}")
    print(f"stated budget: peak RSS growth <= {MAX_MULTIPLE:g} x decoded pixel bytes + {FIXED_MB:g} MiB")
    print(f"{'file':<44} {'decoded MB':>10} {'peak+ MB':>9} {'x decoded':>9} {'/budget':>8} {'s':>6}  outcome")
    worst = 0.0
    try:
        for label, path in cases:
            dec = decoded_bytes(path) / 2**20
            r = measure(path, warm, args.code)
            if "error" in r:
                print(f"{label:<44} {dec:>10.1f}  ERROR {r['error']}")
                continue
            growth = max(r["peak_mb"] - r["rss_before_mb"], 0.0)
            ratio = growth / dec if dec else 0.0
            of_budget = growth / (MAX_MULTIPLE * dec + FIXED_MB)
            worst = max(worst, of_budget)
            print(f"{label:<44} {dec:>10.1f} {growth:>9.1f} {ratio:>9.2f} {of_budget:>8.2f} "
                  f"{r['seconds']:>6.2f}  {r['outcome']}")
    finally:
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
    print(f"worst peak / budget: {worst:.2f} ({'within' if worst <= 1.0 else 'OVER'} the stated multiple)")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
