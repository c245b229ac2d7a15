"""Retrieve speed from a real Orthanc over loopback: C-MOVE vs C-GET vs WADO-RS (issue 13).

    .venv/bin/python bench/bench_pacs.py [--images 50] [--repeats 3]

Starts its own Orthanc (tests/orthanc_fixture.py: loopback, free ports, temporary storage),
uploads one study of N instances (the SIIM CR radiograph, JPEG baseline, ~127 kB each, with
new SOP Instance UIDs) by C-STORE, then retrieves the whole study into a fresh study cache
with each method and prints images/s, MB/s and the ratio to C-GET (the baseline: one
association, no second connection). Each retrieve includes everything the app does: the
association(s), our storage SCP for C-MOVE, atomic per-file writes and the staging rename.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from dicom_builders import study_copies  # noqa: E402
from orthanc_fixture import OrthancServer, orthanc_binary  # noqa: E402

from cxr_desktop.pacs import (  # noqa: E402
    DicomWebServer, DimseServer, RetrieveDone, StudyCache, retrieve_study, send_files,
)
from cxr_desktop.paths import shared_data_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if orthanc_binary() is None:
        print("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
        return 2
    src = shared_data_dir() / "cxr" / "siim_pneumothorax_sample.dcm"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "study").mkdir()
        files = study_copies(src, tmp / "study", args.images, new_study=True)
        study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        mb = sum(p.stat().st_size for p in files) / 1e6
        with OrthancServer(tmp / "orthanc", our_ae="CXRBENCH") as pacs:
            dimse = DimseServer("bench", "127.0.0.1", pacs.dicom_port, pacs.aet, our_ae="CXRBENCH",
                                our_port=pacs.our_port, timeout_s=60)
            web = DicomWebServer("bench-web", pacs.dicomweb_url, timeout_s=60)
            t0 = time.perf_counter()
            for _ in send_files(dimse, files):
                pass
            up = time.perf_counter() - t0
            print(f"Orthanc {pacs.rest('/system')['Version']}, loopback; study of {args.images} CR images "
                  f"({mb:.1f} MB, JPEG baseline 1024x1024)")
            print(f"upload (C-STORE SCU, one association): {args.images / up:.1f} images/s ({mb / up:.1f} MB/s)")
            results: dict[str, list[float]] = {}
            for rep in range(args.repeats):
                for method, server in (("get", dimse), ("move", dimse), ("wado", web)):
                    cache = StudyCache(tmp / f"cache-{method}-{rep}")
                    t0 = time.perf_counter()
                    done = None
                    for ev in retrieve_study(server, study_uid, cache=cache, method=method):
                        if isinstance(ev, RetrieveDone):
                            done = ev
                    dt = time.perf_counter() - t0
                    assert done is not None and len(done.files) == args.images
                    results.setdefault(method, []).append(dt)
            base = statistics.median(results["get"])
            names = {"get": "C-GET", "move": "C-MOVE (to our storage SCP)", "wado": "WADO-RS"}
            print(f"retrieve into the study cache, median of {args.repeats} (baseline: C-GET):")
            for method in ("get", "move", "wado"):
                med = statistics.median(results[method])
                print(f"  {names[method]:<28} {args.images / med:7.1f} images/s  {mb / med:6.1f} MB/s  "
                      f"{med:6.2f} s  x{base / med:.2f} vs C-GET")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
