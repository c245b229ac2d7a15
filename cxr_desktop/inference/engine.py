"""Inference engine: prediction and Grad-CAM from one backbone pass.

One engine owns one model; a lock makes sure two threads never use it at once
(the GUI calls it from a single worker thread, see :mod:`cxr_desktop.inference.service`).
On CUDA, an out-of-memory error retries with smaller batches, then on the CPU,
and the engine says so in :attr:`InferenceEngine.notes`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cxr_desktop.imaging.types import StudyImage
from cxr_desktop.inference.backends import FeatureBackend, OnnxBackend, TorchBackend
from cxr_desktop.inference.cam import BaseCAM, make_cam, to_image_geometry
from cxr_desktop.inference.device import DeviceInfo, cpu_name, select_device
from cxr_desktop.model.card import ModelCard
from cxr_desktop.preprocess import preprocess_for_card

log = logging.getLogger(__name__)

ONNX_TOLERANCE = 1e-4  # max abs difference of probabilities vs torch, checked at load


def decide(probs: np.ndarray, card: ModelCard) -> np.ndarray:
    """Class index per row of ``probs`` (N, C) at the model's operating point.

    The positive class when its probability reaches the card's decision threshold
    (chosen on validation data, e.g. for 95 % sensitivity), else the most probable of
    the other classes; so the label never contradicts "above / below the threshold".
    """
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    pos = card.positive_index
    others = p.copy()
    others[:, pos] = -np.inf
    out = others.argmax(1) if p.shape[1] > 1 else np.zeros(len(p), dtype=np.int64)
    out[p[:, pos] >= float(card.decision_threshold)] = pos
    return out.astype(np.int64)


@dataclass
class Prediction:
    """One image's result, as every view shows it."""

    probabilities: dict[str, float]
    label: str
    score: float  # probability of the model's positive class
    threshold: float
    above_threshold: bool
    model: str
    device: str

    @classmethod
    def from_probs(cls, probs: np.ndarray, card: ModelCard, device: str) -> "Prediction":
        pos = card.positive_index
        score = float(probs[pos])
        return cls(
            probabilities={c: float(p) for c, p in zip(card.classes, probs)},
            label=card.classes[int(decide(probs, card)[0])],
            score=score,
            threshold=float(card.decision_threshold),
            above_threshold=score >= float(card.decision_threshold),
            model=card.display_name,
            device=device,
        )


@dataclass
class BatchOutput:
    """Raw batch result: probabilities (N, C), pooled features (N, 2048), maps (N, h, w) or None."""

    probabilities: np.ndarray
    pooled: np.ndarray
    cams: np.ndarray | None
    cam_classes: np.ndarray | None


@dataclass
class ImageResult:
    prediction: Prediction
    heatmap: np.ndarray | None  # float32 [0, 1], rows x columns of the image
    cam_class: str | None
    pooled: np.ndarray | None = None


@dataclass
class EngineOptions:
    device: str = "auto"  # auto | cpu | cuda
    backend: str = "auto"  # auto | torch | onnx
    cam_method: str = "gradcam"  # a key of cxr_desktop.inference.cam.CAM_METHODS (gradcam++, hirescam, layercam)
    max_batch: int = 32
    cache_dir: Path | None = None


class InferenceEngine:
    """Predict (+ Grad-CAM) with a loaded model on the best available device."""

    def __init__(self, model: torch.nn.Module, card: ModelCard, *, model_sha256: str = "",
                 options: EngineOptions | None = None):
        self.options = options or EngineOptions()
        self.card = card
        self.model_sha256 = model_sha256
        self._cpu_model = model.float().eval()
        self.head = self._cpu_model.head
        self.notes: list[str] = []
        self.extra_tensors: dict[str, torch.Tensor] = {}
        self.model_path: str | None = None
        self.weights_status: str | None = None  # set by load_engine from the model file's checksum
        self.device_info: DeviceInfo = select_device(self.options.device)
        if self.device_info.reason.startswith("CUDA requested but"):
            self.notes.append(self.device_info.reason)
        self._lock = threading.Lock()
        self._batch = self.options.max_batch
        self.backend: FeatureBackend = self._make_backend()
        self.cam: BaseCAM = make_cam(self.options.cam_method, self.head)

    # -- construction --------------------------------------------------
    def _make_backend(self) -> FeatureBackend:
        opt = self.options.backend
        if self.device_info.kind == "cuda" and opt != "onnx":
            import copy

            return TorchBackend(copy.deepcopy(self._cpu_model), "cuda")
        if opt in ("auto", "onnx") and self.model_sha256:
            try:
                from cxr_desktop.paths import cache_dir

                onnx = OnnxBackend(self._cpu_model, input_size=self.card.input_size,
                                   model_sha256=self.model_sha256,
                                   cache_dir=self.options.cache_dir or (cache_dir() / "onnx"))
                if onnx.verified or self._agrees_with_torch(onnx):  # checked once per cached graph
                    onnx.mark_verified()
                    return onnx
                self.notes.append("ONNX Runtime disagreed with PyTorch; using PyTorch on the CPU.")
            except Exception as exc:  # missing runtime, export failure: torch still works
                self.notes.append(f"ONNX Runtime unavailable ({exc.__class__.__name__}); using PyTorch on the CPU.")
                log.warning("ONNX backend failed: %s", exc.__class__.__name__)
        return TorchBackend(self._cpu_model, "cpu")

    def _agrees_with_torch(self, backend: FeatureBackend) -> bool:
        """Check an exported backend against torch on a fixed input: features and probabilities."""
        rng = np.random.default_rng(0)
        s = self.card.input_size
        x = (rng.standard_normal((2, 3, s, s)) * 0.5).astype(np.float32)
        with torch.inference_mode():
            ref_feats = self._cpu_model.features(torch.from_numpy(x))
        got_feats = backend.features(x)
        scale = float(ref_feats.abs().max()) or 1.0
        feat_err = float((got_feats - ref_feats).abs().max()) / scale
        prob_err = float(np.abs(self._probs_from_features(ref_feats) - self._probs_from_features(got_feats)).max())
        return feat_err <= 1e-3 and prob_err <= ONNX_TOLERANCE

    # -- core ----------------------------------------------------------
    @property
    def device_label(self) -> str:
        return f"{self.device_info.label} [{self.backend.name}]"

    def _probs_from_features(self, feats: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            logits = self.head(feats.float())
            return torch.softmax(logits, dim=1).numpy()

    def _features(self, batch: np.ndarray) -> torch.Tensor:
        """Backbone pass in chunks; CUDA OOM -> smaller chunks -> CPU."""
        outs = []
        i = 0
        while i < len(batch):
            chunk = batch[i:i + self._batch]
            try:
                outs.append(self.backend.features(chunk))
                i += len(chunk)
            except torch.cuda.OutOfMemoryError:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if self._batch > 1:
                    self._batch = max(1, self._batch // 2)
                    self.notes.append(f"GPU out of memory; retrying with batch size {self._batch}.")
                else:
                    self.notes.append("GPU out of memory even at batch size 1; continuing on the CPU.")
                    self.device_info = DeviceInfo("cpu", cpu_name(), "GPU out of memory")
                    self.backend = TorchBackend(self._cpu_model, "cpu")
                log.warning(self.notes[-1])
        return torch.cat(outs, 0)

    def run_batch(self, batch: np.ndarray, *, cam: bool = False,
                  cam_classes: Sequence[int] | None = None) -> BatchOutput:
        """Model inputs (N, 3, S, S) -> probabilities, pooled features and optional maps.

        ``cam_classes`` picks the class each map explains (default: the card's positive class, the
        finding a reader looks for, whatever the prediction; see :mod:`cxr_desktop.heatmap_rules`).
        """
        with self._lock:
            feats = self._features(np.asarray(batch, dtype=np.float32))
            probs = self._probs_from_features(feats)
            pooled = feats.mean(dim=(2, 3)).numpy()
            if not cam:
                return BatchOutput(probs, pooled, None, None)
            targets = np.asarray(cam_classes if cam_classes is not None
                                 else np.full(len(probs), self.card.positive_index, dtype=np.int64))
            maps = self.cam(feats, torch.as_tensor(targets, dtype=torch.long))
            return BatchOutput(probs, pooled, maps, targets)

    def predict_inputs(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N, C) for model inputs; no maps."""
        return self.run_batch(batch).probabilities

    def predict(self, image: StudyImage, *, cam: bool = True, cam_class: str | int | None = None) -> ImageResult:
        """One image -> prediction and (optionally) its heatmap in the image's geometry.

        ``cam_class`` None: the map explains the positive (finding) class.
        """
        x = preprocess_for_card(image, self.card.preprocessing)[None]
        idx = None if cam_class is None else [self._class_index(cam_class)]
        out = self.run_batch(x, cam=cam, cam_classes=idx)
        return self._image_result(out, 0, image)

    def predict_images(self, images: Sequence[StudyImage], *, cam: bool = False) -> list[ImageResult]:
        """Several images in one batch (screening uses :meth:`run_batch` directly)."""
        if not images:
            return []
        x = np.stack([preprocess_for_card(im, self.card.preprocessing) for im in images])
        out = self.run_batch(x, cam=cam)
        return [self._image_result(out, i, im) for i, im in enumerate(images)]

    def _image_result(self, out: BatchOutput, i: int, image: StudyImage) -> ImageResult:
        pred = Prediction.from_probs(out.probabilities[i], self.card, self.device_label)
        heat = None
        cls = None
        if out.cams is not None:
            heat = to_image_geometry(out.cams[i], *image.full_shape)
            cls = self.card.classes[int(out.cam_classes[i])]
        return ImageResult(pred, heat, cls, out.pooled[i])

    def _class_index(self, cls: str | int) -> int:
        if isinstance(cls, (int, np.integer)):
            if not 0 <= int(cls) < len(self.card.classes):
                raise ValueError(f"class index {cls} out of range")
            return int(cls)
        return self.card.classes.index(cls)


def load_engine(path: str | Path, *, options: EngineOptions | None = None) -> InferenceEngine:
    """Load a model file (no code executed) and build an engine for it."""
    from cxr_desktop.model.modelfile import load_model

    loaded = load_model(path)
    eng = InferenceEngine(loaded.model, loaded.card, model_sha256=loaded.sha256, options=options)
    eng.extra_tensors = getattr(loaded, "extra_tensors", {})
    eng.model_path = str(path)
    eng.weights_status = loaded.weights_status  # "verified" or "not verified (no checksum stored)"
    return eng
