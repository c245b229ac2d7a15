"""Fuzz the image loader with mutated copies of every file in ../shared/data.

Each case is one seeded mutation of one source file (bit flips, truncations with and
without the format's end marker, zeroed blocks, inflated lengths and dimensions,
duplicated chunks, or two of these). Cases run in worker processes under a per-case
time limit and an address-space cap (``resource.setrlimit(RLIMIT_AS)``); a worker that
hangs or dies is replaced. Every case calls ``load_image``, ``probe`` and
``is_image_file``; the outcome is classified as

    decoded | refused (typed ImageError, by reason) | memory (refused for lack of memory,
    or MemoryError) | other (any other exception) | timeout | signal (worker killed)

and every case that is not decoded/refused is saved to ``--save`` with a line in
``cases.jsonl`` (source, mutation, seed, case number) so it can be replayed. The run ends
with counts, peak worker memory (max RSS) and the slowest case.

Usage: nice -n 10 python bench/fuzz_loader.py N [--seed S] [--workers 2] [--time-limit 20]
       [--mem-mb 3072] [--save /tmp/cxr-fuzz-findings] [--data ../shared/data]
       python bench/fuzz_loader.py --replay FILE   (one file, in this process)

The pytest fuzz test (tests/test_imaging_fuzz.py) runs a small seeded sample of the
same mutations (``mutate``) in-process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MUTATIONS = ("bit_flips", "truncate", "truncate_end_marker", "cut_frame_end_marker", "zero_block",
             "inflate_length", "inflate_dims", "duplicate_chunk", "mixed")
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_PIXEL_TAG_LE = b"\xe0\x7f\x10\x00"


# --------------------------------------------------------------------------- structure helpers


def sniff(data: bytes) -> str:
    """'png', 'jpeg', 'dicom', 'tiff' or 'other' (what mutations can target)."""
    if data.startswith(_PNG_SIG):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if data[128:132] == b"DICM" or data[:2] in (b"\x02\x00", b"\x08\x00"):
        return "dicom"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return "other"


def png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset of the length field, data length, type) of each PNG chunk."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        out.append((pos, length, kind))
        pos += 12 + length
    return out


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(offset of the marker, marker, segment length) up to and including SOS."""
    out, i = [], 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        out.append((i, marker, length))
        if marker == 0xDA or length < 2:
            break
        i += 2 + length
    return out


def dicom_elements(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, length-field offset, length-field width) of explicit-VR elements found by scanning."""
    vr4 = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"UC", b"UR", b"OV"}
    vr2 = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
           b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
    out = []
    for i in range(132 if data[128:132] == b"DICM" else 0, min(len(data), 8192) - 8, 2):
        vr = data[i + 4:i + 6]
        if vr in vr2:
            out.append((i, i + 6, 2))
        elif vr in vr4 and data[i + 6:i + 8] == b"\x00\x00":
            out.append((i, i + 8, 4))
    return out


def encapsulated_items(data: bytes) -> list[tuple[int, int]]:
    """(offset of item tag, item length) of the items after an undefined-length Pixel Data."""
    p = data.rfind(_PIXEL_TAG_LE)
    if p < 0 or data[p + 8:p + 12] != b"\xff\xff\xff\xff":
        return []
    items, i = [], p + 12
    while i + 8 <= len(data) and data[i:i + 4] == b"\xfe\xff\x00\xe0":
        length = int.from_bytes(data[i + 4:i + 8], "little")
        items.append((i, length))
        i += 8 + length
    return items


def _big(rng: random.Random, value: int, width: int) -> int:
    top = (1 << (8 * width)) - 1
    return min(top, rng.choice([value * 2, value + rng.randint(1, 64), value * 16, top, rng.randrange(top)]))


def _dicom_tag(data: bytes, group: int, elem: int) -> int:
    return data.find(struct.pack("<HH", group, elem), 132)


# --------------------------------------------------------------------------- mutations


def _bit_flips(buf: bytearray, rng: random.Random, fmt: str) -> None:
    region = len(buf) if rng.random() < 0.5 else min(len(buf), 2048)  # header-heavy half the time
    for _ in range(rng.randint(1, 16)):
        buf[rng.randrange(region)] ^= 1 << rng.randrange(8)


def _truncate(buf: bytearray, rng: random.Random, fmt: str) -> None:
    del buf[rng.randrange(1, len(buf)):]


def _end_marker(fmt: str, data: bytes) -> bytes:
    if fmt == "jpeg":
        return b"\xff\xd9"
    if fmt == "png":
        return struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    if fmt == "dicom" and encapsulated_items(data):
        return _SEQ_DELIMITER
    return b""


def _truncate_end_marker(buf: bytearray, rng: random.Random, fmt: str) -> None:
    marker = _end_marker(fmt, bytes(buf))
    lo = max(1, len(buf) // 4)
    del buf[rng.randrange(lo, len(buf)):]
    buf += marker


def _cut_frame_end_marker(buf: bytearray, rng: random.Random, fmt: str) -> None:
    """The issue's case: a compressed frame cut short, closed with FF D9, items still valid."""
    items = encapsulated_items(bytes(buf)) if fmt == "dicom" else []
    if len(items) < 2:
        _truncate_end_marker(buf, rng, fmt)
        return
    start, length = items[rng.randrange(1, len(items))]
    keep = rng.randrange(1, max(int(length * 0.95), 2))  # a real cut, not just the end marker
    new = bytes(buf[start + 8:start + 8 + keep]) + b"\xff\xd9"
    if len(new) % 2:
        new += b"\x00"
    buf[start:start + 8 + length] = b"\xfe\xff\x00\xe0" + len(new).to_bytes(4, "little") + new


def _zero_block(buf: bytearray, rng: random.Random, fmt: str) -> None:
    start = rng.randrange(len(buf))
    size = min(rng.choice([1, 16, 256, 4096, 65536]), len(buf) - start)
    buf[start:start + size] = bytes(size)


def _inflate_length(buf: bytearray, rng: random.Random, fmt: str) -> None:
    data = bytes(buf)
    if fmt == "png" and (chunks := png_chunks(data)):
        pos, length, _ = rng.choice(chunks)
        buf[pos:pos + 4] = _big(rng, length, 4).to_bytes(4, "big")
    elif fmt == "jpeg" and (segs := jpeg_segments(data)):
        pos, _, length = rng.choice(segs)
        buf[pos + 2:pos + 4] = _big(rng, length, 2).to_bytes(2, "big")
    elif fmt == "dicom" and (elems := dicom_elements(data) + [(p, p + 4, 4) for p, _ in encapsulated_items(data)]):
        _, at, width = rng.choice(elems)
        value = int.from_bytes(data[at:at + width], "little")
        buf[at:at + width] = _big(rng, value, width).to_bytes(width, "little")
    else:
        _bit_flips(buf, rng, fmt)


def _inflate_dims(buf: bytearray, rng: random.Random, fmt: str) -> None:
    data = bytes(buf)
    if fmt == "png" and data[12:16] == b"IHDR":
        at = rng.choice([16, 20])
        buf[at:at + 4] = _big(rng, int.from_bytes(data[at:at + 4], "big"), 2).to_bytes(4, "big")
    elif fmt == "jpeg" and (sofs := [s for s in jpeg_segments(data) if 0xC0 <= s[1] <= 0xCF
                                     and s[1] not in (0xC4, 0xC8, 0xCC)]):
        pos = sofs[0][0]
        at = pos + rng.choice([5, 7])  # height or width
        buf[at:at + 2] = _big(rng, int.from_bytes(data[at:at + 2], "big"), 2).to_bytes(2, "big")
    elif fmt == "dicom":
        targets = [(0x0028, 0x0010), (0x0028, 0x0011), (0x0028, 0x0008), (0x0028, 0x0002), (0x0028, 0x0100)]
        group, elem = rng.choice(targets)
        p = _dicom_tag(data, group, elem)
        if p < 0:
            _bit_flips(buf, rng, fmt)
            return
        if data[p + 4:p + 6] in (b"US", b"IS"):  # explicit VR: value after the 2-byte length
            at, width = p + 8, int.from_bytes(data[p + 6:p + 8], "little")
        else:  # implicit VR
            at, width = p + 8, int.from_bytes(data[p + 4:p + 8], "little")
        if data[p + 4:p + 6] == b"IS" or (width > 2 and data[at:at + width].strip(b" \x00").isdigit()):
            digits = str(_big(rng, int(data[at:at + width].strip(b" \x00") or b"1"), 2)).encode()
            buf[at:at + width] = digits[:width].ljust(width, b" ")
        elif width == 2:
            buf[at:at + 2] = _big(rng, int.from_bytes(data[at:at + 2], "little"), 2).to_bytes(2, "little")
        else:
            _bit_flips(buf, rng, fmt)
    else:
        _bit_flips(buf, rng, fmt)


def _duplicate_chunk(buf: bytearray, rng: random.Random, fmt: str) -> None:
    data = bytes(buf)
    if fmt == "png" and (chunks := png_chunks(data)):
        pos, length, _ = rng.choice(chunks)
        piece = data[pos:pos + 12 + length]
    elif fmt == "jpeg" and (segs := jpeg_segments(data)):
        pos, _, length = rng.choice(segs)
        piece = data[pos:pos + 2 + length]
    elif fmt == "dicom" and (items := encapsulated_items(data)) and rng.random() < 0.5:
        pos, length = rng.choice(items)
        piece = data[pos:pos + 8 + length]
    else:
        pos = rng.randrange(len(data))
        piece = data[pos:pos + rng.choice([8, 64, 512, 4096])]
    buf[pos:pos] = piece


_MUTATORS: dict[str, Callable[[bytearray, random.Random, str], None]] = {
    "bit_flips": _bit_flips,
    "truncate": _truncate,
    "truncate_end_marker": _truncate_end_marker,
    "cut_frame_end_marker": _cut_frame_end_marker,
    "zero_block": _zero_block,
    "inflate_length": _inflate_length,
    "inflate_dims": _inflate_dims,
    "duplicate_chunk": _duplicate_chunk,
}


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One seeded mutation of ``data`` -> (mutated bytes, mutation name)."""
    fmt = sniff(data)
    kind = rng.choice(MUTATIONS)
    buf = bytearray(data)
    if kind == "mixed":
        names = rng.sample(sorted(_MUTATORS), 2)
        for name in names:
            if buf:
                _MUTATORS[name](buf, rng, fmt)
        kind = "mixed:" + "+".join(names)
    else:
        _MUTATORS[kind](buf, rng, fmt)
    return bytes(buf or b"\x00"), kind


def case_rng(seed: int, index: int) -> random.Random:
    """The generator of case ``index``: any case can be regenerated alone."""
    return random.Random(f"{seed}:{index}")


def make_case(sources: list[Path], blobs: dict[Path, bytes], seed: int, index: int) -> tuple[Path, bytes, str]:
    rng = case_rng(seed, index)
    src = sources[rng.randrange(len(sources))]
    data, kind = mutate(blobs[src], rng)
    return src, data, kind


# --------------------------------------------------------------------------- one case


def run_case(path: str) -> dict[str, Any]:
    """load_image + probe + is_image_file on one file -> outcome dict (in the worker)."""
    from cxr_desktop.errors import ImageError

    from cxr_desktop.imaging import is_image_file, load_image, probe

    t0 = time.perf_counter()
    outcome: dict[str, Any] = {}
    for name, call in (("load_image", lambda: load_image(path)), ("probe", lambda: probe(path))):
        try:
            img = call()
            if name == "load_image":
                import numpy as np

                ok = (img.pixels.ndim == 2 and img.pixels.dtype == np.float32
                      and bool(np.isfinite(img.pixels).all()))
                outcome[name] = "decoded" if ok else "other:bad pixels"
        except ImageError as exc:
            if name == "load_image":
                memory = exc.message.startswith("There is not enough memory")
                outcome[name] = "memory" if memory else f"refused:{exc.reason.value}"
        except MemoryError:
            outcome[name] = "memory"
        except BaseException as exc:  # noqa: BLE001 - the point of the harness
            outcome[name] = f"other:{type(exc).__name__}"
            outcome["traceback"] = traceback.format_exc(limit=6)[-1500:]
    try:
        if not isinstance(is_image_file(path), bool):
            outcome["is_image_file"] = "other:not bool"
    except BaseException as exc:  # noqa: BLE001
        outcome["is_image_file"] = f"other:{type(exc).__name__}"
    outcome["seconds"] = time.perf_counter() - t0
    return outcome


def classify(outcome: dict[str, Any]) -> str:
    """decoded / refused:<reason> / memory / other:<type> (a failed probe counts as other)."""
    for key in ("probe", "is_image_file"):
        if str(outcome.get(key, "")).startswith("other"):
            return f"other:{key}:{outcome[key].split(':', 1)[1]}"
    return str(outcome.get("load_image", "other:missing"))


def _worker(conn: Any, mem_mb: int) -> None:
    """Worker loop: receive a path, send back the outcome and the peak RSS so far."""
    import resource

    os.environ["OMP_NUM_THREADS"] = "1"
    if mem_mb > 0:
        limit = mem_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import cv2

    cv2.setNumThreads(1)
    import cxr_desktop.imaging.loader  # noqa: F401 - pay the import before the first case

    while True:
        path = conn.recv()
        if path is None:
            return
        outcome = run_case(path)
        outcome["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        conn.send(outcome)


class Worker:
    """One worker process with a pipe; replaced after a timeout or a crash."""

    def __init__(self, mem_mb: int):
        self.mem_mb = mem_mb
        self.start()

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.mem_mb), daemon=True)
        self.proc.start()
        child.close()
        self.case: tuple[int, Path, str, Path] | None = None
        self.started = 0.0

    def submit(self, case: tuple[int, Path, str, Path]) -> None:
        self.case = case
        self.started = time.perf_counter()
        self.conn.send(str(case[3]))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.kill()


# --------------------------------------------------------------------------- driver


def sources_in(data_dir: Path) -> list[Path]:
    """Every file under cxr/ and dicom/ (README and CSV files excepted)."""
    files = [p for sub in ("cxr", "dicom") for p in sorted((data_dir / sub).rglob("*")) if p.is_file()]
    return [p for p in files if p.suffix.lower() not in (".md", ".csv", ".txt")]


def run(n: int, seed: int, workers: int, time_limit: float, mem_mb: int, save: Path, data_dir: Path,
        report_every: int = 1000) -> dict[str, Any]:
    sources = sources_in(data_dir)
    blobs = {p: p.read_bytes() for p in sources}
    work = Path(tempfile.mkdtemp(prefix="cxr-fuzz-"))
    save.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    worst = (0.0, "")
    peak_rss = 0.0
    findings = 0
    pool = [Worker(mem_mb) for _ in range(max(1, workers))]
    next_case = 0
    done = 0
    t_start = time.perf_counter()

    def record(case: tuple[int, Path, str, Path], label: str, detail: dict[str, Any]) -> None:
        nonlocal findings
        index, src, kind, path = case
        counts[label] += 1
        by_kind.setdefault(kind.split(":")[0], Counter())[label.split(":")[0]] += 1
        if not (label == "decoded" or label.startswith("refused")):  # memory cases are kept too
            findings += 1
            target = save / f"case{index:07d}_{src.name}"
            shutil.copyfile(path, target)
            with open(save / "cases.jsonl", "a") as f:
                f.write(json.dumps({"case": index, "seed": seed, "source": str(src), "mutation": kind,
                                    "outcome": label, "file": str(target),
                                    "traceback": detail.get("traceback")}) + "\n")

    try:
        while done < n:
            for w in pool:
                if w.case is None and next_case < n:
                    src, data, kind = make_case(sources, blobs, seed, next_case)
                    path = work / f"case{next_case:07d}"
                    path.write_bytes(data)
                    w.submit((next_case, src, kind, path))
                    next_case += 1
            for w in pool:
                if w.case is None:
                    continue
                elapsed = time.perf_counter() - w.started
                case = w.case
                if w.conn.poll(0.005):
                    try:
                        outcome = w.conn.recv()
                    except (EOFError, OSError):
                        outcome = None
                    if outcome is None:
                        w.proc.join(5)
                        label = f"signal:{-(w.proc.exitcode or 0)}" if (w.proc.exitcode or 0) < 0 else \
                            f"other:worker exit {w.proc.exitcode}"
                        record(case, label, {})
                        w.start()
                    else:
                        label = classify(outcome)
                        record(case, label, outcome)
                        peak_rss = max(peak_rss, float(outcome.get("maxrss_mb", 0.0)))
                        if outcome["seconds"] > worst[0]:
                            worst = (outcome["seconds"], f"case {case[0]} ({case[1].name}, {case[2]})")
                        w.case = None
                    case[3].unlink(missing_ok=True)
                    done += 1
                elif not w.proc.is_alive():
                    code = w.proc.exitcode or 0
                    record(case, f"signal:{-code}" if code < 0 else f"other:worker exit {code}", {})
                    case[3].unlink(missing_ok=True)
                    w.start()
                    done += 1
                elif elapsed > time_limit:
                    record(case, "timeout", {})
                    w.kill()
                    case[3].unlink(missing_ok=True)
                    w.start()
                    done += 1
                else:
                    continue
                if done % report_every == 0:
                    rate = done / (time.perf_counter() - t_start)
                    print(f"  {done}/{n} cases, {rate:.1f}/s, findings {findings}", flush=True)
    finally:
        for w in pool:
            w.stop()
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - t_start
    return {"cases": n, "seed": seed, "seconds": round(elapsed, 1), "counts": dict(sorted(counts.items())),
            "by_mutation": {k: dict(v) for k, v in sorted(by_kind.items())}, "findings": findings,
            "peak_worker_rss_mb": round(peak_rss, 1), "worst_case_seconds": round(worst[0], 3),
            "worst_case": worst[1], "sources": len(sources), "time_limit_s": time_limit, "mem_cap_mb": mem_mb}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, nargs="?", default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--time-limit", type=float, default=20.0, help="seconds per case")
    ap.add_argument("--mem-mb", type=int, default=3072, help="address-space cap per worker (MiB)")
    ap.add_argument("--save", type=Path, default=Path(tempfile.gettempdir()) / "cxr-fuzz-findings")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--replay", type=Path, help="run one saved file in this process and print the outcome")
    args = ap.parse_args(argv)
    if args.replay:
        print(json.dumps(run_case(str(args.replay)), indent=1))
        return 0
    print(f"fuzz_loader: {args.n} cases, seed {args.seed}, {args.workers} workers, "
          f"{args.time_limit:.0f} s per case, {args.mem_mb} MiB address space per worker", flush=True)
    result = run(args.n, args.seed, args.workers, args.time_limit, args.mem_mb, args.save, args.data,
                 report_every=max(100, args.n // 20))
    print(json.dumps(result, indent=1))
    bad = sum(v for k, v in result["counts"].items()
              if not (k == "decoded" or k.startswith("refused") or k == "memory"))
    print(f"RESULT: {result['cases']} cases in {result['seconds']} s: other exceptions "
          f"{sum(v for k, v in result['counts'].items() if k.startswith('other'))}, timeouts "
          f"{result['counts'].get('timeout', 0)}, signals "
          f"{sum(v for k, v in result['counts'].items() if k.startswith('signal'))}, memory "
          f"{result['counts'].get('memory', 0)}; peak worker RSS {result['peak_worker_rss_mb']} MiB; "
          f"worst case {result['worst_case_seconds']} s ({result['worst_case']})")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
