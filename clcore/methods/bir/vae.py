"""The BI-R networks (docs/bir.md#networks; [BIR] `models/vae.py`, `models/conv/nets.py`, `models/fc/layers.py`).

`ConvE`: 5 conv layers (3x3, pad 1; stride 1 then 2), BN+ReLU on layers 1-4, layer 5 linear; submodules
named `convLayer{i}.conv/.bn` so upstream checkpoints load by name. `ConvD` mirrors it with transposed convs.
`BIRVAE` is one class for the three roles: VAE with classifier head (replay-through-feedback), generator
(no head) and classifier (no decoder). The decoder's hidden layers carry fixed class-specific binary gates.
"""

from __future__ import annotations

import math
import typing
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Prior = Literal["standard", "gmm"]  # N(0, I), or one learnable Gaussian mode per class
Output = Literal["sigmoid", "linear"]  # reconstruction in [0, 1] (BCE) or unbounded (MSE)


class _ConvLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, last: bool):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)  # bias as upstream `conv_layer`
        self.bn = None if last else nn.BatchNorm2d(c_out)

    def forward(self, x):
        return self.conv(x) if self.bn is None else F.relu(self.bn(self.conv(x)))


class ConvE(nn.Module):
    """Channels c0, 2c0, 4c0, 8c0, 16c0; 32x32 -> 32 -> 16 -> 8 -> 4 -> 2; returns flat features."""

    def __init__(self, in_channels: int = 3, c0: int = 16, image_size: int = 32):
        super().__init__()
        channels = [in_channels, c0, 2 * c0, 4 * c0, 8 * c0, 16 * c0]
        for i in range(1, 6):
            setattr(self, f"convLayer{i}", _ConvLayer(channels[i - 1], channels[i], 1 if i == 1 else 2, last=i == 5))
        self.out_channels, self.out_size = 16 * c0, image_size // 16
        self.out_features = self.out_channels * self.out_size ** 2

    def forward(self, x):
        for i in range(1, 6):
            x = getattr(self, f"convLayer{i}")(x)
        return x.flatten(1)


class _DeconvLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, last: bool):
        super().__init__()
        self.deconv = (nn.ConvTranspose2d(c_in, c_out, 3, stride=1, padding=1) if last
                       else nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
        self.bn = None if last else nn.BatchNorm2d(c_out)

    def forward(self, x):
        return self.deconv(x) if self.bn is None else F.relu(self.bn(self.deconv(x)))


class ConvD(nn.Module):
    """16c0 x s x s -> ... -> c0 x 16s x 16s (4x4 stride-2 transposed convs, BN+ReLU) -> 3x3 to the image
    channels, linear output (the caller applies a sigmoid for BCE)."""

    def __init__(self, out_channels: int = 3, c0: int = 16, in_size: int = 2):
        super().__init__()
        channels = [16 * c0, 8 * c0, 4 * c0, 2 * c0, c0, out_channels]
        for i in range(1, 6):
            setattr(self, f"deconvLayer{i}", _DeconvLayer(channels[i - 1], channels[i], last=i == 5))
        self.in_shape = (16 * c0, in_size, in_size)

    def forward(self, h):
        x = h.view(-1, *self.in_shape)
        for i in range(1, 6):
            x = getattr(self, f"deconvLayer{i}")(x)
        return x


class GatedLinear(nn.Module):
    """Linear -> (pre-activation x gate) -> ReLU, gate = g·M with M a fixed {0,1} mask [n_gates, units] whose
    entries are 0 with probability dg_prop (upstream `fc_layer_fixed_gates`). The mask is a persistent
    buffer drawn from its own generator, so it is saved with the model and independent of the global RNG."""

    def __init__(self, n_in: int, n_out: int, n_gates: int, dg_prop: float, seed: int):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        if dg_prop > 0:
            gen = torch.Generator().manual_seed(seed)
            self.register_buffer("mask", (torch.rand(n_gates, n_out, generator=gen) >= dg_prop).float())
        else:
            self.mask = None

    def forward(self, h, gate=None):
        pre = self.linear(h)
        if self.mask is not None:
            pre = pre * (gate @ self.mask)
        return F.relu(pre)


class BIRVAE(nn.Module):
    """VAE with optional classifier head on the top encoder layer e, or a plain classifier (decoder=False).

    in_shape: (C, H, W) of the images. conv: build `convE` (else the fc input is the flattened image).
    internal: inputs and reconstructions are convE features (decoder output linear); else pixel
    reconstructions through `ConvD` (conv) or a last fc layer (MLP); `out` is "sigmoid" (BCE on [0,1]
    pixels) or "linear" (MSE on normalised pixels). fc_layers counts the hidden fc layers (upstream `--fc-lay`
    minus one): fcE sizes [D_h] + [fc_units] * fc_layers; the decoder mirrors them.
    """

    def __init__(self, in_shape, n_classes: int, fc_units: int, fc_layers: int, z_dim: int, conv: bool = False,
                 c0: int = 16, internal: bool = False, freeze_conv: bool = False, classifier: bool = True,
                 decoder: bool = True, prior: Prior = "standard", dg_prop: float = 0.0, out: Output = "sigmoid",
                 seed: int = 0):
        super().__init__()
        for name, value, kind in (("prior", prior, Prior), ("out", out, Output)):
            if value not in typing.get_args(kind):
                raise ValueError(f"{name} must be one of {typing.get_args(kind)}, not {value!r}")
        self.in_shape, self.n_classes, self.z_dim, self.prior = tuple(in_shape), n_classes, z_dim, prior
        self.internal, self.freeze_conv, self.out = internal and conv, freeze_conv and conv, out
        self.convE = ConvE(in_shape[0], c0, in_shape[-1]) if conv else None
        d_h = self.convE.out_features if conv else math.prod(in_shape)
        sizes = [d_h] + [fc_units] * fc_layers
        self.fcE = nn.Sequential(*[m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU())])
        self.classifier = nn.Linear(sizes[-1], n_classes) if classifier else None
        self.gated = decoder and dg_prop > 0
        if decoder:
            self.toZ_mu = nn.Linear(sizes[-1], z_dim)
            self.toZ_logvar = nn.Linear(sizes[-1], z_dim, bias=False)  # upstream `fc_layer_split`: no bias
            if prior == "gmm":  # one mode per class, both N(0,1)-initialised, trained through the KL only
                self.z_class_means = nn.Parameter(torch.randn(n_classes, z_dim))
                self.z_class_logvars = nn.Parameter(torch.randn(n_classes, z_dim))
            down = sizes[::-1]  # [U, ..., U, D_h]
            layers = [GatedLinear(z_dim, down[0], n_classes, dg_prop, _gate_seed(seed, 0))]
            layers += [GatedLinear(a, b, n_classes, dg_prop, _gate_seed(seed, i + 1))
                       for i, (a, b) in enumerate(zip(down[:-2], down[1:-1]))]
            self.fromZ, self.fcD = layers[0], nn.ModuleList(layers[1:])
            self.toX = nn.Linear(down[-2], down[-1])  # last decoder fc: never gated
            self.convD = ConvD(in_shape[0], c0, self.convE.out_size) if conv and not self.internal else None
        self.decoder = decoder
        if self.freeze_conv:
            self.convE.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_conv:  # frozen BN keeps its running statistics in every forward pass
            self.convE.eval()
        return self

    # -- forward pieces -----------------------------------------------------------------------------
    def forward(self, x):
        return self.logits(x)

    def features(self, x):
        """Pixels -> the fc stack's input (convE features, or the flattened image)."""
        return x.flatten(1) if self.convE is None else self.convE(x)

    def encode(self, x, from_features: bool):
        return self.fcE(x.flatten(1) if from_features else self.features(x))

    def logits(self, x, from_features: bool = False):
        return self.classifier(self.encode(x, from_features))

    def decode(self, z, gate=None):
        """z -> reconstruction in the input space (features if internal, else pixels [B, C, H, W])."""
        h = self.fromZ(z, gate)
        for layer in self.fcD:
            h = layer(h, gate)
        h = self.toX(h)
        if self.internal:
            return h
        if self.convD is not None:
            h = self.convD(F.relu(h))  # pixel replay: the last fc layer has a ReLU, then convD
        else:
            h = h.view(-1, *self.in_shape)
        return torch.sigmoid(h) if self.out == "sigmoid" else h

    @torch.no_grad()
    def sample(self, n: int, classes: torch.Tensor, generator: torch.Generator):
        """n samples: class c uniform in `classes`, z ~ N(μ_c, σ_c²) (standard prior: N(0, I)), decoded with
        the one-hot gate of c. Returns (x, c). The caller keeps the model in eval mode."""
        dev = classes.device
        c = classes[torch.randint(len(classes), (n,), generator=generator, device=dev)]
        eps = torch.randn(n, self.z_dim, generator=generator, device=dev)
        z = eps if self.prior == "standard" else self.z_class_means[c] + (0.5 * self.z_class_logvars[c]).exp() * eps
        gate = F.one_hot(c, self.n_classes).float() if self.gated else None
        return self.decode(z, gate), c


def _gate_seed(run_seed: int, layer: int) -> int:
    return 1_000_003 * run_seed + layer  # one stream per (run seed, gated layer)
