"""Measurements on an image: geometry, calibration, ROI statistics and their session/JSON store.

Qt-free (the canvas draws them, :mod:`cxr_desktop.gui.measure_tools`). Points are in
image coordinates of the decoded frame: x = column, y = row, continuous, pixel (c, r)
covering [c, c+1) x [r, r+1) (the canvas's image item uses the same system).

Calibration follows DICOM PS3.3 C.7.6.2.1.1 / C.8.11.1.1.1: Pixel Spacing (0028,0030)
is the spacing in the patient (row spacing, column spacing, in mm) and is used when
present. Only Imager Pixel Spacing (0018,1164) means the spacing at the detector face:
a distance is then measured at the detector, not at the patient, and the projection
magnification is not corrected (typically 5-15 % larger than the anatomy on a chest
radiograph). Such measurements carry :data:`IMAGER_CAVEAT`. Without either (PNG, JPEG,
or a DICOM without spacing) lengths are in pixels.

ROI statistics are in modality units (the :class:`StudyImage` pixels after the Modality
LUT / rescale); padding pixels (Pixel Padding Value) are left out.

The store keeps measurements per image (file + frame) for the session and saves them
as JSON in the user data folder, one file per source file named by a hash of its path:
never into the source file, and with no patient data (no path, names or UIDs).
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

IMAGER_CAVEAT = ("Measured at the detector, not at the patient; magnification not corrected "
                 "(Imager Pixel Spacing only).")
PIXEL_NOTE = "No pixel spacing in the file: lengths in pixels."
KINDS = ("distance", "angle", "rectangle", "ellipse", "arrow", "text")
POINTS_NEEDED = {"distance": 2, "angle": 3, "rectangle": 2, "ellipse": 2, "arrow": 2, "text": 1}
JSON_VERSION = 1

Point = tuple[float, float]


# ------------------------------------------------------------------ calibration


@dataclass(frozen=True)
class Calibration:
    """mm per pixel along rows (vertical) and columns (horizontal), or none (pixels)."""

    row_mm: float | None = None  # distance between the centres of adjacent rows
    col_mm: float | None = None  # distance between the centres of adjacent columns
    source: str = "none"  # "pixel_spacing", "imager_pixel_spacing" or "none"

    @property
    def calibrated(self) -> bool:
        return self.row_mm is not None and self.col_mm is not None

    @property
    def unit(self) -> str:
        return "mm" if self.calibrated else "px"

    @property
    def caveat(self) -> str:
        """What the reader must know about these lengths ("" for Pixel Spacing)."""
        if self.source == "imager_pixel_spacing":
            return IMAGER_CAVEAT
        if not self.calibrated:
            return PIXEL_NOTE
        return ""


def _spacing(value: Any) -> tuple[float, float] | None:
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(row) and math.isfinite(col)) or row <= 0 or col <= 0:
        return None  # e.g. RG1_J2KI.dcm says 0\0: not a calibration
    return row, col


def calibration_for(metadata: Mapping[str, Any], shape: tuple[int, int] | None = None,
                    full_shape: tuple[int, int] | None = None) -> Calibration:
    """The calibration of an image from its metadata.

    ``shape`` / ``full_shape``: the decoded and the stored (rows, columns); a frame decoded
    at a reduced size has proportionally larger pixels.
    """
    sy = sx = 1.0
    if shape and full_shape and shape[0] > 0 and shape[1] > 0:
        sy, sx = full_shape[0] / shape[0], full_shape[1] / shape[1]
    for key in ("pixel_spacing", "imager_pixel_spacing"):
        sp = _spacing(metadata.get(key))
        if sp is not None:
            return Calibration(sp[0] * sy, sp[1] * sx, key)
    return Calibration()


# ------------------------------------------------------------------ geometry


def distance(p0: Point, p1: Point, cal: Calibration = Calibration()) -> float:
    """Length from ``p0`` to ``p1`` in mm (calibrated, anisotropic spacing) or in pixels."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    if cal.calibrated:
        dx, dy = dx * float(cal.col_mm), dy * float(cal.row_mm)  # type: ignore[arg-type]
    return float(math.hypot(dx, dy))


def angle_deg(a: Point, vertex: Point, b: Point, cal: Calibration = Calibration()) -> float:
    """The angle a-vertex-b in degrees, 0..180, in patient geometry (non-square pixels corrected)."""
    kx = float(cal.col_mm) if cal.calibrated else 1.0
    ky = float(cal.row_mm) if cal.calibrated else 1.0
    ux, uy = (a[0] - vertex[0]) * kx, (a[1] - vertex[1]) * ky
    vx, vy = (b[0] - vertex[0]) * kx, (b[1] - vertex[1]) * ky
    nu, nv = math.hypot(ux, uy), math.hypot(vx, vy)
    if nu == 0 or nv == 0:
        return 0.0
    c = max(-1.0, min(1.0, (ux * vx + uy * vy) / (nu * nv)))
    return float(math.degrees(math.acos(c)))


def roi_mask(shape: tuple[int, int], kind: str, p0: Point, p1: Point) -> np.ndarray:
    """Pixels whose centres lie inside the rectangle / ellipse spanned by corners ``p0``, ``p1``."""
    rows, cols = shape
    x0, x1 = sorted((float(p0[0]), float(p1[0])))
    y0, y1 = sorted((float(p0[1]), float(p1[1])))
    cx = np.arange(cols, dtype=np.float64) + 0.5
    cy = np.arange(rows, dtype=np.float64) + 0.5
    if kind == "rectangle":
        return ((cy >= y0) & (cy <= y1))[:, None] & ((cx >= x0) & (cx <= x1))[None, :]
    if kind == "ellipse":
        a, b = (x1 - x0) / 2.0, (y1 - y0) / 2.0
        if a <= 0 or b <= 0:
            return np.zeros(shape, dtype=bool)
        xc, yc = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        return (((cy - yc) / b) ** 2)[:, None] + (((cx - xc) / a) ** 2)[None, :] <= 1.0
    raise ValueError(f"not an ROI kind: {kind!r}")


@dataclass(frozen=True)
class RoiStats:
    """Mean and standard deviation of the modality values inside an ROI."""

    mean: float
    sd: float  # population SD (numpy's default, as DICOM viewers report)
    count: int  # pixels inside (padding excluded)
    area: float  # mm^2 when calibrated, else px^2
    minimum: float
    maximum: float


def roi_stats(pixels: np.ndarray, kind: str, p0: Point, p1: Point, cal: Calibration = Calibration(),
              exclude: np.ndarray | None = None) -> RoiStats:
    """Statistics of ``pixels`` (modality units) inside the ROI; ``exclude``: True = leave out."""
    rows, cols = pixels.shape[:2]
    # work in the bounding box only (a small ROI on a large radiograph stays cheap)
    c0 = max(0, int(math.floor(min(p0[0], p1[0])))); c1 = min(cols, int(math.ceil(max(p0[0], p1[0]))))
    r0 = max(0, int(math.floor(min(p0[1], p1[1])))); r1 = min(rows, int(math.ceil(max(p0[1], p1[1]))))
    if c1 <= c0 or r1 <= r0:
        return RoiStats(float("nan"), float("nan"), 0, 0.0, float("nan"), float("nan"))
    mask = roi_mask((r1 - r0, c1 - c0), kind, (p0[0] - c0, p0[1] - r0), (p1[0] - c0, p1[1] - r0))
    if exclude is not None:
        mask &= ~exclude[r0:r1, c0:c1]
    values = pixels[r0:r1, c0:c1][mask].astype(np.float64)
    n = int(values.size)
    px_area = float(cal.row_mm * cal.col_mm) if cal.calibrated else 1.0  # type: ignore[operator]
    if n == 0:
        return RoiStats(float("nan"), float("nan"), 0, 0.0, float("nan"), float("nan"))
    return RoiStats(float(values.mean()), float(values.std()), n, n * px_area,
                    float(values.min()), float(values.max()))


# ------------------------------------------------------------------ measurements


@dataclass
class Measurement:
    """One measurement or annotation on one image (points in image coordinates)."""

    kind: str
    points: list[Point]
    text: str = ""  # the text of a text annotation (or a label)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown measurement kind {self.kind!r}")
        self.points = [(float(x), float(y)) for x, y in self.points]

    @property
    def complete(self) -> bool:
        return len(self.points) >= POINTS_NEEDED[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "points": [list(p) for p in self.points], "text": self.text}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Measurement":
        return cls(str(d["kind"]), [(float(p[0]), float(p[1])) for p in d["points"]],
                   str(d.get("text", "")), str(d.get("id") or uuid.uuid4().hex[:12]))


def _fmt(v: float) -> str:
    return f"{v:.1f}" if abs(v) >= 10 or v == 0 else f"{v:.2f}"


def value_text(m: Measurement, cal: Calibration = Calibration(), pixels: np.ndarray | None = None,
               units: str = "", exclude: np.ndarray | None = None) -> str:
    """The measured value as the reader sees it (e.g. "42.3 mm", "31.0 deg", "mean 812 SD 40 HU")."""
    if not m.complete:
        return ""
    if m.kind == "distance":
        return f"{_fmt(distance(m.points[0], m.points[1], cal))} {cal.unit}"
    if m.kind == "angle":
        return f"{angle_deg(m.points[0], m.points[1], m.points[2], cal):.1f} deg"
    if m.kind in ("rectangle", "ellipse"):
        if pixels is None:
            return ""
        s = roi_stats(pixels, m.kind, m.points[0], m.points[1], cal, exclude)
        if s.count == 0:
            return "no pixels inside"
        u = f" {units}" if units else ""
        area = f"{_fmt(s.area)} {'mm²' if cal.calibrated else 'px²'}"
        return f"mean {s.mean:.4g}{u}, SD {s.sd:.4g}{u} (n {s.count}, {area})"
    return m.text


def describe(m: Measurement, cal: Calibration = Calibration(), pixels: np.ndarray | None = None,
             units: str = "", exclude: np.ndarray | None = None) -> str:
    """One line for a report: what it is and its value, with the calibration caveat where it applies."""
    name = {"distance": "Distance", "angle": "Angle", "rectangle": "Rectangle ROI", "ellipse": "Ellipse ROI",
            "arrow": "Arrow", "text": "Text"}[m.kind]
    value = value_text(m, cal, pixels, units, exclude)
    line = f"{name}: {value}" if value else name
    if m.kind == "arrow" and m.text:
        line = f"{name}: {m.text}"
    if m.kind in ("distance", "rectangle", "ellipse") and cal.source == "imager_pixel_spacing":
        line += f" - {IMAGER_CAVEAT}"
    return line


# ------------------------------------------------------------------ store


def path_key(path: str | Path) -> str:
    """A stable, non-reversible name for a source file (its resolved path, hashed)."""
    try:
        resolved = str(Path(path).resolve())
    except OSError:
        resolved = str(path)
    return hashlib.sha256(resolved.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class MeasurementStore:
    """Measurements per (file, frame) for the session, saved as JSON under ``folder``.

    The JSON holds the image size and each measurement's kind, points and text: no path,
    no patient name, ID or UID (the file is named by :func:`path_key`).
    """

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder is not None else None
        self._files: dict[str, dict[int, list[Measurement]]] = {}
        self._shapes: dict[str, dict[int, tuple[int, int]]] = {}
        self.last_error: str = ""  # why the last save failed ("" when it worked)

    def json_path(self, path: str | Path) -> Path | None:
        return self.folder / f"{path_key(path)}.json" if self.folder is not None else None

    def _load(self, path: str | Path) -> dict[int, list[Measurement]]:
        key = path_key(path)
        if key in self._files:
            return self._files[key]
        frames: dict[int, list[Measurement]] = {}
        shapes: dict[int, tuple[int, int]] = {}
        jp = self.json_path(path)
        if jp is not None and jp.is_file():
            try:
                data = json.loads(jp.read_text(encoding="utf-8"))
                for fr, entry in data.get("frames", {}).items():
                    frames[int(fr)] = [Measurement.from_dict(d) for d in entry.get("measurements", [])]
                    if entry.get("shape"):
                        shapes[int(fr)] = (int(entry["shape"][0]), int(entry["shape"][1]))
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                frames, shapes = {}, {}  # a damaged file is ignored (and replaced on the next save)
        self._files[key] = frames
        self._shapes[key] = shapes
        return frames

    def get(self, path: str | Path, frame: int = 0, shape: tuple[int, int] | None = None) -> list[Measurement]:
        """The measurements of one frame (a copy), scaled when the frame was saved at another size."""
        items = [Measurement.from_dict(m.to_dict()) for m in self._load(path).get(int(frame), [])]
        saved = self._shapes.get(path_key(path), {}).get(int(frame))
        if shape and saved and tuple(shape) != tuple(saved):
            sy, sx = shape[0] / saved[0], shape[1] / saved[1]
            for m in items:
                m.points = [(x * sx, y * sy) for x, y in m.points]
        return items

    def put(self, path: str | Path, frame: int, items: Iterable[Measurement],
            shape: tuple[int, int] | None = None) -> bool:
        """Replace one frame's measurements and save; False (and ``last_error``) if saving failed."""
        frames = self._load(path)
        key = path_key(path)
        kept = [Measurement.from_dict(m.to_dict()) for m in items if m.complete]
        if kept:
            frames[int(frame)] = kept
            if shape:
                self._shapes[key][int(frame)] = (int(shape[0]), int(shape[1]))
        else:
            frames.pop(int(frame), None)
            self._shapes[key].pop(int(frame), None)
        return self._save(path)

    def _save(self, path: str | Path) -> bool:
        jp = self.json_path(path)
        if jp is None:
            return True
        key = path_key(path)
        frames = self._files.get(key, {})
        data = {"version": JSON_VERSION, "kind": "cxr-review measurements", "frames": {
            str(fr): {"shape": list(self._shapes[key].get(fr, ())) or None,
                      "measurements": [m.to_dict() for m in items]}
            for fr, items in sorted(frames.items())}}
        from cxr_desktop.atomic import write_json_atomic

        try:
            if not frames:
                if jp.exists():
                    jp.unlink()
            else:
                jp.parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(jp, data)
        except OSError as exc:
            self.last_error = f"Measurements could not be saved ({exc.strerror or type(exc).__name__})."
            return False
        self.last_error = ""
        return True


def default_folder() -> Path:
    """Where measurements are kept: ``measurements/`` in the user data folder."""
    from cxr_desktop.paths import data_dir

    return data_dir() / "measurements"


def describe_all(items: Sequence[Measurement], cal: Calibration, pixels: np.ndarray | None, units: str = "",
                 exclude: np.ndarray | None = None) -> list[str]:
    """:func:`describe` for each complete measurement (the case report's list)."""
    return [describe(m, cal, pixels, units, exclude) for m in items if m.complete]
