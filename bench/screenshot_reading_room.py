"""Screenshots of the reading room under Xvfb: a 1x2 compare with heatmaps and the docked worklist.

Four real chest radiographs from ``../shared/data/cxr`` are wrapped as DICOM (two of them for the
same made-up patient, different study dates) in a temporary folder; the prior is put in the
local PACS study cache only (as a retrieve would leave it, with P1's StudyCache), not in the
opened folder. The real main window (default demonstration model unless ``--model``) opens the
folder, Shift+P finds the prior in the cache and puts it beside the current image (the prior's
pane is then made active and a W/L preset key applied to it, linked), heatmaps are shown (below-threshold maps on request, labelled so), Tools >
Screen a folder screens the folder and its results fill the docked worklist; U opens the
highest-scored unread study. Screenshots: dark theme (default) and light; then a linked, zoomed
2x2 layout with all four studies and their heatmaps.

Run: xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python bench/screenshot_reading_room.py OUT_DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # dicom_builders

from qt_wait import wait_until  # noqa: E402 - bench/ is the script's folder


def wrap_as_dicom(src: Path, dst: Path, patient: str, date: str) -> Path:
    """A DX DICOM file with ``src``'s pixels (made-up patient; for the screenshot only)."""
    import cv2
    from pydicom.uid import generate_uid

    from dicom_builders import new_dataset

    pixels = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
    ds = new_dataset()
    ds.PatientName = f"Demo^{patient}"
    ds.PatientID = patient
    ds.StudyDate = date
    ds.StudyDescription = "CHEST PA"
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.set_pixel_data(np.ascontiguousarray(pixels), "MONOCHROME2", 8)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--model", type=Path, default=None)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="cxr-reading-room-"))
    os.environ.setdefault("CXR_SETTINGS_FILE", str(tmp / "settings.ini"))
    os.environ.setdefault("CXR_DATA_DIR", str(tmp / "data"))
    os.environ.setdefault("CXR_CACHE_DIR", str(tmp / "cache"))
    folder = tmp / "studies"
    folder.mkdir()
    cxr = args.data / "cxr"
    current = wrap_as_dicom(cxr / "tbx11k_tb_tb0005.png", folder / "p1_2024.dcm", "DEMO-1", "20240310")
    retrieved = tmp / "retrieved"
    retrieved.mkdir()
    prior_src = wrap_as_dicom(cxr / "tbx11k_tb_tb0007.png", retrieved / "p1_2021.dcm", "DEMO-1", "20210105")
    import pydicom

    from cxr_desktop.pacs import StudyCache
    from cxr_desktop.pacs.cache import default_cache_root

    ds = pydicom.dcmread(prior_src, stop_before_pixels=True)
    with StudyCache(default_cache_root()).staging(ds.StudyInstanceUID) as stage:  # the prior: in the cache only
        stage.add(ds.SOPInstanceUID, prior_src.read_bytes())
    prior_src.unlink()
    wrap_as_dicom(cxr / "tbx11k_health_h0001.png", folder / "p2_2023.dcm", "DEMO-2", "20230707")
    wrap_as_dicom(cxr / "00000001_000.png", folder / "p3_2022.dcm", "DEMO-3", "20221111")

    from PySide6.QtWidgets import QApplication

    from cxr_desktop.gui.main_window import MainWindow
    from cxr_desktop.paths import default_model_path

    app = QApplication(sys.argv[:1])
    win = MainWindow(engine_options={"device": "cpu"})
    win.show()

    model = args.model or default_model_path()
    win.start([str(folder)], str(model))
    wait_until(app, lambda: win.models.active is not None and win.current_image is not None)
    win.study_list.select_path(str(current))
    wait_until(app, lambda: win.current_image is not None and win.current_image.path == str(current))
    win.overlay_panel.set_show_below(True)  # maps below the threshold too, labelled as such
    wait_until(app, lambda: win.current_outcome is not None and win.current_outcome.result is not None)
    room = win.reading_room
    found: list = []
    room.prior_searched.connect(found.append)
    room.actions["prior"].trigger()
    wait_until(app, lambda: bool(found))
    print("prior from the PACS cache:", found[0] is not None and "pacs-studies" in found[0].path)
    pane = room.panes[0]
    wait_until(app, lambda: pane.outcome is not None and pane.outcome.result is not None)
    room.actions["link"].trigger()
    room.set_active(1)  # the prior's pane: the view keys act on it, linked panes follow W/L
    win.actions["preset_3"].trigger()
    print("preset on the active pane:", room.active_canvas().window, "pane 0:", win.canvas.window)

    dialog = win.new_screening_dialog()
    room.attach_screening(dialog)
    dialog.set_folder(folder)
    dialog.set_model_path(model)
    dialog.start()
    wait_until(app, lambda: not dialog.running and dialog.model.rowCount() > 0)
    dialog.close()
    from cxr_desktop.gui.worklist_dock import ReadingWorklistModel

    wl = room.worklist.model
    wait_until(app, lambda: wl.data(wl.index(0, ReadingWorklistModel.COL_DATE)) != "", 30)
    room.worklist.step_unread(+1)
    room.worklist.toggle_read()  # read status, saved beside the screening results
    room.set_active(1)
    wait_until(app, lambda: win.current_image is not None and win.current_outcome is not None
         and win.current_outcome.result is not None)
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)
    shots = []
    for theme in ("dark", "light"):
        room.set_theme(theme)
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)
        path = args.out / f"reading_room_{theme}.png"
        win.grab().save(str(path))
        shots.append(path)
        if os.environ.get("DISPLAY") and shutil.which("import"):  # what the X server shows, as a user sees it
            root = args.out / f"reading_room_{theme}_screen.png"
            subprocess.run(["import", "-window", "root", str(root)], check=True, timeout=60)
            shots.append(root)
    room.set_theme("dark")
    # 2x2: the other two studies in panes 3 and 4, linked and zoomed
    room.set_layout("2x2")
    for i, name in ((2, "p2_2023.dcm"), (3, "p3_2022.dcm")):  # pane 1 keeps the prior
        room.open_in_pane(i, str(folder / name))
    wait_until(app, lambda: all(p.outcome is not None and p.outcome.result is not None for p in room.panes))
    room.set_active(0)
    win.canvas.zoom_by(1.6)
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)
    path = args.out / "reading_room_2x2_dark.png"
    win.grab().save(str(path))
    shots.append(path)
    print("window", win.width(), "x", win.height(), "screen", win.screen().availableGeometry().size().toTuple())
    for p in shots:
        print("saved", p)
    win.shutdown()
    dialog.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
