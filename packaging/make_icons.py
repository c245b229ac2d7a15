"""Render ``resources/icons/cxr-review.svg`` to the PNG sizes and the Windows ``.ico``.

The SVG is the source; run this after editing it (needs the project's venv: QtSvg, Pillow)::

    QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/make_icons.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ICON_DIR = Path(__file__).resolve().parents[1] / "resources" / "icons"
SIZES = (16, 32, 48, 64, 128, 256, 512)


def render(svg: Path, size: int, out: Path) -> None:
    """Rasterise ``svg`` to a ``size`` x ``size`` RGBA PNG."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"not a valid SVG: {svg}")
    img = QImage(size, size, QImage.Format.Format_ARGB32)
    img.fill(Qt.GlobalColor.transparent)
    painter = QPainter(img)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    if not img.save(str(out)):
        raise OSError(f"could not write {out}")


def main() -> int:
    from PySide6.QtGui import QGuiApplication
    from PIL import Image

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 (needed for QImage text/fonts)
    svg = ICON_DIR / "cxr-review.svg"
    for s in SIZES:
        render(svg, s, ICON_DIR / f"cxr-review-{s}.png")
    big = Image.open(ICON_DIR / "cxr-review-256.png")
    big.save(ICON_DIR / "cxr-review.ico", sizes=[(s, s) for s in (16, 32, 48, 64, 128, 256)])
    print("wrote", ", ".join(sorted(p.name for p in ICON_DIR.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
