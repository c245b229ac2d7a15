"""Folder screening benchmark: figures and ratios against named baselines, in one run.

(a) screening img/s (``screen_folder``: decode workers + engine ``run_batch``) vs the
    engine's model-only forward img/s at the same batch size (baseline; goal >= 0.9),
    224 px ResNet50, on folders of real PNG/JPEG radiographs and of JPEG 2000 DICOMs.
    With inference on the CPU, decoding and the model share the same cores, so the
    best possible ratio is c_model / (c_model + c_decode) (CPU seconds per image);
    the bench measures c_decode and prints that ceiling beside each ratio;
(b) screening vs a naive per-image loop written the way the seed research scripts
    do it (PIL / pydicom open -> torchvision Resize/ToTensor/Normalize -> model(x),
    one image at a time, torch eager) (baseline);
(c) decode workers: 0 (in-process), 1, 2 (default here is min(cores, 4));
(d) peak RSS screening 200 vs 2,000 files (each run in its own subprocess; goal: flat).

The folders are built in a temp dir from ../shared/data and cycled with symlinks:
"PNG+JPEG" = the real PNGs + Figure 1 JPEGs (0.3-8 MP); "PNG 512" = the real
512x512 PNGs (NIH / TBX11K); "J2K DICOM" = real radiographs re-encoded as 12-bit
JPEG 2000 lossless DX files with a window, as DX "For Presentation" files carry (+ RG1_J2KI.dcm);
"J2K no VOI" = the same without a window (decoded at full resolution, see
cxr_desktop/imaging/reduced.py). Decode workers read each file at the resolution the
model needs (``load_for_model``: JPEG DCT scaling, JPEG 2000 resolution levels).

Usage: python bench/bench_screening.py [--files 120] [--dicoms 48] [--batch-size 16]
       [--quick] [--data ../shared/data] [--device auto]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# --------------------------------------------------------------------------- inputs


def _grey(path: Path) -> np.ndarray:
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def _link_cycle(sources: list[Path], folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i, src in zip(range(n), itertools.cycle(sources)):
        os.symlink(src, folder / f"{i:05d}_{src.name}")


def png_jpeg_sources(data: Path) -> list[Path]:
    return sorted((data / "cxr").rglob("*.png")) + sorted((data / "cxr").rglob("*.jpg"))


def png512_sources(data: Path) -> list[Path]:
    return [p for p in sorted((data / "cxr").glob("*.png")) if _grey(p).shape == (512, 512)]


def _j2k_dicom(arr: np.ndarray, path: Path, *, window: bool) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined, ds.PatientID = "DX", "PA", "CHEST", "BENCH"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window:  # as a modality writes for a DX "For Presentation" image (DICOM requires a VOI for those)
        lo, hi = (float(v) for v in np.percentile(arr, [0.5, 99.5]))
        ds.WindowCenter, ds.WindowWidth = round((lo + hi) / 2), max(1, round(hi - lo))
    ds.PixelData = arr.tobytes()
    ds.compress(JPEG2000Lossless, arr, encoding_plugin="pylibjpeg")
    ds.save_as(path, enforce_file_format=True)


def dicom_sources(data: Path, dest: Path, *, window: bool = True) -> list[Path]:
    """Radiographs re-encoded as 12-bit JPEG 2000 lossless DX DICOMs, plus RG1_J2KI.dcm.

    ``window``: the files carry a Window Center/Width (then the decode is reduced to what
    the model needs); without one the default window is the data range and the decode is full.
    """
    src = dest / ("_dicom_sources" if window else "_dicom_sources_nowin")
    src.mkdir(parents=True)
    picks = [data / "cxr" / "00000001_000.png", data / "cxr" / "16747_3_1.jpg",
             data / "cxr" / "covid-19-pneumonia-58-prior.jpg"] + sorted((data / "cxr" / "figure1").glob("*.jpg"))[:5]
    sources = []
    for p in picks:
        out = src / (p.stem + "_j2k.dcm")
        _j2k_dicom(_grey(p).astype(np.uint16) * 16, out, window=window)
        sources.append(out)
    rg1 = data / "dicom" / "RG1_J2KI.dcm"  # has a window
    if rg1.exists() and window:
        sources.append(rg1)
    return sources


def decode_cost(sources: list[Path], input_size: int = 224, *, full: bool = False) -> float:
    """Mean single-thread seconds per file for load_for_model + preprocess (what a decode worker
    does); ``full``: with a full-resolution load_image instead (the viewer's decode)."""
    from cxr_desktop.imaging import load_image
    from cxr_desktop.preprocess import load_for_model, preprocess

    t0 = time.perf_counter()
    for p in sources:
        image = load_image(p) if full else load_for_model(str(p), input_size=input_size)
        preprocess(image, input_size=input_size)
    return (time.perf_counter() - t0) / len(sources)


# --------------------------------------------------------------------------- measurements


def model_only_rate(engine, batch: int, seconds: float) -> float:
    s = engine.card.input_size
    x = np.random.default_rng(0).standard_normal((batch, 3, s, s)).astype(np.float32)
    engine.run_batch(x)
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:
        engine.run_batch(x)
        n += batch
    return n / (time.perf_counter() - t0)


def screening_rate(folder: Path, engine, out_dir: Path, *, batch: int, workers: int | None) -> tuple[float, float, dict]:
    """(img/s from the start of decoding, img/s wall incl. walk and worker start-up, status counts)."""
    from cxr_desktop.screening.runner import ScreenFinished, ScreenOptions, screen_folder

    out = Path(tempfile.mkdtemp(dir=out_dir)) / "r.csv"
    t0 = time.perf_counter()
    fin = None
    for ev in screen_folder(folder, engine, out, options=ScreenOptions(batch_size=batch, workers=workers)):
        if isinstance(ev, ScreenFinished):
            fin = ev
    wall = time.perf_counter() - t0
    return fin.rate, fin.rows_written / wall, fin.summary["status"]


def naive_rate(folder: Path, model, n: int) -> float:
    """The seed projects' way: one image at a time, PIL + torchvision transforms + torch eager."""
    import pydicom
    import torch
    import torchvision.transforms as T
    from PIL import Image

    tf = T.Compose([T.Resize((224, 224)), T.ToTensor(),
                    T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    files = sorted(folder.iterdir())[:n]
    model.eval()
    t0 = time.perf_counter()
    for p in files:
        if p.suffix == ".dcm":
            arr = pydicom.dcmread(p).pixel_array.astype(np.float32)
            arr = (255 * (arr - arr.min()) / max(float(arr.max() - arr.min()), 1.0)).astype(np.uint8)
            img = Image.fromarray(arr).convert("RGB")
        else:
            img = Image.open(p).convert("RGB")
        x = tf(img).unsqueeze(0)
        with torch.no_grad():
            torch.softmax(model(x), dim=1)
    return len(files) / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- peak RSS (child process)


def rss_child(n: int, model_path: str, data: str, batch: int) -> None:
    """Screen n symlinked files; print JSON with the peak RSS of this process and of its process tree."""
    import psutil

    from cxr_desktop.inference.engine import EngineOptions, load_engine
    from cxr_desktop.screening.runner import ScreenFinished, ScreenOptions, screen_folder

    me = psutil.Process()
    peak = {"main": 0, "tree": 0}
    stop = threading.Event()

    def sample() -> None:  # RSS of this process; PSS (shared pages split fairly) of the whole tree
        while not stop.is_set():
            try:
                main = me.memory_info().rss
                tree = me.memory_full_info().pss + sum(c.memory_full_info().pss
                                                       for c in me.children(recursive=True))
            except psutil.Error:
                continue
            peak["main"] = max(peak["main"], main)
            peak["tree"] = max(peak["tree"], tree)
            time.sleep(0.05)

    tmp = Path(tempfile.mkdtemp(prefix="cxr-rss-"))
    sources = sorted((Path(data) / "cxr").glob("*.png"))
    folder = tmp / "in"
    folder.mkdir()
    for i, s in zip(range(n), itertools.cycle(sources)):
        os.symlink(s, folder / f"{i:05d}_{s.name}")
    engine = load_engine(model_path, options=EngineOptions(device="cpu", cache_dir=tmp / "cache"))
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    fin = None
    for ev in screen_folder(folder, engine, tmp / "r.csv", options=ScreenOptions(batch_size=batch)):
        if isinstance(ev, ScreenFinished):
            fin = ev
    stop.set()
    t.join()
    import resource

    print(json.dumps({"files": fin.rows_written, "rate": fin.rate, "peak_main": peak["main"],
                      "peak_tree": peak["tree"],
                      "ru_maxrss_main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def run_rss(n: int, model_path: Path, data: Path, batch: int) -> dict:
    env = dict(os.environ)
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--model", str(model_path),
                          "--data", str(data), "--batch-size", str(batch)],
                         capture_output=True, text=True, env=env, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=120, help="files in each PNG/JPEG folder")
    ap.add_argument("--dicoms", type=int, default=40, help="files in the JPEG 2000 DICOM folder")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8.0, help="model-only timing duration")
    ap.add_argument("--naive", type=int, default=8, help="files timed with the naive loop")
    ap.add_argument("--rss", default="200,2000", help="file counts for the peak-RSS runs")
    ap.add_argument("--quick", action="store_true", help="small folders (about a minute)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child, str(args.model), str(args.data), args.batch_size)
        return 0
    if args.quick:
        args.files, args.dicoms, args.seconds, args.naive, args.rss = 40, 16, 4.0, 6, "100,1000"

    import torch

    from cxr_desktop.inference.engine import EngineOptions, load_engine
    from cxr_desktop.model import init_model, save_model
    from cxr_desktop.screening.runner import default_mp_context, default_workers, prepare_workers

    tmp = Path(tempfile.mkdtemp(prefix="cxr-bench-screen-"))
    os.environ.setdefault("CXR_CACHE_DIR", str(tmp / "cache"))
    prepare_workers()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU threads, torch threads {torch.get_num_threads()}, "
          f"decode workers default {default_workers('cpu')} on CPU / {default_workers('cuda')} on CUDA "
          f"({default_mp_context()}), batch {args.batch_size}")
    model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal", weights="imagenet",
                             input_size=224, name="bench", seed=0)
    model_path = tmp / "bench-224.safetensors"
    save_model(model_path, model, card)
    engine = load_engine(model_path, options=EngineOptions(device=args.device, max_batch=args.batch_size))
    print(f"engine: {engine.device_label}; model ResNet50 224 px ({card.provenance['initial_weights']['source']} weights)")

    t0 = time.perf_counter()
    sets = {"PNG+JPEG": (png_jpeg_sources(args.data), args.files), "PNG 512": (png512_sources(args.data), args.files),
            "J2K DICOM": (dicom_sources(args.data, tmp), args.dicoms),
            "J2K no VOI": (dicom_sources(args.data, tmp, window=False), args.dicoms)}
    for i, (name, (sources, n)) in enumerate(sets.items()):
        _link_cycle(sources, tmp / f"set{i}", n)
    print(f"folders built in {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"{name} {n} files ({len(src)} distinct)" for name, (src, n) in sets.items()))

    fwd = model_only_rate(engine, args.batch_size, args.seconds)
    cores = os.cpu_count() or 1
    on_cpu = engine.device_info.kind == "cpu"
    print(f"\n(a) screening vs model-only forward (baseline: engine.run_batch at batch {args.batch_size}: "
          f"{fwd:.2f} img/s; re-measured just before each folder, as machines shared with other work drift)")
    results = {}
    for i, (name, (sources, n)) in enumerate(sets.items()):
        dec = decode_cost(sources)
        dec_full = decode_cost(sources, full=True)
        fwd_now = model_only_rate(engine, args.batch_size, args.seconds / 2)
        rate, wall, status = screening_rate(tmp / f"set{i}", engine, tmp, batch=args.batch_size, workers=None)
        results[name] = rate
        ceiling = ""
        if on_cpu:  # CPU seconds per image: model = cores / fwd, decode = dec
            ceiling = f"; CPU-bound ceiling here x{1.0 / (1.0 + dec * fwd_now / cores):4.2f}"
        print(f"  {name:<10} {rate:6.2f} img/s  x{rate / fwd_now:4.2f} of model-only {fwd_now:5.2f} img/s "
              f"(goal >= 0.90{ceiling}; decode+preprocess {dec * 1000:5.1f} ms/file/core, "
              f"full-resolution decode {dec_full * 1000:5.1f})  "
              f"wall incl. walk+start {wall:5.2f} img/s  {status}")

    print(f"\n(b) screening vs naive per-image loop (baseline: PIL/pydicom -> torchvision transforms -> "
          f"torch eager, batch 1, first {args.naive} files)")
    eager = engine._cpu_model  # same weights, torch eager
    for i, name in enumerate(sets):
        naive = naive_rate(tmp / f"set{i}", eager, args.naive)
        print(f"  {name:<10} naive {naive:6.2f} img/s   screening x{results[name] / naive:4.2f} faster")

    n_sweep = max(args.batch_size * 2, args.files // 2)
    _link_cycle(sets["PNG+JPEG"][0], tmp / "sweep", n_sweep)
    print(f"\n(c) decode workers, PNG+JPEG folder of {n_sweep} files (baseline: 0 = decode in the inference "
          "process, no overlap)")
    base = None
    for w in (0, 1, 2):
        rate, _, _ = screening_rate(tmp / "sweep", engine, tmp, batch=args.batch_size, workers=w)
        base = base or rate
        print(f"  workers {w}: {rate:6.2f} img/s   x{rate / base:4.2f} vs 0   x{rate / fwd:4.2f} of model-only")

    counts = [int(c) for c in args.rss.split(",")]
    print(f"\n(d) peak memory vs number of files (subprocess each; ResNet50 at 64 px input, the smallest a "
          f"model card allows, so the {counts[-1]}-file run stays short; real 512x512 PNGs; importing torch "
          "alone takes ~0.7 GiB RSS here)")
    small, card32 = init_model(classes=["normal", "abnormal"], positive_class="abnormal", weights="none",
                               input_size=64, name="bench64", seed=0)
    small_path = tmp / "bench-64.safetensors"
    save_model(small_path, small, card32)
    peaks = {}
    for n in counts:
        r = run_rss(n, small_path, args.data, args.batch_size)
        peaks[n] = r
        print(f"  {r['files']:>5} files: peak RSS main process {r['peak_main'] / 2**20:7.1f} MiB; peak PSS main + "
              f"fork server + decode workers {r['peak_tree'] / 2**20:7.1f} MiB  ({r['rate']:.1f} img/s)")
    lo, hi = peaks[counts[0]], peaks[counts[-1]]
    print(f"  ratio {counts[-1]} / {counts[0]} files: main x{hi['peak_main'] / lo['peak_main']:4.2f}, "
          f"tree x{hi['peak_tree'] / lo['peak_tree']:4.2f}  (goal: ~1.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
