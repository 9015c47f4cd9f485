"""Backbones by registry name. Every backbone exposes `features(x)` (the pooled vector), a linear
`classifier`, and `forward(x) = classifier(features(x))`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import lookup
from .mlp import MLP
from .mobilenet import MobileNetV1
from .resnet import ResNet18, ResNet32

BACKBONES = {"mlp": MLP, "resnet18": ResNet18, "resnet32": ResNet32, "mobilenet_v1": MobileNetV1}


def build_backbone(name: str, in_shape: tuple[int, int, int], n_classes: int, **options):
    return lookup("backbone", BACKBONES, name)(in_shape=in_shape, n_classes=n_classes, **options)


class CosineLinear(nn.Module):
    """A bias-free head on L2-normalised features and weights: logits = scale · cos(φ(x), w_c)."""

    def __init__(self, in_features: int, out_features: int, scale: float = 10.0):
        super().__init__()
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default

    def forward(self, x):
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))
