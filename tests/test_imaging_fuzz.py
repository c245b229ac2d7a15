"""Fuzz: randomly damaged copies of the shared files never raise anything but ImageError.

A small seeded sample of bench/fuzz_loader.py's mutations (same ``mutate`` code: bit
flips, truncations with and without end markers, cut compressed frames, zeroed blocks,
inflated lengths and dimensions, duplicated chunks), run in-process on small sources so
that it takes seconds. The bench script runs tens of thousands of cases in worker
processes with time and memory caps. A failure names a reproducible case (seed, index).
"""

from __future__ import annotations

import importlib.util
import random
import sys
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


def _fuzz_module():
    """bench/fuzz_loader.py, imported by path (bench/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "fuzz_loader.py"
    spec = importlib.util.spec_from_file_location("fuzz_loader", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_loader", module)
    spec.loader.exec_module(module)
    return module


def _raster_sources(cxr_dir: Path, out: Path) -> list[Path]:
    """Small PNG / TIFF / JPEG files made from a real radiograph (fast to decode when mutated)."""
    grey = cv2.imread(str(cxr_dir / "00000001_000.png"), cv2.IMREAD_UNCHANGED)
    small = cv2.resize(grey, (96, 96), interpolation=cv2.INTER_AREA)
    paths = []
    for name, arr in [("grey8.png", small), ("grey16.png", small.astype(np.uint16) * 257),
                      ("grey16.tif", small.astype(np.uint16) * 200),
                      ("rgb8.png", cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)),
                      ("grey8.jpg", small)]:
        p = out / name
        cv2.imwrite(str(p), arr)
        paths.append(p)
    return paths


def test_mutations_are_seeded_and_cover_every_kind() -> None:
    fuzz = _fuzz_module()
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    a = [fuzz.mutate(data, fuzz.case_rng(5, i)) for i in range(200)]
    b = [fuzz.mutate(data, fuzz.case_rng(5, i)) for i in range(200)]
    assert a == b  # a case is reproducible from (seed, index) alone
    kinds = {kind.split(":")[0] for _, kind in a}
    assert kinds == set(fuzz.MUTATIONS)
    assert sum(m != data for m, _ in a) > 150


@pytest.mark.timeout(120)
def test_mutated_files_only_raise_image_error(cxr_dir: Path, dicom_dir: Path, tmp_path: Path) -> None:
    fuzz = _fuzz_module()
    sources = [dicom_dir / n for n in DICOM_SOURCES] + [cxr_dir / n for n in CXR_SOURCES]
    sources = sorted(p for p in sources if p.exists()) + _raster_sources(cxr_dir, tmp_path)
    blobs = {p: p.read_bytes() for p in sources}
    failures: list[str] = []
    outcomes: dict[str, int] = {}
    slowest = (0.0, "")
    start = time.perf_counter()
    for i in range(CASES):
        src, data, kind = fuzz.make_case(sources, blobs, SEED, i)
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
            failures.append(f"case {i} ({src.name}, {kind}): {type(exc).__name__}: {exc}")
        # probe and is_image_file must also stay inside their contracts
        try:
            probe(case)
        except ImageError:
            pass
        except BaseException as exc:  # noqa: BLE001
            failures.append(f"probe case {i} ({src.name}, {kind}): {type(exc).__name__}: {exc}")
        assert isinstance(is_image_file(case), bool)
        took = time.perf_counter() - t0
        slowest = max(slowest, (took, f"case {i} ({src.name}, {kind})"))
        case.unlink()
    elapsed = time.perf_counter() - start
    print(f"\nfuzz: {CASES} cases in {elapsed:.1f}s, outcomes {outcomes}, slowest {slowest[1]} "
          f"{slowest[0]:.2f}s")
    assert not failures, "\n".join(failures)
    assert slowest[0] < 10.0, f"a damaged file took {slowest[0]:.1f}s: {slowest[1]}"
    # the mutations really exercise both paths, and cut data is recognised as such
    assert outcomes.get("decoded", 0) > 0 and outcomes.get("truncated", 0) > 0
    assert sum(v for k, v in outcomes.items() if k not in ("decoded", "truncated")) > 0


def test_cut_frames_closed_with_end_markers_are_refused(cxr_dir: Path, dicom_dir: Path, tmp_path: Path) -> None:
    """The harness's 'cut_frame_end_marker' on JPEG / JPEG 2000 DICOM: always truncated, never scored."""
    fuzz = _fuzz_module()
    names = [cxr_dir / "siim_pneumothorax_sample.dcm", dicom_dir / "US1_J2KI.dcm",
             dicom_dir / "JPGLosslessP14SV1_1s_1f_8b.dcm"]
    rng = random.Random(3)
    for src in (p for p in names if p.exists()):
        for k in range(3):
            buf = bytearray(src.read_bytes())
            fuzz._cut_frame_end_marker(buf, rng, "dicom")
            path = tmp_path / f"{src.stem}_{k}.dcm"
            path.write_bytes(bytes(buf))
            with pytest.raises(ImageError) as info:
                load_image(path)
            assert info.value.reason is Reason.TRUNCATED, (src.name, info.value.message)
