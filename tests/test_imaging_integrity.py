"""Images that lie (issue 16, images 1-4): cut data, bombs within limits, files that never
end, and refusals that must name the real cause."""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.encaps import encapsulate, get_frame
from pydicom.pixels import pixel_array
from test_imaging import assert_refused, make_dicom, write_png_chunks

from cxr_desktop.errors import ImageError, Reason
from cxr_desktop.imaging import display, load_image, probe
from cxr_desktop.imaging.raster import split_colour

# --------------------------------------------------------------------------- helpers


def cut_jpeg(data: bytes, fraction: float = 0.5) -> bytes:
    """The issue's file: a JPEG cut in the middle of its scan, closed with an EOI marker."""
    return data[: int(len(data) * fraction)] + b"\xff\xd9"


def raise_jpeg_height(data: bytes, extra: int) -> bytes:
    buf = bytearray(data)
    sof = next(i for i in range(2, len(buf) - 1) if buf[i] == 0xFF and buf[i + 1] in (0xC0, 0xC1, 0xC2, 0xC3))
    height = int.from_bytes(buf[sof + 5:sof + 7], "big")
    buf[sof + 5:sof + 7] = (height + extra).to_bytes(2, "big")
    return bytes(buf)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def grey_png_bytes(pixels: np.ndarray, raw_fraction: float = 1.0) -> bytes:
    """An 8-bit grey PNG whose (well-terminated) zlib stream holds ``raw_fraction`` of the rows."""
    h, w = pixels.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(raw[: int(len(raw) * raw_fraction)]))
            + png_chunk(b"IEND", b""))


def with_frame(src: Path, dst: Path, change) -> Path:
    """Copy of an encapsulated DICOM whose frame 0 is replaced by ``change(frame_bytes)``."""
    ds = pydicom.dcmread(src)
    frame = bytes(get_frame(ds.PixelData, 0, number_of_frames=1))
    new = change(frame)
    if len(new) % 2:
        new += b"\x00"
    ds.PixelData = encapsulate([new])
    ds.save_as(dst)
    return dst


# --------------------------------------------------------------------------- 1. truncation


def test_jpeg_cut_and_closed_with_eoi_is_refused(cxr_dir: Path, tmp_path: Path) -> None:
    src = cxr_dir / "covid-19-pneumonia-58-prior.jpg"
    data = src.read_bytes()
    assert load_image(src).shape == (2373, 2373)  # the intact file decodes
    for fraction in (0.3, 0.5, 0.9):
        path = tmp_path / f"cut{fraction}.jpg"
        path.write_bytes(cut_jpeg(data, fraction))
        err = assert_refused(path, Reason.TRUNCATED)
        assert "ends before the whole image is coded" in err.message
        with pytest.raises(ImageError) as info:  # the model's reduced decode is refused too
            load_image(path, min_side=448)
        assert info.value.reason is Reason.TRUNCATED
    (tmp_path / "noeoi.jpg").write_bytes(data[: len(data) // 2])
    assert_refused(tmp_path / "noeoi.jpg", Reason.TRUNCATED)


def test_jpeg_with_raised_height_is_refused(cxr_dir: Path, tmp_path: Path) -> None:
    for name in ("covid-19-pneumonia-58-prior.jpg", "16747_3_1.jpg"):
        path = tmp_path / name
        path.write_bytes(raise_jpeg_height((cxr_dir / name).read_bytes(), 160))
        assert probe(path).rows > 0  # the header alone looks fine
        assert_refused(path, Reason.TRUNCATED)


def test_every_shared_jpeg_passes_the_strict_check(cxr_dir: Path) -> None:
    files = sorted(cxr_dir.rglob("*.jpg"))
    assert len(files) > 50
    for path in files:
        assert load_image(path, min_side=448).rows > 0


def test_truncated_files_stay_refused_with_load_truncated_images_on(cxr_dir: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = (cxr_dir / "00000001_000.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # another library's global choice
    assert_refused(tmp_path / "cut.png", Reason.TRUNCATED)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored after the load


def test_png_cut_mid_idat_is_refused(cxr_dir: Path, tmp_path: Path) -> None:
    grey = cv2.imread(str(cxr_dir / "00000001_000.png"), cv2.IMREAD_GRAYSCALE)
    whole = grey_png_bytes(grey)
    (tmp_path / "whole.png").write_bytes(whole)
    assert np.array_equal(load_image(tmp_path / "whole.png").pixels, grey.astype(np.float32))
    idat = whole.index(b"IDAT")
    length = int.from_bytes(whole[idat - 4:idat], "big")
    cut = whole[: idat + 4 + length // 2] + png_chunk(b"IEND", b"")  # cut mid-IDAT, IEND appended
    (tmp_path / "cut.png").write_bytes(cut)
    assert "declares" in assert_refused(tmp_path / "cut.png", Reason.TRUNCATED).message
    # well-formed chunks, but the zlib stream holds only 60 % of the rows: Pillow would zero-fill
    (tmp_path / "short.png").write_bytes(grey_png_bytes(grey, 0.6))
    err = assert_refused(tmp_path / "short.png", Reason.TRUNCATED)
    assert "of the 512 rows" in err.message
    # 16-bit colour takes OpenCV's path; same verdict
    rgb16 = np.repeat(grey[..., None], 3, axis=2).astype(np.uint16) * 257
    ok, enc = cv2.imencode(".png", rgb16)
    enc = enc.tobytes()
    i = enc.index(b"IDAT")
    n = int.from_bytes(enc[i - 4:i], "big")
    (tmp_path / "cut16.png").write_bytes(enc[: i + 4 + n // 2] + png_chunk(b"IEND", b""))
    assert_refused(tmp_path / "cut16.png", Reason.TRUNCATED)


@pytest.mark.parametrize("name", ["siim_pneumothorax_sample.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm",
                                  "US1_J2KI.dcm", "RG1_J2KI.dcm", "693_J2KR.dcm", "JLSL_16_15_1_1F.dcm",
                                  "JLSL_08_07_0_1F.dcm"])
def test_dicom_with_cut_compressed_frame_is_refused(cxr_dir: Path, dicom_dir: Path, tmp_path: Path,
                                                    name: str) -> None:
    src = cxr_dir / name if (cxr_dir / name).exists() else dicom_dir / name
    ds = pydicom.dcmread(src)
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        pytest.skip("single-frame source expected")
    closed = with_frame(src, tmp_path / "closed.dcm", lambda f: f[: len(f) // 2] + b"\xff\xd9")
    open_ = with_frame(src, tmp_path / "open.dcm", lambda f: f[: len(f) // 2])
    for path in (closed, open_):
        assert_refused(path, Reason.TRUNCATED)
        with pytest.raises(ImageError) as info:
            load_image(path, min_side=256)  # the reduced-resolution path as well
        assert info.value.reason is Reason.TRUNCATED
    assert load_image(src).rows == ds.Rows


def test_dicom_jpeg_with_raised_height_is_refused(cxr_dir: Path, tmp_path: Path) -> None:
    """The frame says more rows than it codes, and the header agrees: the decoder would pad."""
    src = cxr_dir / "siim_pneumothorax_sample.dcm"
    path = with_frame(src, tmp_path / "tall.dcm", lambda f: raise_jpeg_height(f, 64))
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Rows + 64
    ds.save_as(path)
    assert_refused(path, Reason.TRUNCATED)


def scan_end(frame: bytes) -> int:
    """Offset of a frame's EOI marker (a DICOM frame may add one pad byte after it)."""
    return len(frame) - (2 if frame.endswith(b"\xff\xd9") else 3)


def lossless_source(dicom_dir: Path, tmp_path: Path, bits: int) -> tuple[Path, np.ndarray | None]:
    """A JPEG Lossless (Process 14, SV1) DICOM at 8, 12 or 16 bits: the real 8- and 16-bit files,
    and the 16-bit one re-coded at 12 bits with libjpeg-turbo (no 12-bit lossless file is shared)
    together with the pixels it codes."""
    if bits == 8:
        return dicom_dir / "JPGLosslessP14SV1_1s_1f_8b.dcm", None
    if bits == 16:
        return dicom_dir / "JPEG-LL.dcm", None
    import imagecodecs

    ds = pydicom.dcmread(dicom_dir / "JPEG-LL.dcm")
    pixels = np.clip(ds.pixel_array.astype(np.int64) // 16 + 600, 0, 4095).astype(np.uint16)
    frame = imagecodecs.jpeg8_encode(pixels, lossless=True, bitspersample=12, predictor=1)
    ds.PixelData = encapsulate([frame + b"\x00" * (len(frame) % 2)])
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    ds.save_as(tmp_path / "lossless12.dcm")
    return tmp_path / "lossless12.dcm", pixels


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_lossless_jpeg_dicom_cut_and_closed_is_refused(dicom_dir: Path, tmp_path: Path, bits: int) -> None:
    """Issue 16 point 1 for JPEG Lossless above 8 bits: no installed decoder warns when the scan
    runs out, so a cut frame closed with EOI must be caught by the probe (integrity.py)."""
    src, coded = lossless_source(dicom_dir, tmp_path, bits)
    ds = pydicom.dcmread(src)
    assert (ds.BitsStored, ds.file_meta.TransferSyntaxUID) == (bits, "1.2.840.10008.1.2.4.70")
    variants = {
        "half": lambda f: f[: scan_end(f) // 2] + b"\xff\xd9",
        "last 3 bytes": lambda f: f[: scan_end(f) - 3] + b"\xff\xd9",
        "last byte": lambda f: f[: scan_end(f) - 1] + b"\xff\xd9",
    }
    for name, change in variants.items():
        err = assert_refused(with_frame(src, tmp_path / "cut.dcm", change), Reason.TRUNCATED)
        assert "ends before the whole image" in err.message, name
    # The frame's first fragment cut and closed with FF D9, its second fragment kept (as the fuzzer
    # does): a decoder stops at the first EOI, so that is where the image ends.
    frame = bytes(get_frame(ds.PixelData, 0, number_of_frames=1))
    half = scan_end(frame) // 2
    first, second = frame[: half - 4] + b"\xff\xd9", frame[half:]
    items = [b""] + [f + b"\x00" * (len(f) % 2) for f in (first, second)]
    split = pydicom.dcmread(src)
    split.PixelData = b"".join(b"\xfe\xff\x00\xe0" + struct.pack("<I", len(f)) + f for f in items)
    split.save_as(tmp_path / "split.dcm")
    assert_refused(tmp_path / "split.dcm", Reason.TRUNCATED)
    tall = with_frame(src, tmp_path / "tall.dcm", lambda f: raise_jpeg_height(f, 16))
    ds_tall = pydicom.dcmread(tall)
    ds_tall.Rows += 16
    ds_tall.save_as(tall)
    assert_refused(tall, Reason.TRUNCATED)
    # Intact: decodes, to the same pixels as pydicom's decode written out uncompressed; fill
    # bytes before EOI (allowed by the standard) change nothing.
    plain = pydicom.dcmread(src)
    plain.decompress()
    plain.save_as(tmp_path / "plain.dcm")
    filled = with_frame(src, tmp_path / "filled.dcm", lambda f: f[: scan_end(f)] + b"\xff\xff\xff\xd9")
    ref = load_image(tmp_path / "plain.dcm").pixels
    for path in (src, filled):
        np.testing.assert_array_equal(load_image(path).pixels, ref, err_msg=path.name)
    if coded is not None:
        np.testing.assert_array_equal(pydicom.dcmread(src).pixel_array, coded)


def test_probe_refuses_cut_12_bit_dct_and_colour_lossless_frames() -> None:
    """The probe covers every sequential process libjpeg-turbo decodes above 8 bits: 12-bit
    extended DCT (DICOM 1.2.840.10008.1.2.4.51) and 3-component lossless frames as well."""
    import imagecodecs

    from cxr_desktop.imaging.integrity import check_jpeg

    yy, xx = np.mgrid[0:160, 0:120]
    grey = ((np.sin(yy / 9) + np.cos(xx / 7) + 2) * 1000).astype(np.uint16)
    frames = {
        "12-bit DCT": imagecodecs.jpeg8_encode(grey, level=90, bitspersample=12),
        "12-bit RGB lossless": imagecodecs.jpeg8_encode(np.stack([grey, grey[::-1], grey[:, ::-1]], -1).copy(),
                                                        lossless=True, bitspersample=12),
        "16-bit lossless SV6": imagecodecs.jpeg8_encode(grey * 16, lossless=True, bitspersample=16, predictor=6),
    }
    for name, frame in frames.items():
        assert check_jpeg(frame, require_eoi=True) is None, name
        for cut in (len(frame) // 3, scan_end(frame) - 2):
            problem = check_jpeg(frame[:cut] + b"\xff\xd9", require_eoi=True)
            assert problem is not None and problem.short, f"{name} cut at {cut}"


# --------------------------------------------------------------------------- 2. size limits, memory


def test_pixel_limit_message_gives_the_real_figures(tmp_path: Path) -> None:
    path = write_png_chunks(tmp_path / "just_over.png", 12001, 12000)
    err = assert_refused(path, Reason.TOO_LARGE)
    assert "12000 x 12001 = 144,012,000 pixels" in err.message  # rows x columns
    assert "limit of 144,000,000 pixels" in err.message
    assert "144.01 megapixels" in err.message and "(144.00 megapixels)" in err.message
    # the limit itself is allowed (>, not >=): a 512 x 512 file at exactly 512*512 decodes
    png = Path(__file__).resolve().parents[2] / "shared" / "data" / "cxr" / "00000001_000.png"
    if png.exists():
        assert load_image(png, max_pixels=512 * 512).shape == (512, 512)
        err = assert_refused(png, Reason.TOO_LARGE, max_pixels=512 * 512 - 1)
        assert "262,144 pixels" in err.message and "262,143 pixels" in err.message


def test_banded_pixel_stages_equal_whole_image_arithmetic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row bands bound the temporaries; results must equal the one-shot computation."""
    monkeypatch.setattr(display, "BAND_PIXELS", 64)  # many bands on a small image
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 65536, size=(37, 23, 3), dtype=np.uint16)
    luma, rgb8, grey = split_colour(rgb, 65535.0)
    want = (rgb[..., 0].astype(np.float32) * np.float32(0.299) + rgb[..., 1].astype(np.float32) * np.float32(0.587)
            + rgb[..., 2].astype(np.float32) * np.float32(0.114))
    assert not grey and np.allclose(luma, want, rtol=1e-6)
    assert np.array_equal(rgb8, np.clip(np.rint(rgb.astype(np.float32) * np.float32(255 / 65535)), 0, 255)
                          .astype(np.uint8))
    lut = display.VoiLut(first_mapped=-10, table=np.arange(300, dtype=np.float64) * 3, bits=10)
    pixels = rng.integers(-50, 400, size=(41, 19)).astype(np.float32)
    idx = np.clip(pixels.astype(np.float64) + 10, 0, 299).astype(np.int64)
    assert np.array_equal(display.apply_voi_lut(pixels, lut),
                          np.clip(lut.table[idx].astype(np.float32) / np.float32(1023), 0, 1))


def test_rescaled_pixels_match_pydicom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(display, "BAND_PIXELS", 50)
    pixels = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30)
    path = make_dicom(tmp_path / "ct.dcm", pixels, RescaleSlope="0.5", RescaleIntercept="-1024")
    want = (pixels.astype(np.float64) * 0.5 - 1024).astype(np.float32)
    assert np.array_equal(load_image(path).pixels, want)


# --------------------------------------------------------------------------- 3. regular files only


@pytest.mark.timeout(20)
def test_fifo_device_and_symlinks_are_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "scan.dcm"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would block forever
    link = tmp_path / "link.dcm"
    link.symlink_to(fifo)
    t0 = time.perf_counter()
    for path, words in ((fifo, "named pipe (FIFO)"), (link, "symbolic link"),
                        (Path("/dev/zero"), "character device")):
        err = assert_refused(path, Reason.NOT_AN_IMAGE)
        assert words in err.message and "regular" in err.message
        with pytest.raises(ImageError):
            probe(path)
    assert time.perf_counter() - t0 < 5.0
    assert "folder" in assert_refused(tmp_path, Reason.NOT_AN_IMAGE).message


# --------------------------------------------------------------------------- 4. the real cause


def test_deflated_image_frame_compression_is_named(cxr_dir: Path, tmp_path: Path) -> None:
    src = (cxr_dir / "siim_pneumothorax_sample.dcm").read_bytes()
    old = b"1.2.840.10008.1.2.4.50"
    assert src.count(old) == 1  # only in the file meta: same length once padded
    (tmp_path / "dfc.dcm").write_bytes(src.replace(old, b"1.2.840.10008.1.2.8.1\x00"))
    err = assert_refused(tmp_path / "dfc.dcm", Reason.UNSUPPORTED_TRANSFER_SYNTAX)
    assert "Deflated Image Frame Compression (1.2.840.10008.1.2.8.1)" in err.message
    assert "SMPTE" not in err.message


@pytest.mark.parametrize("tail", [b"\x00" * 7, bytes(range(100)), b"\xff" * 33, b"\x10\x00\x20\x00XYZ"])
def test_trailing_bytes_after_pixel_data_decode_as_pydicom_does(cxr_dir: Path, dicom_dir: Path, tmp_path: Path,
                                                                tail: bytes) -> None:
    for src in (dicom_dir / "MR2_UNCR.dcm", dicom_dir / "emri_small_RLE.dcm", cxr_dir / "siim_pneumothorax_sample.dcm"):
        if not src.exists():
            continue
        path = tmp_path / src.name
        path.write_bytes(src.read_bytes() + tail)  # longer than the original
        assert np.array_equal(load_image(path).pixels, load_image(src).pixels), src.name


def test_ends_early_only_when_data_is_shorter(tmp_path: Path) -> None:
    pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    good = make_dicom(tmp_path / "good.dcm", pixels).read_bytes()
    (tmp_path / "short.dcm").write_bytes(good[:-100])
    err = assert_refused(tmp_path / "short.dcm", Reason.TRUNCATED)
    assert "ends early" in err.message and "8,192 bytes but only 8,092 follow" in err.message
    # an inflated length in the header (file as long as before): names the element, no guessing
    buf = bytearray(good)
    at = buf.index(b"\x10\x00\x10\x00PN")  # Patient's Name (0010,0010), explicit VR, 2-byte length
    buf[at + 6:at + 8] = (60000).to_bytes(2, "little")
    (tmp_path / "inflated.dcm").write_bytes(bytes(buf))
    with pytest.raises(ImageError) as info:
        load_image(tmp_path / "inflated.dcm")
    msg = info.value.message
    assert info.value.reason is Reason.TRUNCATED and "(0010,0010) declares 60,000 bytes" in msg


@pytest.mark.parametrize("slope,intercept,words", [
    ("abc", "0", "Rescale Slope (0028,1053) is not a finite number"),
    ("0", "0", "Rescale Slope (0028,1053) is 0"),
    ("1", "nan", "Rescale Intercept (0028,1052) is not a finite number"),
])
def test_damaged_rescale_names_the_attribute(tmp_path: Path, slope: str, intercept: str, words: str) -> None:
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8)
    path = make_dicom(tmp_path / "r.dcm", pixels, RescaleSlope="7.25", RescaleIntercept="-3.75")
    data = path.read_bytes()  # byte-patched: pydicom would not write these values
    assert data.count(b"7.25") == 1 and data.count(b"-3.75 ") == 1
    path.write_bytes(data.replace(b"7.25", slope.encode().ljust(4)[:4])
                     .replace(b"-3.75 ", intercept.encode().ljust(6)[:6]))
    assert pixel_array(str(path)).shape == (8, 8)  # pydicom decodes the stored values
    err = assert_refused(path, Reason.UNREADABLE)
    assert words in err.message


def test_damaged_palette_names_the_attribute(dicom_dir: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(dicom_dir / "OBXXXX1A.dcm")
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    entries = int(ds.RedPaletteColorLookupTableDescriptor[0]) or 65536
    ds.RedPaletteColorLookupTableData = ds.RedPaletteColorLookupTableData[: entries]  # half the entries
    ds.save_as(tmp_path / "pal.dcm")
    assert pixel_array(str(tmp_path / "pal.dcm")).ndim == 2  # pydicom returns the stored indices
    err = assert_refused(tmp_path / "pal.dcm", Reason.UNREADABLE)
    assert (f"Red Palette Color Lookup Table Data (0028,1201) holds {entries // 2:,} entries but its "
            f"Descriptor (0028,1101) declares {entries:,}") in err.message
