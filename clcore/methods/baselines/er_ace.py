"""ER with asymmetric cross-entropy (Caccia et al., ICLR 2022; Mammoth `models/er_ace.py`, AML
`methods/er_ace.py`):

    L = CE(mask(f(x)), y) + CE(f(x_b), y_b)

The stream loss only competes among the batch's classes and the not-yet-seen ones, so new classes do
not push old logits down. The mask is built arithmetically (no host synchronisation).
"""

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ...backbones import CosineLinear
from .. import register
from ..base import ContinualMethod, Hparams


@dataclass
class ERACEHparams(Hparams):
    lr: float = 0.03           # no upstream entry on seq-cifar10: docs/baselines.md#values-without-an-upstream-entry
    minibatch_size: int = 32   # idem
    task_free: bool = False    # AML / current Mammoth: mask and replay from the first step
    # linear: legacy Mammoth, the SER and WSCL forks; cosine: current Mammoth (scale 10)
    classifier: Literal["linear", "cosine"] = "linear"


def ace_mask(y: torch.Tensor, max_seen: torch.Tensor, n_classes: int) -> torch.Tensor:
    """[C] bool: classes in the batch, plus every class >= max(seen) when some class is still unseen."""
    present = F.one_hot(y, n_classes).sum(0) > 0
    classes = torch.arange(n_classes, device=y.device)
    future = (classes >= max_seen) & (max_seen < n_classes - 1)
    return present | future


@register("er_ace")
class ERACE(ContinualMethod):
    Hparams = ERACEHparams
    uses_buffer = True

    def __init__(self, net, hp, ctx):
        if hp.classifier == "cosine":  # before the optimiser is built over the parameters
            net.classifier = CosineLinear(net.feature_dim, ctx.n_classes).to(ctx.device)
        super().__init__(net, hp, ctx)
        self.register_buffer("max_seen", torch.tensor(-1, device=ctx.device))

    def observe(self, x, y, x_raw):
        self.max_seen = torch.maximum(self.max_seen, y.max())
        logits = self.classify(x, stream=True)
        if self.task > 0 or self.hp.task_free:
            mask = ace_mask(y, self.max_seen, logits.shape[1])
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)  # legacy Mammoth value
        losses = {"ce": F.cross_entropy(logits, y)}
        if (self.task > 0 or self.hp.task_free) and not self.buffer.is_empty():
            past = self.buffer.sample(self.hp.minibatch_size, self.transform)
            losses["replay_ce"] = F.cross_entropy(self.classify(past["x"]), past["y"])
        loss = sum(losses.values())
        self.step(loss)
        self.buffer.add(x=x_raw, y=y)
        return {"loss": loss, **losses}
