"""Online EWC (Schwarz et al., ICML 2018), Mammoth `models/ewc_on.py`:

    L = CE(f(x), y) + λ · Σ F (θ − θ*)²,   F ← γ·F + F_task after every task.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import register
from ..base import ContinualMethod, Hparams
from .regularizers import EWCFisher, FisherBN, FisherKind, FisherNorm


@dataclass
class EWCHparams(Hparams):
    lr: float = 0.03                   # best_args seq-cifar10 (docs/baselines.md#sources-of-the-values)
    ewc_lambda: float = 10.0           # penalty strength λ, idem
    ewc_gamma: float = 1.0             # decay of the running Fisher, idem
    fisher: FisherKind = "mammoth"     # docs/baselines.md#ewc-fisher-weighting
    fisher_bn: FisherBN = "train"      # train (upstream) | eval
    fisher_norm: FisherNorm = "batches_times_b"  # upstream normaliser | n_samples


@register("ewc_on")
class OnlineEWC(ContinualMethod):
    Hparams = EWCHparams

    def __init__(self, net, hp, ctx):
        super().__init__(net, hp, ctx)
        self.ewc = EWCFisher(net, hp.ewc_gamma, hp.fisher, hp.fisher_bn, hp.fisher_norm)

    def observe(self, x, y, x_raw):
        ce = F.cross_entropy(self.net(x), y)
        penalty = self.ewc.penalty()
        loss = ce + self.hp.ewc_lambda * penalty
        self.step(loss)
        return {"loss": loss, "ce": ce, "penalty": torch.as_tensor(penalty)}

    def end_task(self, task):
        # upstream iterates the shuffled, augmented train loader one example at a time
        order = torch.randperm(task.x.shape[0], generator=self.generator, device=self.device)
        inputs = self.transform.train(task.x[order], self.generator)
        self.ewc.update(self.ewc.estimate(inputs, task.y[order], self.hp.batch_size))

    def extra_state(self):
        return {"ewc": self.ewc.state_dict()}

    def load_extra(self, state):
        self.ewc.load_state_dict(state["ewc"])
