"""Reduced-resolution decoding (cxr_desktop.imaging.reduced) and the model's view of a file.

The fast path must (a) decode exactly what the full decoder decodes, only smaller,
(b) keep the stored geometry for heatmaps and size checks, (c) step aside (full
decode) wherever it could change what the model sees, and (d) be used by every
path that feeds the model, so a file gets the same score everywhere.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from cxr_desktop.errors import ImageError
from cxr_desktop.imaging import load_image
from cxr_desktop.imaging.reduced import (
    j2k_header, jpeg2000_reduced, jpeg_reduced, may_reduce, reduction_levels,
)
from cxr_desktop.preprocess import decode_min_side, load_for_model, model_image, unit_grey

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real test data not found at {DATA} (see README)")


def _radiograph(rows: int, cols: int, bits: int = 12) -> np.ndarray:
    """A smooth, radiograph-like 12-bit image with some edges (deterministic)."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    img = 0.5 + 0.3 * np.sin(x / 37.0) * np.cos(y / 53.0)
    img[rows // 3: rows // 2, cols // 4: cols // 2] += 0.15  # a block with sharp edges
    img += np.random.default_rng(0).normal(0, 0.01, img.shape).astype(np.float32)
    top = (1 << bits) - 1
    return np.clip(np.rint(img * top), 0, top).astype(np.uint16)


def _j2k(arr: np.ndarray, bits: int = 12) -> bytes:
    import openjpeg

    return bytes(openjpeg.encode(arr, bits_stored=bits))  # lossless J2K codestream


def _j2k_dicom(path: Path, arr: np.ndarray, *, window: bool = True, bits: int = 12) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEG2000Lossless
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = 2048, 4000
    ds.PixelData = encapsulate([_j2k(arr, bits)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------- the codec layer


def test_reduction_levels_keep_both_sides_at_least_min_side() -> None:
    assert reduction_levels(2000, 1800, 448, 5) == 2  # 500 x 450; 3 levels would give 250 x 225
    assert reduction_levels(2000, 1800, 448, 1) == 1  # capped by the codestream's levels
    assert reduction_levels(800, 3000, 448, 5) == 0  # short side already below 2 x min_side
    for rows, cols, m in [(1955, 1841, 224), (1001, 777, 100), (4096, 4096, 448)]:
        r = reduction_levels(rows, cols, m, 8)
        assert min(math.ceil(rows / 2**r), math.ceil(cols / 2**r)) >= m
        assert min(math.ceil(rows / 2 ** (r + 1)), math.ceil(cols / 2 ** (r + 1))) < m


@pytest.mark.parametrize("shape", [(1001, 777), (960, 1280), (1023, 1025)])
def test_jpeg2000_reduced_is_the_codec_low_pass_at_ceil_size(shape: tuple[int, int]) -> None:
    arr = _radiograph(*shape)
    data = _j2k(arr)
    hdr = j2k_header(data)
    assert hdr is not None and (hdr.rows, hdr.columns) == shape and hdr.precision == 12 and hdr.levels >= 2
    # level 0 through the fast path is the stored image itself, bit for bit (precision undone)
    np.testing.assert_array_equal(jpeg2000_reduced(data, min_side=1, levels=0), arr)
    out = jpeg2000_reduced(data, min_side=150)
    r = reduction_levels(*shape, 150, hdr.levels)
    assert r >= 2
    assert out is not None and out.shape == (math.ceil(shape[0] / 2**r), math.ceil(shape[1] / 2**r))
    assert out.dtype == np.uint16 and out.max() <= 4095  # same units and bit depth
    # a low-pass version of the image: close to an area average of it (in 12-bit units)
    ref = cv2.resize(arr.astype(np.float32), out.shape[::-1], interpolation=cv2.INTER_AREA)
    core = (slice(4, -4), slice(4, -4))  # the ceil-sized last row/column averages fewer pixels
    assert np.abs(out.astype(np.float32) - ref)[core].mean() < 0.01 * 4095


def test_jpeg2000_fast_path_steps_aside() -> None:
    arr = _radiograph(600, 500)
    data = _j2k(arr)
    assert jpeg2000_reduced(data, min_side=400) is None  # no level keeps both sides >= 400
    assert jpeg2000_reduced(data[: len(data) // 3], min_side=100) is None  # truncated: full decoder reports it
    assert jpeg2000_reduced(b"\xff\xd8\xff\xe0 not j2k", min_side=100) is None
    colour = np.stack([arr, arr // 2, arr // 3], axis=-1)
    import openjpeg

    assert jpeg2000_reduced(bytes(openjpeg.encode(colour, bits_stored=12)), min_side=100) is None


def test_jpeg_reduced_uses_dct_scaling() -> None:
    from PIL import Image

    grey = (_radiograph(1200, 1000, bits=8)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="JPEG", quality=95)
    out = jpeg_reduced(buf.getvalue(), min_side=250)
    assert out is not None and out.shape == (300, 250)  # 1/4: both sides >= 250, 1/8 would not be
    ref = cv2.resize(grey.astype(np.float32), (250, 300), interpolation=cv2.INTER_AREA)
    assert np.abs(out.astype(np.float32) - ref).mean() < 2.0


# --------------------------------------------------------------------------- load_image(min_side=...)


def test_dicom_j2k_with_window_decodes_small_and_keeps_its_geometry(tmp_path: Path) -> None:
    arr = _radiograph(1001, 777)
    path = _j2k_dicom(tmp_path / "dx.dcm", arr)
    full = load_image(path)
    small = load_image(path, min_side=224)
    assert full.source_shape is None and full.full_shape == (1001, 777)
    assert small.shape == (501, 389) and small.full_shape == (1001, 777)
    assert small.window == full.window and small.photometric == full.photometric
    a, b = unit_grey(full, 112), unit_grey(small, 112)
    assert np.abs(a - b).mean() < 1.0 / 255


def test_dicom_without_window_is_decoded_in_full(tmp_path: Path) -> None:
    """Its default window is the data range, which a low-pass decode would narrow."""
    path = _j2k_dicom(tmp_path / "nowin.dcm", _radiograph(1001, 777), window=False)
    image = load_image(path, min_side=224)
    assert image.shape == (1001, 777) and image.source_shape is None


def test_damaged_j2k_fails_the_same_with_and_without_min_side(tmp_path: Path) -> None:
    path = _j2k_dicom(tmp_path / "dx.dcm", _radiograph(700, 700))
    raw = path.read_bytes()
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(raw[: len(raw) - len(raw) // 4])
    with pytest.raises(ImageError) as full_err:
        load_image(bad)
    with pytest.raises(ImageError) as small_err:
        load_image(bad, min_side=100)
    assert small_err.value.reason == full_err.value.reason


def test_png_and_16_bit_are_never_reduced(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), _radiograph(1200, 1000, bits=16))
    image = load_image(png, min_side=100)
    assert image.shape == (1200, 1000) and image.source_shape is None
    assert not may_reduce(image, 100)


@needs_data
@pytest.mark.slow
def test_real_files_give_the_same_model_input_within_a_grey_level() -> None:
    """Every real JPEG and JPEG 2000 / JPEG Baseline DICOM in ../shared/data: the model input
    from the reduced decode (min side 2 x input) differs from the full decode's by < 2.5 grey
    levels on average for every file and < 1 for the median file (for scale: resizing the full
    image with Pillow's Lanczos instead of INTER_AREA moves it by up to ~1 grey level), and the
    stored size is kept (full_shape)."""
    files = sorted((DATA / "cxr").rglob("*.jpg")) + sorted((DATA / "cxr").rglob("*.dcm")) + \
        sorted((DATA / "dicom").glob("*J2K*.dcm"))
    means = []
    for path in files:
        try:
            full = load_image(path)
        except ImageError:
            continue
        for size in (112, 224):
            small = load_image(path, min_side=decode_min_side(size))
            assert small.full_shape == full.shape, path.name
            assert min(small.shape) >= min(decode_min_side(size), min(full.shape)), path.name
            if small.shape == full.shape:
                continue
            diff = np.abs(unit_grey(full, size) - unit_grey(small, size)).mean() * 255
            assert diff < 2.5, (path.name, size, diff)
            means.append(diff)
    assert len(means) >= 40  # the fast path is really taken on the real files (JPEG and J2K)
    assert float(np.median(means)) < 1.0


@needs_data
def test_pillow_level_0_equals_pydicom_on_real_j2k() -> None:
    """The fast path's decoder agrees with pydicom's bit for bit on the real greyscale J2K files."""
    import pydicom
    from pydicom.encaps import get_frame

    checked = 0
    for path in sorted((DATA / "dicom").glob("*J2K*.dcm")):
        ds = pydicom.dcmread(path)
        if ds.SamplesPerPixel != 1 or ds.PixelRepresentation != 0:
            continue
        data = bytes(get_frame(ds.PixelData, 0, number_of_frames=1))
        np.testing.assert_array_equal(jpeg2000_reduced(data, min_side=1, levels=0), ds.pixel_array, path.name)
        checked += 1
    assert checked >= 3


@needs_data
def test_real_j2k_radiograph_takes_the_fast_path() -> None:
    path = DATA / "dicom" / "RG1_J2KI.dcm"  # 1955 x 1841, 15-bit MONOCHROME1 with a window
    image = load_for_model(str(path), input_size=224)
    assert image.full_shape == (1955, 1841) and image.shape == (489, 461)
    assert image.invert_for_display


# --------------------------------------------------------------------------- one model view everywhere


@needs_data
def test_viewer_and_screening_give_the_same_score(tmp_path: Path) -> None:
    """The viewer's prediction (model_image of the full image) equals the screening row's score
    for reduced files, and its heatmap has the stored geometry."""
    from cxr_desktop.inference.engine import load_engine
    from cxr_desktop.paths import default_model_path
    from cxr_desktop.screening.runner import ScreenOptions, screen_folder

    model = default_model_path()
    if not model.exists():
        pytest.skip(f"bundled model not found at {model}")
    engine = load_engine(model)
    folder = tmp_path / "in"
    folder.mkdir()
    picks = [DATA / "dicom" / "RG1_J2KI.dcm"] + sorted((DATA / "cxr").rglob("COVID-0001*.jpg"))[:2]
    for p in picks:
        (folder / p.name).symlink_to(p)
    out = tmp_path / "out.csv"
    for _ in screen_folder(folder, engine, out, options=ScreenOptions(batch_size=2, workers=0, show_anyway=True)):
        pass
    import csv

    with open(out, newline="", encoding="utf-8-sig") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    for p in picks:
        full = load_image(folder / p.name)
        view = model_image(full, engine.card.input_size)
        assert view.shape != full.shape, p.name  # the reduced decode was used
        result = engine.predict(view, cam=True)
        assert result.heatmap is not None and result.heatmap.shape == full.shape
        assert rows[p.name]["status"] in ("ok", "out_of_scope") and rows[p.name]["score"], rows[p.name]
        assert float(rows[p.name]["score"]) == pytest.approx(result.prediction.score, abs=5e-4)


def test_may_reduce_matches_what_load_image_does(tmp_path: Path) -> None:
    """The viewer reads a file again only when that really gives a smaller decode."""
    with_window = _j2k_dicom(tmp_path / "win.dcm", _radiograph(1001, 777))
    without = _j2k_dicom(tmp_path / "nowin.dcm", _radiograph(1001, 777), window=False)
    for path in (with_window, without):
        full = load_image(path)
        small = load_image(path, min_side=224)
        assert may_reduce(full, 224) == (small.shape != full.shape), path.name
    assert may_reduce(load_image(with_window), 224)
    assert not may_reduce(load_image(without), 224)
    assert not may_reduce(load_image(with_window), 400)  # 777 < 2 x 400: nothing to gain
