"""The learned scope check: is an image's feature vector far from every training class?

The training engine stores statistics of its training images' pooled (penultimate,
2048-d) features in the model file (``extra_tensors``):

- ``ood.pca_mean`` (2048,) and ``ood.pca_components`` (k, 2048): a low-rank projection
  ``z = (pooled - pca_mean) @ pca_components.T``;
- ``ood.class_means`` (C, k): each class's mean of ``z``;
- ``ood.precision`` (k, k): the inverse of the shared (tied) covariance of ``z``;

and ``card.extra["ood"] = {"method", "threshold", "k"}``, the threshold chosen on the
validation split. The distance is the Mahalanobis distance to the nearest class mean,
``min_c sqrt((z - m_c)^T P (z - m_c))``, plus (method ``ppca-...``, tensor
``ood.residual_scale``) the squared PCA residual relative to training as one extra
dimension; an image above the threshold is unlike the training data. This module is
the one implementation of that distance (the training engine calls :func:`feature_distance`). A model file without these statistics gets a disabled check whose
:attr:`LearnedScopeCheck.status` says so; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from cxr_desktop.scope.rules import LEARNED, ScopeReason

TENSOR_NAMES = ("ood.pca_mean", "ood.pca_components", "ood.class_means", "ood.precision")
RESIDUAL_TENSOR = "ood.residual_scale"
#: The method name the training engine writes (``cxr_desktop.training.ood.METHOD``).
METHOD = "ppca-mahalanobis-nearest-class-mean"
#: Earlier statistics without the residual term are still understood.
METHODS = frozenset({METHOD, "pca-mahalanobis-nearest-class-mean"})


def feature_distance(pooled: np.ndarray, pca_mean: np.ndarray, components: np.ndarray,
                     class_means: np.ndarray, precision: np.ndarray,
                     residual_scale: float | None = None) -> np.ndarray:
    """Distance (N,) of pooled features (N, D) to the nearest training class (see module doc)."""
    x = np.atleast_2d(np.asarray(pooled, dtype=np.float64))
    xc = x - pca_mean
    z = xc @ components.T  # (N, k)
    diff = z[:, None, :] - class_means[None, :, :]  # (N, C, k)
    sq = np.einsum("nck,kl,ncl->nc", diff, precision, diff).min(axis=1)
    if residual_scale is not None:
        sq = sq + np.sum((xc - z @ components) ** 2, axis=1) / residual_scale
    return np.sqrt(np.clip(sq, 0.0, None))
NOT_STORED = (
    "this model file stores no statistics of its training images' features, so images unlike the "
    "training data cannot be recognised (train the model with cxr-train to add them)"
)


def _numpy(t: Any) -> np.ndarray:
    """Tensor or array -> float64 numpy (CPU)."""
    if hasattr(t, "detach"):
        t = t.detach().to("cpu").double().numpy()
    return np.asarray(t, dtype=np.float64)


@dataclass(frozen=True)
class LearnedScopeCheck:
    """Mahalanobis distance of pooled features to the training classes, and its threshold.

    Build with :meth:`from_model`; ``enabled`` is False (and ``status`` says why)
    when the model file has no usable statistics.
    """

    enabled: bool
    status: str
    pca_mean: np.ndarray | None = None
    components: np.ndarray | None = None
    class_means: np.ndarray | None = None
    precision: np.ndarray | None = None
    threshold: float | None = None
    method: str = METHOD
    residual_scale: float | None = None

    @classmethod
    def disabled(cls, why: str) -> "LearnedScopeCheck":
        return cls(enabled=False, status=f"Learned check off: {why}.")

    @classmethod
    def from_model(cls, extra_tensors: Mapping[str, Any] | None, card: Any) -> "LearnedScopeCheck":
        """From a loaded model's ``extra_tensors`` and card (``LoadedModel`` or engine attributes)."""
        tensors = {(k[len("extra."):] if str(k).startswith("extra.") else k): v
                   for k, v in dict(extra_tensors or {}).items()}
        extra = getattr(card, "extra", None) or {}
        info = extra.get("ood") if isinstance(extra, Mapping) else None
        present = [n for n in TENSOR_NAMES if n in tensors]
        if not present and not info:
            return cls.disabled(NOT_STORED)
        missing = [n for n in TENSOR_NAMES if n not in tensors]
        if missing:
            return cls.disabled(f"the model file's feature statistics are incomplete (missing {', '.join(missing)})")
        if not isinstance(info, Mapping):
            return cls.disabled("the model card does not say which distance threshold to use (card.extra['ood'])")
        method = str(info.get("method") or METHOD)
        if method not in METHODS:
            return cls.disabled(f"the model uses the feature-distance method {method!r}, which this version "
                                f"does not implement (it implements {', '.join(sorted(METHODS))})")
        try:
            threshold = float(info["threshold"])
        except (KeyError, TypeError, ValueError):
            return cls.disabled("the model card's distance threshold is missing or not a number")
        mean, comps = _numpy(tensors["ood.pca_mean"]), _numpy(tensors["ood.pca_components"])
        means, prec = _numpy(tensors["ood.class_means"]), _numpy(tensors["ood.precision"])
        problem = _shape_problem(mean, comps, means, prec, info.get("k"))
        if problem is None and not all(np.isfinite(a).all() for a in (mean, comps, means, prec)):
            problem = "they contain invalid numbers (NaN or infinity)"
        if problem is None and not (np.isfinite(threshold) and threshold > 0):
            problem = f"the threshold {threshold!r} is not a positive number"
        if problem is not None:
            return cls.disabled(f"the model file's feature statistics cannot be used ({problem})")
        residual = None
        if RESIDUAL_TENSOR in tensors:
            residual = float(_numpy(tensors[RESIDUAL_TENSOR]).ravel()[0])
            if not (np.isfinite(residual) and residual > 0):
                return cls.disabled("the model file's feature statistics cannot be used "
                                    f"(the residual scale {residual!r} is not a positive number)")
        k = comps.shape[0]
        status = (f"Learned check on: Mahalanobis distance to the nearest training class over {k} principal "
                  f"components of the model's features; images above {threshold:.3g} are flagged.")
        prec = (prec + prec.T) / 2.0
        return cls(True, status, mean, comps, means, prec, threshold, method, residual)

    def distance(self, pooled: Any) -> np.ndarray | float:
        """Distance of pooled features (2048,) -> float, or (N, 2048) -> (N,) array."""
        if not self.enabled:
            raise RuntimeError(self.status)
        x = _numpy(pooled)
        single = x.ndim == 1
        x = np.atleast_2d(x)
        if x.shape[1] != self.pca_mean.shape[0]:
            raise ValueError(f"pooled features have {x.shape[1]} values; the statistics expect "
                             f"{self.pca_mean.shape[0]}")
        d = feature_distance(x, self.pca_mean, self.components, self.class_means, self.precision,
                             self.residual_scale)
        return float(d[0]) if single else d

    def is_out(self, pooled: Any) -> bool | np.ndarray:
        """True where the distance exceeds the threshold (always False when disabled)."""
        if not self.enabled:
            x = _numpy(pooled)
            return False if x.ndim == 1 else np.zeros(len(x), dtype=bool)
        d = self.distance(pooled)
        return bool(d > self.threshold) if isinstance(d, float) else d > self.threshold

    def reason(self, pooled: Any) -> ScopeReason | None:
        """A :class:`ScopeReason` for one image's features when out, else ``None``."""
        if not self.enabled:
            return None
        d = self.distance(pooled)
        if not isinstance(d, float):
            raise ValueError("reason() takes one image's pooled features (2048,)")
        if d <= self.threshold:
            return None
        return ScopeReason(
            LEARNED,
            f"Unlike the model's training images (feature distance {d:.1f}, limit {self.threshold:.1f}): "
            "it may not be an adult frontal chest radiograph, or its quality or processing is unusual; "
            "the score would not be reliable.",
        )


def _shape_problem(mean: np.ndarray, comps: np.ndarray, means: np.ndarray, prec: np.ndarray,
                   k_card: Any) -> str | None:
    if mean.ndim != 1:
        return "ood.pca_mean is not a vector"
    if comps.ndim != 2 or comps.shape[1] != mean.shape[0] or comps.shape[0] < 1:
        return f"ood.pca_components has shape {tuple(comps.shape)}, expected (k, {mean.shape[0]})"
    k = comps.shape[0]
    if means.ndim != 2 or means.shape[1] != k or means.shape[0] < 1:
        return f"ood.class_means has shape {tuple(means.shape)}, expected (classes, {k})"
    if prec.shape != (k, k):
        return f"ood.precision has shape {tuple(prec.shape)}, expected ({k}, {k})"
    if k_card is not None:
        try:
            if int(k_card) != k:
                return f"the card says k={k_card} but the tensors have k={k}"
        except (TypeError, ValueError):
            return f"the card's k={k_card!r} is not a number"
    return None


def from_loaded(loaded: Any) -> LearnedScopeCheck:
    """Convenience: from a ``LoadedModel`` or an ``InferenceEngine`` (``extra_tensors`` + ``card``)."""
    return LearnedScopeCheck.from_model(getattr(loaded, "extra_tensors", None) or {}, loaded.card)
