"""Synaptic Intelligence (Zenke et al., ICML 2017), Mammoth `models/si.py`:

    L = CE(f(x), y) + c · Σ Ω (θ − θ*)²

Ω accumulates each parameter's contribution to the loss decrease along the training trajectory.
"""

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .. import register
from ..base import ContinualMethod, Hparams
from .regularizers import SIEstimator, SIImportance


@dataclass
class SIHparams(Hparams):
    lr: float = 0.03                 # best_args seq-cifar10 (docs/baselines.md#sources-of-the-values)
    si_c: float = 0.5                # penalty strength c, idem
    si_xi: float = 1.0               # damping ξ, idem
    estimator: SIEstimator = "lr_grad_sq"  # Mammoth; `path_integral` = Zenke / BI-R
    grad_source: Literal["total", "task_only"] = "total"  # task_only: W from the unregularised loss's gradient (Zenke)
    clip_grad: float | None = 1.0    # Mammoth clips gradients element-wise to [-1, 1]


@register("si")
class SI(ContinualMethod):
    Hparams = SIHparams

    def __init__(self, net, hp, ctx):
        super().__init__(net, hp, ctx)
        self.si = SIImportance(net.parameters(), hp.si_xi, hp.estimator)

    def observe(self, x, y, x_raw):
        ce = F.cross_entropy(self.net(x), y)
        penalty = self.si.penalty()
        loss = ce + self.hp.si_c * penalty
        task_grads = None
        if self.hp.grad_source == "task_only":
            task_grads = torch.autograd.grad(ce, self.si.params, retain_graph=True, allow_unused=True)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.hp.clip_grad is not None:
            torch.nn.utils.clip_grad_value_(self.net.parameters(), self.hp.clip_grad)
        self.si.before_step()
        self.opt.step()
        self.si.after_step(self.hp.lr, task_grads)
        return {"loss": loss, "ce": ce, "penalty": torch.as_tensor(penalty)}

    def end_task(self, task):
        self.si.consolidate()

    def extra_state(self):
        return {"si": self.si.state_dict()}

    def load_extra(self, state):
        self.si.load_state_dict(state["si"])
