"""Learning without Forgetting, in its two Mammoth forms (docs/baselines.md#method-details).

`lwf` (DER-paper variant, `models/lwf.py` @7ab9db9): before each new task the classifier is warmed up
on the new classes with frozen features, the network's logits on the task's non-augmented images are
recorded, and the step loss is

    L = CE(f(x)[:, :a], y) + α · D(ℓ_old[:, :p], f(x)[:, :p]) + wd_reg · Σθ²,
    D(u, v) = −mean_b Σ_c s(u)_c log s(v)_c,  s(u) = softmax(u)^{1/T}, renormalised.

`lwf_mc` (iCaRL-style, `models/lwf_mc.py`): binary cross-entropy over the seen classes, with the
frozen previous network's sigmoid outputs as targets for past classes and one-hot targets for the
current ones. iCaRL (icarl.py) adds exemplars to the same loss.
"""

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .. import register
from ..base import ContinualMethod, Hparams


def smooth_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    p = F.softmax(logits, dim=1) ** (1 / temperature)
    return p / p.sum(1, keepdim=True)


def soft_cross_entropy(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Mammoth's `modified_kl_div`: −mean_b Σ_c target log prediction."""
    return -(target * prediction.log()).sum(1).mean()


class ExplicitWeightDecay:
    """`wd_reg`·Σθ² as a loss term (the DER release's form), or the same decay in the optimiser as
    weight_decay 2·`wd_reg` (the same gradient with plain SGD), by `wd_form`
    (docs/baselines.md#weight-decay-form)."""

    def make_optimizer(self):
        opt = super().make_optimizer()
        if self.hp.wd_form == "optimizer":
            for group in opt.param_groups:
                group["weight_decay"] += 2 * self.hp.wd_reg
        return opt

    def weight_decay_loss(self) -> dict[str, torch.Tensor]:
        if not self.hp.wd_reg or self.hp.wd_form == "optimizer":
            return {}
        return {"wd": self.hp.wd_reg * sum((p ** 2).sum() for p in self.net.parameters())}


@dataclass
class LwFHparams(Hparams):
    lr: float = 0.01                 # best_args seq-cifar10 (docs/baselines.md#sources-of-the-values)
    alpha: float = 3.0               # distillation weight, idem
    softmax_temp: float = 2.0        # parsed upstream but ignored there (see lwf_temp_source)
    lwf_temp_source: Literal["hardcoded", "arg"] = "hardcoded"  # hardcoded: T = 2 as upstream | arg: use softmax_temp
    wd_reg: float = 5e-4             # explicit λΣθ² in the loss, idem
    wd_form: Literal["loss", "optimizer"] = "loss"  # where wd_reg acts: loss term (upstream) | optimiser
    # the old network's targets come from the unnormalised [0, 1] image (upstream's `not_aug` tensor) or from the
    # normalised image the network trains on: docs/baselines.md#lwf-targets-and-warm-up
    distill_input: Literal["unnormalised", "normalised"] = "unnormalised"


@register("lwf")
class LwF(ExplicitWeightDecay, ContinualMethod):
    Hparams = LwFHparams

    @property
    def temperature(self) -> float:
        return 2.0 if self.hp.lwf_temp_source == "hardcoded" else self.hp.softmax_temp

    def begin_task(self, task):
        super().begin_task(task)
        if task.index == 0:
            return
        self.net.eval()
        self._warm_up_classifier(task)
        with torch.no_grad():
            task.fields["old_logits"] = torch.cat([self.net(self.distill_view(task.x[i:i + 1024]))
                                                   for i in range(0, task.x.shape[0], 1024)])
        self.net.train()

    def distill_view(self, x_raw: torch.Tensor) -> torch.Tensor:
        """The image the old network sees when it records its targets."""
        if self.hp.distill_input == "unnormalised":
            return x_raw.float() / self.transform.pixel_max
        return self.transform.test(x_raw)

    def _warm_up_classifier(self, task):
        opt = torch.optim.SGD(self.net.classifier.parameters(), lr=self.hp.lr)
        first = task.classes[0]
        for _ in range(self.hp.n_epochs):
            perm = torch.randperm(task.x.shape[0], generator=self.generator, device=self.device)
            for start in range(0, perm.numel(), self.hp.batch_size):
                idx = perm[start:start + self.hp.batch_size]
                with torch.no_grad():
                    feats = self.net.features(self.transform.train(task.x[idx], self.generator))
                logits = self.net.classifier(feats)[:, first:task.classes[-1] + 1]
                loss = F.cross_entropy(logits, task.y[idx] - first)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    def observe(self, x, y, x_raw, old_logits=None):
        seen = self.ctx.task_classes[self.task][-1] + 1
        past = self.ctx.task_classes[self.task][0]
        logits = self.net(x)
        losses = {"ce": F.cross_entropy(logits[:, :seen], y)}
        if old_logits is not None:
            t = self.temperature
            losses["distill"] = self.hp.alpha * soft_cross_entropy(
                smooth_softmax(old_logits[:, :past], t), smooth_softmax(logits[:, :past], t))
        losses.update(self.weight_decay_loss())
        loss = sum(losses.values())
        self.step(loss)
        return {"loss": loss, **losses}


def icarl_targets(y, old_probs, past: int, seen: int) -> torch.Tensor:
    """Sigmoid targets of the previous network for past classes, one-hot for the current ones."""
    onehot = F.one_hot(y, seen).float()
    if old_probs is None:
        return onehot
    return torch.cat([old_probs[:, :past], onehot[:, past:seen]], dim=1)


@dataclass
class LwFMCHparams(Hparams):
    lr: float = 0.1    # ours: sgd's lr (docs/baselines.md#values-without-an-upstream-entry)
    wd_reg: float = 0.0  # optional explicit λΣθ²
    wd_form: Literal["loss", "optimizer"] = "loss"  # where wd_reg acts: loss term (the DER release) | optimiser


@register("lwf_mc")
class LwFMC(ExplicitWeightDecay, ContinualMethod):
    Hparams = LwFMCHparams
    frozen = ("old_net",)

    def __init__(self, net, hp, ctx):
        super().__init__(net, hp, ctx)
        self.old_net = self.frozen_copy(net)

    def observe(self, x, y, x_raw):
        past, seen = self.ctx.task_classes[self.task][0], self.ctx.task_classes[self.task][-1] + 1
        old_probs = None
        if self.task > 0:
            with torch.no_grad():
                old_probs = torch.sigmoid(self.old_net(x))
        losses = {"bce": F.binary_cross_entropy_with_logits(self.net(x)[:, :seen], icarl_targets(y, old_probs, past, seen))}
        losses.update(self.weight_decay_loss())
        loss = sum(losses.values())
        self.step(loss)
        return {"loss": loss, **losses}

    def end_task(self, task):
        self.old_net.load_state_dict(self.net.state_dict())
