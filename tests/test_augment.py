import numpy as np
import torch
import torchvision.transforms.functional as TF
from scipy import stats

from clcore.augment import Transform, crop_flip


def torchvision_reference(img, i, j, flip, pad, mode):
    padded = TF.pad(img, [pad], padding_mode=mode)
    out = TF.crop(padded, i, j, img.shape[1], img.shape[2])
    return TF.hflip(out) if flip else out


def test_crop_flip_matches_torchvision_bit_exactly():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 10, 12), dtype=torch.uint8, generator=gen)
    for mode in ("constant", "symmetric"):
        for trial in range(20):
            offsets = torch.randint(0, 9, (6, 2), generator=gen)
            flips = torch.rand(6, generator=gen) < 0.5
            out = crop_flip(x, offsets, flips, 4, mode)
            for b in range(6):
                ref = torchvision_reference(x[b], int(offsets[b, 0]), int(offsets[b, 1]), bool(flips[b]), 4, mode)
                assert torch.equal(out[b], ref), (mode, trial, b)


def test_offsets_uniform_and_flip_rate():
    """Decode every sample's crop offset and flip from a coordinate image: χ² over the 81 pairs."""
    t = Transform(255.0, torch.zeros(2), torch.ones(2), crop_padding=4, hflip=True)
    n = 100_000
    coords = torch.arange(1, 25, dtype=torch.uint8)
    img = torch.stack([coords[:, None].expand(24, 24), coords[None, :].expand(24, 24)])  # row+1, col+1
    out = t.augment(img.expand(n, 2, 24, 24), torch.Generator().manual_seed(0)).long()
    # output pixel (12, 12) comes from source row i + 8 and column j + 8 (j + 7 when flipped)
    flipped = out[:, 1, 12, 13] < out[:, 1, 12, 12]
    i = out[:, 0, 12, 12] - 9
    j = torch.where(flipped, out[:, 1, 12, 12] - 8, out[:, 1, 12, 12] - 9)
    assert i.min() >= 0 and i.max() <= 8 and j.min() >= 0 and j.max() <= 8
    counts = np.bincount((i * 9 + j).numpy(), minlength=81)
    assert stats.chisquare(counts).pvalue > 0.001
    assert abs(flipped.float().mean().item() - 0.5) < 0.005


def test_normalisation_after_padding():
    t = Transform(255.0, torch.tensor([0.5]), torch.tensor([0.25]), crop_padding=4, hflip=False)
    x = torch.full((1, 1, 8, 8), 255, dtype=torch.uint8)
    out = t.train(x, torch.Generator().manual_seed(0))
    # padded pixels are 0 before normalisation -> (0 - 0.5)/0.25 = -2; image pixels (1 - .5)/.25 = 2
    assert set(out.unique().tolist()) <= {-2.0, 2.0}
    assert torch.allclose(t.test(x), torch.full((1, 1, 8, 8), 2.0))
