"""Cost of the completeness probe for JPEG Lossless / 12-bit JPEG DICOM frames (issue 16, point 1).

``integrity.check_jpeg_probe`` decodes a frame twice with libjpeg-turbo (imagecodecs). This prints,
per file, the time of that check and of a whole ``load_image`` with and without it (baseline: the
same code with the probe switched off), best of N runs each, the two loads interleaved.

Files: ../shared/data/dicom/JPEG-LL.dcm (the largest lossless JPEG there, 16-bit 1024x256) and a
generated 12-bit lossless 2500x3000 DICOM (a radiograph-sized frame).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_jpeg_probe.py [--runs 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
from pydicom.encaps import encapsulate, get_frame

from cxr_desktop.imaging import integrity, load_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dicom"


def big_12bit(folder: Path) -> Path:
    """JPEG-LL.dcm's header with a 2500 x 3000 12-bit lossless frame (smooth field + noise)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:3000, 0:2500].astype(np.float32)
    field = (np.sin(yy / 300) + np.cos(xx / 170) + 2) / 4 * 4000
    pixels = np.clip(field + rng.normal(0, 20, field.shape), 0, 4095).astype(np.uint16)
    frame = imagecodecs.jpeg8_encode(pixels, lossless=True, bitspersample=12, predictor=1)
    ds = pydicom.dcmread(DATA / "JPEG-LL.dcm")
    ds.PixelData = encapsulate([frame + b"\x00" * (len(frame) % 2)])
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    ds.save_as(folder / "big12.dcm")
    return folder / "big12.dcm"


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def load_times(path: Path, runs: int) -> tuple[float, float]:
    """Best load time with and without the probe, runs interleaved (the machine is shared)."""
    probe = integrity.check_jpeg_probe
    with_probe, without = [], []
    for _ in range(runs):
        with_probe.append(timed(lambda: load_image(path)))
        integrity.check_jpeg_probe = lambda data: None
        try:
            without.append(timed(lambda: load_image(path)))
        finally:
            integrity.check_jpeg_probe = probe
    return min(with_probe), min(without)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = [DATA / "JPEG-LL.dcm", big_12bit(Path(tmp))]
        print(f"{'file':14s} {'frame':>9s} {'probe s':>8s} {'load s':>8s} {'load, no probe s':>16s} "
              f"{'load / no-probe':>15s}")
        for path in files:
            ds = pydicom.dcmread(path)
            frame = bytes(get_frame(ds.PixelData, 0, number_of_frames=1))
            assert integrity.check_jpeg(frame, require_eoi=True) is None
            load_image(path)  # warm-up (imports)
            t_probe = min(timed(lambda: integrity.check_jpeg_probe(frame)) for _ in range(args.runs))
            t_load, t_base = load_times(path, args.runs)
            print(f"{path.name:14s} {ds.Rows}x{ds.Columns:<4d} {t_probe:8.3f} {t_load:8.3f} {t_base:16.3f} "
                  f"{t_load / t_base:15.2f}")


if __name__ == "__main__":
    main()
