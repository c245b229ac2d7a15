"""Class activation maps from the last block's activations and the head alone.

The head starts with global average pooling, so for any class score ``y`` the
gradient ``dy/dA[k, i, j]`` equals ``(1 / HW) * dy/dpooled[k]`` at every spatial
position. Grad-CAM's channel weights (the spatial mean of that gradient) thus
come from a backward pass through the small head only; the backbone runs
forward once, for prediction and heatmap together.

:class:`BaseCAM` is the template (modelled on pytorch-grad-cam's ``base_cam``):
a method overrides :meth:`BaseCAM.channel_weights`; the combination, ReLU,
normalisation and resizing back to image geometry are shared.
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


CAM_METHODS: dict[str, type[BaseCAM]] = {"gradcam": GradCAM}
