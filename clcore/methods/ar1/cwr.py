"""CWR*, the consolidated output layer of AR1* (Lomonaco & Maltoni; `vlomonaco/ar1-pytorch` `utils.py`,
docs/ar1.md#cwr).

The head keeps one consolidated row cw_j per class seen. Each incremental batch starts from `reset` (the rows of
the batch's classes that have a consolidated value, zeros everywhere else), trains, and `consolidate` merges the
trained rows of the batch's classes Cur:

    ḡ = mean of every entry of the rows {W_j : j ∈ Cur},   w'_j = W_j − ḡ
    cw_j ← (α_j cw_j + w'_j) / (α_j + 1),  α_j = sqrt(past_j / cur_j)       (cw_j ← w'_j for a class never seen)

then `load` writes every consolidated row back and `past` grows by the batch's counts. `multiplicity`:
`upstream` (ar1-pytorch) lists class j in Cur n_j times, once if it is in the new images plus once per memory slot
labelled j (its Cur is a Python set of label tensors, which hash by identity), so ḡ weights row j by n_j and the
update is applied n_j times; `unique` (the Caffe code) lists every class once.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Multiplicity = Literal["upstream", "unique"]


def current_classes(batch_labels: torch.Tensor, memory_labels: torch.Tensor | None,
                    multiplicity: Multiplicity) -> list[int]:
    """Cur: the classes of the batch's new images and of the replay memory, each once (`unique`) or n_j times
    (`upstream`: 1 if j is among the new images, plus the memory slots labelled j)."""
    batch = sorted(set(batch_labels.tolist()))
    memory = [] if memory_labels is None else memory_labels.tolist()
    if multiplicity == "unique":
        return sorted(set(batch) | set(memory))
    return sorted(batch + memory)


class CWRStar(nn.Module):
    """The consolidated rows, which rows exist, and how many images of each class the past batches held; all buffers,
    so a checkpoint carries them."""

    def __init__(self, n_classes: int, feature_dim: int):
        super().__init__()
        self.register_buffer("consolidated", torch.zeros(n_classes, feature_dim))
        self.register_buffer("defined", torch.zeros(n_classes, dtype=torch.bool))
        self.register_buffer("past", torch.zeros(n_classes, dtype=torch.float64))

    @torch.no_grad()
    def reset(self, weight: torch.Tensor, classes) -> None:
        """Rows of `classes` with a consolidated value take it; every other row is zeroed."""
        keep = torch.zeros_like(self.defined)
        keep[sorted(set(classes))] = True
        keep &= self.defined
        weight.copy_(torch.where(keep[:, None], self.consolidated, torch.zeros_like(weight)))

    @torch.no_grad()
    def consolidate(self, weight: torch.Tensor, classes: list[int], counts: torch.Tensor) -> None:
        """Merge the trained rows of Cur (`classes`, with the multiplicity of `current_classes`); `counts[j]` is
        cur_j, the images of class j in the batch and the memory."""
        rows = torch.tensor(classes, dtype=torch.long, device=weight.device)
        shifted = weight - weight[rows].mean()
        for j in classes:  # a class listed n_j times is updated n_j times (upstream)
            if self.defined[j]:
                alpha = torch.sqrt(self.past[j] / counts[j]).to(weight.dtype)
                self.consolidated[j] = (alpha * self.consolidated[j] + shifted[j]) / (alpha + 1)
            else:
                self.consolidated[j] = shifted[j]
                self.defined[j] = True

    @torch.no_grad()
    def load(self, weight: torch.Tensor) -> None:
        """Every consolidated row into the head (rows never consolidated keep their values)."""
        weight.copy_(torch.where(self.defined[:, None], self.consolidated, weight))

    @torch.no_grad()
    def add_counts(self, counts: torch.Tensor) -> None:
        self.past += counts.to(self.past.dtype)
