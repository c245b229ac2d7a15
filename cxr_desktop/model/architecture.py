"""ResNet50 classifier with a configurable head (torchvision-style builder)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models import resnet50

DEFAULT_HEAD: dict[str, Any] = {"type": "gap_dropout_linear", "dropout": 0.2}
HEAD_TYPES = ("gap_dropout_linear", "gap_mlp")
FEATURE_CHANNELS = 2048
OUTPUT_STRIDES = (32, 16)
"""Backbone output strides: 32 is torchvision's ResNet50 (a 7 x 7 map at 224 px); 16 dilates the last
stage instead of striding it (``replace_stride_with_dilation=[False, False, True]``): a 14 x 14 map at
224 px from the same weights (same tensor names and shapes), at about twice the CPU cost per image."""


class ClassifierHead(nn.Module):
    """Global average pooling followed by dense layers.

    Because pooling comes first, the gradient of any class score with respect to
    the last block's activations is the same at every spatial position; Grad-CAM
    weights therefore come from the head alone (see :mod:`cxr_desktop.inference.cam`).
    """

    def __init__(self, *, in_features: int, num_classes: int, spec: dict[str, Any]):
        super().__init__()
        kind = spec.get("type", "gap_dropout_linear")
        dropout = float(spec.get("dropout", 0.2))
        layers: list[nn.Module] = []
        if kind == "gap_dropout_linear":
            layers += [nn.Dropout(dropout), nn.Linear(in_features, num_classes)]
        elif kind == "gap_mlp":
            width = in_features
            for hidden in spec.get("hidden", [256]):
                layers += [nn.Linear(width, int(hidden)), nn.ReLU(inplace=False), nn.Dropout(dropout)]
                width = int(hidden)
            layers.append(nn.Linear(width, num_classes))
        else:
            raise ValueError(f"Unknown head type {kind!r}; expected one of {HEAD_TYPES}")
        self.layers = nn.Sequential(*layers)

    def forward_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features (N, C)."""
        return self.layers(pooled)

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        """Logits from last-block activations (N, C, h, w)."""
        return self.layers(activations.mean(dim=(2, 3)))


class CxrClassifier(nn.Module):
    """ResNet50 body (conv1 .. layer4) plus a :class:`ClassifierHead`.

    ``body`` is a torchvision ResNet50 whose ``avgpool`` and ``fc`` are unused, so
    ImageNet state dicts load into it unchanged.
    """

    def __init__(self, *, num_classes: int, head: dict[str, Any] | None = None, output_stride: int = 32):
        super().__init__()
        if num_classes < 2:
            raise ValueError("A classifier needs at least two classes")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output stride {output_stride!r} is not one of {OUTPUT_STRIDES}")
        self.num_classes = int(num_classes)
        self.head_spec = dict(head or DEFAULT_HEAD)
        self.output_stride = int(output_stride)
        body = resnet50(weights=None, replace_stride_with_dilation=[False, False, output_stride == 16])
        body.fc = nn.Identity()
        body.avgpool = nn.Identity()
        self.body = body
        self.head = ClassifierHead(
            in_features=FEATURE_CHANNELS, num_classes=self.num_classes, spec=self.head_spec
        )

    @property
    def target_layer(self) -> nn.Module:
        """The last convolutional block: where Grad-CAM looks."""
        return self.body.layer4[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last-block activations (N, 2048, H/s, W/s), s = :attr:`output_stride`."""
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FeatureExtractor(nn.Module):
    """Wraps a classifier so that ``forward`` returns the backbone activations (for export)."""

    def __init__(self, model: CxrClassifier):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


def build_classifier(*, num_classes: int, head: dict[str, Any] | None = None,
                     output_stride: int = 32) -> CxrClassifier:
    """Build an untrained ResNet50 classifier (weights are loaded separately)."""
    return CxrClassifier(num_classes=num_classes, head=head, output_stride=output_stride)


def with_output_stride(model: CxrClassifier, output_stride: int) -> CxrClassifier:
    """The same weights in a backbone of another output stride (a new module; ``model`` is unchanged).

    Dilation changes no tensor, so the state dict loads as is; the map gets finer and the
    features change somewhat, so a model should be fine-tuned at the stride it is used with.
    """
    if int(output_stride) == model.output_stride:
        return model
    out = CxrClassifier(num_classes=model.num_classes, head=model.head_spec, output_stride=int(output_stride))
    out.load_state_dict(model.state_dict())
    return out.to(next(model.parameters()).dtype).train(model.training)
