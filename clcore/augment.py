"""Batched image transforms on the training device.

The train transform reproduces torchvision's RandomCrop(size, padding=p) followed by
RandomHorizontalFlip(): per-sample offsets uniform in {0..2p}², a fair coin per sample, padding on the
[0, pixel_max] image before scaling and normalisation. It is one gather for the whole batch; padding
never materialises (out-of-image source pixels are zeroed, or reflected for `symmetric`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _source_index(start: torch.Tensor, size: int, pad: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Source coordinates [B, size] of a crop starting at `start` in the padded image, and their validity."""
    src = start[:, None] - pad + torch.arange(size, device=start.device)
    valid = (src >= 0) & (src < size)
    if mode == "symmetric":  # edge-repeating reflection: -1 -> 0, size -> size-1
        src = torch.where(src < 0, -src - 1, src)
        src = torch.where(src >= size, 2 * size - src - 1, src)
        valid = torch.ones_like(valid)
    return src.clamp(0, size - 1), valid


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int, mode: str = "constant") -> torch.Tensor:
    """Crop each image of x [B,C,H,W] at offsets [B,2] of its p-padded version, flipping where `flips`."""
    _, _, h, w = x.shape
    rows, valid_r = _source_index(offsets[:, 0], h, pad, mode)
    cols, valid_c = _source_index(offsets[:, 1], w, pad, mode)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    valid_c = torch.where(flips[:, None], valid_c.flip(1), valid_c)
    batch = torch.arange(x.shape[0], device=x.device)[:, None, None]
    out = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # [B,H,W,C]
    out = out * (valid_r[:, :, None] & valid_c[:, None, :])[..., None].to(out.dtype)
    return out.permute(0, 3, 1, 2).contiguous()


@dataclass
class Transform:
    """uint8 [B,C,H,W] -> normalised float, with optional random crop/flip for training."""

    pixel_max: float
    mean: torch.Tensor  # [C]
    std: torch.Tensor   # [C]
    crop_padding: int = 0
    hflip: bool = False
    padding_mode: str = "constant"  # or "symmetric" (BI-R's conv pretraining)

    @property
    def is_random(self) -> bool:
        return bool(self.crop_padding or self.hflip)

    def to(self, device) -> "Transform":
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / self.pixel_max
        return (x - self.mean[:, None, None]) / self.std[:, None, None]

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crop + flip of uint8 images (still uint8); identity when the protocol has none."""
        if not self.is_random:
            return x
        b, dev = x.shape[0], x.device
        offsets = torch.randint(0, 2 * self.crop_padding + 1, (b, 2), generator=generator, device=dev)
        flips = torch.rand(b, generator=generator, device=dev) < 0.5 if self.hflip else torch.zeros(b, dtype=torch.bool, device=dev)
        return crop_flip(x, offsets, flips, self.crop_padding, self.padding_mode)

    def train(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.normalize(self.augment(x, generator))

    def test(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x)
