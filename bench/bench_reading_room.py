"""Reading-room speed (issue 14): switching between decoded images, and linked pan in a 2x2 layout.

(e1) switch time: two real studies are opened, decoded and scored (prediction + Grad-CAM
     with the model given) so both sit in the viewer's caches; then the study list switches
     between them. Time from the selection to the repaint of the canvas that shows the new
     image with its result (the image, the decision-aid panel and the heatmap). Baseline: a
     bare QGraphicsView showing the same two pictures (setPixmap + repaint), the floor of any
     switch. Goal: <= 50 ms.
(e2) pan frame time: for 2 s the view is panned a few pixels per frame (zoomed 2x), each frame
     drawn synchronously (repaint of every visible pane): 1x1 (baseline: the single-pane pan)
     and 2x2 with zoom/pan/W-L linked, all four panes showing an image and its heatmap.
     Frame time p50/p99 (ms) vs the 16.7 ms of a 60 Hz display.

Called from bench/bench_gui.py (part e) or alone:
    python bench/bench_reading_room.py [--model FILE] [--data ../shared/data] [--switches 40]
Runs headless (QT_QPA_PLATFORM=offscreen unless a display is set, e.g. under xvfb-run -a).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qt_wait import wait_until  # noqa: E402 - bench/ is the script's folder

FRAME_MS = 1000.0 / 60.0


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1))))]


class _PaintClock:
    """Time of the last paint event of a widget (the moment the user sees the new frame)."""

    def __init__(self, widget) -> None:
        from PySide6.QtCore import QEvent, QObject

        clock = self

        class _F(QObject):
            def eventFilter(self, obj, event):  # noqa: N802
                if event.type() == QEvent.Type.Paint:
                    clock.last = time.perf_counter()
                return False

        self.last = 0.0
        self._filter = _F()
        widget.installEventFilter(self._filter)


def switch_time(app, model: Path, studies: list[Path], switches: int) -> dict[str, float]:
    from PySide6.QtWidgets import QGraphicsScene, QGraphicsView

    from cxr_desktop.gui.canvas import packed_to_qimage
    from cxr_desktop.viewing.display_mapper import DisplayMapper
    from cxr_desktop.gui.main_window import MainWindow
    from cxr_desktop.imaging import load_image

    win = MainWindow(engine_options={"device": "cpu"})
    win.resize(1400, 900)
    win.show()
    win.start([], str(model))
    wait_until(app, lambda: win.models.active is not None)
    win.open_paths([str(p) for p in studies])
    wait_until(app, lambda: len(win.study_list.entries()) == len(studies) and not win.study_list.scanning)
    for p in studies:  # decode and score each once: both sit in the caches
        win.study_list.select_path(str(p))
        wait_until(app, lambda p=p: win.current_image is not None and win.current_image.path == str(p)
              and win.current_outcome is not None and win.current_outcome.result is not None)
    clock = _PaintClock(win.canvas.viewport())
    times = []
    for i in range(switches):
        target = str(studies[i % len(studies)])
        if win.current_image is not None and win.current_image.path == target:
            target = str(studies[(i + 1) % len(studies)])
        clock.last = 0.0
        t0 = time.perf_counter()
        win.study_list.select_path(target)
        wait_until(app, lambda: win.current_image is not None and win.current_image.path == target
              and win.current_outcome is not None and win.current_outcome.result is not None
              and clock.last > t0, timeout_s=30)
        times.append((clock.last - t0) * 1000.0)
    win.shutdown()
    win.close()

    # baseline: a bare view swapping two prepared pictures
    pics = []
    for p in studies:
        image = load_image(p)
        mapper = DisplayMapper(image)
        pics.append(packed_to_qimage(mapper.render_packed(mapper.default_window, image.invert_for_display)))
    from PySide6.QtGui import QPixmap

    scene = QGraphicsScene()
    item = scene.addPixmap(QPixmap())
    view = QGraphicsView(scene)
    view.resize(700, 700)
    view.show()
    from PySide6.QtTest import QTest

    QTest.qWaitForWindowExposed(view)
    for _ in range(10):
        app.processEvents()
    base = []
    for i in range(switches):
        t0 = time.perf_counter()
        item.setPixmap(QPixmap.fromImage(pics[i % len(pics)]))
        view.viewport().repaint()
        base.append((time.perf_counter() - t0) * 1000.0)
    view.close()
    return {"median": statistics.median(times), "p95": _pct(times, 95), "max": max(times),
            "base_median": statistics.median(base), "base_max": max(base)}


def pan_frames(app, model: Path, studies: list[Path], layout: str,
               seconds: float = 2.0) -> tuple[list[float], list[float]]:
    from cxr_desktop.gui.main_window import MainWindow

    win = MainWindow(engine_options={"device": "cpu"})
    win.resize(1400, 900)
    win.show()
    win.start([], str(model))
    wait_until(app, lambda: win.models.active is not None)
    win.overlay_panel.set_show_below(True)  # every pane draws its heatmap (the costlier case)
    win.open_paths([str(studies[0])])
    wait_until(app, lambda: win.current_outcome is not None and win.current_outcome.result is not None)
    room = win.reading_room
    room.set_layout(layout)
    for i in range(1, room.visible_count()):
        pane = room.panes[i - 1]
        room.open_in_pane(i, str(studies[i % len(studies)]))
        wait_until(app, lambda pane=pane: pane.outcome is not None and pane.outcome.result is not None)
    room.set_linked(layout != "1x1")
    canvases = [f.canvas for f in room.frames[:room.visible_count()]]
    wait_until(app, lambda: all(c.image is not None for c in canvases), 30)
    for _ in range(20):
        app.processEvents()
    main = canvases[0]
    main.zoom_by(2.0)
    frames: list[float] = []
    cpu: list[float] = []  # GUI-thread CPU time per frame: what other processes on the machine cannot inflate
    step, t_end, k = 3, time.perf_counter() + seconds, 0
    while time.perf_counter() < t_end:
        k += 1
        d = step if (k // 40) % 2 == 0 else -step  # back and forth, never stuck at an edge
        t0, c0 = time.perf_counter(), time.thread_time()
        main.pan_by(d, d)
        for c in canvases:
            c.viewport().repaint()
        frames.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.thread_time() - c0) * 1000.0)
        app.processEvents()
    win.shutdown()
    win.close()
    return frames, cpu


def reading_room(model: Path, data: Path, switches: int = 40) -> None:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    cxr = data / "cxr"
    studies = [cxr / "siim_pneumothorax_sample.dcm", cxr / "16747_3_1.jpg",
               cxr / "00000001_000.png", cxr / "tbx11k_tb_tb0005.png"]
    print(f"\n(e1) switch between two decoded, scored studies -> repaint, ms ({switches} switches)")
    sw = switch_time(app, model, studies[:2], switches)
    print(f"  CXR Review (image + result + heatmap)  median {sw['median']:6.1f}  p95 {sw['p95']:6.1f}  "
          f"max {sw['max']:6.1f}")
    print(f"  bare QGraphicsView setPixmap (floor)   median {sw['base_median']:6.1f}  max {sw['base_max']:6.1f}")
    print(f"  ratio median app / floor               {sw['median'] / max(sw['base_median'], 1e-3):6.1f}x")
    print(f"  goal <= 50 ms: {'MET' if sw['p95'] <= 50 else 'NOT MET'} (p95 {sw['p95']:.1f} ms)")
    print("\n(e2) pan for 2 s, frame time (pan + linked panes + repaint of each visible pane), ms")
    print(f"  load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    res = {}
    for layout, name in (("1x1", "1x1 single pane (baseline)"), ("2x2", "2x2 linked, 4 heatmaps")):
        frames, cpu = pan_frames(app, model, studies, layout)
        res[layout] = (statistics.median(frames), _pct(frames, 99), _pct(cpu, 50), _pct(cpu, 99))
        print(f"  {name:30s} wall p50 {res[layout][0]:6.2f} p99 {res[layout][1]:6.2f}   "
              f"GUI-thread CPU p50 {res[layout][2]:6.2f} p99 {res[layout][3]:6.2f}  ({len(frames)} frames)")
    print(f"  ratio p99 2x2 / 1x1 (wall)             {res['2x2'][1] / max(res['1x1'][1], 1e-3):6.2f}x")
    print(f"  goal p99 <= {FRAME_MS:.1f} ms (60 Hz): wall {'MET' if res['2x2'][1] <= FRAME_MS else 'NOT MET'}, "
          f"CPU {'MET' if res['2x2'][3] <= FRAME_MS else 'NOT MET'}")


def part_e(model: Path, data: Path, tmp: Path, switches: int = 40) -> None:
    """bench_gui.py's part (e): the reading room with ``model``, settings and caches under ``tmp``."""
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["CXR_SETTINGS_FILE"] = str(tmp / "settings-room.ini")
    os.environ["CXR_DATA_DIR"] = str(tmp / "data-room")
    os.environ.setdefault("CXR_CACHE_DIR", str(tmp / "cache-room"))
    reading_room(model, data, switches)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="model file (default: the demonstration model)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--switches", type=int, default=40)
    args = ap.parse_args(argv)
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    with tempfile.TemporaryDirectory(prefix="cxr-bench-room-") as d:
        os.environ["CXR_SETTINGS_FILE"] = str(Path(d) / "settings.ini")
        os.environ["CXR_DATA_DIR"] = str(Path(d) / "data")
        os.environ.setdefault("CXR_CACHE_DIR", str(Path(d) / "cache"))
        from cxr_desktop.paths import default_model_path

        print(f"platform: {os.environ.get('QT_QPA_PLATFORM') or 'xcb'}")
        reading_room(args.model or default_model_path(), args.data, args.switches)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
