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
dimension. This module is the one implementation of that distance (the training
engine calls :func:`feature_distance`). A model file without these statistics gets a
disabled check whose :attr:`LearnedScopeCheck.status` says so; nothing else changes.

An image above the threshold is *unusual*, not out of scope: it is still scored and
carries a :class:`Caution` ("unusual image - interpret with care", with its distance
and the limit). A focal finding is by nature unlike a model's normal images, so a
refusal here would hide exactly the images a reader must see; the metadata and image
rules (:mod:`cxr_desktop.scope.rules`) are what refuses images the model is not made for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from cxr_desktop.scope.rules import LEARNED

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


#: The mark shown wherever a cautioned score is shown (results panel, worklist, CSV, journal).
CAUTION_MARK = "unusual image - interpret with care"


@dataclass(frozen=True)
class Caution:
    """A scored image whose features are far from the training images': shown, marked, never hidden.

    ``code`` is the rule code that switches the check off (``unlike_training_data``);
    ``distance`` and ``limit`` are the feature distance and the model's calibrated limit.
    """

    distance: float
    limit: float
    code: str = LEARNED

    @property
    def short(self) -> str:
        """The mark with its figures, one line (worklist, CSV ``caution`` column)."""
        return f"{CAUTION_MARK} (feature distance {self.distance:.1f}, limit {self.limit:.1f})"

    @property
    def message(self) -> str:
        """The sentence for the reader: what the mark means and what to do."""
        return (f"Unusual image - interpret with care: its features are far from the model's training images "
                f"(feature distance {self.distance:.1f}, limit {self.limit:.1f}). The score is shown, but its "
                "processing, quality or content (possibly a finding) is unlike what the model was trained on; "
                "read the image yourself.")

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "distance": float(self.distance), "limit": float(self.limit)}

    @classmethod
    def from_dict(cls, data: Any) -> "Caution | None":
        """From :meth:`to_dict` output; ``None`` for a missing or unreadable entry."""
        if not isinstance(data, Mapping):
            return None
        try:
            return cls(distance=float(data["distance"]), limit=float(data["limit"]),
                       code=str(data.get("code") or LEARNED))
        except (KeyError, TypeError, ValueError):
            return None


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
    """Mahalanobis distance of pooled features to the training classes, and its caution limit.

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
                  f"components of the model's features; images above {threshold:.3g} are scored with the "
                  f"caution mark '{CAUTION_MARK}'.")
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

    def is_unusual(self, pooled: Any) -> bool | np.ndarray:
        """True where the distance exceeds the threshold (always False when disabled)."""
        if not self.enabled:
            x = _numpy(pooled)
            return False if x.ndim == 1 else np.zeros(len(x), dtype=bool)
        d = self.distance(pooled)
        return bool(d > self.threshold) if isinstance(d, float) else d > self.threshold

    def caution(self, pooled: Any) -> Caution | None:
        """A :class:`Caution` for one image's features when above the limit, else ``None``."""
        if not self.enabled:
            return None
        d = self.distance(pooled)
        if not isinstance(d, float):
            raise ValueError("caution() takes one image's pooled features (2048,)")
        if d <= self.threshold:
            return None
        return Caution(distance=d, limit=float(self.threshold))


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
