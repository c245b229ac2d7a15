"""Patient-key leak, before and after one key space: a folder where every patient has a PNG and a DICOM.

Builds, from the real radiographs in ``../shared/data/cxr``, a two-class folder in which each
patient ``P0001`` ... has one PNG named ``P0001_png.png`` and one 16-bit DICOM (PatientID
``P0001``, a neutral file name) of the same radiograph, half of them MONOCHROME1, half of the
patients with a synthetic opacity. The scan groups the files twice: with the old keying
(``hash_group("dicom", id)`` vs ``hash_group("pattern", key)``: two groups per patient) and with
the current one (one key space), splits both with the engine's splitter over several seeds, and
prints how many validation/test images have their patient (the same radiograph) in training.

Usage: python bench/bench_patient_key_leak.py [--patients 40] [--seeds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # dicom_builders

from cxr_desktop.training.scan import hash_group, scan_folder  # noqa: E402
from cxr_desktop.training.split import patient_check, split_groups  # noqa: E402
from cxr_desktop.training.synthetic import find_sources  # noqa: E402
from dicom_builders import new_dataset  # noqa: E402

PATTERN = r"^(P\d{4})_"


def _dicom(path: Path, grey: np.ndarray, pid: str, mono1: bool) -> None:
    ds = new_dataset()
    ds.PatientID = pid
    ds.Modality = "DX"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    px = np.rint(np.clip(grey, 0, 1) * 4095).astype(np.uint16)
    ds.set_pixel_data(4095 - px if mono1 else px, "MONOCHROME1" if mono1 else "MONOCHROME2", 12)
    ds.save_as(path, enforce_file_format=True)


def build(root: Path, n_patients: int) -> dict[str, str]:
    """The folder; returns the true patient of every file (relative path)."""
    sources = find_sources(REPO.parent / "shared" / "data" / "cxr", max_side=256)
    rng = np.random.default_rng(0)
    truth = {}
    for i in range(n_patients):
        src = sources[i % len(sources)].grey
        pid = f"P{i + 1:04d}"
        cls = "opacity" if i % 2 else "normal"
        grey = src.copy()
        if cls == "opacity":
            h, w = grey.shape
            y, x = np.mgrid[0:h, 0:w]
            cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.25, 0.75) * w, 0.1 * min(h, w)
            grey = np.clip(grey + 0.4 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r)), 0, 1)
        grey = np.clip(grey + rng.normal(0, 0.01, grey.shape), 0, 1)  # each patient's image is distinct
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{pid}_png.png"), np.rint(grey * 255).astype(np.uint8))
        _dicom(d / f"study{i + 1:04d}.dcm", grey, pid, mono1=i % 4 == 1)
        truth[f"{cls}/{pid}_png.png"] = truth[f"{cls}/study{i + 1:04d}.dcm"] = pid
    return truth


def leaks(items, groups, truth, seed: int) -> tuple[int, int, int]:
    """(val/test images whose patient has images in training, val/test images, patients in 2+ splits)."""
    split = split_groups([it.label for it in items], groups, val_fraction=0.15, test_fraction=0.15, seed=seed)
    where = defaultdict(set)
    for name in ("train", "val", "test"):
        for i in split.indices(name):
            where[truth[items[i].rel]].add(name)
    held = split.val + split.test
    leaked = sum(1 for i in held if "train" in where[truth[items[i].rel]])
    return leaked, len(held), sum(1 for s in where.values() if len(s) > 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        truth = build(root, args.patients)
        scan = scan_folder(root, patient_regex=PATTERN, decode=False, workers=2)
        old = [hash_group("dicom", truth[it.rel]) if it.group_source == "dicom" else hash_group("pattern", truth[it.rel])
               for it in scan.items]
        new = [it.group for it in scan.items]
        print(f"{len(scan.items)} images of {args.patients} patients (one PNG + one DICOM each)")
        print(f"patient groups: old keying {len(set(old))}, one key space {len(set(new))}")
        for label, groups in (("old keying", old), ("one key space", new)):
            rows = [leaks(scan.items, groups, truth, s) for s in range(args.seeds)]
            lk = sum(r[0] for r in rows)
            tot = sum(r[1] for r in rows)
            pats = sum(r[2] for r in rows)
            print(f"{label:14s}: val+test images whose patient is in training: {lk}/{tot} ({100 * lk / max(tot, 1):.0f} %), "
                  f"patients in 2+ splits: {pats} over {args.seeds} seeds")
        split = split_groups([it.label for it in scan.items], new, val_fraction=0.15, test_fraction=0.15, seed=0)
        check = patient_check(split, scan.items, scan)
        print("patients per split (seed 0): " + ", ".join(f"{k} {v['patients']}" for k, v in check["per_split"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
