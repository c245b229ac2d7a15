"""Fuzz: randomly damaged copies of the shared files never raise anything but ImageError.

Seeded, so a failure names a reproducible case (source file, mutation, seed). Small
inputs keep every case fast; a hang is caught by pytest-timeout.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from cxr_desktop.errors import ImageError, Reason
from cxr_desktop.imaging import is_image_file, load_image, probe

SEED = 20240611
CASES = 300

# Small real files: every container/codec path (native, big endian, RLE, JPEG baseline,
# JPEG lossless, JPEG-LS, JPEG 2000 lossless/lossy, palette, multi-frame, float, no preamble).
DICOM_SOURCES = [
    "emri_small.dcm", "emri_small_big_endian.dcm", "emri_small_RLE.dcm",
    "emri_small_jpeg_ls_lossless.dcm", "emri_small_jpeg_2k_lossless.dcm",
    "JLSL_08_07_0_1F.dcm", "JLSL_16_15_1_1F.dcm", "liver_j2k.dcm", "liver_rle.dcm",
    "SC_rgb.dcm", "SC_rgb_expb_2frame.dcm", "SC_ybr_full_uncompressed.dcm", "OBXXXX1A_rle.dcm",
    "US1_J2KI.dcm", "parametric_map_float.dcm", "JLSL_RGB_ILV0.dcm", "color-pl.dcm",
]
CXR_SOURCES = ["siim_pneumothorax_sample.dcm", "16747_3_1.jpg"]


def _raster_sources(cxr_dir: Path, out: Path) -> list[Path]:
    """Small PNG / TIFF files made from a real radiograph (fast to decode when mutated)."""
    grey = cv2.imread(str(cxr_dir / "00000001_000.png"), cv2.IMREAD_UNCHANGED)
    small = cv2.resize(grey, (96, 96), interpolation=cv2.INTER_AREA)
    paths = []
    for name, arr in [("grey8.png", small), ("grey16.png", small.astype(np.uint16) * 257),
                      ("grey16.tif", small.astype(np.uint16) * 200),
                      ("rgb8.png", cv2.cvtColor(small, cv2.COLOR_GRAY2BGR))]:
        p = out / name
        cv2.imwrite(str(p), arr)
        paths.append(p)
    return paths


def _mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One random mutation: byte flips (header or body), truncation, zeroed block, bogus lengths."""
    buf = bytearray(data)
    kind = rng.choice(["flip_header", "flip_body", "truncate", "zero_block", "bogus_int", "mixed"])
    n = len(buf)
    header = min(n, 1024)
    if kind in ("flip_header", "mixed"):
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(header)] ^= 1 << rng.randrange(8)
    if kind in ("flip_body", "mixed"):
        for _ in range(rng.randint(1, 32)):
            buf[rng.randrange(n)] = rng.randrange(256)
    if kind == "zero_block":
        start = rng.randrange(n)
        buf[start:start + rng.randint(1, 4096)] = b"\x00" * len(buf[start:start + rng.randint(1, 4096)])
    if kind == "bogus_int":  # a huge or odd 2/4-byte value in the header: lengths, sizes, counts
        pos = rng.randrange(max(header - 4, 1))
        width = rng.choice([2, 4])
        buf[pos:pos + width] = rng.choice([b"\xff" * width, b"\x00" * width,
                                           rng.randrange(1 << (8 * width)).to_bytes(width, "little")])
    if kind in ("truncate", "mixed"):
        buf = buf[: rng.randrange(1, n)]
    return bytes(buf), kind


@pytest.mark.timeout(120)
def test_mutated_files_only_raise_image_error(cxr_dir: Path, dicom_dir: Path, tmp_path: Path) -> None:
    sources = [dicom_dir / n for n in DICOM_SOURCES] + [cxr_dir / n for n in CXR_SOURCES]
    sources = [p for p in sources if p.exists()] + _raster_sources(cxr_dir, tmp_path)
    blobs = {p.name: p.read_bytes() for p in sources}
    rng = random.Random(SEED)
    failures: list[str] = []
    outcomes: dict[str, int] = {}
    slowest = (0.0, "")
    start = time.perf_counter()
    for i in range(CASES):
        name = rng.choice(sorted(blobs))
        data, kind = _mutate(blobs[name], rng)
        case = tmp_path / f"case{i:03d}"  # no extension: the format is sniffed
        case.write_bytes(data)
        t0 = time.perf_counter()
        try:
            img = load_image(case)
            assert img.pixels.ndim == 2 and img.pixels.dtype == np.float32
            assert np.isfinite(img.pixels).all()
            outcomes["decoded"] = outcomes.get("decoded", 0) + 1
        except ImageError as exc:
            assert isinstance(exc.reason, Reason) and exc.message
            outcomes[exc.reason.value] = outcomes.get(exc.reason.value, 0) + 1
        except BaseException as exc:  # noqa: BLE001 - the point of the test
            failures.append(f"case {i} ({name}, {kind}): {type(exc).__name__}: {exc}")
        # probe and is_image_file must also stay inside their contracts
        try:
            probe(case)
        except ImageError:
            pass
        except BaseException as exc:  # noqa: BLE001
            failures.append(f"probe case {i} ({name}, {kind}): {type(exc).__name__}: {exc}")
        assert isinstance(is_image_file(case), bool)
        took = time.perf_counter() - t0
        slowest = max(slowest, (took, f"case {i} ({name}, {kind})"))
        case.unlink()
    elapsed = time.perf_counter() - start
    print(f"\nfuzz: {CASES} cases in {elapsed:.1f}s, outcomes {outcomes}, slowest {slowest[1]} "
          f"{slowest[0]:.2f}s")
    assert not failures, "\n".join(failures)
    assert slowest[0] < 10.0, f"a damaged file took {slowest[0]:.1f}s: {slowest[1]}"
    assert elapsed < 40.0
    # the mutations really exercise both paths
    assert outcomes.get("decoded", 0) > 0 and sum(v for k, v in outcomes.items() if k != "decoded") > 0
