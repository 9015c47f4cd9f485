"""WSCL's dynamic freezing (docs/wscl.md#epoch-0-freezing-search): which blocks may be frozen, what freezing up to
a block means, and the criterion that picks among the copies trained in a task's first epoch."""

from __future__ import annotations

from typing import Literal

from torch import nn

FreezingEval = Literal["training", "buffer", "training_and_buff"]

# upstream's candidates: the blocks of layer1..layer3 in forward order; layer4 and the head never freeze
CANDIDATES = ("layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1")


def _forward_order(net: nn.Module) -> list[str]:
    """The stem and every residual block, in the order the forward pass runs them (ResNet-18's module order)."""
    blocks = [name for name, _ in net.named_modules() if name.count(".") == 1 and name.startswith("layer")]
    return ["conv1", "bn1", *blocks]


def freeze_up_to(net: nn.Module, block: str) -> None:
    """requires_grad=False on every parameter the forward pass runs before or inside `block` (the stem and all
    earlier blocks). BN running statistics keep updating in train mode, as upstream."""
    order = _forward_order(net)
    if block not in order:
        raise ValueError(f"{block!r} is not a block of the network (blocks: {', '.join(order[2:])})")
    for name in order[: order.index(block) + 1]:
        net.get_submodule(name).requires_grad_(False)


def trainable_candidates(net: nn.Module, candidates=CANDIDATES) -> list[str]:
    """The candidate blocks that still have a trainable parameter (freezing is cumulative)."""
    return [b for b in candidates if any(p.requires_grad for p in net.get_submodule(b).parameters())]


def frozen_blocks(net: nn.Module, candidates=CANDIDATES) -> list[str]:
    return [b for b in candidates if not any(p.requires_grad for p in net.get_submodule(b).parameters())]


def criterion(val_loss: float, buffer_loss: float, rule: FreezingEval, digits: int | None = 2) -> float:
    """The loss a copy is ranked by: the validation loss, the freezing buffer's, or (the paper's
    `training_and_buff`) their mean; upstream rounds with Python's round(x, 2) before comparing."""
    r = (lambda v: round(v, digits)) if digits is not None else (lambda v: v)
    if rule == "training":
        return r(val_loss)
    if rule == "buffer":
        return buffer_loss
    return r((r(val_loss) + buffer_loss) / 2)


def pick(losses: list[float]) -> int:
    """The first copy of least loss: a tie goes to less freezing."""
    return min(range(len(losses)), key=losses.__getitem__)
