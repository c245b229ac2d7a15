"""The libraries the app loads only when a feature needs them, each checked by using it once.

Several safeguards degrade quietly when their library cannot be imported: the cut-file
probes in :mod:`cxr_desktop.imaging.integrity` then check only the end marker, so an
installation (above all a PyInstaller bundle, which sees only the imports it can trace)
that lacks one would score a truncated JPEG with grey fill and never say so. The self-test
(:mod:`cxr_desktop.selftest`) runs :func:`check_components` so that such a build fails
its check instead of a reader's study.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

REINSTALL = ("Reinstall CXR Review (or rebuild the bundle: packaging/build_bundle.sh) so that this library "
             "is included.")


@dataclass(frozen=True)
class Component:
    """One library: what it serves, and a check that raises when it cannot do its part."""

    name: str
    serves: str
    check: Callable[[], str]  # returns a short detail (e.g. a version or backend) when it works
    required: bool = True  # False: the app works without it (with a stated fallback)


def _gradient(bits: int) -> np.ndarray:
    return (np.arange(64, dtype=np.uint16).reshape(8, 8) * ((1 << bits) - 1) // 63).astype(np.uint16)


def _simplejpeg() -> str:
    import simplejpeg

    img = np.full((8, 8, 1), 128, np.uint8)
    back = simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(img, colorspace="GRAY"), colorspace="GRAY")
    if back.shape[:2] != (8, 8):
        raise RuntimeError(f"decoded shape {back.shape}")
    return getattr(simplejpeg, "__version__", "available")


def _libjpeg_turbo() -> str:
    from imagecodecs._jpeg8 import jpeg8_decode, jpeg8_encode, jpeg8_version

    img = _gradient(12)
    if not np.array_equal(jpeg8_decode(jpeg8_encode(img, lossless=True, bitspersample=12)), img):
        raise RuntimeError("a 12-bit lossless round trip changed the pixels")
    return str(jpeg8_version())


def _charls() -> str:
    from jpeg_ls import decode_buffer, encode

    img = _gradient(12)
    data, info = decode_buffer(encode(img).tobytes())
    back = np.frombuffer(bytes(data), "<u2").reshape(info["height"], info["width"])
    if not np.array_equal(back, img):
        raise RuntimeError("a JPEG-LS round trip changed the pixels")
    return "available"


def _pydicom_plugins() -> str:
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    missing = [uid.name for uid in (JPEG2000Lossless, JPEGLSLossless, RLELossless)
               if "pylibjpeg" not in get_decoder(uid).available_plugins]
    if missing:
        raise RuntimeError(f"no pylibjpeg decoder for {', '.join(missing)}")
    return "pylibjpeg for JPEG 2000, JPEG-LS, RLE"


def _redaction_table() -> str:
    from cxr_desktop.redaction import ANNEX_E_EDITION, basic_profile_tags

    n = len(basic_profile_tags())
    if n < 100:
        raise RuntimeError(f"the attribute table has only {n} entries")
    return f"PS3.15 Annex E table {ANNEX_E_EDITION}, {n} attributes"


def _highdicom() -> str:
    import highdicom

    return highdicom.__version__


def _pynetdicom() -> str:
    import pynetdicom

    return pynetdicom.__version__


def _dicomweb() -> str:
    import dicomweb_client

    return getattr(dicomweb_client, "__version__", "available")


def _keyring() -> str:
    import keyring

    return type(keyring.get_keyring()).__module__


COMPONENTS: tuple[Component, ...] = (
    Component("pylibjpeg plugins", "compressed DICOM pixel data (JPEG 2000, JPEG-LS, RLE)", _pydicom_plugins),
    Component("simplejpeg", "refusing cut 8-bit JPEG files and frames", _simplejpeg),
    Component("imagecodecs (libjpeg-turbo)", "refusing cut 12/16-bit JPEG Lossless DICOM frames", _libjpeg_turbo),
    Component("pyjpegls (CharLS)", "refusing cut JPEG-LS DICOM frames", _charls),
    Component("dicom-anonymizer", "keeping patient data out of logs and error messages", _redaction_table),
    Component("highdicom", "writing result objects (Secondary Capture, Structured Report)", _highdicom),
    Component("pynetdicom", "PACS query, retrieve and send (DIMSE)", _pynetdicom),
    Component("dicomweb-client", "PACS query, retrieve and send (DICOMweb)", _dicomweb),
    Component("keyring", "storing PACS passwords in the system keyring (else kept for the session only)",
              _keyring, required=False),
)


def check_components(components: tuple[Component, ...] = COMPONENTS) -> tuple[bool, dict[str, str]]:
    """Use each component once; (every required one works, {name: detail or "FAILED: ..."})."""
    ok = True
    out: dict[str, str] = {}
    for c in components:
        try:
            out[c.name] = c.check()
        except Exception as exc:  # noqa: BLE001 - ImportError, a missing extension module, a broken build
            what = "FAILED" if c.required else "UNAVAILABLE"
            out[c.name] = f"{what}: {exc.__class__.__name__}: {exc}; needed for {c.serves}. {REINSTALL}"
            ok &= not c.required
    return ok, out
