"""Experience Replay (Mammoth `models/er.py`): stream and buffer batches in one forward pass."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import register
from ..base import ContinualMethod, Hparams


@dataclass
class ERHparams(Hparams):
    minibatch_size: int = 32  # buffer batch; 128 at the DER release, 32 later (docs/baselines.md#er-buffer-batch)


@register("er")
class ER(ContinualMethod):
    Hparams = ERHparams
    uses_buffer = True

    def observe(self, x, y, x_raw):
        inputs, labels = x, y
        if not self.buffer.is_empty():
            replay = self.buffer.sample(self.hp.minibatch_size, self.transform)
            inputs, labels = torch.cat([x, replay["x"]]), torch.cat([y, replay["y"]])
        loss = F.cross_entropy(self.net(inputs), labels)  # one forward: BN statistics over both batches
        self.step(loss)
        self.buffer.add(x=x_raw, y=y)
        return {"loss": loss}
