"""Dark Experience Replay and DER++ (Buzzega et al., NeurIPS 2020; Mammoth `models/der.py`,
`models/derpp.py`):

    DER:   L = CE(f(x), y) + α·MSE(f(x'), z')
    DER++: L = CE(f(x), y) + α·MSE(f(x'), z') + β·CE(f(x''), y'')

with (x', z') and (x'', y'') two independent buffer draws. The stored logits z are those of the
augmented stream view used in the step.
"""

from dataclasses import dataclass

import torch.nn.functional as F

from .. import register
from ..base import ContinualMethod, Hparams


@dataclass
class DERHparams(Hparams):
    lr: float = 0.03           # best_args seq-cifar10 buffer 200 (docs/baselines.md#sources-of-the-values)
    alpha: float = 0.3         # logit-replay weight, idem
    beta: float = 0.0          # label-replay weight; 0 = DER
    minibatch_size: int = 32   # = batch size in best_args


@register("der")
class DER(ContinualMethod):
    Hparams = DERHparams
    uses_buffer = True

    def observe(self, x, y, x_raw):
        logits = self.classify(x, stream=True)
        losses = {"ce": F.cross_entropy(logits, y)}
        if not self.buffer.is_empty():
            past = self.buffer.sample(self.hp.minibatch_size, self.transform)
            losses["logit_mse"] = self.hp.alpha * F.mse_loss(self.classify(past["x"]), past["logits"])
            if self.hp.beta:
                past = self.buffer.sample(self.hp.minibatch_size, self.transform)
                losses["replay_ce"] = self.hp.beta * F.cross_entropy(self.classify(past["x"]), past["y"])
        loss = sum(losses.values())
        self.step(loss)
        self.buffer.add(x=x_raw, y=y, logits=logits.detach())
        return {"loss": loss, **losses}


# DER++: best_args seq-cifar10 buffer 200: lr 0.03, α 0.1, β 0.5 (docs/baselines.md#sources-of-the-values)
register("derpp", alpha=0.1, beta=0.5)(DER)
