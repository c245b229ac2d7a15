"""Input-safety statistics: how far an image's features are from the training data.

Fitted on the pooled 2048-d penultimate features of the TRAINING split: PCA to
``k`` dimensions, one mean per class and a shared covariance shrunk towards a
scaled identity (Ledoit-Wolf), inverted to a precision matrix. The distance of
a new image is the Mahalanobis distance to the nearest class mean (Lee et al.
2018) in the ``k`` principal dimensions, plus one term for the part of the
feature vector outside them: its squared norm (the PCA residual) divided by
the training images' mean squared residual. Without that term, features from a
different kind of image that lie mostly outside the training subspace would
project near the class means and look normal; counting it as a single extra
dimension (rather than as ~2000 isotropic ones) keeps the distance sensitive to
unusual positions inside the subspace too. The threshold is a high percentile of the VALIDATION split's
distances, so about 1 % of genuine in-distribution images exceed it.

Stored in the model file as extra tensors ``ood.pca_mean``, ``ood.pca_components``,
``ood.class_means``, ``ood.precision``, ``ood.residual_scale`` and ``card.extra["ood"]``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

METHOD = "ppca-mahalanobis-nearest-class-mean"
TENSOR_NAMES = ("ood.pca_mean", "ood.pca_components", "ood.class_means", "ood.precision", "ood.residual_scale")


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of centred rows ``x`` (n, d) and the shrinkage used."""
    n, d = x.shape
    emp = x.T @ x / n
    mu = np.trace(emp) / d
    x2 = x ** 2
    beta_ = float(np.sum((x2.T @ x2) / n - emp ** 2)) / n
    delta_ = float(np.sum((emp - mu * np.eye(d)) ** 2))
    beta = min(beta_, delta_)
    shrink = 0.0 if delta_ == 0 else beta / delta_
    return (1.0 - shrink) * emp + shrink * mu * np.eye(d), float(shrink)


def fit_ood(train_pooled: np.ndarray, train_labels: np.ndarray, val_pooled: np.ndarray, *,
            n_classes: int, k: int = 64, percentile: float = 99.0) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Fit the statistics; returns (extra tensors for :func:`~cxr_desktop.model.save_model`, card info)."""
    x = np.asarray(train_pooled, dtype=np.float64)
    y = np.asarray(train_labels, dtype=np.int64)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError("at least three training feature vectors are needed")
    mean = x.mean(0)
    xc = x - mean
    # at most half the training images: with k close to N the PCA reproduces the training set exactly
    # and its residual (the off-subspace scale) would be estimated as zero
    k = int(max(1, min(k, (len(x) - 1) // 2, x.shape[1])))
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    comps = vt[:k]
    z = xc @ comps.T
    means = np.zeros((n_classes, k))
    present = []
    for c in range(n_classes):
        if np.any(y == c):
            means[c] = z[y == c].mean(0)
            present.append(c)
    within = z - means[y]
    cov, shrink = ledoit_wolf(within)
    cov += 1e-6 * (np.trace(cov) / k) * np.eye(k)
    precision = np.linalg.inv(cov)
    precision = (precision + precision.T) / 2.0
    resid = xc - z @ comps
    residual_scale = max(float(np.mean(np.sum(resid ** 2, axis=1))), 1e-6 * float(np.mean(np.sum(xc ** 2, axis=1))), 1e-12)
    tensors = {
        "ood.pca_mean": torch.from_numpy(mean.astype(np.float32)),
        "ood.pca_components": torch.from_numpy(comps.astype(np.float32)),
        "ood.class_means": torch.from_numpy(means[present].astype(np.float32)),
        "ood.precision": torch.from_numpy(precision.astype(np.float32)),
        "ood.residual_scale": torch.tensor([residual_scale], dtype=torch.float32),
    }
    val = ood_distance(np.asarray(val_pooled), tensors) if len(val_pooled) else ood_distance(x, tensors)
    info = {
        "method": METHOD,
        "k": k,
        "threshold": float(np.percentile(val, percentile)),
        "percentile": float(percentile),
        "threshold_split": "validation" if len(val_pooled) else "training",
        "shrinkage": shrink,
        "train_images": int(len(x)),
        "tensors": list(TENSOR_NAMES),
        "residual_scale": residual_scale,
        "distance": "Mahalanobis distance to the nearest class mean in k principal dimensions (shared Ledoit-Wolf "
                    "covariance), plus the PCA residual energy relative to training as one extra dimension",
    }
    return tensors, info


def _get(tensors: Mapping[str, Any], name: str) -> np.ndarray:
    for key in (name, "extra." + name):
        if key in tensors:
            t = tensors[key]
            return t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float64)
    raise KeyError(f"the model file has no {name!r} statistics (train it with cxr-train to add them)")


def ood_distance(pooled: np.ndarray, tensors: Mapping[str, Any]) -> np.ndarray:
    """Distance (N,) of pooled features (N, 2048) (or one vector) to the training data.

    ``tensors``: the statistics by name, with or without the model file's ``extra.``
    prefix. The arithmetic is :func:`cxr_desktop.scope.learned.feature_distance`,
    the one implementation the app's scope check uses too.
    """
    from cxr_desktop.scope.learned import feature_distance

    try:
        scale: float | None = float(_get(tensors, "ood.residual_scale").ravel()[0])
    except KeyError:  # statistics written before the residual term existed
        scale = None
    return feature_distance(pooled, _get(tensors, "ood.pca_mean"), _get(tensors, "ood.pca_components"),
                            _get(tensors, "ood.class_means"), _get(tensors, "ood.precision"), scale)
