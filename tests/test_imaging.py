"""Image pipeline on real data (../shared/data) and on small files built here.

The real files come through the ``shared_data`` / ``cxr_dir`` / ``dicom_dir`` fixtures;
synthetic DICOMs are built with pydicom, rasters with OpenCV / Pillow, in ``tmp_path``.
"""

from __future__ import annotations

import shutil
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder, pixel_array
from pydicom.pixels.processing import apply_modality_lut, apply_windowing
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from cxr_desktop.errors import ImageError, Reason
from cxr_desktop.imaging import (
    DEFAULT_MAX_PIXELS,
    ImageInfo,
    StudyImage,
    is_image_file,
    load_image,
    probe,
    read_dicom_tags,
    sniff_format,
    to_unit,
)
from cxr_desktop.imaging.dicom_metadata import parse_age
from cxr_desktop.preprocess import preprocess, unit_grey
from dicom_builders import new_dataset

NON_IMAGE_SUFFIXES = {".md", ".csv", ".txt"}
SECRET_NAME = "Doe^Jane"
SECRET_ID = "PID-SECRET-4711"


# --------------------------------------------------------------------------- helpers


def shared_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() not in NON_IMAGE_SUFFIXES)


def pydicom_decodes(path: Path) -> bool:
    """Whether pydicom with the installed plugins decodes frame 0 (ground truth for refusals)."""
    try:
        pixel_array(str(path), index=0)
        return True
    except Exception:
        return False


def make_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2",
               bits_stored: int | None = None, tsyntax: str = ExplicitVRLittleEndian, **attrs) -> Path:
    """A small Secondary Capture DICOM file with the given pixels and attributes."""
    ds = new_dataset()
    ds.PatientName = SECRET_NAME
    ds.PatientID = SECRET_ID
    ds.Modality = "OT"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    for key, value in attrs.items():
        if isinstance(value, tuple) and len(value) == 3 and isinstance(value[0], int):
            ds.add_new(*value)  # (tag, VR, value) for ambiguous-VR elements
        else:
            setattr(ds, key, value)
    if tsyntax != ExplicitVRLittleEndian:
        if tsyntax == DeflatedExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = tsyntax
        else:
            ds.compress(tsyntax)
    ds.save_as(path, enforce_file_format=True)
    return path


def relabel_syntax(src: Path, dst: Path, uid: str) -> Path:
    """Copy of ``src`` claiming a 23-character compressed transfer syntax pydicom cannot write
    (written as MPEG2's UID, of the same length, then byte-patched)."""
    ds = pydicom.dcmread(src)
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.PixelData = encapsulate([ds.PixelData])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.save_as(dst)
    placeholder = b"1.2.840.10008.1.2.4.100\x00"
    data = dst.read_bytes()
    assert len(uid) == 23 and data.count(placeholder) == 1
    dst.write_bytes(data.replace(placeholder, uid.encode() + b"\x00"))
    return dst


def write_png_chunks(path: Path, width: int, height: int, *, bit_depth: int = 8, colour_type: int = 0,
                     idat: bytes = b"") -> Path:
    """A PNG whose IHDR declares any size (valid CRCs), with the given IDAT payload."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat or zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def assert_refused(path: Path, reason: Reason, **kwargs) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_image(path, **kwargs)
    assert info.value.reason is reason, f"{path.name}: {info.value.reason} ({info.value})"
    assert info.value.message.endswith(".") and len(info.value.message) > 40
    return info.value


# --------------------------------------------------------------------------- 1. every shared file


@pytest.mark.slow
def test_every_shared_file_decodes_or_is_refused(shared_data: Path) -> None:
    files = shared_files(shared_data)
    assert len(files) > 100
    refused: dict[str, Reason] = {}
    for path in files:
        try:
            img = load_image(path)
        except ImageError as exc:
            assert isinstance(exc.reason, Reason) and exc.message
            refused[path.relative_to(shared_data).as_posix()] = exc.reason
            continue
        info = probe(path)
        assert isinstance(img, StudyImage)
        assert img.pixels.ndim == 2 and img.pixels.dtype == np.float32, path.name
        assert np.isfinite(img.pixels).all(), path.name
        assert img.pixels.shape == (info.rows, info.columns), path.name
        assert img.frame_count == info.frames and img.frame_index == 0
        assert img.window.width > 0 and img.windows and img.window in img.windows
        unit = to_unit(img)
        assert unit.shape == img.shape and 0.0 <= unit.min() and unit.max() <= 1.0
        if img.rgb is not None:
            assert img.rgb.dtype == np.uint8 and img.rgb.shape == (*img.shape, 3)
    print("\nrefused:", {k: v.value for k, v in refused.items()})
    # a file is refused exactly when pydicom itself (with the installed plugins) cannot decode it
    cannot = {p.relative_to(shared_data).as_posix() for p in files
              if sniff_format(p.read_bytes()[:512]) == "dicom" and not pydicom_decodes(p)}
    assert set(refused) == cannot


def test_liver_rle_refusal_follows_decoder_availability(dicom_dir: Path) -> None:
    path = dicom_dir / "liver_rle.dcm"
    if not get_decoder(RLELossless).is_available:
        err = assert_refused(path, Reason.UNSUPPORTED_TRANSFER_SYNTAX)
        assert "RLE Lossless" in err.message and "pylibjpeg-rle" in err.message
    elif pydicom_decodes(path):  # a future decoder reads 1-bit RLE: then so must we
        img = load_image(path, frame=2)
        np.testing.assert_array_equal(img.pixels, load_image(dicom_dir / "liver.dcm", frame=2).pixels)
    else:
        err = assert_refused(path, Reason.UNSUPPORTED_TRANSFER_SYNTAX)
        assert "RLE Lossless" in err.message and "1 bit" in err.message
        # the other encodings of the same segmentation do decode
        for name in ("liver.dcm", "liver_expb.dcm", "liver_j2k.dcm"):
            assert load_image(dicom_dir / name).frame_count == 3


# --------------------------------------------------------------------------- 2. transfer syntaxes


LOSSLESS_GROUPS = [
    (["emri_small.dcm", "emri_small_big_endian.dcm", "emri_small_RLE.dcm",
      "emri_small_jpeg_ls_lossless.dcm", "emri_small_jpeg_2k_lossless.dcm"], [0, 1, 9]),
    (["OBXXXX1A.dcm", "OBXXXX1A_expb.dcm", "OBXXXX1A_rle.dcm"], [0]),
    (["OBXXXX1A_2frame.dcm", "OBXXXX1A_expb_2frame.dcm", "OBXXXX1A_rle_2frame.dcm"], [0, 1]),
    (["MR2_UNCR.dcm", "MR2_J2KR.dcm"], [0]),
    (["MR2_UNCI.dcm", "MR2_J2KI.dcm"], [0]),  # UNCI = the decompressed lossy image
    (["US1_UNCR.dcm", "US1_J2KR.dcm"], [0]),
    (["US1_UNCI.dcm", "US1_J2KI.dcm"], [0]),
    (["693_UNCR.dcm", "693_J2KR.dcm"], [0]),
    (["SC_rgb.dcm", "SC_rgb_expb.dcm", "SC_rgb_gdcm2k_uncompressed.dcm", "SC_rgb_2frame.dcm"], [0]),
    (["SC_rgb_2frame.dcm", "SC_rgb_expb_2frame.dcm"], [0, 1]),
    (["SC_rgb_16bit.dcm", "SC_rgb_expb_16bit.dcm"], [0]),
    (["SC_rgb_16bit_2frame.dcm", "SC_rgb_expb_16bit_2frame.dcm"], [0, 1]),
    (["JLSL_RGB_ILV0.dcm", "JLSL_RGB_ILV1.dcm", "JLSL_RGB_ILV2.dcm"], [0]),
    (["color-pl.dcm", "color-px.dcm"], [0]),
    (["liver.dcm", "liver_expb.dcm", "liver_j2k.dcm"], [0, 2]),
]


@pytest.mark.parametrize("names,frames", LOSSLESS_GROUPS, ids=[g[0][0] for g in LOSSLESS_GROUPS])
def test_lossless_transfer_syntaxes_decode_identically(dicom_dir: Path, names: list[str], frames: list[int]) -> None:
    for frame in frames:
        ref = load_image(dicom_dir / names[0], frame=frame)
        for name in names[1:]:
            other = load_image(dicom_dir / name, frame=frame)
            np.testing.assert_array_equal(other.pixels, ref.pixels, err_msg=f"{name} frame {frame}")
            assert (other.rgb is None) == (ref.rgb is None)
            if ref.rgb is not None:
                np.testing.assert_array_equal(other.rgb, ref.rgb, err_msg=name)
            assert other.window == ref.window


def test_frames_of_multiframe_files_differ(dicom_dir: Path) -> None:
    for name in ("emri_small.dcm", "OBXXXX1A_2frame.dcm", "SC_rgb_2frame.dcm", "liver.dcm"):
        a, b = load_image(dicom_dir / name, frame=0), load_image(dicom_dir / name, frame=1)
        assert not np.array_equal(a.pixels, b.pixels), name
        assert (a.frame_index, b.frame_index) == (0, 1)


@pytest.mark.parametrize("reference,lossy", [
    ("MR2_UNCR.dcm", "MR2_J2KI.dcm"), ("US1_UNCR.dcm", "US1_J2KI.dcm"),
    ("SC_rgb.dcm", "SC_rgb_dcmtk_ebcr_dcmd.dcm"), ("SC_rgb.dcm", "SC_rgb_dcmtk_ebcyn1_dcmd.dcm"),
    ("SC_rgb.dcm", "SC_rgb_dcmtk_ebcys4_dcmd.dcm"), ("SC_rgb.dcm", "SC_ybr_full_uncompressed.dcm"),
])
def test_lossy_variants_are_close(dicom_dir: Path, reference: str, lossy: str) -> None:
    ref, other = load_image(dicom_dir / reference), load_image(dicom_dir / lossy)
    diff = np.abs(ref.pixels.astype(np.float64) - other.pixels)
    value_range = float(ref.pixels.max() - ref.pixels.min())
    assert diff.mean() < 0.01 * value_range
    assert np.quantile(diff, 0.99) < 0.1 * value_range
    assert (ref.rgb is None) == (other.rgb is None)


def test_8_and_16_bit_rgb_agree(dicom_dir: Path) -> None:
    a, b = load_image(dicom_dir / "SC_rgb.dcm"), load_image(dicom_dir / "SC_rgb_16bit.dcm")
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_allclose(b.pixels, a.pixels * 257.0, rtol=1e-5)
    np.testing.assert_allclose(to_unit(a), to_unit(b), atol=1e-5)


@pytest.mark.parametrize("tsyntax", [RLELossless, JPEG2000Lossless, DeflatedExplicitVRLittleEndian])
def test_signed_image_survives_encodings(tmp_path: Path, tsyntax: str) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(-2000, 3000, size=(40, 56)).astype(np.int16)
    path = make_dicom(tmp_path / "enc.dcm", pixels, tsyntax=tsyntax)
    img = load_image(path)
    np.testing.assert_array_equal(img.pixels, pixels.astype(np.float32))
    assert img.metadata["transfer_syntax_uid"] == str(tsyntax)


# --------------------------------------------------------------------------- 3. MONOCHROME1


def test_fake_monochrome1_only_relabels_the_monochrome2_pixels(cxr_dir: Path) -> None:
    """fake_monochrome1.dcm holds the *same stored values* as the MONOCHROME2 file; only the tag
    says MONOCHROME1. Honouring the tag (PS3.3: minimum value = white) therefore shows it
    inverted. The general rule is checked against a properly inverted copy below."""
    m2 = pydicom.dcmread(cxr_dir / "siim_pneumothorax_sample.dcm")
    m1 = pydicom.dcmread(cxr_dir / "fake_monochrome1.dcm")
    assert m1.PhotometricInterpretation == "MONOCHROME1" and m2.PhotometricInterpretation == "MONOCHROME2"
    assert m1.PixelData == m2.PixelData and "WindowCenter" not in m1 and "VOILUTSequence" not in m1
    a, b = load_image(cxr_dir / "siim_pneumothorax_sample.dcm"), load_image(cxr_dir / "fake_monochrome1.dcm")
    assert b.invert_for_display and not a.invert_for_display
    np.testing.assert_array_equal(a.pixels, b.pixels)
    assert np.abs(unit_grey(b, 224) - (1.0 - unit_grey(a, 224))).max() <= 1 / 255


@pytest.mark.parametrize("window", [None, (100.0, 180.0, "LINEAR_EXACT")])
def test_monochrome1_inverted_copy_matches_monochrome2(cxr_dir: Path, tmp_path: Path, window) -> None:
    """A MONOCHROME1 file whose stored values are the inversion (max - v) of a MONOCHROME2 image
    gives the same model input, with the auto window and with a file window (mirrored)."""
    m2_path = cxr_dir / "siim_pneumothorax_sample.dcm"
    stored = pydicom.dcmread(m2_path).pixel_array
    extra: dict = {}
    if window:
        c, w, fn = window
        extra = {"WindowCenter": 255 - c, "WindowWidth": w, "VOILUTFunction": fn}
    m1_path = make_dicom(tmp_path / "m1.dcm", (255 - stored).astype(np.uint8), photometric="MONOCHROME1", **extra)
    m2 = load_image(m2_path)
    if window:
        m2 = load_image(make_dicom(tmp_path / "m2.dcm", stored, WindowCenter=window[0],
                                   WindowWidth=window[1], VOILUTFunction=window[2]))
    m1 = load_image(m1_path)
    assert m1.invert_for_display
    assert np.abs(unit_grey(m1, 224) - unit_grey(m2, 224)).max() <= 1 / 255
    np.testing.assert_allclose(preprocess(m1), preprocess(m2), atol=1 / 255 / 0.224 + 1e-6)


def test_rg1_monochrome1_radiograph(dicom_dir: Path) -> None:
    img = load_image(dicom_dir / "RG1_J2KI.dcm")
    assert img.photometric == "MONOCHROME1" and img.invert_for_display
    unit = to_unit(img)
    # in MONOCHROME1 the largest values are shown darkest
    hi, lo = np.unravel_index(np.argmax(img.pixels), img.shape), np.unravel_index(np.argmin(img.pixels), img.shape)
    assert unit[hi] < unit[lo]


# --------------------------------------------------------------------------- 4. grey vs colour


@pytest.mark.parametrize("name", ["16747_3_1.jpg", "tbx11k_health_h0001.png", "tbx11k_tb_tb0005.png",
                                  "tbx11k_tb_tb0007.png"])
def test_grey_stored_as_rgb_becomes_grey(cxr_dir: Path, name: str) -> None:
    img = load_image(cxr_dir / name)
    raw = np.asarray(Image.open(cxr_dir / name).convert("RGB"))
    assert img.rgb is None and img.pixels.ndim == 2
    assert img.metadata["grey_as_rgb"] is True and img.metadata["colour_source"] is True
    np.testing.assert_allclose(img.pixels, raw[..., 1].astype(np.float32), atol=2.0)
    # 8-bit: the window spans exactly 0..255
    np.testing.assert_allclose(to_unit(img), img.pixels / 255.0, atol=1e-6)


@pytest.mark.parametrize("name", ["SC_rgb.dcm", "US1_UNCR.dcm", "US1_J2KR.dcm", "US1_J2KI.dcm",
                                  "OBXXXX1A.dcm", "SC_ybr_full_uncompressed.dcm"])
def test_real_colour_keeps_rgb(dicom_dir: Path, name: str) -> None:
    img = load_image(dicom_dir / name)
    assert img.rgb is not None and img.rgb.shape == (*img.shape, 3) and img.rgb.dtype == np.uint8
    assert img.metadata["grey_as_rgb"] is False and img.metadata["colour_source"] is True
    if img.metadata["bits_stored"] == 8 and img.photometric != "PALETTE COLOR":
        luma = img.rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        np.testing.assert_allclose(img.pixels, luma, atol=1e-3)


def test_grey_tolerance_for_rgb(tmp_path: Path) -> None:
    base = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (20, 1))
    near = np.dstack([base, base + 2, base]).astype(np.uint8)  # channels differ by 2: still grey
    far = np.dstack([base, base + 3, base]).astype(np.uint8)  # by 3: colour
    cv2.imwrite(str(tmp_path / "near.png"), near[..., ::-1])
    cv2.imwrite(str(tmp_path / "far.png"), far[..., ::-1])
    assert load_image(tmp_path / "near.png").rgb is None
    far_img = load_image(tmp_path / "far.png")
    assert far_img.rgb is not None
    np.testing.assert_array_equal(far_img.rgb, far)


# --------------------------------------------------------------------------- 5. DICOM pipeline


def test_ct_rescale_gives_hounsfield_units(dicom_dir: Path) -> None:
    path = dicom_dir / "693_UNCR.dcm"
    ds = pydicom.dcmread(path)
    assert float(ds.RescaleIntercept) == -1024
    img = load_image(path)
    np.testing.assert_array_equal(img.pixels, (ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope)
                                               + float(ds.RescaleIntercept)).astype(np.float32))
    assert img.pixels.min() < -1000  # air
    assert (img.window.center, img.window.width, img.window.source) == (40.0, 100.0, "dicom")
    assert img.metadata["rescale_intercept"] == -1024.0 and img.metadata["modality"] == "CT"


def test_mr_rescale_slope(dicom_dir: Path) -> None:
    ds = pydicom.dcmread(dicom_dir / "MR2_UNCR.dcm")
    img = load_image(dicom_dir / "MR2_UNCR.dcm")
    np.testing.assert_allclose(img.pixels, apply_modality_lut(ds.pixel_array, ds), rtol=1e-6)


def test_signed_pixels(dicom_dir: Path) -> None:
    for name in ("JLSL_16_15_1_1F.dcm", "explicit_VR-UN.dcm"):
        img = load_image(dicom_dir / name)
        assert img.metadata["pixel_representation"] == 1 and img.pixels.min() < 0, name


def test_bits_stored_below_allocated(dicom_dir: Path, tmp_path: Path) -> None:
    img = load_image(dicom_dir / "JLSL_08_07_0_1F.dcm")
    assert img.bits_stored == 7 and img.pixels.max() <= 127
    assert load_image(dicom_dir / "MR2_UNCR.dcm").bits_stored == 12
    # garbage in the unused high bits must be masked off (PS3.5 8.1.1)
    values = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    path = make_dicom(tmp_path / "b12.dcm", values, bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.PixelData = (values | 0xF000).astype("<u2").tobytes()
    ds.save_as(path)
    np.testing.assert_array_equal(load_image(path).pixels, values.astype(np.float32))


def test_multiframe_and_frame_range(dicom_dir: Path) -> None:
    path = dicom_dir / "emri_small.dcm"
    assert load_image(path).frame_count == 10 and probe(path).frames == 10
    last = load_image(path, frame=9)
    np.testing.assert_array_equal(last.pixels, pixel_array(str(path), index=9).astype(np.float32))
    for bad in (10, -1, 1000):
        err = assert_refused(path, Reason.FRAME_OUT_OF_RANGE, frame=bad)
        assert "0 to 9" in err.message
    assert_refused(dicom_dir / "MR2_UNCR.dcm", Reason.FRAME_OUT_OF_RANGE, frame=1)


def test_several_windows_with_explanations(dicom_dir: Path) -> None:
    ds = pydicom.dcmread(dicom_dir / "MR-SIEMENS-DICOM-WithOverlays.dcm", stop_before_pixels=True)
    img = load_image(dicom_dir / "MR-SIEMENS-DICOM-WithOverlays.dcm")
    assert [(w.center, w.width) for w in img.windows] == [(450.0, 790.0), (200.0, 443.0)]
    assert all(w.source == "dicom" and w.function == "LINEAR" for w in img.windows)  # no VOI LUT Function
    assert [w.explanation for w in img.windows] == list(ds.WindowCenterWidthExplanation) == ["WINDOW1", "WINDOW2"]
    assert img.window == img.windows[0]


def test_functional_group_rescale_and_window(dicom_dir: Path) -> None:
    """Enhanced CT: rescale and window live in the (shared/per-frame) functional groups."""
    img = load_image(dicom_dir / "eCT_Supplemental.dcm", frame=1)
    assert img.pixels.min() == -1024.0 and img.window.source == "dicom"


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_functions_match_pydicom(tmp_path: Path, function: str) -> None:
    pixels = np.arange(0, 4096, 4, dtype=np.uint16).reshape(32, 32)
    path = make_dicom(tmp_path / "w.dcm", pixels, bits_stored=12, WindowCenter=[1500.0, 3000.0],
                      WindowWidth=[800.0, 400.0], WindowCenterWidthExplanation=["SOFT", "BONE"],
                      VOILUTFunction=function)
    img = load_image(path)
    assert [w.function for w in img.windows] == [function, function]
    assert [w.explanation for w in img.windows] == ["SOFT", "BONE"]
    ds = pydicom.dcmread(path)
    for index, window in enumerate(img.windows):
        expected = apply_windowing(ds.pixel_array, ds, index=index) / 4095.0
        np.testing.assert_allclose(to_unit(img, window), expected, atol=1e-5)


@pytest.mark.parametrize("lut_vr", ["US", "OW"])
def test_voi_lut_sequence_is_the_default_mapping(tmp_path: Path, lut_vr: str) -> None:
    """12-bit data through an 8-bit VOI LUT with 4096 entries (a common CR layout)."""
    pixels = np.arange(0, 4096, 4, dtype=np.uint16).reshape(32, 32)
    table = np.clip(np.sqrt(np.arange(4096) / 4095.0) * 255, 0, 255).astype(np.uint16)
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 8])
    item.add_new(0x00283006, lut_vr, table.tolist() if lut_vr == "US" else table.astype("<u2").tobytes())
    item.LUTExplanation = "SQRT"
    path = make_dicom(tmp_path / "voi.dcm", pixels, bits_stored=12, VOILUTSequence=Sequence([item]),
                      WindowCenter=2048, WindowWidth=4096)
    img = load_image(path)
    assert img.voi_lut is not None and img.voi_lut.bits == 8 and img.voi_lut.explanation == "SQRT"
    np.testing.assert_allclose(to_unit(img), table[pixels] / 255.0, atol=1e-6)
    # an explicit window still applies when asked for
    np.testing.assert_allclose(to_unit(img, img.windows[0]), np.clip(pixels / 4095.0, 0, 1), atol=2e-3)


def test_modality_lut_sequence(tmp_path: Path) -> None:
    pixels = np.arange(256, dtype=np.uint16).reshape(16, 16)
    lut = (np.arange(256) * 10 + 5).astype(np.uint16)
    item = Dataset()
    item.add_new(0x00283002, "US", [256, 0, 16])
    item.add_new(0x00283006, "US", lut.tolist())
    item.ModalityLUTType = "OD"
    path = make_dicom(tmp_path / "mlut.dcm", pixels, bits_stored=8, ModalityLUTSequence=Sequence([item]))
    img = load_image(path)
    np.testing.assert_array_equal(img.pixels, lut[pixels].astype(np.float32))
    ds = pydicom.dcmread(path)
    np.testing.assert_array_equal(img.pixels, apply_modality_lut(ds.pixel_array, ds))


def test_pixel_padding_value_and_range(tmp_path: Path) -> None:
    stored = np.full((20, 30), -2000, dtype=np.int16)
    stored[5:15, 5:25] = np.arange(200, dtype=np.int16).reshape(10, 20) * 10
    path = make_dicom(tmp_path / "pad.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024,
                      PixelPaddingValue=(0x00280120, "SS", -2000))
    img = load_image(path)
    np.testing.assert_array_equal(img.padding_mask, stored == -2000)
    assert img.window.source == "auto"
    inside = img.pixels[~img.padding_mask]
    assert img.window.center - img.window.width / 2 == pytest.approx(inside.min())
    assert img.window.center + img.window.width / 2 == pytest.approx(inside.max())
    assert (to_unit(img)[img.padding_mask] == 0).all()
    # a padding range
    stored[0, :] = -1990
    path = make_dicom(tmp_path / "pad2.dcm", stored, PixelPaddingValue=(0x00280120, "SS", -2000),
                      PixelPaddingRangeLimit=(0x00280121, "SS", -1990))
    np.testing.assert_array_equal(load_image(path).padding_mask, stored <= -1990)


def test_float_pixel_data(dicom_dir: Path) -> None:
    img = load_image(dicom_dir / "parametric_map_float.dcm")
    ref = pixel_array(str(dicom_dir / "parametric_map_float.dcm"), index=0)
    np.testing.assert_allclose(img.pixels, ref)
    assert img.pixels.max() < 1.0


def test_dicom_without_preamble_or_extension(dicom_dir: Path, cxr_dir: Path, tmp_path: Path) -> None:
    raw = (dicom_dir / "JLSL_RGB_ILV0.dcm").read_bytes()
    assert raw[128:132] != b"DICM"
    assert is_image_file(dicom_dir / "JLSL_RGB_ILV0.dcm") and load_image(dicom_dir / "JLSL_RGB_ILV0.dcm").rgb is not None
    # no extension, and an implicit VR dataset with neither preamble nor file meta
    copy = tmp_path / "IMG0001"
    shutil.copy(cxr_dir / "siim_pneumothorax_sample.dcm", copy)
    assert load_image(copy).metadata["modality"] == "CR"
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8)
    ds = pydicom.dcmread(make_dicom(tmp_path / "full.dcm", pixels))
    del ds.file_meta
    ds.preamble = None
    pydicom.dcmwrite(tmp_path / "bare", ds, implicit_vr=True, little_endian=True)
    assert (tmp_path / "bare").read_bytes()[:2] == b"\x08\x00" and is_image_file(tmp_path / "bare")
    img = load_image(tmp_path / "bare")
    np.testing.assert_array_equal(img.pixels, pixels)
    assert img.metadata["transfer_syntax"] == "Implicit VR Little Endian"


def test_dicom_tiff_dual_preamble_is_dicom(dicom_dir: Path) -> None:
    path = dicom_dir / "MR2_UNCR.dcm"
    assert path.read_bytes()[:4] == b"II*\x00"  # a TIFF header in the preamble
    assert sniff_format(path.read_bytes()[:512]) == "dicom" and probe(path).format == "dicom"


def test_dicom_metadata(cxr_dir: Path) -> None:
    ds = pydicom.dcmread(cxr_dir / "siim_pneumothorax_sample.dcm")
    md = load_image(cxr_dir / "siim_pneumothorax_sample.dcm").metadata
    assert md["modality"] == "CR" and md["view_position"] == "PA" and md["body_part"] == "CHEST"
    assert md["patient_sex"] == "M" and md["patient_age_years"] == 62.0
    assert md["transfer_syntax"] == "JPEG Baseline (Process 1)"
    assert md["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.50"
    assert md["sop_class"] == "Secondary Capture Image Storage"
    assert md["patient_id"] == ds.PatientID and md["study_uid"] == ds.StudyInstanceUID
    assert md["series_uid"] == ds.SeriesInstanceUID
    assert (md["rows"], md["columns"], md["number_of_frames"], md["samples_per_pixel"]) == (1024, 1024, 1, 1)
    assert (md["bits_allocated"], md["bits_stored"], md["pixel_representation"]) == (8, 8, 0)
    assert md["photometric"] == "MONOCHROME2" and md["colour_source"] is False


@pytest.mark.parametrize("text,years", [("045Y", 45.0), ("006M", 0.5), ("052W", 52 * 7 / 365.25),
                                        ("010D", 10 / 365.25), ("62", 62.0), ("", None), ("abc", None),
                                        (None, None)])
def test_parse_age(text, years) -> None:
    assert parse_age(text) == (pytest.approx(years) if years is not None else None)


# --------------------------------------------------------------------------- raster formats


def test_8bit_png_window_is_value_over_255(cxr_dir: Path) -> None:
    img = load_image(cxr_dir / "00000001_000.png")
    assert img.window == img.windows[0] and img.window.source == "full"
    assert (img.window.center, img.window.width, img.window.function) == (127.5, 255.0, "LINEAR_EXACT")
    raw = np.asarray(Image.open(cxr_dir / "00000001_000.png"))
    np.testing.assert_allclose(to_unit(img), raw / 255.0, atol=1e-6)
    assert img.source_format == "png" and img.bits_stored == 8


def test_16bit_png_and_tiff(tmp_path: Path) -> None:
    values = (np.arange(40 * 50).reshape(40, 50) * 13 + 700).astype(np.uint16)
    for name in ("g16.png", "g16.tif"):
        cv2.imwrite(str(tmp_path / name), values)
        img = load_image(tmp_path / name)
        np.testing.assert_array_equal(img.pixels, values.astype(np.float32))
        assert img.bits_stored == 16 and img.window.source == "auto"
        lo, hi = float(values.min()), float(values.max())
        assert (img.window.center, img.window.width) == (pytest.approx((lo + hi) / 2), pytest.approx(hi - lo))
        assert img.source_format == ("png" if name.endswith("png") else "tiff")


def test_16bit_colour_png_keeps_precision(tmp_path: Path) -> None:
    rgb = np.zeros((10, 12, 3), dtype=np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 60000, 1000, 30000
    cv2.imwrite(str(tmp_path / "c16.png"), rgb[..., ::-1])
    img = load_image(tmp_path / "c16.png")
    assert img.rgb is not None and tuple(img.rgb[0, 0]) == (233, 4, 117)
    assert img.pixels[0, 0] == pytest.approx(0.299 * 60000 + 0.587 * 1000 + 0.114 * 30000, rel=1e-5)


def test_rgba_png(tmp_path: Path) -> None:
    grey = np.full((10, 12, 4), 120, dtype=np.uint8)
    grey[..., 3] = 255
    grey[:, :3, 3] = 0  # transparent strip -> black
    cv2.imwrite(str(tmp_path / "rgba.png"), grey)
    img = load_image(tmp_path / "rgba.png")
    assert img.rgb is None and img.pixels[0, 0] == 0 and img.pixels[0, 5] == pytest.approx(120)
    colour = grey.copy()
    colour[..., 0] = 10  # OpenCV order: blue
    cv2.imwrite(str(tmp_path / "rgba_c.png"), colour)
    img = load_image(tmp_path / "rgba_c.png")
    assert img.rgb is not None and tuple(img.rgb[0, 5]) == (120, 120, 10)


def test_multipage_tiff_frames(tmp_path: Path) -> None:
    a = np.full((8, 9), 1000, dtype=np.uint16)
    b = np.full((8, 9), 2000, dtype=np.uint16)
    assert cv2.imwritemulti(str(tmp_path / "m.tif"), [a, b])
    assert load_image(tmp_path / "m.tif").frame_count == 2
    assert load_image(tmp_path / "m.tif", frame=1).pixels[0, 0] == 2000
    assert_refused(tmp_path / "m.tif", Reason.FRAME_OUT_OF_RANGE, frame=2)


def test_jpeg_exif_orientation(cxr_dir: Path, tmp_path: Path) -> None:
    src = Image.open(cxr_dir / "00000001_000.png").crop((0, 0, 300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    src.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    img = load_image(tmp_path / "rot.jpg")
    assert img.shape == (300, 200) and (probe(tmp_path / "rot.jpg").rows, probe(tmp_path / "rot.jpg").columns) == (300, 200)


def test_grey_jpegs_of_figure1(cxr_dir: Path) -> None:
    files = sorted((cxr_dir / "figure1").glob("*.jpg"))[:10]
    for path in files:
        img = load_image(path)
        assert img.rgb is None and img.window.source == "full"


# --------------------------------------------------------------------------- 6. decompression bombs


def test_dicom_declaring_huge_image_is_refused_before_allocation(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "bomb.dcm", np.zeros((4, 4), dtype=np.uint16))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 65535, 65535
    ds.save_as(path)
    assert path.stat().st_size < 2000
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        err = assert_refused(path, Reason.TOO_LARGE)
        with pytest.raises(ImageError) as info:
            probe(path)
        assert info.value.reason is Reason.TOO_LARGE
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20 and time.perf_counter() - t0 < 2.0
    assert "65535 x 65535" in err.message and "megapixels" in err.message


def test_dicom_declaring_too_many_frames_is_refused(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "frames.dcm", np.zeros((4, 4), dtype=np.uint16))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 2048, 2048, 5000  # 40 GB declared
    ds.save_as(path)
    err = assert_refused(path, Reason.TOO_LARGE)
    assert "GiB" in err.message


def test_png_declaring_huge_size_is_refused(tmp_path: Path) -> None:
    for w, h in ((100_000, 100_000), (13_000, 13_000)):  # beyond Pillow's own limit / beyond ours only
        path = write_png_chunks(tmp_path / f"bomb{w}.png", w, h)
        t0 = time.perf_counter()
        assert_refused(path, Reason.TOO_LARGE)
        with pytest.raises(ImageError) as info:
            probe(path)
        assert info.value.reason is Reason.TOO_LARGE and time.perf_counter() - t0 < 1.0
    assert 13_000 * 13_000 > DEFAULT_MAX_PIXELS


def test_jpeg_declaring_huge_size_is_refused(cxr_dir: Path, tmp_path: Path) -> None:
    data = bytearray((cxr_dir / "16747_3_1.jpg").read_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = b"\xff\xff\xff\xff"
    (tmp_path / "bomb.jpg").write_bytes(bytes(data))
    assert_refused(tmp_path / "bomb.jpg", Reason.TOO_LARGE)


def test_max_pixels_argument(cxr_dir: Path) -> None:
    assert_refused(cxr_dir / "00000001_000.png", Reason.TOO_LARGE, max_pixels=512 * 511)
    assert_refused(cxr_dir / "siim_pneumothorax_sample.dcm", Reason.TOO_LARGE, max_pixels=1000)
    assert load_image(cxr_dir / "00000001_000.png", max_pixels=512 * 512).shape == (512, 512)


def test_deflate_bomb_is_refused(tmp_path: Path) -> None:
    pixels = np.zeros((2048, 2048), dtype=np.uint16)  # 8 MiB of zeros: deflates to a few KiB
    path = make_dicom(tmp_path / "deflate.dcm", pixels, tsyntax=DeflatedExplicitVRLittleEndian)
    assert path.stat().st_size < 100_000
    assert_refused(path, Reason.TOO_LARGE, max_bytes=4 * 2**20)
    assert load_image(path).shape == (2048, 2048)


def test_compressed_frame_disagreeing_with_header_is_refused(cxr_dir: Path, tmp_path: Path) -> None:
    """The JPEG inside says 1024 x 1024; the header is changed to 512 x 512."""
    ds = pydicom.dcmread(cxr_dir / "siim_pneumothorax_sample.dcm")
    ds.Rows, ds.Columns = 512, 512
    ds.save_as(tmp_path / "mismatch.dcm")
    err = assert_refused(tmp_path / "mismatch.dcm", Reason.UNREADABLE)
    assert "different size" in err.message


# --------------------------------------------------------------------------- 7. not images, damage


def test_not_an_image(tmp_path: Path, shared_data: Path) -> None:
    (tmp_path / "notes.txt").write_text("Chest X-ray report: no acute findings.\n" * 20)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "noise.dcm").write_bytes(np.random.default_rng(0).bytes(4000))
    for name in ("notes.txt", "empty.png", "noise.dcm"):
        assert_refused(tmp_path / name, Reason.NOT_AN_IMAGE)
    assert "empty" in assert_refused(tmp_path / "empty.png", Reason.NOT_AN_IMAGE).message
    assert_refused(tmp_path, Reason.NOT_AN_IMAGE)  # a folder
    assert_refused(tmp_path / "missing.png", Reason.UNREADABLE)
    assert_refused(shared_data / "README.md", Reason.NOT_AN_IMAGE)


def test_other_image_formats_are_named(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "x.bmp"), np.zeros((8, 8), dtype=np.uint8))
    Image.new("L", (8, 8)).save(tmp_path / "x.gif")
    for name, word in (("x.bmp", "BMP"), ("x.gif", "GIF")):
        err = assert_refused(tmp_path / name, Reason.UNSUPPORTED_PIXEL_FORMAT)
        assert word in err.message and "PNG" in err.message


@pytest.mark.parametrize("name", ["00000001_000.png", "16747_3_1.jpg"])
def test_truncated_raster(cxr_dir: Path, tmp_path: Path, name: str) -> None:
    data = (cxr_dir / name).read_bytes()
    for cut in (200, len(data) // 2, len(data) - 30):
        path = tmp_path / f"cut{cut}{Path(name).suffix}"
        path.write_bytes(data[:cut])
        err = assert_refused(path, Reason.TRUNCATED)
        assert "again" in err.message


@pytest.mark.parametrize("name,cuts", [
    ("MR2_UNCR.dcm", [1000, 1500, 60_000, 2_000_000]),  # header values, native pixel data
    ("emri_small_RLE.dcm", [30_000]),  # encapsulated, no end delimiter
    ("siim_pneumothorax_sample.dcm", [100_000]),
])
def test_truncated_dicom(dicom_dir: Path, cxr_dir: Path, tmp_path: Path, name: str, cuts: list[int]) -> None:
    src = dicom_dir / name if (dicom_dir / name).exists() else cxr_dir / name
    data = src.read_bytes()
    for cut in cuts:
        path = tmp_path / f"cut{cut}.dcm"
        path.write_bytes(data[:cut])
        assert_refused(path, Reason.TRUNCATED)
        # probe reads the header only: it sees a cut in the header or in native pixel data
        # (declared length), not a cut inside encapsulated (compressed) frames
        if cut < 2000 or not pydicom.dcmread(src, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed:
            with pytest.raises(ImageError) as info:
                probe(path)
            assert info.value.reason is Reason.TRUNCATED
        else:
            assert probe(path).rows > 0


def test_dicom_without_pixel_data(cxr_dir: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(cxr_dir / "siim_pneumothorax_sample.dcm")
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    err = assert_refused(tmp_path / "nopix.dcm", Reason.NO_PIXEL_DATA)
    assert "no image" in err.message
    with pytest.raises(ImageError) as info:
        probe(tmp_path / "nopix.dcm")
    assert info.value.reason is Reason.NO_PIXEL_DATA


def test_unknown_compression_is_named(cxr_dir: Path, tmp_path: Path) -> None:
    relabel_syntax(cxr_dir / "siim_pneumothorax_sample.dcm", tmp_path / "jxl.dcm", "1.2.840.10008.1.2.4.112")
    err = assert_refused(tmp_path / "jxl.dcm", Reason.UNSUPPORTED_TRANSFER_SYNTAX)
    assert "JPEG XL" in err.message and "No decoder" in err.message


def test_missing_decoder_names_the_package(dicom_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = get_decoder(RLELossless)
    monkeypatch.setattr(type(decoder), "is_available", property(lambda self: self.UID != RLELossless))
    err = assert_refused(dicom_dir / "emri_small_RLE.dcm", Reason.UNSUPPORTED_TRANSFER_SYNTAX)
    assert "RLE Lossless" in err.message and "pip install pylibjpeg-rle" in err.message
    assert load_image(dicom_dir / "emri_small.dcm").frame_count == 10


def test_messages_never_contain_patient_data(cxr_dir: Path, tmp_path: Path) -> None:
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8)
    good = make_dicom(tmp_path / "good.dcm", pixels).read_bytes()
    broken = {
        "cut.dcm": good[: len(good) - 50],
        "header.dcm": good[:600],
    }
    ds = pydicom.dcmread(tmp_path / "good.dcm")
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    relabel_syntax(tmp_path / "good.dcm", tmp_path / "jxl.dcm", "1.2.840.10008.1.2.4.110")
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
    siim = pydicom.dcmread(cxr_dir / "siim_pneumothorax_sample.dcm")
    for name in [*broken, "nopix.dcm", "jxl.dcm"]:
        for call in (load_image, probe, lambda p: load_image(p, frame=7)):
            try:
                call(tmp_path / name)
            except ImageError as exc:
                text = str(exc) + exc.message
                for secret in (SECRET_NAME, SECRET_ID, "Doe", siim.PatientID):
                    assert secret not in text, (name, text)


# --------------------------------------------------------------------------- 9. probe, sniffing, tags


def test_probe_and_is_image_file_on_all_shared_files(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """probe never decodes pixels: the decoders are disabled while it runs."""
    files = shared_files(shared_data)

    def no_decoding(*args, **kwargs):
        raise AssertionError("probe decoded pixel data")

    monkeypatch.setattr("pydicom.pixels.decoders.base.Decoder.as_array", no_decoding)
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    t0 = time.perf_counter()
    infos = {}
    for path in files:
        assert is_image_file(path), path.name
        infos[path.name] = probe(path)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, f"probing {len(files)} files took {elapsed:.1f}s"
    info = infos["siim_pneumothorax_sample.dcm"]
    assert isinstance(info, ImageInfo) and (info.format, info.rows, info.columns, info.frames) == ("dicom", 1024, 1024, 1)
    for key in ("patient_id", "study_uid", "series_uid", "series_description"):
        assert key in info.metadata
    assert info.metadata["series_description"] == "view: PA"
    assert infos["emri_small.dcm"].frames == 10
    assert (infos["16747_3_1.jpg"].format, infos["16747_3_1.jpg"].rows, infos["16747_3_1.jpg"].columns) == ("jpeg", 885, 1036)
    for path in sorted(shared_data.rglob("*")):
        if path.is_file() and path.suffix.lower() in NON_IMAGE_SUFFIXES:
            assert not is_image_file(path)


def test_is_image_file_never_raises(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "e").write_bytes(b"")
    assert not is_image_file(tmp_path / "a.txt")
    assert not is_image_file(tmp_path / "e")
    assert not is_image_file(tmp_path)
    assert not is_image_file(tmp_path / "missing")
    write_png_chunks(tmp_path / "noext", 4, 4)
    assert is_image_file(tmp_path / "noext")


def test_read_dicom_tags(cxr_dir: Path, dicom_dir: Path) -> None:
    tags = read_dicom_tags(cxr_dir / "siim_pneumothorax_sample.dcm")
    by_tag = {t[0]: t for t in tags}
    assert by_tag["(0002,0010)"][3] == "1.2.840.10008.1.2.4.50"
    assert by_tag["(0010,0020)"][1] == "Patient ID" and by_tag["(0010,0020)"][2] == "LO"
    assert by_tag["(0028,0010)"][3] == "1024"
    assert "(7FE0,0010)" not in by_tag
    assert all(len(t) == 4 and all(isinstance(x, str) for x in t) for t in tags)
    assert all(len(t[3]) <= 120 for t in tags)
    nested = read_dicom_tags(dicom_dir / "eCT_Supplemental.dcm")
    assert any(t[1].startswith("> ") for t in nested) and any(t[2] == "SQ" for t in nested)
    with pytest.raises(ImageError) as info:
        read_dicom_tags(cxr_dir / "00000001_000.png")
    assert info.value.reason is Reason.NOT_AN_IMAGE
