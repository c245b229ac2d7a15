"""Stage the bundle's sample studies and its transfer-syntax self-test set (build time only).

Copies into ``DEST/samples`` the repository's sample studies (``resources/samples``: small
public images with their sources and licences in its README.md; ``build.spec`` passes
``samples_dir``), or, without ``samples_dir``, a few chest radiographs from
``../shared/data/cxr`` (one per format the viewer reads: PNG, RGB-encoded JPEG, DICOM
MONOCHROME2 and MONOCHROME1), and into
``DEST/selftest`` the smallest decodable DICOM for each transfer syntax the app must read
(implicit/explicit little endian, explicit big endian, RLE, JPEG baseline, JPEG lossless,
JPEG-LS, JPEG 2000 lossless/lossy), with ``manifest.json`` listing what each file holds so
the frozen ``--self-test`` can prove that every one still decodes.

DEST is a folder in the build directory, never the repository. ``build.spec`` calls
:func:`stage`; run it alone to inspect the selection::

    python packaging/collect_samples.py build/staged-resources [--shared-data ../shared/data] [--repo-samples]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_SAMPLES = Path(__file__).resolve().parents[1] / "resources" / "samples"  # what the bundle ships
SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff")

# Without samples_dir: the sample studies by file name in shared/data/cxr (small, varied, real CXRs).
SAMPLE_STUDIES = [
    "00000001_000.png",             # NIH ChestX-ray14, 8-bit grey PNG
    "tbx11k_health_h0001.png",      # TBX11K healthy, 3-channel PNG
    "tbx11k_tb_tb0005.png",         # TBX11K tuberculosis
    "16747_3_1.jpg",                # PadChest-style, RGB-encoded JPEG, non-square
    "siim_pneumothorax_sample.dcm", # DICOM CR, MONOCHROME2, JPEG baseline
    "fake_monochrome1.dcm",         # the same image as MONOCHROME1 (inverted display)
]

# Transfer syntaxes the bundled decoders must handle: UID -> short name. The first group is
# required (the build fails without a file for each); the second is taken when a file exists.
REQUIRED_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "implicit-vr-little-endian",
    "1.2.840.10008.1.2.1": "explicit-vr-little-endian",
    "1.2.840.10008.1.2.2": "explicit-vr-big-endian",
    "1.2.840.10008.1.2.5": "rle-lossless",
    "1.2.840.10008.1.2.4.50": "jpeg-baseline",
    "1.2.840.10008.1.2.4.70": "jpeg-lossless-sv1",
    "1.2.840.10008.1.2.4.80": "jpeg-ls-lossless",
    "1.2.840.10008.1.2.4.90": "jpeg2000-lossless",
    "1.2.840.10008.1.2.4.91": "jpeg2000",
}
OPTIONAL_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2.1.99": "deflated-explicit-vr-little-endian",
    "1.2.840.10008.1.2.4.51": "jpeg-extended",
    "1.2.840.10008.1.2.4.57": "jpeg-lossless",
    "1.2.840.10008.1.2.4.81": "jpeg-ls-near-lossless",
    "1.2.840.10008.1.2.4.201": "htj2k-lossless",
    "1.2.840.10008.1.2.4.203": "htj2k",
}
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SyntaxSample:
    """One file of the self-test set: what it is and where it came from."""

    uid: str
    name: str
    file: str     # file name inside selftest/
    source: str   # original file name (shared data), for the build log
    bytes: int
    shape: tuple[int, int]
    plugins: tuple[str, ...]  # pydicom decoder plugins available at build time; the self-test wants them all


def default_shared_data() -> Path:
    """``CXR_SHARED_DATA`` or ``../shared/data`` beside the repository."""
    env = os.environ.get("CXR_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def select_samples(cxr_dir: Path, names: list[str] | None = None) -> list[Path]:
    """The sample studies that exist in ``cxr_dir``, in the listed order."""
    names = SAMPLE_STUDIES if names is None else names
    return [cxr_dir / n for n in names if (cxr_dir / n).is_file()]


def _transfer_syntax(path: Path) -> str | None:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:
        return None
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return str(uid) if uid else None


def decoder_plugins(uid: str) -> tuple[str, ...]:
    """The pydicom pixel-data decoder plugins usable for ``uid`` here (empty if uncompressed)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    try:
        return tuple(sorted(get_decoder(UID(uid)).available_plugins))
    except Exception:  # no decoder registered for this syntax
        return ()


def select_transfer_syntax_set(dicom_dirs: list[Path]) -> tuple[list[tuple], list[str]]:
    """For each known transfer syntax, the smallest file in ``dicom_dirs`` that decodes.

    Decoding is checked with the app's own :func:`cxr_desktop.imaging.load_image`, so a file
    no installed decoder reads (e.g. a 1-bit RLE segmentation) is never chosen. Returns
    ``([(path, uid, shape, decoder_plugins)], missing_required_uids)``.
    """
    from cxr_desktop.errors import CxrError
    from cxr_desktop.imaging import load_image

    wanted = {**REQUIRED_TRANSFER_SYNTAXES, **OPTIONAL_TRANSFER_SYNTAXES}
    # pydicom logs an ERROR for each file it cannot decode; trying those is expected here.
    pydicom_log = logging.getLogger("pydicom")
    level = pydicom_log.level
    pydicom_log.setLevel(logging.CRITICAL)
    try:
        return _select(dicom_dirs, wanted, load_image, CxrError)
    finally:
        pydicom_log.setLevel(level)


def _select(dicom_dirs: list[Path], wanted: dict[str, str], load_image, error_type: type) -> tuple[list, list[str]]:
    candidates: dict[str, list[Path]] = {}
    for d in dicom_dirs:
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.dcm")):
            uid = _transfer_syntax(p)
            if uid in wanted:
                candidates.setdefault(uid, []).append(p)
    chosen: list[tuple] = []
    for uid in wanted:
        for p in sorted(candidates.get(uid, []), key=lambda q: (q.stat().st_size, q.name)):
            try:
                im = load_image(p)
            except error_type:
                continue
            chosen.append((p, uid, (int(im.rows), int(im.columns)), decoder_plugins(uid)))
            break
    found = {c[1] for c in chosen}
    missing = [uid for uid in REQUIRED_TRANSFER_SYNTAXES if uid not in found]
    return chosen, missing


def repo_samples(folder: Path = REPO_SAMPLES) -> tuple[list[Path], list[Path]]:
    """(image files, other files such as README.md) directly in ``folder``, sorted by name."""
    if not folder.is_dir():
        return [], []
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in SAMPLE_SUFFIXES]
    return images, [p for p in files if p not in images]


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def stage(dest: Path, shared_data: Path | None = None, *, strict: bool = True,
          samples_dir: Path | None = None) -> dict:
    """Fill ``dest/samples`` and ``dest/selftest`` (replacing what was there); returns a summary.

    ``samples_dir`` (``build.spec``: the repository's ``resources/samples``): copy its images and
    notes (README.md with sources and licences); None: pick :data:`SAMPLE_STUDIES` from the
    shared data. With ``strict`` a missing required transfer syntax or an empty sample set raises
    ``RuntimeError``: a bundle whose self-test cannot pass must not be built silently.
    """
    shared_data = default_shared_data() if shared_data is None else shared_data
    cxr_dir, dicom_dir = shared_data / "cxr", shared_data / "dicom"
    dest = Path(dest)
    for sub in ("samples", "selftest"):
        shutil.rmtree(dest / sub, ignore_errors=True)
    notes: list[Path] = []
    if samples_dir is not None:
        samples, notes = repo_samples(Path(samples_dir))
    else:
        samples = select_samples(cxr_dir)
    for p in samples + notes:
        _copy(p, dest / "samples" / p.name)
    chosen, missing = select_transfer_syntax_set([dicom_dir, cxr_dir])
    entries = []
    for p, uid, shape, plugins in chosen:
        name = REQUIRED_TRANSFER_SYNTAXES.get(uid) or OPTIONAL_TRANSFER_SYNTAXES[uid]
        fname = f"{name}.dcm"
        _copy(p, dest / "selftest" / fname)
        entries.append(SyntaxSample(uid=uid, name=name, file=fname, source=p.name,
                                    bytes=p.stat().st_size, shape=shape, plugins=plugins))
    if entries:
        manifest = {"required": list(REQUIRED_TRANSFER_SYNTAXES),
                    "files": [asdict(e) for e in entries]}
        (dest / "selftest" / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    summary = {"samples": [p.name for p in samples], "sample_notes": [p.name for p in notes],
               "samples_from": "repository" if samples_dir is not None else "shared data",
               "transfer_syntaxes": [asdict(e) for e in entries],
               "missing_required": missing, "shared_data_found": shared_data.is_dir()}
    if strict and (missing or not samples):
        raise RuntimeError(
            f"cannot stage the bundle's sample data from {shared_data}: "
            + (f"no decodable DICOM for transfer syntaxes {missing}; " if missing else "")
            + ("no sample studies found; " if not samples else "")
            + "set CXR_SHARED_DATA to the shared data folder, or CXR_ALLOW_NO_SAMPLES=1 to build without")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path, help="folder to fill (in the build dir, not the repo)")
    ap.add_argument("--shared-data", type=Path, default=None)
    ap.add_argument("--repo-samples", action="store_true",
                    help="take the sample studies from resources/samples (what build.spec does)")
    args = ap.parse_args(argv)
    try:
        summary = stage(args.dest, args.shared_data, samples_dir=REPO_SAMPLES if args.repo_samples else None)
    except RuntimeError as exc:
        print(f"collect_samples: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    # Run from anywhere: make the repository's cxr_desktop importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
