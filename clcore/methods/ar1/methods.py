"""AR1* and its relatives on a NIC stream (docs/ar1.md; `vlomonaco/ar1-pytorch` `ar1star_lat_replay.py`).

One incremental batch i is one task. Its loop (docs/ar1.md#the-per-batch-loop):

    i == 1: CWR* variants freeze the upper layers (head-only training); every BRN switches to m_inc and its caps;
            SGD is rebuilt at lr_inc
    RESET (CWR*) -> 4 epochs over the batch, shuffled once (batch 0 padded to a multiple of B), each minibatch
    n_new new images + n_rep stored latent activations in memory order:
        L = CE(f(x ⊕ z), y ⊕ y_z) over all classes [+ (λ/2) Σ F (θ − θ*)²  (SI on the upper convs)]
    -> CONSOLIDATE (CWR*) -> SI end of batch -> memory update from epoch 0's activations -> LOAD (CWR*), past += cur

The lower layers (blocks 0..latent_layer) are frozen and in eval mode from batch 0, so their activations never go
stale. The seven registry names differ only in the flags below (docs/ar1.md#methods).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ...backbones.mobilenet import LATENT_LAYERS
from ...errors import InputError
from .. import register
from ..base import ContinualMethod, Hparams, LossLog
from ..baselines import SIImportance
from .cwr import CWRStar, Multiplicity, current_classes
from .latent_replay import LatentMemory, minibatch_plan, pad_to_multiple

PRETRAINED_KEYS = ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_std")
LatentLayer = Literal["data", "conv4_1/dw", "conv5_1/dw", "conv5_4/dw", "conv5_6/dw", "pool6"]


@dataclass
class AR1Hparams(Hparams):
    lr: float = 0.001               # init_lr, batch 0 (ar1-pytorch params.cfg)
    lr_inc: float = 5e-5            # inc_lr, batches >= 1 (SGD rebuilt at batch 1)
    optim_mom: float = 0.9          # momentum
    optim_wd: float = 5e-4          # l2, on every trainable parameter (head and BRN γ/β included)
    n_epochs: int = 4               # init_train_ep (set by the benchmark protocol)
    inc_epochs: int = 4             # inc_train_ep
    batch_size: int = 128           # mb_size: new + replayed patterns (set by the benchmark protocol)
    head: Literal["cwr", "linear"] = "cwr"   # linear: naive_nic's plain head, never reset
    train_upper: bool = True        # False: head-only training from batch 1 (cwr_star*)
    si_lambda: float = 0.0          # λ; 0 for the `_free` variants (released reg_lambda)
    si_xi: float = 1e-7             # ξ, hard-coded upstream
    si_f_max: float = 1e-3          # F_max: F = min(Ω, F_max), hard-coded upstream
    si_clip_min_zero: bool = False  # upstream has no lower clip: a negative F pushes θ away from θ*
    brn_momentum: float = 0.01      # init_update_rate, batch 0
    brn_momentum_inc: float = 5e-5  # inc_update_rate, from batch 1
    brn_r_max: float = 1.25         # max_r_max: the ramp's cap in batch 0, the fixed value from batch 1
    brn_d_max: float = 0.5          # max_d_max
    brn_inc_step: float = 4.1e-5    # inc_step, per sample of each train-mode forward
    latent_layer: LatentLayer = "conv5_4/dw"  # latent_layer_num 19; the paper's sweep: data ... pool6
    pretrained: bool = True         # load the family's pretrained backbone (False: random init, tests)
    cwr_class_multiplicity: Multiplicity = "upstream"  # docs/ar1.md#cwr (upstream quirk) or unique (Caffe)
    reshuffle_each_epoch: bool = False        # upstream shuffles a batch once
    shuffle_memory: bool = False              # upstream replays the memory in slot order every epoch
    reset_optimizer_each_batch: bool = False  # upstream keeps the momentum buffers from batch 1 on
    mask_unseen_eval: bool = False            # upstream scores all classes, unseen ones included
    # speed, exact (docs/ar1.md#frozen-activations): the frozen lower layers run once per image of a batch and once
    # per test image, not every epoch and evaluation as upstream; False recomputes them
    reuse_frozen_activations: bool = True


@register("naive_nic", head="linear")
@register("cwr_star", train_upper=False)
@register("ar1_star_free")
@register("ar1_star", si_lambda=1e6)  # from a commented config of ar1-pytorch (docs/ar1.md#si-strength)
class AR1(ContinualMethod):
    Hparams = AR1Hparams
    random_init_probe = False  # a stream has no probe row

    @classmethod
    def planned_steps(cls, hp, task_sizes, buffer_size):
        """Batch 0 padded to whole minibatches, later batches cut by the minibatch plan (docs/ar1.md#latent-replay)."""
        first, *rest = task_sizes
        memory = min(buffer_size, -(-first // hp.batch_size) * hp.batch_size)
        return hp.n_epochs * -(-first // hp.batch_size) + sum(
            hp.inc_epochs * minibatch_plan(n, memory, hp.batch_size)[0] for n in rest if n)

    def __init__(self, net, hp, ctx):
        if not hasattr(net, "freeze_lower"):
            raise InputError("the AR1 family needs the backbone mobilenet_v1 (a latent-layer split)")
        with torch.no_grad():
            net.classifier.weight.zero_()  # CWR* rows start at zero; naive_nic's head too (docs/ar1.md#methods)
        if hp.pretrained:
            if "ar1_backbone" not in ctx.artefacts:
                raise InputError("the AR1 family starts from a pretrained backbone: train through the pipeline (rule "
                                 "pretrain_ar1_backbone or convert_mobilenet_w1 makes it), or set pretrained=false")
            load_pretrained(net, ctx.artefacts["ar1_backbone"])
        if LATENT_LAYERS[hp.latent_layer] != net.latent_layer:
            net.split_at(LATENT_LAYERS[hp.latent_layer])
        for brn in net.batch_renorms():  # batch 0: plain BN growing into BRN by the ramp
            brn.momentum.fill_(hp.brn_momentum)
            brn.r_max.fill_(1.0)
            brn.d_max.fill_(0.0)
            brn.r_max_cap.fill_(hp.brn_r_max)
            brn.d_max_cap.fill_(hp.brn_d_max)
            brn.inc_step.fill_(hp.brn_inc_step)
        net.freeze_lower()
        super().__init__(net, hp, ctx)
        self.cwr = CWRStar(ctx.n_classes, net.feature_dim) if hp.head == "cwr" else None
        self.register_buffer("seen", torch.zeros(ctx.n_classes, dtype=torch.bool))
        # Θ: the upper layers' convs; BRN γ/β and the head are left out (docs/ar1.md#synaptic-intelligence)
        upper_convs = [p for name, p in net.upper.named_parameters() if name.endswith("conv.weight")]
        self.si = SIImportance(upper_convs, hp.si_xi, "path_integral", omega_max=hp.si_f_max, clip="read",
                               omega_min=0.0 if hp.si_clip_min_zero else None) if hp.si_lambda > 0 else None
        self._test_latents: tuple[torch.Tensor, list[torch.Tensor]] | None = None  # (test images, their latents)

    def make_optimizer(self):
        incremental = getattr(self, "task", -1) >= 1
        return torch.optim.SGD([p for p in self.net.parameters() if p.requires_grad],
                               lr=self.hp.lr_inc if incremental else self.hp.lr, momentum=self.hp.optim_mom,
                               weight_decay=self.hp.optim_wd)

    def _incremental_layout(self) -> None:
        """From batch 1: CWR* variants train the head only (the upper BRNs stay in train mode); SGD at lr_inc."""
        if not self.hp.train_upper:
            self.net.upper.requires_grad_(False)
        self.opt = self.make_optimizer()

    def begin_task(self, task):
        self.task = task.index
        if task.index == 1:
            for brn in self.net.batch_renorms():
                brn.switch(self.hp.brn_momentum_inc, self.hp.brn_r_max, self.hp.brn_d_max)
            self._incremental_layout()
        elif task.index > 1 and self.hp.reset_optimizer_each_batch:
            self.opt = self.make_optimizer()

    def observe(self, x, y, x_raw, replay_slots: torch.Tensor | None = None, h: torch.Tensor | None = None):
        """One SGD step on the new images `x` (or their latent activations `h`, when already computed) and the
        memory's activations at `replay_slots`."""
        h = self.net.latent(x) if h is None else h
        if replay_slots is not None and replay_slots.numel():
            h = torch.cat([h, self.buffer.activations[replay_slots]])
            y = torch.cat([y, self.buffer.labels[replay_slots]])
        ce = F.cross_entropy(self.net.from_latent(h), y)
        loss, out = ce, {"ce": ce}
        if self.si is not None:
            out["penalty"] = torch.as_tensor(self.si.penalty())
            loss = ce + self.hp.si_lambda / 2 * out["penalty"]
            self.si.before_step()
        self.step(loss)
        if self.si is not None:
            self.si.after_step(self.hp.lr)  # path_integral: reads each parameter's gradient and move
        return {"loss": loss, **out}

    def _reuses_latents(self) -> bool:
        """Whether a batch's latents may be computed once: lower layers to skip and no random augmentation."""
        return self.hp.reuse_frozen_activations and len(self.net.lower) > 0 and not self.transform.is_random

    def train_task(self, task, on_epoch=None) -> list[dict]:
        hp, i, W = self.hp, task.index, self.net.classifier.weight
        log, rows, B = LossLog(i, self.device), [], hp.batch_size
        n = task.y.shape[0]
        memory_labels = self.buffer.labels if self.uses_buffer and i > 0 else None
        counts = torch.bincount(task.y if memory_labels is None else torch.cat([task.y, memory_labels]),
                                minlength=self.ctx.n_classes)
        classes = current_classes(task.y, memory_labels, hp.cwr_class_multiplicity)
        if self.cwr is not None:
            self.cwr.reset(W, classes)
        order = pad_to_multiple(n, B).to(self.device) if i == 0 else torch.arange(n, device=self.device)
        order = order[torch.randperm(len(order), generator=self.generator, device=self.device)]
        n_memory = 0 if memory_labels is None else len(memory_labels)
        n_it, n_new, n_rep = (len(order) // B, B, 0) if i == 0 else minibatch_plan(n, n_memory, B)
        replay_order = torch.arange(n_memory, device=self.device)
        latents, new_latents = None, []  # per image of the batch; epoch 0's, in minibatch order
        for epoch in range(hp.n_epochs if i == 0 else hp.inc_epochs):
            if epoch and hp.reshuffle_each_epoch:
                order = order[torch.randperm(len(order), generator=self.generator, device=self.device)]
            if n_memory and hp.shuffle_memory:
                replay_order = torch.randperm(n_memory, generator=self.generator, device=self.device)
            start_steps = log.steps
            for k in range(n_it):
                idx = order[k * n_new:(k + 1) * n_new]
                if epoch and latents is not None:
                    h = latents[idx]
                else:
                    h = self.net.latent(self.transform.train(task.x[idx], self.generator))
                    if epoch == 0 and self.uses_buffer:
                        new_latents.append((h, task.y[idx]))
                    if self._reuses_latents():
                        if latents is None:  # n rows in h's memory format
                            latents = torch.empty_like(h[:1].expand(n, *h.shape[1:]))
                        latents[idx] = h
                log.add(self.observe(None, task.y[idx], None, replay_order[k * n_rep:(k + 1) * n_rep], h=h))
            rows += log.flush(epoch, log.steps - start_steps)
            if on_epoch:
                on_epoch(epoch)
        if self.cwr is not None:
            self.cwr.consolidate(W, classes, counts)
        if self.si is not None:
            self.si.consolidate()
        if self.uses_buffer:
            self.buffer.update(*map(torch.cat, zip(*new_latents)), i, self.generator)
        if self.cwr is not None:
            self.cwr.load(W)
            self.cwr.add_counts(counts)
        self.seen[task.y] = True
        return rows

    def predict(self, x):
        return self._masked(self.net(x))

    def _masked(self, logits):
        return logits.masked_fill(~self.seen, float("-inf")) if self.hp.mask_unseen_eval else logits

    def test_scores(self, x_raw, transform, batch_size):
        """The test images' latents are computed at the first evaluation and kept: the lower layers never change."""
        if not self.hp.reuse_frozen_activations or not len(self.net.lower):
            return super().test_scores(x_raw, transform, batch_size)
        if self._test_latents is None or self._test_latents[0] is not x_raw:
            self._test_latents = (x_raw, [self.net.latent(transform.test(x_raw[start:start + batch_size]))
                                          for start in range(0, x_raw.shape[0], batch_size)])
        return torch.cat([self._masked(self.net.from_latent(h)) for h in self._test_latents[1]])

    def extra_state(self):
        return {"si": self.si.state_dict()} if self.si is not None else {}

    def load_extra(self, state):
        if self.si is not None:
            self.si.load_state_dict(state["si"])

    def set_extra_state(self, state):
        if state["task"] >= 1:  # resuming at batch >= 2: the optimiser of batch 1's layout takes the saved state
            self.task = state["task"]
            self._incremental_layout()
        super().set_extra_state(state)


@register("cwr_star_lr", train_upper=False)
@register("ar1_star_free_lr")  # the released ar1-pytorch configuration
@register("ar1_star_lr", si_lambda=1e6)
class AR1LatentReplay(AR1):
    """AR1 with the latent replay memory of R = the run's buffer size activations (docs/ar1.md#latent-replay)."""

    uses_buffer = True

    def make_buffer(self):
        return LatentMemory(self.ctx.buffer_size)  # a submodule: its tensors travel in the state dict


def load_pretrained(net, path) -> None:
    """The pretrained backbone (rule pretrain_ar1_backbone or convert_mobilenet_w1): every conv weight and BRN γ, β,
    μ_run, σ_run of `net`, no more and no less, loaded strictly; the head and the BRN settings stay `net`'s."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = {k for k in net.state_dict() if k.endswith(PRETRAINED_KEYS)}
    if set(state) != expected:
        raise InputError(f"{path} is not a backbone of this network: missing {sorted(expected - set(state))[:3]}, "
                         f"unexpected {sorted(set(state) - expected)[:3]}; make it again with "
                         f"`snakemake --cores all --forcerun {path}`")
    net.load_state_dict({**net.state_dict(), **state}, strict=True)
