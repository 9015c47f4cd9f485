"""MobileNetV1 with batch renormalisation, split at a latent layer (AR1* with latent replay;
docs/protocol.md#mobilenetv1).

The network of pytorchcv's `mobilenet_w1` flattened into 27 blocks, each conv (no bias) → BatchRenorm2d → ReLU:
block 0 is a 3x3 conv (stride 2 at width 1.0 on 128x128 images; `init_stride` 1 for the embedded 32x32 variant),
then 13 depthwise-3x3 / pointwise-1x1 pairs with channels 64, 128, 128, 256, 256, 512 (x6), 1024, 1024 times
`width` (a stride-2 depthwise conv opens the 128, 256, 512 and 1024 stages), then global average pooling and a
bias-free linear head (AR1*'s CWR layer). `lower` = blocks 0..latent_layer, `upper` = the rest; the latent
activation is block `latent_layer`'s output after its BRN and ReLU. `forward(x, latent=z)` runs the new images
through `lower`, appends the stored activations `z` to the batch, and runs `upper` and the head on both.
"""

from __future__ import annotations

import torch
from torch import nn

from .batch_renorm import BatchRenorm2d

# (output channels at width 1.0, stride of the depthwise conv) of the 13 depthwise/pointwise units
UNITS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
         (512, 1), (1024, 2), (1024, 1)]
STAGE_UNITS = (1, 2, 2, 6, 2)  # pytorchcv's stage2..stage6 (the init block is stage 1)
N_BLOCKS = 1 + 2 * len(UNITS)
# AR1*'s names of the layers it replays from (the Caffe prototxts'): the block whose output the memory stores. `data`
# stores the normalised input images (native replay); `pool6` the final map, whose mean the head reads, as it would
# read the pooled vector.
LATENT_LAYERS = {"data": -1, "conv4_1/dw": 9, "conv5_1/dw": 13, "conv5_4/dw": 19, "conv5_6/dw": 23, "pool6": 26}


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int = 1, **brn):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = BatchRenorm2d(cout, **brn)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class MobileNetV1(nn.Module):
    def __init__(self, in_shape, n_classes: int, width: float = 1.0, init_stride: int = 2, latent_layer: int = 19,
                 **brn):
        super().__init__()
        if not -1 <= latent_layer < N_BLOCKS:
            raise ValueError(f"latent_layer must be a block index -1..{N_BLOCKS - 1} (-1: the input), "
                             f"not {latent_layer}")
        channels = lambda c: int(c * width)  # noqa: E731
        blocks, cin = [ConvBlock(in_shape[0], channels(32), 3, init_stride, **brn)], channels(32)
        for cout, stride in UNITS:
            blocks += [ConvBlock(cin, cin, 3, stride, groups=cin, **brn), ConvBlock(cin, channels(cout), 1, 1, **brn)]
            cin = channels(cout)
        self.latent_layer = latent_layer
        self.lower = nn.Sequential(*blocks[:latent_layer + 1])
        self.upper = nn.Sequential(*blocks[latent_layer + 1:])
        self.feature_dim = cin
        self.classifier = nn.Linear(cin, n_classes, bias=False)
        side = in_shape[1] // init_stride // 2 ** sum(s == 2 for _, s in UNITS)
        if side < 1 or in_shape[1] != in_shape[2]:
            raise ValueError(f"MobileNetV1 needs square inputs of at least {init_stride * 16} pixels, not {in_shape}")
        self.final_side = side
        self.frozen_lower = False

    def split_at(self, latent_layer: int) -> None:
        """Move the split between `lower` and `upper` to block `latent_layer` (the state dict's names follow it)."""
        blocks = [*self.lower, *self.upper]
        self.lower, self.upper = nn.Sequential(*blocks[:latent_layer + 1]), nn.Sequential(*blocks[latent_layer + 1:])
        self.latent_layer = latent_layer

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The activation of block `latent_layer` (what latent replay stores)."""
        return self.lower(x)

    def head_features(self, h: torch.Tensor) -> torch.Tensor:
        return self.upper(h).mean((2, 3))  # the final map is final_side x final_side: AvgPool2d(final_side)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_features(self.lower(x))

    def from_latent(self, h: torch.Tensor) -> torch.Tensor:
        """Logits of latent activations (the upper layers and the head)."""
        return self.classifier(self.head_features(h))

    def forward(self, x: torch.Tensor, latent: torch.Tensor | None = None, return_latent: bool = False):
        h = self.lower(x)
        logits = self.from_latent(h if latent is None else torch.cat([h, latent]))
        return (logits, h) if return_latent else logits

    def freeze_lower(self) -> None:
        """No gradient into blocks 0..latent_layer, which stay in eval mode (their BRN statistics fixed), so their
        activations never change and stored latents never go stale."""
        self.frozen_lower = True
        self.lower.requires_grad_(False)
        self.lower.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_lower:
            self.lower.eval()
        return self

    def batch_renorms(self) -> list[BatchRenorm2d]:
        return [m for m in self.modules() if isinstance(m, BatchRenorm2d)]


def pytorchcv_block_names() -> list[str]:
    """pytorchcv's prefix of each of the 27 blocks: the init block, then stage{s}.unit{u}.{dw,pw}_conv."""
    names = ["features.init_block"]
    for stage, units in enumerate(STAGE_UNITS, start=2):
        for unit in range(1, units + 1):
            names += [f"features.stage{stage}.unit{unit}.dw_conv", f"features.stage{stage}.unit{unit}.pw_conv"]
    return names


def from_pytorchcv(state: dict, net: MobileNetV1) -> dict:
    """`net`'s state dict with pytorchcv `mobilenet_w1`'s weights: each block's conv weight, and its BatchNorm's
    weight, bias, running mean and sqrt(running var) as BRN γ, β, μ_run and σ_run. The 1000-class output layer and
    `num_batches_tracked` are dropped; the head and the BRN settings (momentum, limits, ramp) stay `net`'s. Every conv
    and BatchNorm tensor of the checkpoint must be consumed, every block of `net` filled, and the shapes must agree,
    so the result loads with `strict=True`."""
    out, used = dict(net.state_dict()), set()
    for index, prefix in enumerate(pytorchcv_block_names()):
        ours = f"lower.{index}" if index <= net.latent_layer else f"upper.{index - net.latent_layer - 1}"
        for theirs, mine in (("conv.weight", "conv.weight"), ("bn.weight", "bn.weight"), ("bn.bias", "bn.bias"),
                             ("bn.running_mean", "bn.running_mean"), ("bn.running_var", "bn.running_std")):
            key = f"{prefix}.{theirs}"
            if key not in state:
                raise KeyError(f"the MobileNetV1 checkpoint lacks {key}")
            value = state[key].sqrt() if theirs == "bn.running_var" else state[key]
            if value.shape != out[f"{ours}.{mine}"].shape:
                raise ValueError(f"{key} has shape {tuple(value.shape)}, block {index} expects "
                                 f"{tuple(out[f'{ours}.{mine}'].shape)}")
            out[f"{ours}.{mine}"] = value
            used.add(key)
    left = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked")
                  and not k.startswith("output."))
    if left:
        raise KeyError(f"the MobileNetV1 checkpoint has tensors no block consumes: {left[:5]}")
    return out


def parameter_split(net: MobileNetV1) -> tuple[int, int]:
    """(parameters of lower, of upper) without the head."""
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    return count(net.lower), count(net.upper)

