"""Classifier-only baselines on the BI-R protocol (docs/bir.md#classifier-only-baselines): the iteration loop,
1/t weighting, Adam and classifier (convE + fcE + head) of `GenerativeReplay`, without any VAE. They differ
in what they replay (`replay`), what they train on (`task_data`) and which penalty they add (`penalties`):

    gr_none          L = CE on the current task
    gr_joint         class-IL: batches from tasks 1..t; task-IL: one loader per task, mean loss over tasks
    gr_only_last     no training before the last task
    gr_ewc(_online)  + λ ½ Σ_t F_t (θ − θ*_t)²
    gr_si            + c Σ Ω (θ − θ*)² over every trainable parameter
    gr_lwf           replay = the current inputs with the previous model's soft targets
    gr_er            replay = class-balanced random exemplars, hard labels
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...buffers import ClassBalancedBuffer
from .. import register
from ..baselines import EWCFisher, quadratic_penalty
from .generative_replay import GenerativeReplay, GRHparams, Replay


@dataclass
class GRBaselineHparams(GRHparams):
    ewc_lambda: float = 0.0    # EWC strength ([BIR] options.py --lambda; per benchmark in config/hparams/bir.yaml)
    n_fisher: int = 1000       # examples per Fisher estimate ([BIR] --fisher-n)
    ewc_gamma: float = 1.0     # online EWC decay γ ([BIR] --gamma)
    ewc_online: bool = False   # one running (F, θ*) instead of one pair per task ([BIR] --online)


@register("gr_none")
@register("gr_si", si_c=1.0, si_scope="all")  # c: [BIR] split CIFAR-100 class-IL; scope: docs/bir.md#si-scope
class ClassifierBaseline(GenerativeReplay):
    Hparams = GRBaselineHparams
    uses_generator = False

    def replay(self, x, y) -> list[Replay]:
        return []


@register("gr_only_last")
class OnlyLast(ClassifierBaseline):
    full_accuracy_matrix = False  # rows before the last task are the untrained model's

    def n_iters(self, task) -> int:
        return self.hp.iters if task.index == len(self.ctx.task_classes) - 1 else 0

    @classmethod
    def planned_steps(cls, hp, task_sizes, buffer_size) -> int:
        return hp.iters


@register("gr_lwf", distill=True)
class LwFBaseline(ClassifierBaseline):
    """Replay = the first B_r current inputs, labelled with the previous model's soft targets."""

    def replay(self, x, y):
        x_r = x[:self.hp.batch_size]
        if self.hp.scenario == "task":
            return [self.labelled(x_r, None, k) for k in range(self.task)]
        return [self.labelled(x_r)]


@register("gr_er")
class ERBaseline(ClassifierBaseline):
    """[CL] `train_task_based.py`: after each task, budget_per_class = buffer_size // n_classes random exemplars
    per new class; replay batches of min(B, |buffer|) (task-IL: ceil(B/(t−1)) per previous task), hard labels."""

    uses_buffer = True

    def make_buffer(self):
        return ClassBalancedBuffer(self.ctx.buffer_size, self.device, self.generator, selection="random")

    def end_task(self, task):
        super().end_task(task)
        self.buffer.update(task.x, task.y, self.ctx.n_classes)  # all classes: a fixed budget per class

    def replay(self, x, y):
        if self.hp.scenario == "task":
            per_task = math.ceil(self.hp.batch_size / self.task)
            y = self.buffer.y
            return [self.stored(((y >= lo) & (y < hi)).nonzero().flatten(), per_task, (lo, hi))
                    for lo, hi in map(self.head, range(self.task))]
        everything = torch.arange(len(self.buffer), device=self.device)
        return [self.stored(everything, self.hp.batch_size, self.head(self.task))]

    def stored(self, pool, n: int, head) -> Replay:
        idx = pool[torch.randperm(pool.numel(), generator=self.generator, device=self.device)[:n]]
        lo = head[0]
        prev_hi = head[1] if self.hp.scenario == "task" else self.ctx.task_classes[self.task - 1][-1] + 1
        return Replay(self.rows(self.buffer.x[idx]), None, self.classes(lo, prev_hi), None, self.buffer.y[idx], head)


@register("gr_joint")
class JointBaseline(ClassifierBaseline):
    """[BIR] offline mode (incremental retraining, docs/bir.md#joint-as-incremental-retraining): the model
    continues on the union of tasks 1..t (class-IL); task-IL draws ceil(B/t) per task, each on its own head,
    and L = mean over tasks (= the 1/t mix)."""

    def __init__(self, net, hp, ctx):
        super().__init__(net, hp, ctx)
        self.seen = []  # (x uint8, y) of every task so far

    def task_data(self, task):
        self.seen.append((task.x, task.y))
        if self.hp.scenario == "class":
            x, y = (torch.cat(parts) for parts in zip(*self.seen))
            return self.rows(x), y, self.hp.batch_size
        batch = math.ceil(self.hp.batch_size / (task.index + 1))
        self.loaders = [(self.rows(x), y, self.batches(x.shape[0], batch)) for x, y in self.seen[:-1]]
        return self.rows(task.x), task.y, batch

    def replay(self, x, y):
        if self.hp.scenario == "class":
            return []
        out = []
        for k, (x_k, y_k, batches) in enumerate(self.loaders):
            idx, (lo, hi) = next(batches), self.head(k)
            out.append(Replay(x_k[idx], None, self.classes(lo, hi), None, y_k[idx], (lo, hi)))
        return out

    def extra_state(self):
        return {**super().extra_state(), "seen": self.seen}

    def load_extra(self, state):
        super().load_extra(state)
        self.seen = [(x.to(self.device), y.to(self.device)) for x, y in state["seen"]]


class _Head(torch.nn.Module):
    """The classifier restricted to a task's active logits (what the Fisher is taken over)."""

    def __init__(self, model, lo: int, hi: int, from_features: bool):
        super().__init__()
        self.model, self.lo, self.hi, self.from_features = model, lo, hi, from_features

    def forward(self, x):
        return self.model.logits(x, self.from_features)[:, self.lo:self.hi]


@register("gr_ewc", ewc_lambda=1.0)  # λ: [BIR] split CIFAR-100 class-IL
@register("gr_ewc_online", ewc_lambda=1.0, ewc_online=True)  # [BIR] permuted MNIST: λ 1, γ 1
class EWCBaseline(ClassifierBaseline):
    """[BIR] `continual_learner.py`: expected Fisher over the active classes from n = min(n_fisher, |D_t|) random
    examples one at a time in eval mode, divided by n when the loop stops at n_fisher and by |D_t| − 1 otherwise
    (upstream divides by the last loop index,
    docs/bir.md#ewc-fisher-divisor). Offline: one (F_t, θ*_t) per task; online:
    F ← γF + F_t, one θ*, and the penalty multiplies F by γ again (upstream). L_EWC = ½ Σ F (θ − θ*)²."""

    def __init__(self, net, hp, ctx):
        super().__init__(net, hp, ctx)
        self.ewc_params = [p for p in self.net.parameters() if p.requires_grad]
        self.fishers, self.anchors = [], []

    def penalties(self):
        terms = super().penalties()
        if self.fishers:
            gamma = self.hp.ewc_gamma if self.hp.ewc_online else 1.0
            terms["ewc"] = self.hp.ewc_lambda * 0.5 * gamma * sum(
                quadratic_penalty(self.ewc_params, f, a) for f, a in zip(self.fishers, self.anchors))
        return terms

    def end_task(self, task):
        super().end_task(task)
        n_all = task.x.shape[0]
        order = torch.randperm(n_all, generator=self.generator, device=self.device)[:self.hp.n_fisher]
        head = _Head(self.net, *self.head(task.index), self.internal)
        fisher = EWCFisher(head, fisher="expected", fisher_bn="eval", fisher_norm="n_samples")
        n = order.numel()
        divisor = n if n_all > self.hp.n_fisher else n_all - 1
        new = [f * n / divisor for f in fisher.estimate(self.rows(task.x[order]), task.y[order], 1)]
        anchor = [p.detach().clone() for p in self.ewc_params]
        if self.hp.ewc_online and self.fishers:
            self.fishers, self.anchors = [[self.hp.ewc_gamma * f + g for f, g in zip(self.fishers[0], new)]], [anchor]
        else:
            self.fishers, self.anchors = self.fishers + [new], self.anchors + [anchor]

    def extra_state(self):
        return {**super().extra_state(), "fishers": self.fishers, "anchors": self.anchors}

    def load_extra(self, state):
        super().load_extra(state)
        self.fishers, self.anchors = state["fishers"], state["anchors"]
