"""The latent replay memory of AR1* and the way a batch is cut into minibatches (`vlomonaco/ar1-pytorch`
`ar1star_lat_replay.py`, docs/ar1.md#latent-replay).

The memory holds R activation volumes of the latent layer with their labels, no class balance. After incremental
batch i, h_i = min(⌊R / (i + 1)⌋, |A_new|) of the batch's epoch-0 activations A_new replace h_i distinct slots
(batch 0 fills the memory). A batch of N new images then trains in n_it steps of n_new new and n_rep replayed
activations, n_it₀ = max(1, (N + |RM|) // B), n_new = N // n_it₀, n_it = N // n_new, n_rep = max(0, B − n_new),
the replay slices taken in memory order. Batch 0 is padded to a multiple of B by prepending copies of its first
patterns.
"""

from __future__ import annotations

import torch
from torch import nn


def insert_count(batch_index: int, capacity: int, n_new: int) -> int:
    """h_i: how many of batch i's activations enter the memory."""
    return min(capacity // (batch_index + 1), n_new)


def minibatch_plan(n_images: int, n_memory: int, batch_size: int) -> tuple[int, int, int]:
    """(n_it, n_new, n_rep) of an incremental batch of `n_images` new images with `n_memory` stored activations."""
    n_it0 = max(1, (n_images + n_memory) // batch_size)
    n_new = n_images // n_it0
    return n_images // n_new, n_new, max(0, batch_size - n_new)


def pad_to_multiple(n: int, batch_size: int) -> torch.Tensor:
    """Row order of a batch padded to a multiple of `batch_size`: copies of its first (B − n mod B) rows, then
    every row (nothing added when n is a multiple)."""
    missing = (batch_size - n % batch_size) % batch_size
    return torch.cat([torch.arange(missing), torch.arange(n)])


class LatentMemory(nn.Module):
    """Activations and labels on the device; `size` slots are filled (the rest of the capacity stays unused when
    batch 0 is smaller than it)."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.register_buffer("activations", torch.zeros(0))
        self.register_buffer("labels", torch.zeros(0, dtype=torch.long))

    def __len__(self) -> int:
        return self.labels.shape[0]

    @torch.no_grad()
    def update(self, activations: torch.Tensor, labels: torch.Tensor, batch_index: int,
               generator: torch.Generator) -> int:
        """Store h_i random distinct entries of (activations, labels): the whole memory after batch 0, else over h_i
        random distinct slots. Returns h_i."""
        h = insert_count(batch_index, self.capacity, labels.shape[0])
        chosen = torch.randperm(labels.shape[0], generator=generator, device=labels.device)[:h]
        if batch_index == 0:
            self.activations, self.labels = activations[chosen].clone(), labels[chosen].clone()
        elif h:
            slots = torch.randperm(len(self), generator=generator, device=labels.device)[:h]
            self.activations[slots], self.labels[slots] = activations[chosen], labels[chosen]
        return h

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("activations", "labels"):  # the stored tensors define the size
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
