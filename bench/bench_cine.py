"""Cine playback benchmark: achieved frames/s at 10, 20 and 30 frames/s set, and ms per frame step.

For each multi-frame file, a fresh copy (cold caches) is opened in a real MainWindow (offscreen,
no model) and played with View > Cine for a few seconds per rate. Figures per rate:
- achieved: frames that reached the screen per second over the whole run (first pass included);
- later passes: the same, counted only after every frame was shown once (the series from cache);
- step p50/p95: ms between two frames on screen;
- gui ms/frame: CPU time of the GUI thread per frame shown (decoding runs in a worker);
and per file, decode ms/frame: the worker's ``load_for_view`` per new frame, timed alone (no GUI).

Run against a baseline tree and the current one, printed side by side:

    python bench/bench_cine.py --baseline /tmp/cine-old      # e.g. git worktree add /tmp/cine-old 7bae91a

Each tree runs in its own subprocess (``--child TREE``), importing ``cxr_desktop`` from that tree.
The synthetic files (a 60-frame 512x512 16-bit MR-like series, a 30-frame 480x640 RGB US-like
series) are written to a temporary folder; the rest come from ../shared/data/dicom.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "dicom"
RATES = (10, 20, 30)
FILES = ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm", "liver.dcm", "OBXXXX1A_rle_2frame.dcm",
         "synthetic_mr_60x512.dcm", "synthetic_us_rgb_30x480x640.dcm")


def make_synthetic(folder: Path) -> None:
    """Two larger multi-frame files than the public corpus has (uncompressed, as cine series often are)."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def save(name: str, arr: np.ndarray, photometric: str, bits: int, modality: str) -> None:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.Modality, ds.PatientID = modality, "BENCH"
        ds.set_pixel_data(arr, photometric, bits)
        ds.save_as(folder / name, enforce_file_format=True)

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512]
    mr = np.stack([(((xx - 256) ** 2 + (yy - 256 - 3 * k) ** 2) < 150 ** 2) * 800 + rng.integers(0, 200, (512, 512))
                   for k in range(60)]).astype(np.uint16)
    save("synthetic_mr_60x512.dcm", mr, "MONOCHROME2", 12, "MR")
    us = rng.integers(0, 255, (30, 480, 640, 3), dtype=np.uint8)
    save("synthetic_us_rgb_30x480x640.dcm", us, "RGB", 8, "US")


CHILD = r'''
import json, os, shutil, sys, tempfile, time
tree, files, seconds = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in (getattr(type(f), "__module__", "") or "")
                    and "editable" not in (getattr(f, "__module__", "") or "")]
sys.path.insert(0, tree)
tmp = Path = None
from pathlib import Path
tmp = Path(tempfile.mkdtemp(prefix="bench-cine-"))
os.environ.update(CXR_CACHE_DIR=str(tmp / "cache"), CXR_DATA_DIR=str(tmp / "data"))
from PySide6.QtCore import QEventLoop, QSettings, QTimer
from PySide6.QtWidgets import QApplication
app = QApplication([])
import cxr_desktop
assert Path(cxr_desktop.__file__).resolve().is_relative_to(Path(tree).resolve()), cxr_desktop.__file__
from cxr_desktop.gui.main_window import MainWindow
from cxr_desktop.gui.settings import AppSettings

def spin(ms):
    loop = QEventLoop(); QTimer.singleShot(int(ms), loop.quit); loop.exec()

out = {}
for src in files:
    out[Path(src).name] = per = {}
    for fps in (10, 20, 30):
        copy = tmp / f"{fps}_{Path(src).name}"  # a new file per run: nothing cached from the last
        shutil.copy(src, copy)
        w = MainWindow(AppSettings(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)))
        w.resize(1100, 800); w.show()
        shown = []
        w.image_displayed.connect(lambda im: shown.append((time.perf_counter(), im.frame_index)))
        w.open_paths([str(copy)])
        t0 = time.time()
        while not shown and time.time() - t0 < 30:
            spin(20)
        n = w.current_image.frame_count
        w.reading.set_cine_fps(fps)
        shown.clear()
        cpu0 = time.thread_time()
        w.reading.start_cine()
        spin(seconds * 1000)
        w.reading.stop_cine()
        cpu = time.thread_time() - cpu0
        spin(200)
        w.shutdown(); w.deleteLater(); spin(50)
        times = [t for t, _ in shown]
        steps = sorted((b - a) * 1000 for a, b in zip(times, times[1:]))
        seen, later = set(), None
        for i, (_, f) in enumerate(shown):
            seen.add(f)
            if len(seen) == n and later is None:
                later = i
        rate = lambda ts: (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 2 and ts[-1] > ts[0] else None
        per[fps] = dict(frames=n, shown=len(shown), achieved=rate(times),
                        later=rate(times[later:]) if later is not None else None,
                        p50=steps[len(steps) // 2] if steps else None,
                        p95=steps[min(len(steps) - 1, int(0.95 * len(steps)))] if steps else None,
                        gui_ms=1000 * cpu / max(1, len(shown)))
from cxr_desktop.gui import workers  # worker cost per frame alone (no GUI): a fresh copy, first pass
for src in files:
    copy = tmp / f"decode_{Path(src).name}"
    shutil.copy(src, copy)
    n = workers.load_for_view(str(copy), 0).image.frame_count
    k = min(n, 20)
    t = time.perf_counter()
    for i in range(1, k):
        workers.load_for_view(str(copy), i)
    out[Path(src).name]["decode_ms"] = 1000 * (time.perf_counter() - t) / (k - 1)
print("RESULT " + json.dumps(out), flush=True)
shutil.rmtree(tmp, ignore_errors=True)
'''


def run_tree(tree: Path, files: list[str], seconds: float) -> dict:
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"),
               OMP_NUM_THREADS="1", PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tree), json.dumps(files), str(seconds)],
                          capture_output=True, text=True, env=env, timeout=1800)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"bench child for {tree} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def fmt(v: float | None, spec: str = "5.1f") -> str:
    return format(v, spec) if v is not None else "  -  "


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, help="tree of the baseline commit (git worktree)")
    ap.add_argument("--seconds", type=float, default=4.0, help="play time per file and rate")
    ap.add_argument("--files", nargs="*", default=list(FILES))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cine-data-"))
    try:
        make_synthetic(tmp)
        files = [str(tmp / f) if (tmp / f).exists() else str(DATA / f) for f in args.files]
        trees = ([("baseline", args.baseline)] if args.baseline else []) + [("now", REPO)]
        results = {name: run_tree(tree, files, args.seconds) for name, tree in trees}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"Cine, {args.seconds:.0f} s per file and rate, fresh copy of each file (cold caches); "
          "fps = frames on screen per second; 'later' = after every frame was shown once; "
          "step = ms between frames; gui = GUI-thread CPU ms per frame.")
    cols = [n for n, _ in trees]
    head = "  ".join(f"{c + ' fps/later/step50/step95/gui':>36}" for c in cols)
    print(f"{'file':34} {'set':>4}  {head}  ratio fps")
    for f in args.files:
        dec = "  ".join(f"{c} {fmt(results[c][Path(f).name]['decode_ms'], '5.1f')}" for c in cols)
        print(f"{f[:34]:34} decode ms/frame (worker alone, first pass): {dec}")
        for fps in RATES:
            cells, vals = [], []
            frames = None
            for c in cols:
                r = results[c][Path(f).name][str(fps)]
                frames = r["frames"]
                vals.append(r["achieved"])
                cells.append(f"{fmt(r['achieved'])} {fmt(r['later'])} {fmt(r['p50'], '6.1f')} "
                             f"{fmt(r['p95'], '6.1f')} {fmt(r['gui_ms'], '5.1f')}")
            ratio = (vals[-1] / vals[0]) if len(vals) == 2 and vals[0] and vals[-1] else None
            print(f"{f[:26] + f' ({frames}f)':34} {fps:>4}  " + "  ".join(f"{c:>36}" for c in cells)
                  + f"  {fmt(ratio, '5.2f')}x")


if __name__ == "__main__":
    main()
