"""Backbones by registry name. Every backbone exposes `features(x)` (the pooled vector), a linear
`classifier`, and `forward(x) = classifier(features(x))`."""

from __future__ import annotations

from ..errors import lookup
from .mlp import MLP
from .resnet import ResNet18, ResNet32

BACKBONES = {"mlp": MLP, "resnet18": ResNet18, "resnet32": ResNet32}


def build_backbone(name: str, in_shape: tuple[int, int, int], n_classes: int, **options):
    return lookup("backbone", BACKBONES, name)(in_shape=in_shape, n_classes=n_classes, **options)
