"""WSCL's data rules as pure functions (docs/wscl.md#what-is-reproduced): which auxiliary class dreams on which
output head, which images of a class are held out, and which free head a new class takes."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ...errors import InputError

Holdout = Literal["legacy", "fixed"]


def draw_dream_classes(n_aux: int, n_heads: int, generator: torch.Generator) -> torch.Tensor:
    """D[h], the auxiliary class head h dreams of: N distinct classes drawn uniformly without replacement
    when there are more than N, all of them in order when there are exactly N."""
    if n_aux < n_heads:
        raise InputError(f"WSCL needs one auxiliary class per output head: the dream set has {n_aux} classes, the "
                         f"benchmark {n_heads} heads (docs/wscl.md#dream-sources)")
    if n_aux == n_heads:
        return torch.arange(n_heads)
    return torch.randperm(n_aux, generator=generator, device=generator.device)[:n_heads].cpu()


def holdout_positions(n_images: int, first_task: bool, val_size: int, freezing_size: int, classes_per_task: int,
                      rule: Holdout = "legacy") -> tuple[range, range, range]:
    """(training, freezing-buffer, validation) positions among one class's images, in the order of the prepared
    training array. V and F are split evenly over the task's classes. Task 1 trains without the first V/CPT
    images and keeps the first F/CPT as its freezing buffer; later tasks also remove F/CPT more, and validate on
    positions F/CPT+1 .. F/CPT+V/CPT (`legacy`: one image late, the last of them is also trained on) or
    F/CPT .. F/CPT+V/CPT-1 (`fixed`); docs/wscl.md#holdout-indexing."""
    v, f = val_size // classes_per_task, freezing_size // classes_per_task
    removed = v if first_task else v + f
    if n_images <= removed:  # and legacy validation reads position v + f
        raise InputError(f"a class has {n_images} training images, WSCL holds out {removed} of them "
                         f"(val_dataset_size {val_size}, freezing_buff_size {freezing_size}, {classes_per_task} "
                         f"classes per task): lower val_dataset_size / freezing_buff_size")
    if first_task:
        return range(v, n_images), range(0, f), range(0)
    val = range(f + 1, f + v + 1) if rule == "legacy" else range(f, f + v)
    return range(removed, n_images), range(0, f), val


def match_heads(counts, free_heads: list[int]) -> list[int]:
    """The free head each new class takes: repeatedly the largest count n[r, h] (ties: first in row-major
    order) assigns class row r to head h, and both leave the table (docs/wscl.md#forward-head-assignment)."""
    n = np.array(counts, dtype=np.float64)
    if n.shape[1] < n.shape[0]:
        raise ValueError(f"{n.shape[0]} classes but only {n.shape[1]} free heads")
    heads = [-1] * n.shape[0]
    for _ in range(n.shape[0]):
        r, j = np.unravel_index(np.argmax(n), n.shape)
        heads[r] = free_heads[j]
        n[r, :], n[:, j] = -1, -1
    return heads
