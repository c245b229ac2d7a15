"""Class activation maps from the last block's activations and the head alone.

The head starts with global average pooling, so for any class score ``y`` the
gradient ``dy/dA[k, i, j]`` equals ``(1 / HW) * dy/dpooled[k]`` at every spatial
position. Grad-CAM's channel weights (the spatial mean of that gradient) thus
come from a backward pass through the small head only; the backbone runs
forward once, for prediction and heatmap together.

:class:`BaseCAM` is the template (modelled on pytorch-grad-cam's ``base_cam``):
a method overrides :meth:`BaseCAM.channel_weights`; the combination, ReLU,
normalisation and resizing back to image geometry are shared.

Closed forms with a global-average-pooling head. Write ``A[k]`` for channel ``k``
of the (h, w) map, ``g[k] = dy/dpooled[k]`` (head-only backward) and
``G[k] = g[k] / (h w)`` for the (uniform) gradient ``dy/dA[k, i, j]``. Then

- Grad-CAM:  ``w[k] = mean_ij G[k] = G[k]``;
- HiResCAM (Draelos & Carin 2020): ``cam = ReLU(sum_k dy/dA[k] * A[k])`` with the
  gradient uniform is ``ReLU(sum_k G[k] A[k])``: exactly Grad-CAM (its authors note
  the equivalence for pooling heads); kept as a method so the choice is explicit;
- Layer-CAM (Jiang et al. 2021): ``cam = ReLU(sum_k ReLU(dy/dA[k]) * A[k])`` gives
  ``w[k] = ReLU(G[k])`` (negative evidence dropped per channel, not after summing);
- Grad-CAM++ (Chattopadhay et al. 2018, as pytorch-grad-cam computes it: higher
  derivatives as powers of the first, eq. 19):
  ``alpha[k] = G^2 / (2 G^2 + S[k] G^3 + eps)`` with ``S[k] = sum_ij A[k, i, j]``
  (``alpha = 0`` where ``G = 0``) and ``w[k] = sum_ij alpha ReLU(G) = h w alpha[k] ReLU(G[k])``.
  ``eps = 1e-6`` as in pytorch-grad-cam: with a pooling head ``G`` is small (``1 / hw``
  of a head weight), so ``eps`` is not negligible and is kept for agreement.

None of these needs more than the head's backward pass: every method costs the
same as Grad-CAM (``bench/bench_engine.py`` measures it; ``tests/test_cam.py``
checks each against pytorch-grad-cam on the full model).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from cxr_desktop.model.architecture import ClassifierHead


class BaseCAM:
    """Template: activations (N, K, h, w) + head -> maps (N, h, w) in [0, 1]."""

    def __init__(self, head: ClassifierHead):
        self.head = head

    def channel_weights(self, activations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, K) weights for each activation channel. Override in subclasses."""
        raise NotImplementedError

    def __call__(self, activations: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        """Raw maps for class indices ``targets`` (N,), min-max scaled to [0, 1] per image."""
        weights = self.channel_weights(activations, targets)
        cam = torch.einsum("nk,nkhw->nhw", weights.to(activations.dtype), activations)
        cam = torch.relu(cam).float().cpu().numpy()
        return scale_per_image(cam)


class GradCAM(BaseCAM):
    """Grad-CAM (Selvaraju et al.): weights = spatial mean of d score / d activations."""

    def channel_weights(self, activations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        grads = head_pooled_gradients(self.head, activations, targets)
        h, w = activations.shape[-2:]
        return grads / float(h * w)


class HiResCAM(BaseCAM):
    """HiResCAM: element-wise gradient x activation; with a pooling head this equals Grad-CAM."""

    def channel_weights(self, activations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return uniform_gradients(self.head, activations, targets)


class LayerCAM(BaseCAM):
    """Layer-CAM: positive gradients only, per position; with a pooling head ``w = ReLU(G)``."""

    def channel_weights(self, activations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.relu(uniform_gradients(self.head, activations, targets))


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ (pytorch-grad-cam's formulation) in closed form for a pooling head (see module doc)."""

    EPS = 1e-6

    def channel_weights(self, activations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        g = uniform_gradients(self.head, activations, targets).double()
        h, w = activations.shape[-2:]
        s = activations.detach().double().sum(dim=(2, 3))
        g2 = g * g
        alpha = g2 / (2.0 * g2 + s * g2 * g + self.EPS)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        return (float(h * w) * alpha * torch.relu(g)).float()


def uniform_gradients(head: ClassifierHead, activations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d logit[target] / d activations[k, i, j], the same at every (i, j) behind a pooling head: (N, K)."""
    h, w = activations.shape[-2:]
    return head_pooled_gradients(head, activations, targets) / float(h * w)


def head_pooled_gradients(head: ClassifierHead, activations: torch.Tensor,
                          targets: torch.Tensor) -> torch.Tensor:
    """d logit[target] / d pooled features, (N, K), through the head only (eval mode)."""
    with torch.enable_grad():
        pooled = activations.detach().float().mean(dim=(2, 3)).requires_grad_(True)
        logits = head.forward_pooled(pooled)
        picked = logits.gather(1, targets.view(-1, 1).to(logits.device)).sum()
        (grads,) = torch.autograd.grad(picked, pooled)
    return grads


def scale_per_image(cam: np.ndarray) -> np.ndarray:
    """Min-max scale each map to [0, 1] (all-zero maps stay zero)."""
    out = np.empty_like(cam, dtype=np.float32)
    for i, m in enumerate(cam):
        m = m - m.min()
        top = m.max()
        out[i] = m / top if top > 1e-12 else m
    return out


def to_image_geometry(cam: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Resize one map to the image's rows x columns (the stretch-resize undone)."""
    return np.clip(
        cv2.resize(cam.astype(np.float32), (int(columns), int(rows)), interpolation=cv2.INTER_LINEAR),
        0.0, 1.0,
    )


CAM_METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
}
"""Heatmap methods by the name the engine's ``cam_method`` option takes."""

CAM_LABELS: dict[str, str] = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM",
                              "layercam": "Layer-CAM"}


def make_cam(method: str, head: ClassifierHead) -> BaseCAM:
    """The CAM for ``method`` (a key of :data:`CAM_METHODS`); ``ValueError`` names the known ones."""
    try:
        cls = CAM_METHODS[method]
    except KeyError:
        raise ValueError(f"Unknown heatmap method {method!r}; choose one of {', '.join(CAM_METHODS)}.") from None
    return cls(head)
