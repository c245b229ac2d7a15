"""Synthetic focal opacities on real radiographs: the labelled data behind the demonstration model.

Each real source radiograph gives several variants (crop, small rotation,
exposure and noise changes); in half of them, chosen by a seeded shuffle, a
soft-edged brighter blob (a focal opacity, like a consolidation or a nodule
mass) is blended in inside the lung-field area. Every source therefore has
both classes, so only the opacity, not the source image, predicts the label.
Files are named ``src<NNN>_v<K>.png`` so that ``--patient-regex '^(src\\d+)_'``
keeps all variants of one source in one split.

Used by ``training/make_demo_dataset.py`` and by the tests (tiny folders).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from cxr_desktop.errors import ImageError
from cxr_desktop.imaging import is_image_file, load_image, to_unit

PATIENT_REGEX = r"^(src\d+)_"
CLASSES = ("normal", "opacity")
# Where the lungs lie in a frontal chest radiograph, as fractions of width/height (left and right field).
LUNG_BOXES = ((0.17, 0.22, 0.45, 0.74), (0.55, 0.22, 0.83, 0.74))


@dataclass
class Source:
    """A real radiograph as [0, 1] grey (display mapping applied, MONOCHROME1 inverted)."""

    name: str
    grey: np.ndarray


def find_sources(folder: str | os.PathLike[str], *, max_side: int = 768, limit: int | None = None) -> list[Source]:
    """Every readable image under ``folder`` (sorted, recursive), near-duplicates dropped.

    Two files showing the same picture (also inverted, e.g. a MONOCHROME1 copy of a
    DICOM) are one source; otherwise a variant of one could land in training and of
    the other in testing. Sources are ordered by file name (MONOCHROME1 files last);
    ``limit`` stops after that many readable files (tests).
    """
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image_file(p))
    loaded = []
    for p in paths:
        try:
            im = load_image(p)
        except ImageError:
            continue
        loaded.append((im.invert_for_display, p.name, to_unit(im)))
        if limit is not None and len(loaded) >= limit:
            break
    loaded.sort(key=lambda t: (t[0], t[1]))  # of two copies of one picture, keep the MONOCHROME2 one
    out: list[Source] = []
    thumbs: list[np.ndarray] = []
    for _, name, grey in loaded:
        scale = max_side / max(grey.shape)
        if scale < 1:
            grey = cv2.resize(grey, (round(grey.shape[1] * scale), round(grey.shape[0] * scale)),
                              interpolation=cv2.INTER_AREA)
        t = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).ravel()
        t = (t - t.mean()) / (t.std() + 1e-6)
        if any(abs(float(np.dot(t, u))) / t.size > 0.98 for u in thumbs):  # also catches inverted copies
            continue
        thumbs.append(t)
        out.append(Source(name, grey.astype(np.float32)))
    return out


def make_variant(grey: np.ndarray, rng: np.random.Generator, size: int, *, jitter: float = 1.0) -> np.ndarray:
    """A plausible re-acquisition of a radiograph: crop, small rotation, exposure, noise; size x size.

    ``jitter`` scales the exposure and noise changes (0: geometry only).
    """
    h, w = grey.shape
    crop = rng.uniform(0.82, 1.0)
    ch, cw = int(h * crop * rng.uniform(0.95, 1.05)), int(w * crop * rng.uniform(0.95, 1.05))
    ch, cw = min(ch, h), min(cw, w)
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    img = grey[y0:y0 + ch, x0:x0 + cw]
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-6, 6), 1.0)
    img = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    img = np.clip((img - 0.5) * (1 + jitter * rng.uniform(-0.15, 0.15)) + 0.5 + jitter * rng.uniform(-0.06, 0.06), 0, 1)
    img = np.power(img, np.exp(jitter * rng.uniform(-0.2, 0.2)))
    img = img + rng.normal(0, jitter * rng.uniform(0.0, 0.015), img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def opacity_mask(size: int, rng: np.random.Generator, grey: np.ndarray | None = None, *,
                 radius_range: tuple[float, float] = (0.055, 0.11)) -> tuple[np.ndarray, tuple[int, int, float]]:
    """A soft-edged, lobulated blob (values 0..1) inside a lung field; returns (mask, (cx, cy, radius)).

    Where ``grey`` is given, the darker (air-filled) of several candidate spots is
    preferred, as real lung fields are dark on a radiograph.
    """
    box = LUNG_BOXES[int(rng.integers(0, 2))]
    radius = rng.uniform(*radius_range) * size
    cands = []
    for _ in range(8):
        cx = rng.uniform(box[0], box[2]) * size
        cy = rng.uniform(box[1], box[3]) * size
        level = 0.0
        if grey is not None:
            r = max(2, int(radius))
            y0, y1 = max(0, int(cy) - r), min(size, int(cy) + r)
            x0, x1 = max(0, int(cx) - r), min(size, int(cx) + r)
            level = float(grey[y0:y1, x0:x1].mean())
        cands.append((level, cx, cy))
    cands.sort()
    _, cx, cy = cands[int(rng.integers(0, 3))]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    mask = np.zeros((size, size), np.float32)
    for k in range(int(rng.integers(1, 4))):  # 1-3 overlapping lobes
        ox, oy = (rng.normal(0, 0.35 * radius, 2) if k else (0.0, 0.0))
        sx, sy = radius * rng.uniform(0.6, 1.0), radius * rng.uniform(0.6, 1.0)
        ang = rng.uniform(0, np.pi)
        dx, dy = xx - (cx + ox), yy - (cy + oy)
        u = dx * np.cos(ang) + dy * np.sin(ang)
        v = -dx * np.sin(ang) + dy * np.cos(ang)
        mask = np.maximum(mask, np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2) ** 1.6))
    texture = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), max(1.0, size / 96))
    mask = np.clip(mask * (1.0 + 0.25 * texture / (texture.std() + 1e-6)), 0, 1)
    return mask, (int(cx), int(cy), float(radius))


def add_opacity(grey: np.ndarray, rng: np.random.Generator, *, contrast: tuple[float, float] = (0.2, 0.4),
                radius: tuple[float, float] = (0.055, 0.11)) -> tuple[np.ndarray, np.ndarray]:
    """Blend a focal opacity into ``grey``: brighter where the mask is, more so in dark (lung) areas.

    ``contrast`` is the blend strength: at 0.6 a lung area becomes about as bright as
    soft tissue (consolidated lung has water density); ``radius`` is relative to the side.
    """
    mask, _ = opacity_mask(grey.shape[0], rng, grey, radius_range=radius)
    a = rng.uniform(*contrast)
    out = grey + a * mask * (1.0 - grey)
    return np.clip(out, 0, 1).astype(np.float32), mask


def write_dataset(sources: Iterable[Source], out_dir: str | os.PathLike[str], *, variants: int = 8,
                  size: int = 256, seed: int = 0, contrast: tuple[float, float] = (0.2, 0.4),
                  radius: tuple[float, float] = (0.055, 0.11), jitter: float = 1.0,
                  masks_dir: str | os.PathLike[str] | None = None) -> dict[str, int]:
    """Write ``normal/`` and ``opacity/`` PNGs (half of each source's variants each); returns counts.

    ``contrast``: range of the opacity strength; ``jitter``: exposure/noise variation of the variants;
    ``masks_dir``: also write each opacity's mask (same file name) there, to check where Grad-CAM
    points. Keep it outside ``out_dir``, which must hold only the class folders.
    """
    out = Path(out_dir)
    for c in CLASSES:
        (out / c).mkdir(parents=True, exist_ok=True)
    counts = {c: 0 for c in CLASSES}
    for s_idx, src in enumerate(sources):
        rng = np.random.default_rng((seed, s_idx))
        labels = np.array([i % 2 for i in range(variants)])[rng.permutation(variants)]
        for v in range(variants):
            img = make_variant(src.grey, rng, size, jitter=jitter)
            mask = None
            if labels[v]:
                img, mask = add_opacity(img, rng, contrast=contrast, radius=radius)
            cls = CLASSES[int(labels[v])]
            name = f"src{s_idx:03d}_v{v}.png"
            cv2.imwrite(str(out / cls / name), np.rint(img * 255).astype(np.uint8))
            if mask is not None and masks_dir is not None:
                Path(masks_dir).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(Path(masks_dir) / name), np.rint(mask * 255).astype(np.uint8))
            counts[cls] += 1
    return counts
