"""iCaRL (Rebuffi et al., CVPR 2017), Mammoth `models/icarl.py` @d75fe5f: LwF-MC's sigmoid
distillation loss on the task's data merged with the exemplars, herding exemplar selection, and a
nearest-mean-of-exemplars classifier, score_c = −‖μ_c − φ(x)‖².

`nmc`: `legacy` (upstream: unnormalised features, class means accumulated batch by batch as
m ← (m + batch_mean)/2), `exact` (true means), `current` (current Mammoth: L2-normalised features,
exemplars plus their horizontal flips where the benchmark flips, renormalised means, herding on normalised
features).

Besides the accuracy matrix (from `predict`: NME once exemplars exist), every evaluation logs the per-image
accuracy on the test images of all seen classes with both classifiers, `accuracy_seen/nme` and `accuracy_seen/cnn`
(the head's arg-max over the seen classes): inclearn's and AKR's metric (docs/akr.md#metrics).
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ...buffers import ClassBalancedBuffer, HerdingVariant, Selection
from ...results import RANDOM_INIT_ROW, metric_rows
from ...scenarios import ClassOrder
from .. import register
from .lwf import LwFMC, LwFMCHparams


@dataclass
class ICaRLHparams(LwFMCHparams):
    lr: float = 0.1          # best_args seq-cifar10 buffer 200 (docs/baselines.md#sources-of-the-values)
    optim_wd: float = 1e-5   # idem
    nmc: Literal["legacy", "exact", "current"] = "legacy"
    selection: Selection = "herding"
    herding_variant: HerdingVariant = "exclude"  # Mammoth; icarl_w: the original code and inclearn (AKR)
    # exemplars per class: shrinking = K // seen classes (iCaRL, Mammoth, inclearn); fixed = K // all classes
    # (the LUCIR / TFH convention); docs/baselines.md#herding-variants
    memory_policy: Literal["shrinking", "fixed"] = "shrinking"
    # None: the benchmark's order (AKR's CIFAR-100 splits: inclearn_order0; lucir_1993 is the order of the other
    # methods of AKR's figure, docs/akr.md#paper-blocks)
    class_order: ClassOrder | None = None


def running_mean(features: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Upstream's batch-wise class mean m ← (m + batch mean)/2, exact only within one batch."""
    mean = None
    for start in range(0, features.shape[0], batch_size):
        batch_mean = features[start:start + batch_size].mean(0)
        mean = batch_mean if mean is None else (mean + batch_mean) / 2
    return mean


@register("icarl")
class ICaRL(LwFMC):
    Hparams = ICaRLHparams
    uses_buffer = True
    random_init_probe = False  # the nearest-mean classifier needs exemplars

    def __init__(self, net, hp, ctx):
        super().__init__(net, hp, ctx)
        self.class_means = None

    @classmethod
    def planned_steps(cls, hp, task_sizes, buffer_size):
        """Each task's data merged with the exemplars (the whole buffer from task 2 on)."""
        return sum(hp.n_epochs * math.ceil((n + (buffer_size if t else 0)) / hp.batch_size)
                   for t, n in enumerate(task_sizes))

    def make_buffer(self):
        return ClassBalancedBuffer(self.ctx.buffer_size, self.device, self.generator, self.hp.selection,
                                   self.hp.herding_variant)

    def begin_task(self, task):
        super().begin_task(task)
        if len(self.buffer):  # replay by merging the exemplars into the task's training set
            task.x, task.y = torch.cat([task.x, self.buffer.x]), torch.cat([task.y, self.buffer.y])

    def observe(self, x, y, x_raw):
        self.class_means = None
        return super().observe(x, y, x_raw)

    @torch.no_grad()
    def eval_features(self, x: torch.Tensor) -> torch.Tensor:
        """φ of network inputs x in eval mode (the network's mode restored)."""
        was_training = self.net.training
        self.net.eval()
        feats = self.net.features(x)
        self.net.train(was_training)
        return feats

    @torch.no_grad()
    def features(self, x_raw: torch.Tensor) -> torch.Tensor:
        """φ of non-augmented images in eval mode (L2-normalised for nmc=current)."""
        feats = torch.cat([self.eval_features(self.transform.test(x_raw[i:i + 1024]))
                           for i in range(0, x_raw.shape[0], 1024)])
        return F.normalize(feats, dim=1) if self.hp.nmc == "current" else feats

    def end_task(self, task):
        super().end_task(task)
        new = [c for c in task.classes]
        mask = (task.y[:, None] == torch.tensor(new, device=self.device)[None]).any(1)
        seen = self.ctx.task_classes[task.index][-1] + 1
        self.buffer.update(task.x[mask], task.y[mask], seen if self.hp.memory_policy == "shrinking" else
                           self.ctx.n_classes, self.features)
        self.class_means = None

    def compute_class_means(self) -> torch.Tensor:
        means = torch.full((self.ctx.n_classes, self.net.feature_dim), float("nan"), device=self.device)
        if self.hp.nmc == "legacy":  # class by class, in upstream's batches
            for c in self.buffer.y.unique().tolist():
                means[c] = running_mean(self.features(self.buffer.x[self.buffer.y == c]), self.hp.batch_size)
            return means
        # one pass over the memory (and its flips): the per-class means of its features
        views = [self.buffer.x, self.buffer.x.flip(3)] if self.hp.nmc == "current" and self.transform.hflip \
            else [self.buffer.x]
        feats = torch.cat([self.features(v) for v in views])
        labels = self.buffer.y.repeat(len(views))
        sums = torch.zeros_like(means).index_add_(0, labels, feats)
        counts = torch.bincount(labels, minlength=self.ctx.n_classes)
        seen = counts > 0
        means[seen] = sums[seen] / counts[seen, None]
        if self.hp.nmc == "current":
            means[seen] = F.normalize(means[seen], dim=1)
        return means

    @torch.no_grad()
    def predict(self, x):
        return self.nme_scores(self.net.features(x))

    def nme_scores(self, feats: torch.Tensor) -> torch.Tensor:
        """−‖φ − μ_c‖² from the network's features (the head's logits while there are no exemplars)."""
        if not len(self.buffer):
            return self.net.classifier(feats)
        if self.class_means is None:
            self.class_means = self.compute_class_means()
        if self.hp.nmc == "current":
            feats = F.normalize(feats, dim=1)
        scores = -((feats[:, None, :] - self.class_means[None]) ** 2).sum(-1)
        return scores.nan_to_num(nan=float("-inf"))

    @torch.no_grad()
    def evaluation_rows(self, scenario, after_task: int) -> list[dict]:
        """Per-image accuracy (%) on the test images of the seen classes, NME and CNN (eval_task −1: pooled)."""
        if after_task == RANDOM_INIT_ROW:
            return []
        seen_classes = scenario.class_task <= after_task
        rows_seen = seen_classes[scenario.test_y]
        x, y = scenario.test_x[rows_seen], scenario.test_y[rows_seen]
        correct = {"nme": 0, "cnn": 0}
        for start in range(0, x.shape[0], 1024):
            feats, labels = self.net.features(scenario.transform.test(x[start:start + 1024])), y[start:start + 1024]
            for name, scores in (("nme", self.nme_scores(feats)), ("cnn", self.net.classifier(feats))):
                scores = scores.masked_fill(~seen_classes[None], float("-inf"))
                correct[name] += int((scores.argmax(1) == labels).sum())
        return [metric_rows(f"accuracy_seen/{name}", 100 * c / max(y.shape[0], 1), after_task=after_task, eval_task=-1)
                for name, c in correct.items()]
