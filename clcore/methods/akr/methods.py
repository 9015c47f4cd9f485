"""iCaRL on mixup virtual samples (`icarl_mixup`) and AKR, attentive knowledge replay (`akr`; Lee et al., SMC
2023). The official code is not public: how the attention module is built, fed and trained, and how the mixed
batch meets distillation, are our reconstruction, every choice an option (docs/akr.md). The step is

    x̃_k = a_k x_k + (1 − a_k) x_π(k),   Y_k = a_k e_{y_k} + (1 − a_k) e_{y_π(k)},   λ_k ~ Beta(α₁, α₂)
    a = λ (mixup) | tilted by the attention module's scores (akr, phases t > 0 after the warm-up epochs)
    L = BCE(f(x̃)[:, seen], T),  T = Y on the new classes, the teacher's sigmoid on the old ones (kd_target)
        [+ attn_reg_weight · mean (a − λ)²]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .. import register
from ..baselines import ICaRL, ICaRLHparams
from .attention import (
    AttentionInput,
    AttentionModule,
    Combine,
    ReverseGradient,
    WeightStats,
    attention_input,
    collapse_report,
    input_size,
    mixing_weight,
)

RECONSTRUCTION_VERSION = 1  # bump when the reconstruction changes (docs/akr.md#reconstruction-version)


@dataclass
class ICaRLMixupHparams(ICaRLHparams):
    beta: tuple[float, ...] = (1.0, 1.0)  # (α₁, α₂) of the mixing weight's Beta; README `--alpha 1.0 1.0`
    # epochs of plain mixup at the start of every phase t > 0 before the attention module acts (akr); README
    # `-wp 20` (its meaning our reading); with milestones_after_warmup the step milestones count after them
    warmup_epochs: int = 0
    milestones_after_warmup: bool = True  # inclearn's warm-up scheduler hands (epoch − warm-up) to MultiStep
    phase0_mixing: Literal["mixup", "none"] = "mixup"  # ours: phase 0 has no teacher, plain mixup throughout
    # targets of the old classes for a mixed image (ours; docs/akr.md#distillation-on-mixed-images):
    # teacher_on_mixed: σ(teacher(x̃)) as inclearn's mixup learner | teacher_blend: a σ(teacher(x)) + (1 − a)
    # σ(teacher(x_π)) | label_priority: max(Y, σ(teacher(x̃)))
    kd_target: Literal["teacher_on_mixed", "teacher_blend", "label_priority"] = "teacher_on_mixed"
    mix_mode: Literal["replace", "add"] = "replace"  # virtual samples replace the batch | join it (2B per step)


@register("icarl_mixup")
class ICaRLMixup(ICaRL):
    Hparams = ICaRLMixupHparams

    def __init__(self, net, hp, ctx):
        super().__init__(net, hp, ctx)
        self.epoch = 0

    def milestones(self) -> tuple[int, ...]:
        offset = self.hp.warmup_epochs if self.hp.milestones_after_warmup else 0
        return tuple(m + offset for m in self.hp.lr_milestones)

    def lr_factor(self, epoch: int) -> float:
        return self.hp.lr_gamma ** sum(epoch >= m for m in self.milestones())

    def epoch_lr(self, epoch: int) -> float:
        return self.hp.lr * self.lr_factor(epoch)

    def begin_epoch(self, epoch: int, task) -> None:
        super().begin_epoch(epoch, task)
        self.epoch = epoch

    def draw_lambda(self, n: int) -> torch.Tensor:
        """λ_k ~ Beta(α₁, α₂), from the global generator the run seeds and checkpoints (torch draws Beta
        variates from it only)."""
        alpha = torch.tensor(self.hp.beta, dtype=torch.float32, device=self.device)
        return torch.distributions.Beta(alpha[0], alpha[1]).sample((n,))

    def mixing_weights(self, x, partner, lam, index) -> torch.Tensor:
        """a of every pair: the Beta draw itself (AKR tilts it)."""
        return lam

    @staticmethod
    def mix(values: torch.Tensor, partner: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        a = a.view(-1, *([1] * (values.dim() - 1)))
        return a * values + (1 - a) * values[partner]

    def targets(self, x_mixed, x, partner, a, labels, past: int) -> torch.Tensor:
        """BCE targets: the (mixed) labels, with the teacher's sigmoid on the old classes from phase 1 on."""
        if self.task == 0:
            return labels
        blend = self.hp.kd_target == "teacher_blend"
        with torch.no_grad():
            teacher = torch.sigmoid(self.old_net(x if blend else x_mixed)[:, :past])
        if blend:
            teacher = self.mix(teacher, partner, a)
        elif self.hp.kd_target == "label_priority":
            teacher = torch.maximum(labels[:, :past], teacher)
        return torch.cat([teacher, labels[:, past:]], dim=1)

    def observe(self, x, y, x_raw, index=None):
        self.class_means = None
        past, seen = self.ctx.task_classes[self.task][0], self.ctx.task_classes[self.task][-1] + 1
        n = x.shape[0]
        onehot = F.one_hot(y, seen).float()
        lam = torch.ones(n, device=self.device) if self.task == 0 and self.hp.phase0_mixing == "none" \
            else self.draw_lambda(n)
        partner = torch.randperm(n, generator=self.generator, device=self.device)
        a = self.mixing_weights(x, partner, lam, index)
        a_image, a_label = self.routed(a)
        x_mixed = self.mix(x, partner, a_image)
        inputs, targets = x_mixed, self.targets(x_mixed, x, partner, a_label, self.mix(onehot, partner, a_label), past)
        if self.hp.mix_mode == "add":
            clean = self.targets(x, x, partner, torch.ones_like(lam), onehot, past)
            inputs, targets = torch.cat([x, x_mixed]), torch.cat([clean, targets])
        losses = {"bce": F.binary_cross_entropy_with_logits(self.net(inputs)[:, :seen], targets)}
        losses.update(self.weight_decay_loss() | self.attention_losses(a, lam))
        loss = sum(losses.values())
        self.step(loss)
        return {"loss": loss, **losses}

    def routed(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight that mixes the images and the one that mixes the labels and teacher outputs (AKR routes
        the attention module's gradient through them)."""
        return a, a

    def attention_losses(self, a, lam) -> dict[str, torch.Tensor]:
        return {}

    def run_info(self, rows: list[dict]) -> dict:
        return {"akr_reconstruction_version": RECONSTRUCTION_VERSION}


@dataclass
class AKRHparams(ICaRLMixupHparams):
    attn_lr: float = 2e-6            # README `-alr 2e-6`; the attention module's group of the same SGD
    attn_wd: float = 0.0             # ours
    attn_lr_decay: bool = True       # README `-lrds 1` (its meaning our guess): S follows the step schedule
    attn_reg_weight: float = 0.0     # README `-arl 0` (our guess): weight of mean (a − λ)²
    attn_feature_norm: bool = True   # README `-fn 1` (our guess): L2-normalise the features S reads
    attn_hidden: int | None = None   # ours: hidden width of S; None = the feature size
    attn_zero_init: bool = True      # ours: S starts at zero scores, so AKR starts as mixup
    attn_tau: float = 1.0            # ours: temperature of the tilt
    attn_combine: Combine = "tilt"   # ours: how scores meet λ (docs/akr.md#the-attention-module-our-reconstruction)
    attn_input: AttentionInput = "feature_delta"  # ours: what S reads
    attn_objective: Literal["minimize", "maximize"] = "minimize"  # ours: S descends L | ascends it (reversal)
    attn_grad_through_target: bool = True  # ours: ∂L/∂a flows through the mixed labels as well as the images
    # ours: Δ from the minibatch's augmented images (per_batch) | from the clean images, cached at epoch start
    attn_delta_refresh: Literal["per_batch", "per_epoch"] = "per_batch"


@register("akr")
class AKR(ICaRLMixup):
    Hparams = AKRHparams

    def __init__(self, net, hp, ctx):
        super().__init__(net, hp, ctx)
        d = input_size(net.feature_dim, hp.attn_input)
        self.attention = AttentionModule(d, hp.attn_hidden or net.feature_dim, hp.attn_zero_init,
                                         torch.Generator().manual_seed(ctx.seed)).to(ctx.device)
        self.opt = self.make_optimizer()  # now with S's group
        self.weight_stats = WeightStats(ctx.device)
        self.delta_cache = None

    def make_optimizer(self):
        opt = super().make_optimizer()
        if hasattr(self, "attention"):
            opt.add_param_group({"params": list(self.attention.parameters()), "lr": self.hp.attn_lr,
                                 "weight_decay": self.hp.attn_wd})
        return opt

    def attentive(self) -> bool:
        """S acts in phases t > 0 after the warm-up epochs of plain mixup."""
        return self.task > 0 and self.epoch >= self.hp.warmup_epochs

    def begin_task(self, task):
        super().begin_task(task)
        if self.hp.attn_delta_refresh == "per_epoch":
            task.fields["index"] = torch.arange(task.x.shape[0], device=self.device)

    def begin_epoch(self, epoch: int, task) -> None:
        net_group, attention_group = self.opt.param_groups
        net_group["lr"] = self.epoch_lr(epoch)
        attention_group["lr"] = self.hp.attn_lr * (self.lr_factor(epoch) if self.hp.attn_lr_decay else 1.0)
        self.epoch = epoch
        self.delta_cache = None
        if self.hp.attn_delta_refresh == "per_epoch" and self.attentive():
            self.delta_cache = torch.cat([self.attention_features(self.transform.test(task.x[i:i + 1024]))
                                          for i in range(0, task.x.shape[0], 1024)])

    def end_epoch(self, epoch: int) -> list[dict]:
        return self.weight_stats.rows(self.task, epoch)

    @torch.no_grad()
    def attention_features(self, x: torch.Tensor) -> torch.Tensor:
        """What S reads for images x: from the teacher's and the current model's eval-mode features."""
        return attention_input(self.old_net.features(x), self.eval_features(x), self.hp.attn_input,
                               self.hp.attn_feature_norm)

    def mixing_weights(self, x, partner, lam, index) -> torch.Tensor:
        attentive = self.attentive()
        if attentive:
            delta = self.delta_cache[index] if self.delta_cache is not None else self.attention_features(x)
            a = mixing_weight(self.attention(delta), partner, lam, self.hp.attn_combine, self.hp.attn_tau)
        else:
            a = lam
        self.weight_stats.add(a, lam, attentive)
        return a

    def routed(self, a):
        if self.hp.attn_objective == "maximize" and a.requires_grad:
            a = ReverseGradient.apply(a)
        return a, a if self.hp.attn_grad_through_target else a.detach()

    def attention_losses(self, a, lam) -> dict[str, torch.Tensor]:
        if not self.hp.attn_reg_weight or not a.requires_grad:
            return {}
        return {"attn_reg": self.hp.attn_reg_weight * ((a - lam) ** 2).mean()}

    def run_info(self, rows: list[dict]) -> dict:
        return {**super().run_info(rows), "akr_collapse": collapse_report(rows)}
