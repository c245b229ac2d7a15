"""Viewer benchmarks, one run, figures and ratios against named baselines.

(a) time to first window: the real app (``python -m cxr_desktop.cli.desktop``) in a
    subprocess reports its first paint (``CXR_REPORT_STARTUP``); baselines: a bare
    PySide6 window (the floor), and the same bare window with torch imported first
    (what the viewer would cost if it imported torch on the GUI thread). Goal < 1.5 s.
(b) time to model ready and to the first result, with the real default-size (224 px)
    model file: cold (the ONNX graph is exported into an empty cache) and warm.
(c) GUI-thread heartbeat (20 ms QTimer) while the window decodes, predicts and draws
    Grad-CAM for the sample studies one after another with the 224 px model;
    baselines: the idle window, and predict + CAM run on the GUI thread (what the
    worker avoids). Goal p99 < 100 ms.
(d) quit time: the real app closes its window (as File > Quit does) right after a milestone,
    with the model still loading (``image_shown``) and with everything idle (``first_result``);
    time from the close to the process's exit. Baseline: the bare PySide6 window's quit.
    Goal < 1 s. ``--quit-only`` runs just this part.
(e) reading room (bench/bench_reading_room.py): switching between two decoded, scored studies
    to the repaint (goal <= 50 ms; baseline: a bare QGraphicsView's setPixmap), and frame time
    p50/p99 of a 2 s pan in a 2x2 layout with linked views and four heatmaps (goal: 60 Hz,
    16.7 ms; baseline: the single-pane pan). ``--room-only`` runs just this part.

Usage: python bench/bench_gui.py [--runs 3] [--images 20] [--data ../shared/data]
Runs headless (QT_QPA_PLATFORM=offscreen unless a display is set).
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

from qt_wait import wait_until  # noqa: E402 - bench/ is the script's folder

BARE_WINDOW = """
import time, sys, json
t_import = time.time()
{pre}
from PySide6.QtWidgets import QApplication, QMainWindow, QLabel
from PySide6.QtCore import QEvent, QObject, QTimer
app = QApplication(sys.argv[:1])
w = QMainWindow(); w.setCentralWidget(QLabel("hello")); w.resize(1400, 900)
class F(QObject):
    def eventFilter(self, o, e):
        if e.type() in (QEvent.Type.Paint, QEvent.Type.Expose):
            print(json.dumps({{"event": "window_shown", "t": time.time()}}), flush=True); app.quit()
        return False
f = F(); w.installEventFilter(f); w.show(); app.exec()
"""


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, CXR_REPORT_STARTUP="1", CXR_SETTINGS_FILE=str(tmp / "settings.ini"),
               CXR_DATA_DIR=str(tmp / "data"), PYTHONUNBUFFERED="1")
    env.setdefault("CXR_CACHE_DIR", str(tmp / "cache"))
    if not env.get("DISPLAY"):
        env["QT_QPA_PLATFORM"] = "offscreen"
    env.update(extra)
    return env


def _events(cmd: list[str], env: dict[str, str], timeout: float = 600.0) -> tuple[float, dict[str, float]]:
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            ev = json.loads(line)
            out[ev["event"]] = ev["t"] - t0
    if proc.returncode != 0 and not out:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return t0, out


def time_to_window(runs: int, tmp: Path, study: Path) -> None:
    print("\n(a) time to first window, s (median of %d; spawn -> first paint)" % runs)
    app_cmd = [sys.executable, "-m", "cxr_desktop.cli.desktop", str(study)]
    rows = {
        "bare PySide6 window (floor)": [sys.executable, "-c", BARE_WINDOW.format(pre="")],
        "bare window, torch imported first": [sys.executable, "-c", BARE_WINDOW.format(pre="import torch")],
        "CXR Review main window": app_cmd,
    }
    res: dict[str, float] = {}
    for name, cmd in rows.items():
        times = []
        for _ in range(runs):
            _, ev = _events(cmd, _env(tmp, CXR_EXIT_AFTER="window_shown"))
            times.append(ev["window_shown"])
        res[name] = statistics.median(times)
        print(f"  {name:40s} {res[name]:6.2f}   (runs: {', '.join(f'{t:.2f}' for t in times)})")
    app = res["CXR Review main window"]
    print(f"  ratio app / bare window            {app / res['bare PySide6 window (floor)']:6.2f}x")
    print(f"  ratio app / torch-first window     {app / res['bare window, torch imported first']:6.2f}x")
    print(f"  goal < 1.5 s: {'MET' if app < 1.5 else 'NOT MET'} ({app:.2f} s)")


def make_model(folder: Path) -> Path:
    from cxr_desktop.model.modelfile import save_model
    from cxr_desktop.model.weights import init_model

    model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal", weights="imagenet",
                             input_size=224, name="bench-224", seed=0)
    path = folder / "bench-224.safetensors"
    save_model(path, model, card)
    return path


def model_ready(tmp: Path, model: Path, study: Path) -> None:
    print("\n(b) real app with a 224 px model file, s after spawn")
    cmd = [sys.executable, "-m", "cxr_desktop.cli.desktop", str(study), "--model", str(model)]
    cache = tmp / "onnx-cache-b"
    for label in ("cold cache (ONNX export)", "warm cache"):
        _, ev = _events(cmd, _env(tmp, CXR_EXIT_AFTER="first_result", CXR_CACHE_DIR=str(cache)))
        print(f"  {label:26s} window {ev.get('window_shown', float('nan')):5.2f}  image "
              f"{ev.get('image_shown', float('nan')):5.2f}  model ready {ev.get('model_ready', float('nan')):5.2f}  "
              f"first result {ev.get('first_result', float('nan')):5.2f}")


def _gaps(beats: list[float]) -> list[float]:
    return [1000.0 * (b - a) for a, b in zip(beats, beats[1:])]


def _summary(gaps: list[float]) -> str:
    import numpy as np

    g = np.asarray(gaps)
    return f"n={g.size:4d}  p50 {np.percentile(g, 50):6.1f}  p99 {np.percentile(g, 99):6.1f}  max {g.max():6.1f} ms"


def heartbeat(tmp: Path, model: Path, folder: Path, n_images: int) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["CXR_CACHE_DIR"] = str(tmp / "onnx-cache-b")  # warm from (b)
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from cxr_desktop.gui.main_window import MainWindow
    from cxr_desktop.gui.settings import AppSettings

    app = QApplication.instance() or QApplication([])
    settings = AppSettings(QSettings(str(tmp / "hb.ini"), QSettings.Format.IniFormat))
    win = MainWindow(settings)
    win.resize(1400, 900)
    win.show()
    win.open_model(str(model))
    wait_until(app, lambda: win.models.active is not None, 600)
    win.open_paths([str(folder)])
    wait_until(app, lambda: win.current_image is not None and not win.study_list.scanning, 600)
    entries = [e for e in win.study_list.entries() if e.ok][:n_images]
    engine = win.models.active.engine
    print(f"\n(c) GUI heartbeat (20 ms timer), {len(entries)} sample images, model {engine.card.display_name} "
          f"on {engine.device_label}")

    beats: list[float] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))

    # baseline 1: idle window
    timer.start()
    t_end = time.perf_counter() + 2.0
    wait_until(app, lambda: time.perf_counter() > t_end, 10)
    timer.stop()
    idle = _gaps(beats)

    # the product: decode + predict + CAM in workers, overlay drawn on the GUI thread
    shown: list[str] = []
    win.prediction_shown.connect(lambda o: shown.append(o.key.path))
    beats.clear()
    timer.start()
    t0 = time.perf_counter()
    for e in entries:
        n = len(shown)
        if win.current_image is not None and win.current_image.path == e.path:
            win.request_prediction()  # already on screen (opened first): ask again
        else:
            win.study_list.select_path(e.path)
        wait_until(app, lambda: len(shown) > n and shown[-1] == e.path, 600)
    elapsed = time.perf_counter() - t0
    timer.stop()
    busy = _gaps(beats)

    # baseline 2: the same work on the GUI thread (what the worker avoids)
    from cxr_desktop.imaging import load_image

    beats.clear()
    timer.start()
    for e in entries[: max(3, len(entries) // 4)]:
        image = load_image(e.path)
        engine.predict(image, cam=True)
        app.processEvents()
    timer.stop()
    blocking = _gaps(beats) or [float("nan")]

    print(f"  idle window (baseline)          {_summary(idle)}")
    print(f"  viewer, workers (product)       {_summary(busy)}   {elapsed / len(entries) * 1000:.0f} ms/image")
    print(f"  predict on GUI thread (baseline){_summary(blocking)}")
    import numpy as np

    p99 = float(np.percentile(busy, 99))
    print(f"  ratio p99 product / idle          {p99 / float(np.percentile(idle, 99)):6.2f}x")
    print(f"  ratio max GUI-thread / product    {max(blocking) / max(busy):6.2f}x")
    print(f"  goal p99 < 100 ms: {'MET' if p99 < 100 else 'NOT MET'} ({p99:.1f} ms); max {max(busy):.0f} ms")
    win.shutdown()


def _quit_seconds(cmd: list[str], env: dict[str, str], after: str) -> float:
    """Seconds from the milestone ``after`` (where the app closes its window) to the process's exit."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(env, CXR_EXIT_AFTER=after), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    t_event = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            ev = json.loads(line)
            if ev["event"] == after:
                t_event = ev["t"]
    proc.wait(timeout=600)
    t_exit = time.time()
    if t_event is None:
        raise RuntimeError(f"no {after} event (exit {proc.returncode}): {proc.stderr.read()[-1500:]}")
    return t_exit - t_event


def quit_time(runs: int, tmp: Path, folder: Path) -> None:
    print("\n(d) quit time, s (median of %d; window closed -> process gone)" % runs)
    bare = [sys.executable, "-c", BARE_WINDOW.format(pre="")]
    app_cmd = [sys.executable, "-m", "cxr_desktop.cli.desktop", str(folder)]
    rows = [("bare PySide6 window (baseline)", bare, "window_shown"),
            ("CXR Review, model still loading", app_cmd, "image_shown"),
            ("CXR Review, after the first result", app_cmd, "first_result")]
    res = {}
    for name, cmd, after in rows:
        times = [_quit_seconds(cmd, _env(tmp, CXR_CACHE_DIR=str(tmp / "onnx-cache-d")), after) for _ in range(runs)]
        res[name] = statistics.median(times)
        print(f"  {name:40s} {res[name]:6.2f}   (runs: {', '.join(f'{t:.2f}' for t in times)})")
    worst = max(v for k, v in res.items() if k.startswith("CXR"))
    print(f"  ratio worst app / bare window      {worst / max(res['bare PySide6 window (baseline)'], 1e-3):6.2f}x")
    print(f"  goal < 1 s: {'MET' if worst < 1.0 else 'NOT MET'} ({worst:.2f} s)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--quit-only", action="store_true", help="only (d), the quit time")
    ap.add_argument("--room-only", action="store_true", help="only (e), the reading room")
    args = ap.parse_args(argv)
    folder = args.data / "cxr"
    study = folder / "00000001_000.png"
    import platform

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, platform "
          f"{'xcb' if os.environ.get('DISPLAY') else 'offscreen'}")
    with tempfile.TemporaryDirectory(prefix="cxr-bench-gui-") as d:
        tmp = Path(d)
        if args.room_only:
            from bench_reading_room import part_e

            part_e(make_model(tmp), args.data, tmp)
            return 0
        if args.quit_only:
            quit_time(args.runs, tmp, folder)
            return 0
        time_to_window(args.runs, tmp, study)
        model = make_model(tmp)
        model_ready(tmp, model, study)
        heartbeat(tmp, model, folder, args.images)
        from bench_reading_room import part_e

        part_e(model, args.data, tmp)
        quit_time(args.runs, tmp, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
