"""Screenshot of the review window with measurements and the four-corner overlay (issue 14).

Run under an X server as a user would see it, e.g.::

    xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python bench/screenshot_measure.py OUT_DIR

Opens the SIIM chest radiograph from the shared data (Pixel Spacing 0.168 mm), draws a
distance, an angle, an ellipse and a rectangle ROI, an arrow with text and a text
note, turns the four-corner overlay on, and grabs the X screen (``QScreen.grabWindow(0)``)
to OUT_DIR/measure_pixel_spacing.png. Then a copy of the same file with only Imager Pixel
Spacing (made in a temporary folder) shows the detector caveat:
OUT_DIR/measure_imager_spacing.png. Each is also exported as the reader would (File > Export
view, current view, patient data not ticked): *_export_view.png. Settings and measurement JSON go to a temporary folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1] if len(argv) > 1 else ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="cxr-shot-"))
    os.environ["CXR_SETTINGS_FILE"] = str(tmp / "settings.ini")
    os.environ["CXR_DATA_DIR"] = str(tmp / "data")
    os.environ["CXR_CACHE_DIR"] = str(tmp / "cache")
    from PySide6.QtWidgets import QApplication

    from cxr_desktop.gui.main_window import MainWindow
    from cxr_desktop.measure import Measurement
    from cxr_desktop.paths import shared_data_dir

    siim = shared_data_dir() / "cxr" / "siim_pneumothorax_sample.dcm"
    import pydicom

    ds = pydicom.dcmread(siim)
    del ds.PixelSpacing
    ds.ImagerPixelSpacing = [0.168, 0.168]
    imager = tmp / "imager_only.dcm"
    ds.save_as(imager)

    app = QApplication.instance() or QApplication(sys.argv)
    w = MainWindow()
    w.resize(1400, 900)
    w.show()

    def wait(cond, ms: int = 20000) -> None:
        import time

        end = time.time() + ms / 1000
        while not cond() and time.time() < end:
            app.processEvents()
            time.sleep(0.01)

    def settle(ms: int = 400) -> None:
        import time

        end = time.time() + ms / 1000
        while time.time() < end:
            app.processEvents()
            time.sleep(0.01)

    for path, name in ((siim, "measure_pixel_spacing.png"), (imager, "measure_imager_spacing.png")):
        w.open_paths([str(path)])
        wait(lambda p=path: w.current_image is not None and w.current_image.path == str(p))
        layer = w.canvas.measure
        layer.add(Measurement("distance", [(300, 260), (720, 260)]))
        layer.add(Measurement("angle", [(250, 700), (420, 820), (600, 700)]))
        layer.add(Measurement("ellipse", [(330, 380), (450, 520)]))
        layer.add(Measurement("rectangle", [(580, 380), (700, 520)]))
        layer.add(Measurement("arrow", [(640, 150), (800, 80)], "apex"))
        layer.add(Measurement("text", [(120, 900)], "decision aid only"))
        w.reading.set_corners_visible(True)
        settle()
        app.primaryScreen().grabWindow(0).save(str(out_dir / name))
        print(out_dir / name)
        exported = w.export_view(str(out_dir / name.replace(".png", "_export_view.png")), mode="view")
        print(exported, "(File > Export view, current view, patient data not ticked)")
        for line in layer.descriptions():
            print("  ", line)
    w.shutdown(5000)
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
