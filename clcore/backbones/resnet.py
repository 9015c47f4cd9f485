"""CIFAR-style residual networks.

ResNet18: Mammoth's `backbone/ResNet18.py` (3x3 stride-1 stem, no max-pool, 1x1-conv shortcuts,
widths nf*(1,2,4,8)). ResNet32: the CIFAR ResNet of He et al. as in inclearn's `my_resnet.py`
(parameter-free shortcuts, widths nf*(1,2,4), Kaiming init), used by iCaRL-family methods
(docs/protocol.md#resnet-32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1, shortcut="conv"):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.shortcut_kind = shortcut
        self.shortcut = nn.Sequential()
        self.extra_channels = cout - cin
        if shortcut == "conv" and (stride != 1 or cin != cout):
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.stride = stride

    def _identity(self, x):
        if self.shortcut_kind == "conv":
            return self.shortcut(x)
        if self.stride != 1:  # option A: subsample and append zero channels
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels)) if self.extra_channels else x

    def forward_preact(self, x):
        """The block's output before its final ReLU (SER modulates it)."""
        out = F.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out)) + self._identity(x)

    def forward(self, x):
        return F.relu(self.forward_preact(x))


def pool(h: torch.Tensor, kind: str = "global") -> torch.Tensor:
    """[B, C, H, W] -> [B, C]. `legacy_square`: Mammoth's avg_pool2d(kernel = H), which on a
    non-square map averages only the left H columns (SER at 288x384, docs/ser.md#square-pooling-kernel);
    same as `global` on square maps."""
    if kind == "legacy_square":
        return F.avg_pool2d(h, h.shape[2])[:, :, 0, 0]
    return F.adaptive_avg_pool2d(h, 1).flatten(1)


class ResNet18(nn.Module):
    N_TAPS = 5  # the stem and layer1..layer4: where SER reads and modulates activations

    def __init__(self, in_shape, n_classes: int, nf: int = 64, blocks=(2, 2, 2, 2), pool: str = "global",
                 stem: str = "cifar"):
        super().__init__()
        if pool not in ("global", "legacy_square"):
            raise ValueError(f"pool must be 'global' or 'legacy_square', not {pool!r}")
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', not {stem!r}")
        self.pool = pool
        # cifar: Mammoth's 3x3 stride-1 stem; imagenet: torchvision's 7x7 stride-2 conv and 3x3 stride-2 max-pool
        # (AKR's ImageNet-subset block, docs/akr.md#paper-blocks)
        if stem == "cifar":
            self.conv1, self.stem_pool = conv3x3(in_shape[0], nf), nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_shape[0], nf, 7, stride=2, padding=3, bias=False)
            self.stem_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(nf)
        widths, strides, cin = [nf, 2 * nf, 4 * nf, 8 * nf], [1, 2, 2, 2], nf
        for k, (width, stride, n) in enumerate(zip(widths, strides, blocks), start=1):
            layer = []
            for b in range(n):
                layer.append(BasicBlock(cin, width, stride if b == 0 else 1))
                cin = width
            setattr(self, f"layer{k}", nn.Sequential(*layer))
        self.feature_dim = cin
        self.classifier = nn.Linear(cin, n_classes)

    def stages(self, x) -> list[torch.Tensor]:
        """Outputs of the stem and of layer1..layer4."""
        out = [self.stem_pool(F.relu(self.bn1(self.conv1(x))))]
        for k in range(1, 5):
            out.append(getattr(self, f"layer{k}")(out[-1]))
        return out

    def forward_taps(self, x, modulate=None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The pre-ReLU taps P0 (stem BN output) and P1..P4 (last block of each layer, after the residual
        add), and the pooled features. `modulate(i, P_i)`, if given, replaces ReLU(P_i) as the input of
        the next stage (SER)."""
        taps = [self.bn1(self.conv1(x))]
        h = self.stem_pool(modulate(0, taps[0]) if modulate else F.relu(taps[0]))
        for k in range(1, 5):
            *head, last = getattr(self, f"layer{k}")
            for block in head:
                h = block(h)
            taps.append(last.forward_preact(h))
            h = modulate(k, taps[-1]) if modulate else F.relu(taps[-1])
        return taps, pool(h, self.pool)

    def features(self, x):
        return pool(self.stages(x)[-1], self.pool)

    def forward(self, x):
        return self.classifier(self.features(x))


class ResNet32(nn.Module):
    def __init__(self, in_shape, n_classes: int, nf: int = 16, n: int = 5, last_relu: bool = True,
                 zero_init_residual: bool = True):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(in_shape[0], nf), nn.BatchNorm2d(nf)
        cin, stages = nf, []
        for k, width in enumerate([nf, 2 * nf, 4 * nf]):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(cin, width, 2 if (k > 0 and b == 0) else 1, shortcut="pad"))
                cin = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.last_relu = last_relu
        self.feature_dim = cin
        self.classifier = nn.Linear(cin, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def features(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        *head, last = self.layer3
        for block in head:
            x = block(x)
        x = last(x) if self.last_relu else last.forward_preact(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x):
        return self.classifier(self.features(x))
