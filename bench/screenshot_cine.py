"""Screenshot of cine playback: the status bar's rate and the DICOM tags panel's current-frame rows.

Opens a multi-frame DICOM (default: liver.dcm, 3 frames with per-frame functional groups) in the
real MainWindow, shows the "DICOM tags" tab, plays cine at 30 frames/s for a moment and saves
the window as PNG (``QWidget.grab``) while it plays. Settings and user data go to a temporary folder.

Usage: xvfb-run -a -s "-screen 0 1400x900x24" python bench/screenshot_cine.py OUT.png [--study PATH] [--fps 30]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--study", type=Path, default=REPO.parent / "shared" / "data" / "dicom" / "liver.dcm")
    ap.add_argument("--fps", type=int, default=30)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shot-cine-"))
    os.environ.update(CXR_CACHE_DIR=str(tmp / "cache"), CXR_DATA_DIR=str(tmp / "data"))
    from PySide6.QtCore import QEventLoop, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    from cxr_desktop.gui.main_window import MainWindow
    from cxr_desktop.gui.settings import AppSettings

    def spin(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    w = MainWindow(AppSettings(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)))
    w.resize(1300, 820)
    w.show()
    w.side_tabs.setCurrentWidget(w.tags)
    w.open_paths([str(args.study)])
    spin(2500)
    w.reading.set_cine_fps(args.fps)
    w.reading.start_cine()
    spin(1700)
    w.grab().save(str(args.out))
    print(f"{args.out}: frame {w.current_image.frame_index + 1}/{w.current_image.frame_count}, "
          f"label {w.reading.cine_label.text()!r}")
    w.reading.stop_cine()
    w.shutdown()
    app.quit()


if __name__ == "__main__":
    main()
