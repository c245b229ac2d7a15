"""cxr-node figures (issue 13): images/s received and screened, and result latency into a real Orthanc.

(a) receive: images/s a pynetdicom SCU pushes into the node over loopback (one association,
    DX-wrapped real radiographs, 8-bit, longest side 640 px), from the first C-STORE to the
    last success status; baseline: the same files pushed into Orthanc (a C++ storage SCP);
(b) screened: images/s from the first image arriving to the last worklist row (receive +
    study completion + screening, as the node runs it, studies of 5 images), and the node's
    screening-only rate (first to last scored row); baseline: ``cxr-screen`` on a folder of
    the same files with the same model, workers and batch size (ratio node / cxr-screen);
(c) latency: time from the last image of a study arriving (its C-STORE success status,
    association released at once) to its SR being stored in Orthanc (polled every 50 ms
    through the REST API), per study, with ``--forward``; studies of 1 and of 4 images.
    With a quiet-period completion instead of a release, add ``--study-timeout``.

Every figure runs real processes (the node as ``python -m cxr_desktop.cli.node``). On a
shared 2-core machine the figures move with the load; the ratios are the point.

Usage: python bench/bench_node.py [--model FILE] [--images 40] [--studies 4] [--workers 1]
       [--batch-size 16] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from node_traffic import push, radiograph_sources, start_node, wrap_as_dx, write  # noqa: E402
from orthanc_fixture import OrthancServer, orthanc_binary  # noqa: E402


def _model(arg: str | None, tmp: Path) -> Path:
    if arg:
        return Path(arg)
    bundled = REPO / "resources" / "models" / "demo-cxr.safetensors"
    if bundled.is_file():
        return bundled
    from cxr_desktop.model import init_model, save_model

    model, card = init_model(classes=["normal", "pneumonia"], positive_class="pneumonia", weights="none",
                             input_size=224, name="bench-node", seed=1)
    path = tmp / "model.safetensors"
    save_model(path, model, card)
    return path


def _studies(sources: list[Path], n_images: int, per_study: int, folder: Path) -> list[list[Path]]:
    from pydicom.uid import generate_uid

    out, k = [], 0
    while k < n_images:
        st, se = generate_uid(), generate_uid()
        files = []
        for j in range(min(per_study, n_images - k)):
            files.append(write(wrap_as_dx(sources[k % len(sources)], st, se, number=j + 1),
                               folder / f"{k:04d}.dcm"))
            k += 1
        out.append(files)
    return out


def _timed_push(port: int, files: list[Path], called_ae: str = "CXRREVIEW") -> float:
    t0 = time.perf_counter()
    res = push(port, files, called_ae=called_ae)
    dt = time.perf_counter() - t0
    bad = [s for _, s in res if s != 0]
    if bad:
        raise RuntimeError(f"{len(bad)} C-STOREs failed: {bad[:3]}")
    return dt


def _rows(out: Path) -> int:
    j = out / "worklist.csv.journal"
    return max(0, len(j.read_bytes().splitlines()) - 1) if j.exists() else 0


def _scored_times(out: Path) -> list[float]:
    f = out / "screened.jsonl"
    return [json.loads(x)["time"] for x in f.read_bytes().splitlines() if x.strip()] if f.exists() else []


def bench_receive_and_screen(model: Path, studies: list[list[Path]], tmp: Path, args: argparse.Namespace) -> dict:
    flat = [f for s in studies for f in s]
    node_args = ["--study-timeout", "2", "--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    # (a) receive only: the node's screening runs too, as in real use.
    out = tmp / "node-a"
    node = start_node(out, model, extra=node_args)
    t_start = time.time()
    recv_s = sum(_timed_push(node.port, s) for s in studies)
    deadline = time.monotonic() + 1800
    while _rows(out) < len(flat) and time.monotonic() < deadline:
        time.sleep(0.05)
    t_end = time.time()
    assert node.terminate() == 0
    scored = _scored_times(out)
    end_to_end = len(flat) / (t_end - t_start)
    screening_only = (len(scored) - 1) / (max(scored) - min(scored)) if len(scored) > 1 else float("nan")

    # Baseline for (a): the same files into Orthanc.
    orthanc_recv = None
    if orthanc_binary():
        with OrthancServer(tmp / "orthanc-a") as pacs:
            orthanc_recv = len(flat) / sum(_timed_push(pacs.dicom_port, s, called_ae=pacs.aet) for s in studies)

    # Baseline for (b): cxr-screen on a folder of the same files.
    folder = tmp / "screen-in"
    folder.mkdir()
    for f in flat:
        os.symlink(f, folder / f.name)
    out2 = tmp / "screen.csv"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cxr_desktop.cli.screen", str(folder), "--out", str(out2), "--json",
                    "--model", str(model), "--batch-size", str(args.batch_size), "--workers", str(args.workers)],
                   cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), check=True, capture_output=True)
    screen_wall = time.perf_counter() - t0
    # cxr-screen's own rate covers its screening part (after import and model load), like the node's.
    rate = float(json.loads(out2.with_suffix(".json").read_text())["summary"]["files_per_s"])
    return {"images": len(flat), "receive_img_s": len(flat) / recv_s, "orthanc_receive_img_s": orthanc_recv,
            "node_end_to_end_img_s": end_to_end, "node_screening_img_s": screening_only,
            "cxr_screen_wall_s": screen_wall, "cxr_screen_rate": rate}


def bench_latency(model: Path, sources: list[Path], tmp: Path, args: argparse.Namespace) -> dict:
    if not orthanc_binary():
        return {"skipped": "Orthanc is not installed"}
    from pydicom.uid import generate_uid

    pacs = OrthancServer(tmp / "orthanc-c", our_ae="CXRREVIEW").start()
    try:
        cfg = tmp / "pacs.json"
        cfg.write_text(json.dumps({"format": "cxr-pacs-servers", "version": 1, "servers": [
            {"kind": "dimse", "name": "orthanc", "host": "127.0.0.1", "port": pacs.dicom_port,
             "called_ae": pacs.aet, "our_ae": "CXRREVIEW"}]}))
        out = tmp / "node-c"
        node = start_node(out, model, extra=["--study-timeout", "30", "--batch-size", str(args.batch_size),
                                             "--workers", str(args.workers), "--forward", "orthanc",
                                             "--pacs-config", str(cfg)])
        result: dict[str, list[float]] = {}
        k = 0
        for size in (1, 4):
            lat = []
            for _ in range(args.studies):
                st, se = generate_uid(), generate_uid()
                files = [write(wrap_as_dx(sources[(k + j) % len(sources)], st, se, number=j + 1),
                               tmp / "lat" / f"{k + j:04d}.dcm") for j in range(size)]
                k += size
                _timed_push(node.port, files)
                t_last = time.perf_counter()  # the last image's success status has arrived
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    if _sr_count(pacs, st) >= size:
                        break
                    time.sleep(0.05)
                else:
                    raise TimeoutError("the SR did not arrive")
                lat.append(time.perf_counter() - t_last)
            result[f"study_of_{size}"] = lat
        assert node.terminate() == 0
        return result
    finally:
        pacs.stop()


def _sr_count(pacs: OrthancServer, study_uid: str) -> int:
    found = pacs.rest("/tools/lookup", method="POST", data=study_uid.encode())
    ids = [x["ID"] for x in found if x["Type"] == "Study"]
    if not ids:
        return 0
    n = 0
    for s in pacs.rest(f"/studies/{ids[0]}/series"):
        if s["MainDicomTags"].get("Modality") == "SR":
            n += len(s["Instances"])
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model file (default: the bundled demo model)")
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--studies", type=int, default=4, help="studies per size in the latency part")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-node-") as t:
        tmp = Path(t)
        os.environ["CXR_CACHE_DIR"] = str(tmp / "cache")
        model = _model(args.model, tmp)
        sources = radiograph_sources(Path(args.data))
        studies = _studies(sources, args.images, 5, tmp / "in")
        print(f"model: {model.name}; {args.images} DX images (8-bit, <= 640 px) in studies of 5; "
              f"workers {args.workers}, batch {args.batch_size}; cores {os.cpu_count()}")
        a = bench_receive_and_screen(model, studies, tmp, args)
        print(f"(a) received: {a['receive_img_s']:.1f} img/s into cxr-node"
              + (f"; baseline Orthanc {a['orthanc_receive_img_s']:.1f} img/s (ratio "
                 f"{a['receive_img_s'] / a['orthanc_receive_img_s']:.2f})" if a["orthanc_receive_img_s"] else ""))
        print(f"(b) screened: {a['node_end_to_end_img_s']:.2f} img/s from first arrival to last worklist row; "
              f"node screening-only {a['node_screening_img_s']:.2f} img/s; baseline cxr-screen "
              f"{a['cxr_screen_rate']:.2f} img/s on the same files (ratio node/cxr-screen "
              f"{a['node_screening_img_s'] / a['cxr_screen_rate']:.2f}; end-to-end/cxr-screen "
              f"{a['node_end_to_end_img_s'] / a['cxr_screen_rate']:.2f})")
        c = bench_latency(model, sources, tmp, args)
        if "skipped" in c:
            print(f"(c) latency: skipped ({c['skipped']})")
        for key, lat in c.items():
            if key == "skipped":
                continue
            print(f"(c) last image -> SR stored in Orthanc, {key.replace('_', ' ')}: median "
                  f"{statistics.median(lat):.2f} s, min {min(lat):.2f} s, max {max(lat):.2f} s over {len(lat)} "
                  "studies (association released at once; a quiet-period completion adds --study-timeout)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
