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
unusual positions inside the subspace too.

The caution limit (``threshold``) is calibrated on HELD-OUT patients, never on the
training images or copies of them (:func:`calibrate_threshold`): each validation
patient group contributes its largest distance, and the limit is the split-conformal
quantile of those group maxima for the target caution rate ``alpha`` (the order
statistic ceil((G + 1)(1 - alpha)) of G groups), so a new in-distribution patient's
images exceed it with probability at most ``alpha`` (Vovk et al. 2005; Angelopoulos &
Bates 2021). With too few groups for that rank (G < 1/alpha - 1) the limit is the
largest held-out distance, and the card says so. Validation images whose group also
occurs in training are left out (a leaked patient would make the limit too low). Only
when no held-out group exists at all are the training images' distances used, cross-
fitted by patient group (each fold scored by statistics fitted without it).
An image above the limit is scored with a caution mark, not refused.

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


def _fit_stats(x: np.ndarray, y: np.ndarray, n_classes: int, k: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """PCA, class means, shrunk shared precision and residual scale of training features ``x`` (n, d)."""
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
    return tensors, {"k": k, "shrinkage": shrink, "residual_scale": residual_scale}


def calibrate_threshold(distances: np.ndarray, groups: Any, *, alpha: float) -> tuple[float, dict[str, Any]]:
    """The caution limit from held-out images' distances and their patient groups (see the module doc).

    Returns (threshold, calibration record for the card). Each group counts once (its
    largest distance), so a patient with many images cannot pull the limit down.
    """
    d = np.asarray(distances, dtype=np.float64).ravel()
    g = np.asarray([str(v) for v in groups]) if groups is not None else np.arange(len(d)).astype(str)
    if len(d) == 0 or len(g) != len(d):
        raise ValueError("calibration needs one patient group per held-out distance")
    if not 0.0 < alpha < 1.0:
        raise ValueError("the target caution rate must be between 0 and 1")
    names = np.unique(g)
    maxima = np.sort(np.array([d[g == name].max() for name in names]))
    n_groups = len(maxima)
    rank = int(np.ceil((n_groups + 1) * (1.0 - alpha)))  # 1-based order statistic
    if rank <= n_groups:
        threshold = float(maxima[rank - 1])
        rule = f"split-conformal: the {rank}th smallest of {n_groups} group maxima"
    else:
        threshold = float(maxima[-1])
        rule = (f"largest held-out distance: {n_groups} groups are fewer than the {int(np.ceil(1 / alpha - 1))} "
                f"a rate of {alpha:.3g} needs, so the limit is the most conservative one these groups allow")
    record = {
        "target_caution_rate": float(alpha),
        "groups": int(n_groups),
        "groups_digest": groups_digest(names),
        "images": int(len(d)),
        "rule": rule,
        "caution_rate_images": float(np.mean(d > threshold)),
    }
    return threshold, record


def groups_digest(groups: Any) -> str:
    """Short digest of a set of (hashed) patient groups: lets a later recalibration prove it used the same ones."""
    import hashlib

    text = "\n".join(sorted({str(g) for g in groups}))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _cross_fitted(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_classes: int, k: int,
                  folds: int = 5) -> np.ndarray:
    """Held-out distances of the training images: each group fold scored by statistics fitted without it."""
    names = np.unique(groups)
    order = np.random.default_rng(0).permutation(len(names))
    fold_of = {names[j]: i % folds for i, j in enumerate(order)}
    f = np.array([fold_of[v] for v in groups])
    out = np.zeros(len(x))
    for i in range(min(folds, len(names))):
        held = f == i
        if held.all() or len(x[~held]) < 3:
            continue
        t, _ = _fit_stats(x[~held], y[~held], n_classes, k)
        out[held] = ood_distance(x[held], t)
    return out


def fit_ood(train_pooled: np.ndarray, train_labels: np.ndarray, val_pooled: np.ndarray, *,
            n_classes: int, k: int = 64, percentile: float = 99.0, val_groups: Any = None,
            train_groups: Any = None, test_pooled: np.ndarray | None = None,
            ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Fit the statistics; returns (extra tensors for :func:`~cxr_desktop.model.save_model`, card info).

    ``percentile``: the limit aims at a caution rate of ``1 - percentile / 100`` on
    in-distribution patients. ``val_groups`` / ``train_groups``: the patient group of
    each validation / training image (validation images of a group seen in training
    are left out of the calibration; without ``val_groups`` every validation image is
    its own group). ``test_pooled``: only measured (the test split's caution rate).
    """
    x = np.asarray(train_pooled, dtype=np.float64)
    y = np.asarray(train_labels, dtype=np.int64)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError("at least three training feature vectors are needed")
    tensors, stats = _fit_stats(x, y, n_classes, k)
    alpha = max(1e-6, min(0.5, 1.0 - float(percentile) / 100.0))
    val = np.asarray(val_pooled, dtype=np.float64).reshape(-1, x.shape[1]) if len(val_pooled) else np.zeros((0, x.shape[1]))
    vg = (np.asarray([str(v) for v in val_groups]) if val_groups is not None
          else np.array([f"val-{i}" for i in range(len(val))]))
    seen = {str(v) for v in train_groups} if train_groups is not None else set()
    keep = np.array([v not in seen for v in vg], dtype=bool) if len(vg) else np.zeros(0, bool)
    leaked = int(len(vg) - keep.sum())
    if keep.any():
        split = "validation"
        threshold, calib = calibrate_threshold(ood_distance(val[keep], tensors), vg[keep], alpha=alpha)
    else:
        split = "training, cross-fitted by patient group (no held-out validation group)"
        tg = (np.asarray([str(v) for v in train_groups]) if train_groups is not None
              else np.array([f"train-{i}" for i in range(len(x))]))
        threshold, calib = calibrate_threshold(_cross_fitted(x, y, tg, n_classes, stats["k"]), tg, alpha=alpha)
    calib.update(split=split, excluded_images_of_training_groups=leaked,
                 method="patient-group split-conformal quantile of held-out feature distances")
    if test_pooled is not None and len(test_pooled):
        calib["test_caution_rate"] = float(np.mean(ood_distance(np.asarray(test_pooled), tensors) > threshold))
        calib["test_images"] = int(len(test_pooled))
    info = {
        "method": METHOD,
        "k": stats["k"],
        "threshold": threshold,
        "percentile": float(percentile),
        "threshold_split": split,
        "calibration": calib,
        "shrinkage": stats["shrinkage"],
        "train_images": int(len(x)),
        "tensors": list(TENSOR_NAMES),
        "residual_scale": stats["residual_scale"],
        "distance": "Mahalanobis distance to the nearest class mean in k principal dimensions (shared Ledoit-Wolf "
                    "covariance), plus the PCA residual energy relative to training as one extra dimension",
        "use": "images above the threshold are scored and marked 'unusual image - interpret with care'",
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
