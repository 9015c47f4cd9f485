from __future__ import annotations

import math

from torch import nn


class MLP(nn.Module):
    """Mammoth's MNISTMLP: flatten -> Linear(h) -> ReLU -> Linear(h) -> ReLU -> classifier."""

    def __init__(self, in_shape, n_classes: int, hidden: int = 100):
        super().__init__()
        self.feature_dim = hidden
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(in_shape), hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.classifier = nn.Linear(hidden, n_classes)

    def features(self, x):
        return self.encoder(x)

    def forward(self, x):
        return self.classifier(self.features(x))
