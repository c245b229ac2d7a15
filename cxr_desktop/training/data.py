"""Training data: images decoded once into a cache, chest-X-ray augmentation, torch Datasets.

The pipeline is the product's preprocessing, split where augmentation fits:
``load_for_model -> unit_grey`` (:mod:`cxr_desktop.preprocess`) once per image into a
disk cache (float16, one square ``input_size`` image per row), then per sample
``augmentation on the [0, 1] grey image -> normalise``. Without augmentation a
sample is therefore exactly what :func:`cxr_desktop.preprocess.preprocess` gives
at inference (up to float16 storage, < 1e-3).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Generator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from cxr_desktop.errors import ImageError, Reason
from cxr_desktop.model.card import IMAGENET_MEAN, IMAGENET_STD
from cxr_desktop.preprocess import load_for_model, normalise, unit_grey
from cxr_desktop.atomic import write_json_atomic
from cxr_desktop.training.events import PrepareProgress
from cxr_desktop.training.scan import ScanItem, ScanProblem


@dataclass(frozen=True)
class AugmentSpec:
    """Random changes that keep a chest X-ray plausible: small geometry, exposure and sharpness.

    No horizontal flip by default: a flipped chest has the heart on the wrong side.
    """

    rotate_deg: float = 0.0
    scale: float = 0.0  # +- relative zoom
    shift: float = 0.0  # +- fraction of the side
    brightness: float = 0.0  # +- added to [0, 1] values
    contrast: float = 0.0  # +- relative
    gamma: float = 0.0  # +- relative exponent change
    sharpness: float = 0.0  # +- unsharp-mask amount (negative: blur)
    hflip: bool = False
    # Against edge shortcuts (burned-in text, markers, collimation borders; issue 12):
    crop: float = 0.0  # random crop of up to this fraction of the side, resized back (edge content moves/leaves)
    border: float = 0.0  # probability of blanking a random outer band (up to 10 % of the side, each edge)
    mask_marks: float = 0.0  # probability of painting over burned-in text/markers (training/shortcuts.py)

    @property
    def active(self) -> bool:
        return any(v for v in asdict(self).values())


AUGMENT_PRESETS: dict[str, AugmentSpec] = {
    "none": AugmentSpec(),
    "light": AugmentSpec(rotate_deg=5, scale=0.05, shift=0.03, brightness=0.05, contrast=0.1, gamma=0.1,
                         sharpness=0.3),
    "standard": AugmentSpec(rotate_deg=10, scale=0.10, shift=0.06, brightness=0.08, contrast=0.15, gamma=0.15,
                            sharpness=0.5),
    # "light" geometry and exposure plus crops, blanked borders and masked burned-in marks, so that
    # neither the film's edge nor its lettering can predict the label (heatmaps stay on the lungs).
    "robust": AugmentSpec(rotate_deg=5, scale=0.05, shift=0.03, brightness=0.05, contrast=0.1, gamma=0.1,
                          sharpness=0.3, crop=0.12, border=0.5, mask_marks=0.5),
}


def augment_spec(preset: str, *, hflip: bool = False) -> AugmentSpec:
    base = AUGMENT_PRESETS[preset]
    return AugmentSpec(**{**asdict(base), "hflip": bool(hflip)})


def augment_grey(grey: np.ndarray, rng: np.random.Generator, spec: AugmentSpec) -> np.ndarray:
    """Augment one [0, 1] grey square image; returns float32 in [0, 1] of the same shape."""
    if not spec.active:
        return grey.astype(np.float32, copy=False)
    img = grey.astype(np.float32, copy=True)
    s = img.shape[0]
    if spec.mask_marks and rng.random() < spec.mask_marks:
        from cxr_desktop.training.shortcuts import mask_burned_in

        img = mask_burned_in(img)
    if spec.crop:
        side = 1.0 - rng.uniform(0.0, spec.crop)
        ch, cw = max(8, int(round(side * s))), max(8, int(round(side * img.shape[1])))
        y0 = int(rng.integers(0, s - ch + 1))
        x0 = int(rng.integers(0, img.shape[1] - cw + 1))
        img = cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (img.shape[1], s), interpolation=cv2.INTER_LINEAR)
    if spec.rotate_deg or spec.scale or spec.shift:
        angle = rng.uniform(-spec.rotate_deg, spec.rotate_deg)
        zoom = 1.0 + rng.uniform(-spec.scale, spec.scale)
        m = cv2.getRotationMatrix2D((s / 2.0, s / 2.0), angle, zoom)
        m[:, 2] += rng.uniform(-spec.shift, spec.shift, size=2) * s
        img = cv2.warpAffine(img, m, (img.shape[1], s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if spec.sharpness:
        amount = rng.uniform(-spec.sharpness, spec.sharpness)
        blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=max(0.5, s / 224.0))
        img = img + amount * (img - blurred)
    if spec.contrast or spec.brightness:
        c = 1.0 + rng.uniform(-spec.contrast, spec.contrast)
        b = rng.uniform(-spec.brightness, spec.brightness)
        img = (img - 0.5) * c + 0.5 + b
    img = np.clip(img, 0.0, 1.0)
    if spec.gamma:
        img = np.power(img, float(np.exp(rng.uniform(-spec.gamma, spec.gamma))))
    if spec.border and rng.random() < spec.border:
        level = float(rng.choice([0.0, float(np.median(img)), 1.0]))
        top, bottom, left, right = (int(round(rng.uniform(0.0, 0.10) * s)) for _ in range(4))
        img = img.copy()
        img[:top] = level
        img[s - bottom:] = level
        img[:, :left] = level
        img[:, img.shape[1] - right:] = level
    if spec.hflip and rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(img, dtype=np.float32)


# --------------------------------------------------------------------------- image cache


@dataclass
class ImageCache:
    """``input_size`` grey images of the items, decoded once (float16 .npy, memory-mapped)."""

    path: Path
    ok: np.ndarray  # bool per item: decoded successfully
    problems: list[ScanProblem]
    reused: bool

    def array(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")


def _cache_key(items: Sequence[ScanItem], input_size: int) -> str:
    h = hashlib.sha256(f"v2:{input_size}".encode())  # v2: decoded as the model sees it (load_for_model)
    for it in items:
        h.update(it.sha256.encode())
    return h.hexdigest()[:16]


def _grey_of(item: ScanItem, input_size: int) -> np.ndarray:
    return unit_grey(load_for_model(item.path, input_size=input_size), input_size)


def prepare_images(items: Sequence[ScanItem], input_size: int, cache_dir: Path, *, workers: int = 2,
                   cancelled: Callable[[], bool] | None = None
                   ) -> Generator[PrepareProgress, None, ImageCache]:
    """Decode every item once into ``cache_dir`` (reused if an earlier run finished it).

    Yields :class:`PrepareProgress`; returns :class:`ImageCache`. Files that fail to
    decode are listed with their reason and marked not ok; nothing is raised for them.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _cache_key(items, input_size)
    path = cache_dir / f"images-{input_size}-{key}.npy"
    index = cache_dir / f"images-{input_size}-{key}.json"
    if path.exists() and index.exists():
        with contextlib.suppress(ValueError, OSError, KeyError):
            meta = json.loads(index.read_text())
            arr = np.load(path, mmap_mode="r")
            if arr.shape == (len(items), input_size, input_size) and len(meta["ok"]) == len(items):
                problems = [ScanProblem(**p) for p in meta["problems"]]
                return ImageCache(path, np.asarray(meta["ok"], dtype=bool), problems, reused=True)
    for stale in cache_dir.glob(f"images-{input_size}-*"):
        with contextlib.suppress(OSError):
            stale.unlink()
    fd, tmp = tempfile.mkstemp(prefix=".images-", suffix=".npy", dir=cache_dir)
    os.close(fd)
    ok = np.zeros(len(items), dtype=bool)
    problems: list[ScanProblem] = []
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(items), input_size, input_size))
        reserve_space(tmp, out.offset)

        def work(i: int) -> tuple[int, np.ndarray | None, ScanProblem | None]:
            it = items[i]
            try:
                return i, _grey_of(it, input_size), None
            except ImageError as exc:
                return i, None, ScanProblem(it.rel, exc.reason.value, exc.message)
            except Exception as exc:  # resize of a degenerate image etc.: skip the file, never the run
                return i, None, ScanProblem(it.rel, Reason.UNREADABLE.value,
                                            f"The image could not be prepared ({type(exc).__name__}).")

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="cxr-prepare") as pool:
            futures = [pool.submit(work, i) for i in range(len(items))]
            try:
                for n, fut in enumerate(futures):
                    if cancelled is not None and cancelled():
                        raise PrepareCancelled()
                    i, grey, problem = fut.result()
                    if grey is not None:
                        out[i] = grey.astype(np.float16)
                        ok[i] = True
                    else:
                        out[i] = 0
                        problems.append(problem)  # type: ignore[arg-type]
                    yield PrepareProgress(n + 1, len(items))
            finally:
                for fut in futures:
                    fut.cancel()
        out.flush()
        del out
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    write_json_atomic(index, {"ok": ok.tolist(), "problems": [asdict(p) for p in problems]})
    return ImageCache(path, ok, problems, reused=False)


def reserve_space(path: str | os.PathLike[str], offset: int = 0) -> None:
    """Allocate the blocks of a (sparse) file from ``offset`` to its end now, so that a full disk raises
    ENOSPC here: a write through a memory map to a full disk would instead kill the process (SIGBUS on
    Linux), with no message. Where the system cannot reserve, zeros are written instead."""
    with open(path, "rb+") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size <= offset:
            return
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fh.fileno(), offset, size - offset)
                return
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
        zeros = bytes(min(16 << 20, size - offset))
        fh.seek(offset)
        for start in range(offset, size, len(zeros)):
            fh.write(zeros[:min(len(zeros), size - start)])
        fh.flush()
        os.fsync(fh.fileno())


class PrepareCancelled(Exception):
    """Image preparation was stopped by the user."""


# --------------------------------------------------------------------------- datasets


class CachedImageDataset(Dataset):
    """Samples ``(input (3, S, S) float32, label)`` from the image cache, augmented per epoch.

    Augmentation randomness depends only on (seed, epoch, index), so a resumed run
    sees the same augmented images as an uninterrupted one, whatever the worker count.
    """

    def __init__(self, cache_path: Path, indices: Sequence[int], labels: Sequence[int], *,
                 augment: AugmentSpec | None = None, seed: int = 0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.cache_path = Path(cache_path)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.augment = augment if augment is not None and augment.active else None
        self.seed = int(seed)
        self.epoch = 0
        self.mean = tuple(mean)
        self.std = tuple(std)
        self._arr: np.ndarray | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.indices.size)

    def grey(self, i: int) -> np.ndarray:
        """The cached, un-augmented [0, 1] grey image of sample ``i``."""
        if self._arr is None:  # opened lazily, so each worker process maps the file itself
            self._arr = np.load(self.cache_path, mmap_mode="r")
        return np.asarray(self._arr[self.indices[i]], dtype=np.float32)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = self.grey(i)
        if self.augment is not None:
            rng = np.random.default_rng((self.seed, self.epoch, int(self.indices[i])))
            g = augment_grey(g, rng, self.augment)
        return torch.from_numpy(normalise(g, self.mean, self.std)), int(self.labels[i])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arr"] = None  # never pickle the memory map into worker processes
        return state


def class_weights(labels: Sequence[int], n_classes: int) -> np.ndarray:
    """Inverse-frequency weights ``N / (C * n_c)`` (1 for a class with no samples)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 1.0)
    return w.astype(np.float32)

